"""Hyperparameter search: a search completes with its outputs, a second process joins its study,
a killed search continues to the requested number of trials, bad search settings are refused.

One workspace for the module, one tiny sample and model; the trials train 1 epoch each.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import main_command, main_environment, run_main

from pipeline.search_outputs import search_of_run, search_summary
from pipeline.settings import SettingsError, load_config

SPACE = {
    "hidden_layers": [[16], [32, 16]],
    "learning_rate": (1e-3, 1e-2, "log"),
    "dropout": (0.0, 0.2),
    "batch_size": [64, 128],
}


def tiny_settings(trials: int, **more: str) -> list[str]:
    """The command-line settings of a small, fast search: a tiny sample and model, 1 epoch."""
    settings = {
        "samples": "{'train': 'data/train', 'test': 'data/test'}",
        "synthetic_samples": "{'train': ('qcd', 200, 5, 'trk_isTrue'), "
        "'test': ('ttbar', 20, 6, 'trk_isTrue')}",
        "train_samples": "['train']",
        "test_samples": "['test']",
        "monitor_samples": "[]",
        "iterations": "['initialStep', 'lowPtQuadStep', 'highPtTripletStep']",
        "checkpoint_every": "0",
        "train_bdt": "False",
        "compare_graphs": "{}",
        "run_name": "t",
        "search_space": repr(SPACE),
        "search_trials": str(trials),
        "search_epochs": "1",
        **more,
    }
    return [
        "--search",
        *(token for name, value in settings.items() for token in (f"--{name}", value)),
    ]


def searches(work: Path) -> list[Path]:
    return sorted(p for p in (work / "results").iterdir() if p.is_dir() and not p.is_symlink())


def trials(search: Path) -> pd.DataFrame:
    return pd.read_csv(search / "search" / "trials.csv")


def trial_folders(work: Path) -> list[Path]:
    return sorted(f for search in searches(work) for f in (search / "trials").glob("*_trial*"))


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, a finished search of 3 trials in its own storage)."""
    work = tmp_path_factory.mktemp("search")
    run_main(work, *tiny_settings(3))
    [search] = searches(work)
    return work, search


