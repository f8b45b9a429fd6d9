"""The whole pipeline, as a user runs it: python main.py on a small synthetic sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={
            k: v
            for k, v in {**os.environ, "PYTHONPATH": str(ROOT)}.items()
            if k != "TF_CPP_MIN_LOG_LEVEL"
        },  # as a user runs it
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete run: two CPU replicas, a few epochs, tiny samples generated on the fly."""
    work = tmp_path_factory.mktemp("e2e")
    samples = {"train": str(work / "data/train"), "held_out": str(work / "data/held_out")}
    synthetic = {
        "train": ("qcd", 150, 5, "trk_isTrue"),
        "held_out": ("displaced", 40, 6, "trk_simTrkIdx"),
    }
    result = run_main(
        *("--samples", repr(samples), "--synthetic_samples", repr(synthetic)),
        *("--train_samples", "['train']", "--test_samples", "['held_out']"),
        *("--epochs", "3", "--checkpoint_every", "2", "--hidden_layers", "[32, 16]"),
        *("--cpu_replicas", "2", "--batch_size", "256", "--run_name", "e2e"),
        # The populous iterations only, so that 150 events balance into a real training set.
        *("--iterations", "['initialStep', 'lowPtQuadStep', 'highPtTripletStep']"),
        *("--results_dir", str(work / "results")),
        cwd=work,
    )
    return work, work / "results" / "latest", result.stdout + result.stderr


def test_run_folder_holds_every_output(finished_run):
    work, run, stdout = finished_run
    assert run.is_symlink() and run.resolve().name.endswith("_e2e")
    for name in ("config.py", "model.keras", "frozen_graph.pb", "training_log.csv"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "checkpoints" / "epoch_002.keras").exists()
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    log = pd.read_csv(run / "training_log.csv")
    assert list(log["epoch"]) == [0, 1, 2]
    assert {"loss", "val_loss", "auc", "val_auc"} <= set(log.columns)
    assert not list(run.rglob("*.tmp*")), "temporary files left behind"
    # both synthetic samples were generated where the config pointed
    assert list((work / "data/train").glob("*.root")) and list(
        (work / "data/held_out").glob("*.root")
    )


def test_run_used_two_replicas_and_reported_a_summary(finished_run):
    _, run, stdout = finished_run
    assert "2 replica(s) x 256 = global batch 512" in stdout
    summary = stdout[stdout.index("=== summary ===") :]
    for needed in ("sample", "validation AUC", "frozen graph", "stage times", str(run.resolve())):
        assert needed in summary, needed
    auc = float(summary.split("validation AUC:")[1].split()[0])
    assert 0.6 < auc <= 1.0


def test_terminal_is_quiet_on_a_cpu_machine(finished_run):
    """TensorFlow's and CUDA's start-up noise goes to the run's log, not the terminal."""
    _, run, output = finished_run
    for noise in ("cuInit", "CUDA error", "absl", "cuda drivers", "rebuild TensorFlow"):
        assert noise not in output, noise
    assert "cuda" in (run / "run.log").read_text().lower()  # kept, where it belongs
    assert "training on the CPU" in output  # the one line that says so


def test_effective_config_repeats_the_run(finished_run):
    from pipeline.settings import load_config

    _, run, _ = finished_run
    cfg, _ = load_config(["--config", str(run / "config.py")])
    assert cfg["epochs"] == 3 and cfg["cpu_replicas"] == 2 and cfg["train_samples"] == ["train"]


def test_freeze_stage_alone_rewrites_an_identical_graph(finished_run):
    import tensorflow as tf

    from model_freeze import load_graph_def, run_graph_def

    work, run, _ = finished_run
    before = (run / "frozen_graph.pb").read_bytes()
    (run / "frozen_graph.pb").unlink()
    result = run_main("--stage", "freeze", "--run", str(run), cwd=work)
    assert "agrees with the Keras model" in result.stdout
    again = run_main("--stage", "freeze", "--run", str(run), cwd=work)  # one exists: checked
    assert "frozen_graph.pb (" in again.stdout and "[checked again]" in again.stdout
    after = load_graph_def(run / "frozen_graph.pb")
    original = tf.compat.v1.GraphDef.FromString(before)
    with np.load(run / "holdout_tracks.npz") as holdout:
        inputs = {"x": holdout["x"], "y": holdout["y"]}
    np.testing.assert_allclose(
        run_graph_def(after, inputs), run_graph_def(original, inputs), atol=1e-6
    )
