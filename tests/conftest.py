"""Shared pytest fixtures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
ROOT_COMPRESSIONS = ("ZLIB", "LZMA", "LZ4", "ZSTD")

# Copies trackingNtuple/tree of each source file with each compression algorithm. A full (not
# "fast") clone, so every basket is decompressed and compressed again with the new algorithm.
_ROOT_COPY_SCRIPT = r"""
import os
import sys

try:
    import ROOT
except ImportError as err:
    print(f"cannot import ROOT: {err}", file=sys.stderr)
    sys.exit(77)

out_dir, algorithms, *sources = sys.argv[1:]
for name in algorithms.split(","):
    algorithm = int(getattr(ROOT.RCompressionSetting.EAlgorithm, "k" + name))
    for source in sources:
        src = ROOT.TFile.Open(source)
        out_path = os.path.join(out_dir, name + "_" + os.path.basename(source))
        out = ROOT.TFile(out_path, "RECREATE", "", algorithm * 100 + 4)
        out.mkdir("trackingNtuple").cd()
        src.Get("trackingNtuple/tree").CloneTree(-1).Write()
        out.Close()
        src.Close()
"""


@pytest.fixture(scope="session")
def root_compressed_ntuples(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """tests/data's trackingNtuples rewritten by real ROOT with each of ZLIB, LZMA, LZ4, ZSTD:
    (algorithm, fixture file name) -> path.

    ROOT runs in a child process: importing it in the pytest process clashes with TensorFlow.
    """
    out_dir = tmp_path_factory.mktemp("root_compression")
    sources = sorted(DATA_DIR.glob("trackingNtuple_*.root"))
    command = [sys.executable, "-c", _ROOT_COPY_SCRIPT, str(out_dir), ",".join(ROOT_COMPRESSIONS)]
    run = subprocess.run(
        command + [str(s) for s in sources], capture_output=True, text=True, timeout=300
    )
    if run.returncode == 77:
        pytest.skip(f"real ROOT is needed to write these files: {run.stderr.strip()}")
    assert run.returncode == 0, f"ROOT failed to write the compressed copies:\n{run.stderr}"
    return {
        (algorithm, source.name): out_dir / f"{algorithm}_{source.name}"
        for algorithm in ROOT_COMPRESSIONS
        for source in sources
    }
