"""Synthetic trackingNtuple files: the embedded sample of the project and a CLI tool.

    python make_ntuples.py --out data/synthetic/qcd --events 300 --process qcd --seed 1

The files have the layout that CMSSW's TrackingNtuple module (Validation/RecoTrack) writes:
TDirectory ``trackingNtuple``, TTree ``tree``, one entry per event, every ``trk_*`` branch with
its element type there, plus ``event``/``lumi``/``run``, ``vtx_*`` and ``bsp_*``. Two writers:

- ``uproot``: counter-based jagged branches (``ntrk`` + ``trk_pt`` as ``float[]``), fast, label
  ``trk_isTrue`` only (uproot cannot write ``std::vector<std::vector<int>>``);
- ``root``: real ROOT in a child process (PyROOT must never be imported next to TensorFlow), the
  exact CMSSW layout with ``std::vector<T>`` branches, either label convention.

The tracks come from ``generate_events`` of the ``synthetic`` package (its physics, stage by
stage, is described there and in README.md); this module writes them. ``generate_events``
returns ``(counts, arrays)``: tracks per event, and flat arrays of every branch of
``TRACK_BRANCHES`` plus ``trk_isTrue``, the simulation matches (``simTrkIdx_counts``,
``simTrkIdx_flat``, ``simTrkShareFrac_flat``), the event, beam-spot and vertex branches.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
from tqdm import tqdm

from synthetic import generate_events
from synthetic.layout import BEAMSPOT_BRANCHES, EVENT_BRANCHES, TRACK_BRANCHES, VERTEX_BRANCHES
from synthetic.tables import PROCESS_NAMES

__all__ = [
    "BEAMSPOT_BRANCHES",
    "EVENT_BRANCHES",
    "PROCESS_NAMES",
    "TRACK_BRANCHES",
    "VERTEX_BRANCHES",
    "generate_events",
    "generate_sample",
    "main",
    "write_ntuple",
]

TREE_DIR, TREE_NAME = "trackingNtuple", "tree"
LABELS = ("trk_isTrue", "trk_simTrkIdx")
WRITERS = ("auto", "uproot", "root")
# ROOT's default level of each algorithm (RCompressionSetting::EDefaults), for both writers.
COMPRESSION_LEVELS = {"ZLIB": 1, "LZMA": 7, "LZ4": 4, "ZSTD": 5}
ROOT_ALGORITHM_CODES = {"ZLIB": 1, "LZMA": 2, "LZ4": 4, "ZSTD": 5}

ROOT_MISSING = (
    "the ROOT writer needs PyROOT, which could not be imported: install it with "
    "`pip install -r requirements.txt` (the `root` package), or write without ROOT with "
    "`--writer uproot --label trk_isTrue`"
)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _check_options(label: str, compression: str, writer: str) -> str:
    """Validate the options; returns the concrete writer ("uproot" or "root")."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} (--label): choose one of {LABELS}")
    if compression not in COMPRESSION_LEVELS:
        raise ValueError(
            f"unknown compression {compression!r} (--compression): "
            f"choose one of {tuple(COMPRESSION_LEVELS)}"
        )
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r} (--writer): choose one of {WRITERS}")
    if writer == "auto":
        return "uproot" if label == "trk_isTrue" else "root"
    if writer == "uproot" and label == "trk_simTrkIdx":
        raise ValueError(
            "uproot cannot write the std::vector<std::vector<int>> branch trk_simTrkIdx: "
            "use --writer root (or auto) with --label trk_simTrkIdx, or --label trk_isTrue"
        )
    return writer


