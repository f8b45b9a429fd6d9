"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).parent / "data"
# CMSSW's public production models, next to the checkout when available (never committed):
# the tests that compare with them skip without them.
CMSSW_MODELS = ROOT.parent / "shared" / "cmssw-models"
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

# Copies trackingNtuple/tree entry by entry with a cluster every 4 events (the fixtures have one
# cluster), so that the loader has entry ranges to split one file into.
_ROOT_CLUSTER_SCRIPT = r"""
import os
import sys

try:
    import ROOT
except ImportError as err:
    print(f"cannot import ROOT: {err}", file=sys.stderr)
    sys.exit(77)

out_dir, *sources = sys.argv[1:]
for source in sources:
    src = ROOT.TFile.Open(source)
    tree = src.Get("trackingNtuple/tree")
    out = ROOT.TFile(os.path.join(out_dir, os.path.basename(source)), "RECREATE", "", 101)
    out.mkdir("trackingNtuple").cd()
    clone = tree.CloneTree(0)
    clone.SetAutoFlush(4)
    clone.CopyEntries(tree)
    clone.Write()
    out.Close()
    src.Close()
"""


def main_command(*args: str) -> list[str]:
    """`python main.py ARGS` from any working folder."""
    return [sys.executable, str(ROOT / "main.py"), *args]


def main_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_main(
    work: Path, *args: str, status: int = 0, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run main.py in `work` to its end; asserts its exit status (with its output if not)."""
    result = subprocess.run(
        main_command(*args),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=main_environment(),
    )
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _run_root(script: str, *args: str) -> None:
    """Run a PyROOT script in a child process: importing ROOT here clashes with TensorFlow."""
    run = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )
    if run.returncode == 77:
        pytest.skip(f"real ROOT is needed to write these files: {run.stderr.strip()}")
    assert run.returncode == 0, f"ROOT failed to write the files:\n{run.stderr}"


@pytest.fixture(scope="session")
def root_compressed_ntuples(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """tests/data's trackingNtuples rewritten by real ROOT with each of ZLIB, LZMA, LZ4, ZSTD:
    (algorithm, fixture file name) -> path."""
    out_dir = tmp_path_factory.mktemp("root_compression")
    sources = sorted(DATA_DIR.glob("trackingNtuple_*.root"))
    _run_root(_ROOT_COPY_SCRIPT, str(out_dir), ",".join(ROOT_COMPRESSIONS), *map(str, sources))
    return {
        (algorithm, source.name): out_dir / f"{algorithm}_{source.name}"
        for algorithm in ROOT_COMPRESSIONS
        for source in sources
    }


@pytest.fixture(scope="session")
def clustered_ntuples(tmp_path_factory) -> dict[str, Path]:
    """tests/data's trackingNtuples rewritten by real ROOT with a cluster every 4 events:
    fixture file name -> path (same values, about 15 entry ranges per file)."""
    out_dir = tmp_path_factory.mktemp("clustered")
    sources = sorted(DATA_DIR.glob("trackingNtuple_*.root"))
    _run_root(_ROOT_CLUSTER_SCRIPT, str(out_dir), *map(str, sources))
    return {source.name: out_dir / source.name for source in sources}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[tuple[str, Path]]:
    """A real XRootD server on loopback: (its URL "root://127.0.0.1:PORT/", the folder it
    exports). Files copied into the folder are read as URL + "/" + absolute path.

    Skipped when the server (Debian: apt-get install xrootd-server) or the client side
    (pip install fsspec-xrootd xrootd) is missing.
    """
    binary = shutil.which("xrootd")
    if binary is None:
        pytest.skip("no xrootd binary on PATH (Debian/Ubuntu: apt-get install xrootd-server)")
    pytest.importorskip("XRootD.client", reason="no XRootD Python bindings (pip install xrootd)")
    pytest.importorskip("fsspec_xrootd", reason="no fsspec-xrootd (pip install fsspec-xrootd)")
    # Not under pytest's private (0700) tmp folder: as root the server runs as `nobody`.
    folder = Path(tempfile.mkdtemp(prefix="loader-xrootd-"))
    export, admin = folder / "data", folder / "admin"
    export.mkdir()
    admin.mkdir()
    folder.chmod(0o755)
    export.chmod(0o755)
    admin.chmod(0o777)
    config = folder / "xrootd.cfg"
    config.write_text(
        f"all.export {export}\nall.adminpath {admin}\nall.pidpath {admin}\n"
        "xrd.allow host localhost\n"
    )
    port = _free_port()
    command = [binary, "-p", str(port), "-c", str(config), "-n", "loadertest"]
    if os.geteuid() == 0:
        command += ["-R", "nobody"]  # xrootd refuses to run as root
    log = folder / "xrootd.log"
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=folder)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert server.poll() is None, f"xrootd exited:\n{log.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"xrootd did not start:\n{log.read_text()}"
                time.sleep(0.1)
        yield f"root://127.0.0.1:{port}/", export
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


# XRootD's client crashed (segfault) in a pytest process that had TensorFlow loaded by other test
# modules, though it works in one that has not (main.py reads its files before importing
# TensorFlow). So the tests that use the server run in a child pytest without TensorFlow, started by
# tests/test_xrootd_isolated.py; the parent session leaves them out.
XROOTD_CHILD = "TRACK_DNN_XROOTD_CHILD"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(XROOTD_CHILD):
        return
    kept = [item for item in items if "xrootd_server" not in getattr(item, "fixturenames", ())]
    deselected = [item for item in items if item not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
