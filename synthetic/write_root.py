"""The ROOT writer: real ROOT in a child process (PyROOT must never be imported next to
TensorFlow) writes CMSSW's exact layout, std::vector<T> branches, either label convention.

This process saves the arrays of a file as an .npz and sends the child a job (a JSON line);
the child books the branches and fills the tree in C++ (write_root.cpp) straight from the
buffers, and answers with a line. One child writes many files, one behind the generation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.files import temporary_name
from synthetic.layout import (
    BEAMSPOT_BRANCHES,
    COMPRESSION_LEVELS,
    EVENT_BRANCHES,
    ROOT_ALGORITHM_CODES,
    TRACK_BRANCHES,
    VERTEX_BRANCHES,
)

CPP_SOURCE = Path(__file__).with_name("write_root.cpp")
ROOT_MISSING = (
    "the ROOT writer needs PyROOT, which could not be imported: install it with "
    "`pip install -r requirements.txt` (the `root` package), or write without ROOT with "
    "`--writer uproot --label trk_isTrue`"
)
ROOT_TYPE_CODES = {
    np.dtype(np.float32): "f",
    np.dtype(np.uint32): "I",
    np.dtype(np.int32): "i",
    np.dtype(np.uint16): "S",
    np.dtype(np.int16): "s",
    np.dtype(np.uint64): "L",
}


def root_columns(counts: np.ndarray, arrays: dict[str, np.ndarray], label: str) -> list[tuple]:
    """(branch name, shape, values, outer offsets, inner offsets) in CMSSW's booking order."""
    trk_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vtx_off = np.concatenate([[0], np.cumsum(arrays["vtx_counts"])]).astype(np.int64)
    sim_off = np.concatenate([[0], np.cumsum(arrays["simTrkIdx_counts"])]).astype(np.int64)
    columns = [(name, "e", arrays[name], None, None) for name in EVENT_BRANCHES]
    columns += [(name, "v", arrays[name], trk_off, None) for name in TRACK_BRANCHES]
    if label == "trk_isTrue":
        columns.append(("trk_isTrue", "v", arrays["trk_isTrue"], trk_off, None))
    else:
        columns.append(("trk_simTrkIdx", "n", arrays["simTrkIdx_flat"], trk_off, sim_off))
        columns.append(
            ("trk_simTrkShareFrac", "n", arrays["simTrkShareFrac_flat"], trk_off, sim_off)
        )
    columns += [(name, "v", arrays[name], vtx_off, None) for name in VERTEX_BRANCHES]
    columns += [(name, "e", arrays[name], None, None) for name in BEAMSPOT_BRANCHES]
    return columns


def dictionary_cache(root_version: str, root_installation: Path) -> Path:
    """The folder of the compiled nested-vector dictionary of one ROOT installation."""
    key = hashlib.sha1(str(Path(root_installation).resolve()).encode()).hexdigest()[:12]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "make_ntuples"
    return cache_root / f"root-{root_version}-{key}-nested-vector-dictionary"


def load_nested_vector_dictionary(ROOT) -> None:
    """Load the dictionary of std::vector<std::vector<int/float>>, compiling it the first time.

    ROOT from PyPI ships none, and TTree does not book such a branch without one (it prints an
    error and leaves the branch out). ACLiC compiles it with the system's C++ compiler, once:
    the library is cached in ~/.cache/make_ntuples (or $XDG_CACHE_HOME/make_ntuples), one per
    ROOT installation, because ACLiC links it against the libraries of the environment that
    built it (ROOT's, numpy's). A cached library that no longer loads is rebuilt.
    """
    names = ("vector<vector<int> >", "vector<vector<float> >")
    if ROOT.TClass.GetClass(names[0]).HasDictionary():
        return
    cache = dictionary_cache(ROOT.gROOT.GetVersion(), Path(ROOT.__file__).parent)
    cache_root = cache.parent
    libraries = sorted(cache.glob("*.so"))
    if libraries:
        ROOT.gInterpreter.AddIncludePath(str(cache))  # the library #includes its source
        if ROOT.gSystem.Load(str(libraries[0])) < 0:
            print(
                f"make_ntuples: the cached dictionary in {cache} does not load; rebuilding it",
                file=sys.stderr,
            )
            shutil.rmtree(cache, ignore_errors=True)
            libraries = []
    if not libraries:
        cache_root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=cache_root, prefix=".build-"))
        cwd = os.getcwd()
        os.chdir(build)  # ACLiC writes its sources and library into the working directory
        try:
            ROOT.gInterpreter.GenerateDictionary(";".join(names), "vector")
        finally:
            os.chdir(cwd)
        try:
            os.rename(build, cache)  # atomic: a concurrent build that finished first wins
        except OSError:
            shutil.rmtree(build, ignore_errors=True)
    for name in names:
        if not ROOT.TClass.GetClass(name).HasDictionary():
            raise RuntimeError(
                f"ROOT has no dictionary for {name}, needed for the trk_simTrkIdx branches, and "
                f"could not compile one into {cache} (ACLiC needs a C++ compiler: "
                "`apt-get install g++`); or write label trk_isTrue with --label trk_isTrue"
            )