def _temporary_path(path: Path, suffix: str) -> Path:
    """A unique hidden name next to ``path`` (same disk, so the final rename is atomic).

    Not created here: the writer creates it with the usual permissions (mkstemp's are 0600).
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _write_uproot(path: Path, counts: np.ndarray, arrays: dict[str, np.ndarray], codec) -> None:
    """Counter-based jagged branches (ntrk + trk_*, nvtx + vtx_*), in chunks of ~100k tracks."""
    track_names = list(TRACK_BRANCHES) + ["trk_isTrue"]
    trk_off = np.concatenate([[0], np.cumsum(counts)])
    vtx_off = np.concatenate([[0], np.cumsum(arrays["vtx_counts"])])
    events = len(counts)
    # Whole events per basket, about 100k tracks each, so the baskets stay a few hundred kB.
    per_chunk = max(1, int(100_000 * events / max(int(counts.sum()), 1)))
    with uproot.recreate(path, compression=codec) as file:
        tree = None
        for start in range(0, max(events, 1), per_chunk):
            stop = min(start + per_chunk, events)
            t0, t1, v0, v1 = trk_off[start], trk_off[stop], vtx_off[start], vtx_off[stop]
            chunk = {name: arrays[name][start:stop] for name in EVENT_BRANCHES}
            # Record fields "trk"."pt" become the branches trk_pt with one counter ntrk.
            chunk["trk"] = ak.zip(
                {
                    name[4:]: ak.unflatten(arrays[name][t0:t1], counts[start:stop])
                    for name in track_names
                }
            )
            chunk["vtx"] = ak.zip(
                {
                    name[4:]: ak.unflatten(arrays[name][v0:v1], arrays["vtx_counts"][start:stop])
                    for name in VERTEX_BRANCHES
                }
            )
            chunk.update({name: arrays[name][start:stop] for name in BEAMSPOT_BRANCHES})
            if tree is None:
                types = {
                    k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in chunk.items()
                }
                tree = file.mktree(f"{TREE_DIR}/{TREE_NAME}", types)
            tree.extend(chunk)


# The C++ side of the ROOT writer: books the branches of the CMSSW layout in the given order and
# fills one entry per event straight from the flat numpy buffers (no Python loop per event).
_ROOT_WRITER_CPP = r"""
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#include "TFile.h"
#include "TTree.h"

namespace make_ntuples {

struct Column {
  virtual ~Column() = default;
  virtual void load(Long64_t event) = 0;
};

// One value per event (event, lumi, run, bsp_*).
template <typename T>
struct Scalar : Column {
  const T* src;
  T value{};
  Scalar(TTree* tree, const char* name, const void* data, const int64_t*, const int64_t*)
      : src(static_cast<const T*>(data)) { tree->Branch(name, &value); }
  void load(Long64_t e) override { value = src[e]; }
};

// std::vector<T>: entries offsets[e] .. offsets[e+1] of the flat array.
template <typename T>
struct Vector : Column {
  const T* src;
  const int64_t* offsets;
  std::vector<T> value;
  Vector(TTree* tree, const char* name, const void* data, const int64_t* outer, const int64_t*)
      : src(static_cast<const T*>(data)), offsets(outer) { tree->Branch(name, &value); }
  void load(Long64_t e) override { value.assign(src + offsets[e], src + offsets[e + 1]); }
};

// std::vector<std::vector<T>>: per event its tracks, per track inner[i] .. inner[i+1].
template <typename T>
struct Nested : Column {
  const T* src;
  const int64_t* offsets;
  const int64_t* inner;
  std::vector<std::vector<T>> value;
  Nested(TTree* tree, const char* name, const void* data, const int64_t* outer, const int64_t* in)
      : src(static_cast<const T*>(data)), offsets(outer), inner(in) { tree->Branch(name, &value); }
  void load(Long64_t e) override {
    value.resize(offsets[e + 1] - offsets[e]);
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i)
      value[i - offsets[e]].assign(src + inner[i], src + inner[i + 1]);
  }
};

template <template <typename> class C>
std::unique_ptr<Column> make(char type, TTree* tree, const std::string& name, const void* data,
                             const int64_t* outer, const int64_t* inner) {
  const char* n = name.c_str();
  switch (type) {
    case 'f': return std::make_unique<C<Float_t>>(tree, n, data, outer, inner);
    case 'I': return std::make_unique<C<UInt_t>>(tree, n, data, outer, inner);
    case 'i': return std::make_unique<C<Int_t>>(tree, n, data, outer, inner);
    case 'S': return std::make_unique<C<UShort_t>>(tree, n, data, outer, inner);
    case 's': return std::make_unique<C<Short_t>>(tree, n, data, outer, inner);
    case 'L': return std::make_unique<C<ULong64_t>>(tree, n, data, outer, inner);
  }
  throw std::runtime_error("make_ntuples: unknown element type for branch " + name);
}