def test_a_search_writes_its_trials_plots_and_the_best_settings(first, tmp_path):
    work, search = first
    table = trials(search)
    assert list(table["trial"]) == [0, 1, 2] and set(table["state"]) == {"COMPLETE"}
    assert set(SPACE) <= set(table.columns) and table["value"].gt(0).all()
    for folder in table["run_dir"]:  # each trial trained in a child run folder of the search
        folder = Path(folder)
        assert folder.parent == search / "trials"
        assert len(pd.read_csv(folder / "training_log.csv")) == 1
        trial_cfg, _ = load_config(["--config", str(folder / "config.py")])
        assert trial_cfg["epochs"] == 1
    for plot in ("optimization_history", "slice", "intermediate_values", "param_importances"):
        assert (search / "search" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"

    best = table.loc[table["value"].idxmin()]
    best_config = search / "search" / "best_config.py"
    cfg, _ = load_config(["--config", str(best_config)])  # what trains the final model
    assert cfg["epochs"] == 30 and cfg["learning_rate"] == pytest.approx(best["learning_rate"])
    assert repr(cfg["hidden_layers"]) == best["hidden_layers"]
    summary = search_summary(search)
    assert summary.best_trial == best["trial"] and summary.best_config == best_config
    assert summary.best_value == pytest.approx(best["value"])

    final = tmp_path / "final_run"  # the history of a run made with --config best_config.py
    final.mkdir()
    created = {
        "event": "created",
        "stage": "all",
        "command": ["main.py", "--config", str(best_config)],
    }
    (final / "history.jsonl").write_text(json.dumps(created) + "\n")
    assert search_of_run(final) == search


@pytest.fixture(scope="module")
def joined_then_killed(first) -> tuple[Path, pd.DataFrame]:
    """A second process joins the first search's study (5 trials in all), finishes one trial
    and is killed (SIGKILL) in its next: (its search folder, the study's trials before)."""
    work, search = first
    before = trials(search)
    storage = f"sqlite:///{search / 'search' / 'study.db'}"
    args = tiny_settings(5, search_storage=storage, search_name="t")
    with open(work / "joined.log", "w") as log:
        process = subprocess.Popen(
            main_command(*args),
            cwd=work,
            env=main_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while not list((work / "results").glob("*/trials/*_trial0004/history.jsonl")):
            assert process.poll() is None, (work / "joined.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the joined search never reached trial 4"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    [joined] = [s for s in searches(work) if s != search]
    return joined, before


def test_a_second_process_joins_the_study_and_adds_trials(joined_then_killed, first):
    work, search = first
    joined, before = joined_then_killed
    table = trials(joined)  # written after each trial: the killed process's last one is missing
    assert list(table["trial"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(table.iloc[:3], before)  # the first process's trials
    added = table.iloc[3]
    assert added["state"] == "COMPLETE" and Path(added["run_dir"]).parent == joined / "trials"


def test_bad_search_settings_are_refused_in_one_line(first, tmp_path):
    work, search = first
    storage = f"sqlite:///{search / 'search' / 'study.db'}"
    before = searches(work)
    other = tiny_settings(5, search_storage=storage, search_name="t", search_epochs="2")
    result = run_main(
        work, *other, status=2, timeout=600
    )  # the study was made with 1 epoch per trial
    [line] = result.stderr.strip().splitlines()
    assert "was started with epochs = 1, this command has 2" in line
    assert searches(work) == before  # refused before any folder was made
    for argv, expected in [
        (["--search_space", "{'dropout': (0.3, 0.1)}"], "low should be < high"),
        (["--search_space", "{'dropot': [0.1]}"], "no setting (did you mean 'dropout'?)"),
        (["--search_space", "{'iterations': [['initialStep']]}"], "cannot be searched"),
        (["--search_space", "{'track_weight': ['', 'trk_pt']}"], "cannot be searched"),
        (["--search_space", "{'dropout': []}"], "no choices"),
        (["--search_space", "{'dropout': (0.0, 1.5)}"], "high end 1.5, which should be < 1"),
        (["--search_space", "{'activation': ['relu', 'rellu']}"], "choice 'rellu', which should"),
        (["--search_space", "{'l2': (0.0, 1e-3, 'log')}"], "low should be > 0"),
        (["--search_space", "{'batch_size': (16.0, 64)}"], "the integer setting 'batch_size'"),
        (["--search_trials", "0"], "'search_trials' = 0 should be >= 1"),
        (["--search_storage", "no-database"], "is no database URL"),
    ]:
        with pytest.raises(SettingsError) as error:
            load_config(["--search", *argv])
        message = str(error.value)
        assert "\n" not in message and expected in message, message
        assert message.startswith("the command line: setting 'search"), message


def test_a_killed_search_continues_to_the_requested_trials(joined_then_killed, first):
    work, search = first
    joined, before = joined_then_killed
    result = run_main(work, "--resume", str(joined))
    assert "trial 4 was left running by a killed process: queued again" in result.stdout
    table = trials(joined).set_index("trial")
    assert (table["state"] == "COMPLETE").sum() == 5  # search_trials
    assert table.loc[4, "state"] == "FAIL" and table.loc[5, "retry_of"] == 4
    # Continued in trial 4's folder (which the kill may have come before trial 4 noted).
    [folder_of_4] = (joined / "trials").glob("*_trial0004")
    assert table.loc[5, "run_dir"] == str(folder_of_4)
    assert table.loc[4, "run_dir"] in (str(folder_of_4), None) or pd.isna(table.loc[4, "run_dir"])
    pd.testing.assert_frame_equal(table.loc[:2].reset_index(), before)  # not redone
    assert len(trial_folders(work)) == 5  # one per trial: nothing trained twice
    assert (joined / "search" / "best_config.py").is_file()
    history = (Path(table.loc[5, "run_dir"]) / "history.jsonl").read_text()
    assert '"started"' in history and history.rstrip().endswith('"stages": ["train"]}')
