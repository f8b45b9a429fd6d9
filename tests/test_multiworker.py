"""Training on several nodes: two CPU workers on loopback ports, started and stopped here.

Both train the same model under a MultiWorkerMirroredStrategy (TF_CONFIG); their final weights
are identical; the chief alone writes the run folder, and its frozen graph passes the freeze
check.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    *("--samples", "{'train': 'data/train', 'test': 'data/test'}"),
    *(
        "--synthetic_samples",
        "{'train': ('qcd', 200, 5, 'trk_isTrue'), 'test': ('ttbar', 20, 6, 'trk_isTrue')}",
    ),  # fmt: skip
    *("--train_samples", "['train']", "--test_samples", "['test']"),
    *("--iterations", "['initialStep', 'lowPtQuadStep', 'highPtTripletStep']"),
    *("--epochs", "2", "--batch_size", "64", "--hidden_layers", "[16, 8]"),
    *("--compare_graphs", "{}", "--train_bdt", "False", "--run_name", "mw"),
]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def main_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), *SETTINGS, *args]


def test_two_workers_train_the_same_model(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    subprocess.run(main_command("--stage", "load"), cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)  # the sample, generated once  # fmt: skip
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(
            subprocess.Popen(
                main_command("--stage", "train"),
                cwd=tmp_path,
                env={**env, "TF_CONFIG": config},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=900)
            assert worker.returncode == 0, out[-2000:] + err[-3000:]
            outputs.append(out)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    digests = [re.search(r"final weights: sha256 (\w+)", out).group(1) for out in outputs]
    assert digests[0] == digests[1]
    assert "2 replica(s) in all" in outputs[0] and "the chief" in outputs[0]
    assert "Worker 1 of 2: training with the chief" in outputs[1]
    runs = [p for p in (tmp_path / "results").iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1  # the chief's alone
    freeze = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--stage", "freeze", "--run", str(runs[0])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert freeze.returncode == 0, freeze.stderr[-3000:]
    assert "agrees with the Keras model" in freeze.stdout
    assert (runs[0] / "frozen_graph.pb").is_file()