// kinds[i] = shape ('e' scalar, 'v' vector, 'n' nested) + element type character above.
void write_tree(const std::string& path, int compression, Long64_t events,
                const std::vector<std::string>& names, const std::vector<std::string>& kinds,
                const uint64_t* data, const uint64_t* outer, const uint64_t* inner) {
  std::unique_ptr<TFile> file(TFile::Open(path.c_str(), "RECREATE", "", compression));
  if (!file || file->IsZombie()) throw std::runtime_error("make_ntuples: cannot create " + path);
  TDirectory* dir = file->mkdir("trackingNtuple");
  dir->cd();
  TTree* tree = new TTree("tree", "tree");  // owned by dir
  std::vector<std::unique_ptr<Column>> columns;
  for (size_t i = 0; i < names.size(); ++i) {
    auto* d = reinterpret_cast<const void*>(data[i]);
    auto* o = reinterpret_cast<const int64_t*>(outer[i]);
    auto* n = reinterpret_cast<const int64_t*>(inner[i]);
    const char shape = kinds[i][0], type = kinds[i][1];
    if (shape == 'e') columns.push_back(make<Scalar>(type, tree, names[i], d, o, n));
    else if (shape == 'v') columns.push_back(make<Vector>(type, tree, names[i], d, o, n));
    else columns.push_back(make<Nested>(type, tree, names[i], d, o, n));
  }
  for (Long64_t e = 0; e < events; ++e) {
    for (auto& c : columns) c->load(e);
    tree->Fill();
  }
  dir->cd();
  tree->Write();
  file->Close();
}

}  // namespace make_ntuples
"""
_ROOT_TYPE_CODES = {
    np.dtype(np.float32): "f",
    np.dtype(np.uint32): "I",
    np.dtype(np.int32): "i",
    np.dtype(np.uint16): "S",
    np.dtype(np.int16): "s",
    np.dtype(np.uint64): "L",
}


def _root_columns(counts: np.ndarray, arrays: dict[str, np.ndarray], label: str) -> list[tuple]:
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


def _load_nested_vector_dictionary(ROOT) -> None:
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


def _root_child_main() -> None:
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
    ROOT.gInterpreter.Declare(_ROOT_WRITER_CPP)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            with np.load(job["npz"]) as npz:
                data = {k: np.ascontiguousarray(npz[k]) for k in npz.files}
            counts = data.pop("counts")
            if job["label"] == "trk_simTrkIdx":
                _load_nested_vector_dictionary(ROOT)
            # `columns` holds every buffer alive while C++ reads it through raw addresses.
            columns = _root_columns(counts, data, job["label"])

            def address(a):
                return 0 if a is None else a.ctypes.data

            names = ROOT.std.vector["std::string"]([c[0] for c in columns])
            kinds = ROOT.std.vector["std::string"](
                [c[1] + _ROOT_TYPE_CODES[c[2].dtype] for c in columns]
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


def _root_child_command() -> list[str]:
    """The command line of the ROOT writer child: this module's _root_child_main."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import make_ntuples; make_ntuples._root_child_main()"
    )
    return [sys.executable, "-c", code]