def child_main() -> None:
    """Child process of the ROOT writer: reads jobs (JSON lines) on stdin, acks on stdout.

    Only this process imports ROOT. Its own stdout is redirected to stderr so that ROOT's
    messages cannot mix with the acknowledgements.
    """
    acks = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        import warnings

        # The PyPI build of ROOT warns that it is an alpha release, on every import.
        warnings.filterwarnings("ignore", message=r"\s*This distribution of ROOT is in alpha")
        import ROOT
    except ImportError as err:
        acks.write(json.dumps({"error": f"{ROOT_MISSING} ({err})"}) + "\n")
        return
    ROOT.gROOT.SetBatch(True)
    ROOT.gErrorIgnoreLevel = ROOT.kWarning  # no "Info in <ACLiC>" chatter, errors still shown
    ROOT.gInterpreter.Declare(CPP_SOURCE.read_text())
    for line in sys.stdin:
        job = json.loads(line)
        try:
            with np.load(job["npz"]) as npz:
                data = {k: np.ascontiguousarray(npz[k]) for k in npz.files}
            counts = data.pop("counts")
            if job["label"] == "trk_simTrkIdx":
                load_nested_vector_dictionary(ROOT)
            # `columns` holds every buffer alive while C++ reads it through raw addresses.
            columns = root_columns(counts, data, job["label"])

            def address(a):
                return 0 if a is None else a.ctypes.data

            names = ROOT.std.vector["std::string"]([c[0] for c in columns])
            kinds = ROOT.std.vector["std::string"](
                [c[1] + ROOT_TYPE_CODES[c[2].dtype] for c in columns]
            )
            pointers = [
                np.array([address(c[k]) for c in columns], dtype=np.uint64) for k in (2, 3, 4)
            ]
            compression = (
                ROOT_ALGORITHM_CODES[job["compression"]] * 100
                + COMPRESSION_LEVELS[job["compression"]]
            )
            ROOT.make_ntuples.write_tree(
                job["out"], compression, len(counts), names, kinds, *pointers
            )
            acks.write(json.dumps({"ok": job["out"]}) + "\n")
        except Exception as err:  # report and go on: the parent decides what to do
            acks.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")


def child_command() -> list[str]:
    """The command line of the ROOT writer child: this module's child_main."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
        "from synthetic import write_root; write_root.child_main()"
    )
    return [sys.executable, "-c", code]


class RootWriterProcess:
    """The ROOT writer child: one process for many files, PyROOT never in this process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def submit(self, npz: Path, out: Path, label: str, compression: str) -> None:
        job = {"npz": str(npz), "out": str(out), "label": label, "compression": compression}
        with contextlib.suppress(BrokenPipeError):  # the child is gone: wait() reports why
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()

    def wait(self) -> None:
        """Wait for the oldest submitted file; raises RuntimeError when it failed."""
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(
                f"the ROOT writer process ended unexpectedly (exit code {code}); "
                "see its messages above, or use --writer uproot --label trk_isTrue"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"ROOT writer: {reply['error']}")

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RootWriterProcess:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.process.kill()  # interrupted: do not let it finish a file nobody wants
        self.close()


def save_npz(path: Path, counts: np.ndarray, arrays: dict[str, np.ndarray]) -> Path:
    """Arrays for the ROOT child, uncompressed (writing them must cost little)."""
    npz = temporary_name(path, ".npz")
    with open(npz, "wb") as f:
        np.savez(f, counts=counts, **arrays)
    return npz
