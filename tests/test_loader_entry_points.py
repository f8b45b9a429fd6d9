"""The loader with worker processes from every entry point a user has: a script without a
`__main__` guard, `python -c`, `python -` (stdin), IPython (what Jupyter runs), and a process
that imported TensorFlow first. Inputs are large enough that the workers, not the calling
process, decode most tracks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loader.workers import Call, WorkerPool

ROOT = Path(__file__).resolve().parents[1]

# Prints the digest of every column and which processes decoded how many tracks.
LOAD = textwrap.dedent(
    """
    import json, sys, xxhash
    {prelude}
    from dataset_loader import DatasetLoader
    loader = DatasetLoader(max_workers=2, progress=False)
    df = loader.load_into_dataframe({folder!r})
    digests = {{c: xxhash.xxh3_64_hexdigest(df[c].to_numpy().tobytes()) for c in df.columns
                if c != "sample"}}
    processes = loader.last_load["processes"]
    print(json.dumps({{"digests": digests, "rows": len(df), "processes": processes}}))
    """
)
TENSORFLOW_FIRST = (
    "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
    "import tensorflow as tf\n"
    "tf.reduce_sum(tf.random.uniform([512, 512]) @ tf.random.uniform([512, 512]))  # threads up"
)


@pytest.fixture(scope="module")
def big_sample(tmp_path_factory) -> Path:
    """About 850k tracks in 16 files: seconds of decoding, so the workers get most of it."""
    from make_ntuples import generate_sample

    folder = tmp_path_factory.mktemp("entry_points")
    generate_sample(
        folder, "qcd", 8000, seed=5, events_per_file=500, writer="uproot", progress=False
    )
    return folder


def run_python(arguments: list[str], cwd: Path, stdin: str | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(big_sample) -> dict:
    import xxhash

    from dataset_loader import DatasetLoader

    df = DatasetLoader(max_workers=1, progress=False).load_into_dataframe(str(big_sample))
    return {
        "digests": {
            c: xxhash.xxh3_64_hexdigest(df[c].to_numpy().tobytes())
            for c in df.columns
            if c != "sample"
        },
        "rows": len(df),
    }


def assert_loaded_by_workers(found: dict, reference: dict) -> None:
    assert found["rows"] == reference["rows"]
    assert found["digests"] == reference["digests"]
    by_workers = sum(p["tracks"] for name, p in found["processes"].items() if name != "parent")
    assert by_workers > reference["rows"] / 2, found["processes"]  # the workers decoded most


@pytest.mark.parametrize("entry", ["script", "command", "stdin", "ipython", "tensorflow_first"])
def test_same_dataframe_from_every_entry_point(entry, big_sample, reference, tmp_path):
    prelude = TENSORFLOW_FIRST if entry == "tensorflow_first" else ""
    code = LOAD.format(prelude=prelude, folder=str(big_sample))
    if entry in ("script", "tensorflow_first"):
        script = tmp_path / "load_tracks.py"  # no `if __name__ == "__main__":` guard
        script.write_text(code)
        found = run_python([str(script)], tmp_path)
    elif entry == "command":
        found = run_python(["-c", code], tmp_path)
    elif entry == "ipython":  # as in a Jupyter notebook: IPython's own __main__
        pytest.importorskip("IPython")
        found = run_python(["-m", "IPython", "--quick", "--no-banner", "-c", code], tmp_path)
    else:
        found = run_python(["-"], tmp_path, stdin=code)
    assert_loaded_by_workers(found, reference)


def kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail_loudly() -> None:
    print("about to fail", file=sys.stderr, flush=True)
    os._exit(3)


def started(pool: WorkerPool) -> WorkerPool:
    deadline = time.monotonic() + 60
    while len(pool.ready) < pool.size:
        assert pool.start_error is None, pool.start_error
        assert time.monotonic() < deadline, "the worker processes did not start"
        time.sleep(0.01)
    return pool


@pytest.mark.parametrize(
    ("function", "expected"),
    [(kill_myself, "was killed by SIGKILL"), (fail_loudly, "exited with status 3")],
)
def test_a_dead_worker_is_reported_with_its_real_cause(function, expected):
    pool = started(WorkerPool(1))
    try:
        with pytest.raises(RuntimeError) as error:
            for _, result in pool.run([Call(function, (), "x.root")]):
                result()
    finally:
        pool.close(wait=False)
    message = str(error.value)
    assert expected in message and "while reading x.root" in message
    assert "out of memory?" not in message
    if function is fail_loudly:
        assert "about to fail" in message  # its last output
