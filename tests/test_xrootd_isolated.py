"""The root:// tests (a real XRootD server on loopback) in a child pytest without TensorFlow.

See tests/conftest.py: XRootD's client and TensorFlow in one process crashed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

XROOTD_CHILD = "TRACK_DNN_XROOTD_CHILD"  # tests/conftest.py leaves these tests to the child

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_dataset_loader.py::test_xrootd_urls_read_like_local_files",
    "tests/test_loader_cache.py::test_remote_files_are_cached",
]


def test_root_urls_against_a_real_xrootd_server():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, XROOTD_CHILD: "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    if f"{len(TESTS)} passed" not in output:
        skipped = [line for line in output.splitlines() if "SKIPPED" in line]
        pytest.skip("; ".join(skipped) or output[-500:])
