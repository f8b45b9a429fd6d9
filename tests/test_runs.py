"""Run folders a user can trust: written once, failures marked, resumable after any stop.

One small workspace for the module: a synthetic sample, one finished run (the reference),
then the commands a user gives on it and runs stopped by kill -9, SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import main_command, main_environment, run_main

# A short training that still takes a few seconds per epoch, so that a signal lands inside it.
SETTINGS = [
    *("--samples", "{'train': 'data/train', 'test': 'data/test'}"),
    *(
        "--synthetic_samples",
        "{'train': ('qcd', 400, 5, 'trk_isTrue'), 'test': ('ttbar', 30, 6, 'trk_isTrue')}",
    ),  # fmt: skip
    *("--train_samples", "['train']", "--test_samples", "['test']", "--monitor_samples", "[]"),
    *("--iterations", "['initialStep', 'lowPtQuadStep', 'highPtTripletStep']"),
    *("--epochs", "6", "--batch_size", "64", "--hidden_layers", "[32, 16]"),
    *("--checkpoint_every", "0", "--train_bdt", "False", "--compare_graphs", "{}"),
    *("--early_stopping_patience", "0", "--bootstrap_samples", "20", "--run_name", "t"),
]


def runs(work: Path) -> list[Path]:
    results = work / "results"
    if not results.exists():
        return []
    return sorted(p for p in results.iterdir() if p.is_dir() and not p.is_symlink())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, the finished reference run)."""
    work = tmp_path_factory.mktemp("runs")
    run_main(work, *SETTINGS)
    [reference] = runs(work)
    return work, reference


def test_a_finished_run_is_latest_and_records_its_history(workspace):
    work, reference = workspace
    assert (work / "results" / "latest").resolve() == reference
    kinds = [e["event"] for e in events(reference)]
    assert kinds[0] == "created" and kinds[-1] == "finished"
    assert [e["stage"] for e in events(reference) if e["event"] == "stage done"] == [
        "train",
        "freeze",
        "evaluate",
    ]
    assert len(pd.read_csv(reference / "training_log.csv")) == 6


def test_load_and_balance_make_no_run_folder_unless_asked(workspace):
    work, reference = workspace
    before = runs(work)
    run_main(work, *SETTINGS, "--stage", "load")
    run_main(work, *SETTINGS, "--stage", "balance")
    assert runs(work) == before
    run_main(work, *SETTINGS, "--stage", "balance", "--record")
    [recorded] = sorted(set(runs(work)) - set(before))
    assert (recorded / "config.py").is_file() and (recorded / "holdout_tracks.npz").is_file()
    assert events(recorded)[-1]["event"] == "finished"
    assert (work / "results" / "latest").resolve() == reference  # it trained nothing


def test_a_failed_run_is_marked_and_never_latest(workspace, tmp_path):
    work, reference = workspace
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.root").write_bytes(b"root" + bytes(100))  # a header and nothing else
    before = runs(work)
    result = run_main(
        work,
        *SETTINGS,
        *("--samples", f"{{'train': 'data/train', 'test': '{broken}'}}"),
        *("--synthetic_samples", "{'train': ('qcd', 400, 5, 'trk_isTrue')}"),
        status=1,
    )
    [failed] = sorted(set(runs(work)) - set(before))
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bad.root" in last
    assert "Traceback" not in result.stderr and "Traceback" in (failed / "run.log").read_text()
    assert events(failed)[-1]["event"] == "failed"
    [marker] = failed.glob("failed_load_*.txt")
    assert "bad.root" in marker.read_text()
    assert (work / "results" / "latest").resolve() == reference


def test_later_stages_never_change_the_run_config(workspace):
    work, reference = workspace
    before = digest(reference / "config.py")
    refused = run_main(
        work,
        *("--stage", "freeze", "--run", str(reference), "--epochs", "5"),
        *("--hidden_layers", "[8]"),
        status=2,
    )
    assert "contradicts the run" in refused.stderr and len(refused.stderr.splitlines()) == 1
    report = digest(reference / "report.html")
    targets = "[0.99, 0.97, 0.93]"
    run_main(work, "--stage", "evaluate", "--run", str(reference), "--target_efficiencies", targets)
    [stage] = (reference / "stages").glob("evaluate_*")
    assert f"target_efficiencies = {targets}" in (stage / "config.py").read_text()
    assert (stage / "report.html").is_file()  # the run's own report stays as it was
    assert digest(reference / "report.html") == report
    assert digest(reference / "config.py") == before


def test_retraining_a_run_makes_a_new_run_naming_its_parent(workspace):
    work, reference = workspace
    before = digest(reference / "config.py")
    existing = runs(work)
    run_main(work, "--stage", "train", "--run", str(reference), "--epochs", "1")
    [child] = sorted(set(runs(work)) - set(existing))
    assert events(child)[0]["parent"] == str(reference)
    assert "epochs = 1" in (child / "config.py").read_text()
    assert digest(reference / "config.py") == before
    assert (work / "results" / "latest").resolve() == child


def wait_for_epoch(run_dir_of, process: subprocess.Popen, epoch: int) -> Path:
    """Poll until the run's saved training state has passed `epoch` epochs."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        run_dir = run_dir_of()
        state = run_dir / "training_state" / "state.json" if run_dir else None
        if state is not None and state.is_file():
            try:
                if json.loads(state.read_text())["epoch"] >= epoch:
                    return run_dir
            except ValueError:
                pass
        time.sleep(0.02)
    raise AssertionError("the training did not reach the epoch")


@pytest.mark.parametrize(("how", "status"), [("SIGKILL", None), ("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stopped_run_resumes_to_the_same_training(workspace, how, status):
    """kill -9, a batch system's SIGTERM or Ctrl-C during epoch 3 of 6, then --resume: the same
    training log as the uninterrupted reference run, a frozen graph and a report."""
    work, reference = workspace
    existing = set(runs(work))
    process = subprocess.Popen(
        main_command(*SETTINGS), cwd=work, env=main_environment(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def new_run() -> Path | None:
        fresh = set(runs(work)) - existing
        return fresh.pop() if fresh else None

    stopped = wait_for_epoch(new_run, process, 2)
    time.sleep(0.3)  # into epoch 3: a signal lands between batches
    process.send_signal(getattr(signal, how))
    out, err = process.communicate(timeout=300)
    state = json.loads((stopped / "training_state" / "state.json").read_text())
    assert not state.get("finished") and 2 <= state["epoch"] < 6
    if status is None:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == status, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("interrupted after") and f"--resume {stopped}" in last
        assert "Traceback" not in err
        assert events(stopped)[-1]["event"] == "interrupted"
    assert (work / "results" / "latest").resolve() != stopped

    resumed = run_main(work, "--resume", str(stopped))
    assert "Resuming the training" in resumed.stdout
    log = pd.read_csv(stopped / "training_log.csv")
    expected = pd.read_csv(reference / "training_log.csv")
    assert list(log["epoch"]) == list(range(6))
    pd.testing.assert_frame_equal(log, expected, rtol=0, atol=1e-6)
    assert (stopped / "frozen_graph.pb").is_file() and (stopped / "report.html").is_file()
    assert (work / "results" / "latest").resolve() == stopped
    assert "nothing left to do" in run_main(work, "--resume", str(stopped), status=1).stderr