class _RootWriterProcess:
    """The ROOT writer child: one process for many files, PyROOT never in this process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            _root_child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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

    def __enter__(self) -> _RootWriterProcess:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.process.kill()  # interrupted: do not let it finish a file nobody wants
        self.close()


def _save_npz(path: Path, counts: np.ndarray, arrays: dict[str, np.ndarray]) -> Path:
    """Arrays for the ROOT child, uncompressed (writing them must cost little)."""
    npz = _temporary_path(path, ".npz")
    with open(npz, "wb") as f:
        np.savez(f, counts=counts, **arrays)
    return npz


def write_ntuple(
    path: str | os.PathLike,
    counts: np.ndarray,
    arrays: dict[str, np.ndarray],
    *,
    label: str = "trk_isTrue",
    compression: str = "ZLIB",
    writer: str = "auto",
) -> Path:
    """Write one trackingNtuple file from ``generate_events`` output; returns its path.

    The file is written under a temporary name in the same folder and renamed at the end, so
    a half-written file never exists under ``path`` (also on errors and Ctrl-C).
    """
    writer = _check_options(label, compression, writer)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist (--out)")
    tmp = _temporary_path(path, ".tmp")
    npz = None
    try:
        if writer == "uproot":
            codec = getattr(uproot, compression)(COMPRESSION_LEVELS[compression])
            _write_uproot(tmp, counts, arrays, codec)
        else:
            npz = _save_npz(path, counts, arrays)
            with _RootWriterProcess() as child:
                child.submit(npz, tmp, label, compression)
                child.wait()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if npz is not None:
            npz.unlink(missing_ok=True)
    return path


def generate_sample(
    out_dir: str | os.PathLike,
    process: str,
    events: int,
    seed: int,
    label: str = "trk_isTrue",
    events_per_file: int = 100,
    compression: str = "ZLIB",
    writer: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Generate a sample as files ``<process>_<seed>_<k>.root`` in ``out_dir``; returns them.

    File k is generated from (seed, k): deterministic, and different from the other files.
    With the ROOT writer one child process writes file k while this one generates file k+1.
    """
    writer = _check_options(label, compression, writer)
    if events < 1:
        raise ValueError(f"--events must be >= 1, got {events}")
    if events_per_file < 1:
        raise ValueError(f"--events-per-file must be >= 1, got {events_per_file}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, events, events_per_file))
    paths = [out_dir / f"{process}_{seed}_{k}.root" for k in range(len(starts))]
    start_time, tracks = time.perf_counter(), 0
    bar = tqdm(total=events, unit="evt", desc=f"{process} -> {out_dir}", disable=not progress)
    pending: list[tuple[Path, Path, Path]] = []  # (final, temporary, npz) submitted to ROOT
    child = _RootWriterProcess() if writer == "root" else None
    try:
        for k, (start, path) in enumerate(zip(starts, paths, strict=True)):
            n_events = min(events_per_file, events - start)
            counts, arrays = generate_events(
                process, n_events, seed, file_index=k, first_event=start + 1
            )
            tracks += int(counts.sum())
            if child is None:
                write_ntuple(
                    path, counts, arrays, label=label, compression=compression, writer=writer
                )
            else:
                tmp, npz = _temporary_path(path, ".tmp"), _save_npz(path, counts, arrays)
                pending.append((path, tmp, npz))
                child.submit(npz, tmp, label, compression)
                if len(pending) > 1:  # keep one file in flight while generating the next
                    _finish(child, pending.pop(0))
            bar.update(n_events)
        while pending:
            _finish(child, pending.pop(0))
    finally:
        bar.close()
        if child is not None:
            if pending:
                child.process.kill()
            child.close()
        for _, tmp, npz in pending:
            tmp.unlink(missing_ok=True)
            npz.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start_time
    if progress:
        print(
            f"{process}: {events} events, {tracks} tracks in {len(paths)} files in {out_dir} "
            f"({tracks / max(elapsed, 1e-9):,.0f} tracks/s, {writer} writer, {compression})"
        )
    return paths


def _finish(child: _RootWriterProcess, job: tuple[Path, Path, Path]) -> None:
    """Wait for one file of the ROOT child and move it to its final name."""
    path, tmp, npz = job
    try:
        child.wait()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        npz.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--process", required=True, choices=PROCESS_NAMES)
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    parser.add_argument(
        "--label",
        default="trk_isTrue",
        choices=LABELS,
        help="label convention: trk_isTrue branch, or trk_simTrkIdx (needs ROOT)",
    )
    parser.add_argument("--compression", default="ZLIB", choices=tuple(COMPRESSION_LEVELS))
    parser.add_argument("--events-per-file", type=int, default=100)
    parser.add_argument(
        "--writer",
        default="auto",
        choices=WRITERS,
        help="auto: uproot for trk_isTrue, root for trk_simTrkIdx",
    )
    args = parser.parse_args(argv)
    try:
        generate_sample(
            args.out,
            args.process,
            args.events,
            args.seed,
            label=args.label,
            events_per_file=args.events_per_file,
            compression=args.compression,
            writer=args.writer,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.exit(2, f"make_ntuples.py: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "make_ntuples.py: interrupted (no partial file was left)\n")


if __name__ == "__main__":
    main()
