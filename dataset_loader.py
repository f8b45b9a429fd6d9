"""Read CMSSW trackingNtuple ROOT files into one pandas DataFrame with one row per track.

    loader = DatasetLoader(max_workers=4, cache_dir="data/cache")
    df = loader.load_samples({"qcd": "data/qcd/", "ttbar": "root://eosuser.cern.ch//eos/.../x.root"})

Columns, in this order (4 bytes per feature and extra branch, 7 bytes more per track):
    the features (config.features)  float32, named as their branches
    the algo branch (trk_originalAlgo)  uint8
    trk_isTrue                      int8 0/1, from whichever label convention the file uses
    the extra branches (trk_mva)    float32
    event_index                     uint32, unique per event across everything one call loads
    sample                          categorical (int8 codes), the sample names in the order given

How a load runs:
1. Scan: each file is opened and checked (tree, branches, label convention), and its tracks are
   counted per cluster from the basket headers of the algo branch, without decompressing anything.
2. The parent sizes every column once, as one .npy file each: in the cache entry being written,
   or without a cache in /dev/shm (memory; the temporary folder when /dev/shm is missing or full).
3. Decode: the work is split into entry ranges on cluster boundaries, so one large file also keeps
   every worker busy. A worker reads and decompresses one basket at a time (its own ROOT basket
   reading, with libdeflate for ZLIB when the `deflate` package is installed), converts it to the
   final dtype and writes it at its rows of the column files with pwrite: no per-file frames, no
   concatenation, nothing shipped through pipes, no float64 copy.
4. The parent memory-maps the columns (copy-on-write: changing the DataFrame never changes the
   files) and wraps them in the DataFrame without copying.
Workers get the entry ranges of the files they already have open (one TTree parse per file and
worker); they start in the background, and this process scans and decodes until they are up.

The cache (cache_dir): one entry per set of inputs, `<cache_dir>/tracks-<key>/`, holding the
columns as plain .npy files (numpy.load(..., mmap_mode="r") reads them anywhere) and
manifest.json. The key covers the files (and their samples), the tree path, the branches, the
label rule and LOADER_VERSION; the manifest also records each file's size and modification time
and an xxh3-64 checksum of every column slice. The next load of the same inputs maps the columns
and checks sizes and checksums (at memory speed): nothing is decoded. A changed input file, a
truncated or corrupt column, or a missing manifest is reported with a CacheWarning that says why,
and the entry is rebuilt. Entries are written under a temporary name and renamed when complete,
and never modified in place: a DataFrame keeps its data when its entry is replaced or deleted
(do not edit the files of an entry in place while it is in use). On a network filesystem (NFS,
AFS, FUSE mounts such as EOS) the columns are read into memory instead of mapped. Old entries
are not deleted automatically: the cache folder can be removed at any time.

Remote files: root:// URLs are read through fsspec-xrootd (pip install fsspec-xrootd; it needs
the XRootD Python bindings, PyPI package `xrootd`), with one vector read per decode task. A
cached remote file is keyed by the size and modification time the server reports.

A feature that is a derived input of CMSSW's (cmssw.classifiers.DERIVED_INPUTS, e.g.
trk_dzClosestPVNorm: trk_dzClosestPV clamped to [-0.2, 0.2]) is read from its branch and
computed as CMSSW computes it.

The label: a file with `trk_isTrue` uses it; otherwise a track is true when its `trk_simTrkIdx`
(std::vector<std::vector<int>>) entry is non-empty. uproot only reads that branch as generic
objects, so we read its raw bytes as a flat int32 array per event instead and walk the
[size, indices...] records to get each track's number of matches (see _inner_sizes).

Workers are plain Python processes (loader/workers.py): they never re-run the caller's
__main__, so the loader works from a script without an `if __name__ == "__main__":` guard,
from `python -c`, from stdin, from Jupyter and next to TensorFlow. Each worker is one busy
thread: baskets are read and decompressed in the calling thread (uproot too is given
TrivialExecutors), and numpy's element-wise operations are single-threaded (BLAS is not used),
so N workers use N cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import math
import os
import queue
import secrets
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import awkward as ak
import numpy as np
import uproot
import xxhash
from uproot.models.TBasket import Model_TBasket
from uproot.source.cursor import Cursor

from cmssw.classifiers import DERIVED_INPUTS
from cmssw.ntuple import TREE_PATH
from loader.workers import Call, Runner, WorkerPool, run_here
from pipeline.console import progress

if TYPE_CHECKING:  # pandas is imported when the DataFrame is built: workers never need it
    import pandas as pd

try:  # libdeflate inflates ZLIB baskets about 1.8x faster than zlib; optional
    import deflate as _libdeflate
except ImportError:
    _libdeflate = None

LABEL_COLUMN = "trk_isTrue"
LABEL_CHOICES = ("auto", "trk_isTrue", "trk_simTrkIdx")
READERS = ("own", "uproot")
# Part of the cache key: bump it whenever the decoded values or the cache layout change.
LOADER_VERSION = 2
TASK_BYTES = 32_000_000  # uncompressed branch data of one decode task, at most
TASKS_PER_WORKER = 16  # smaller tasks when needed, so that every worker stays busy to the end

_CACHE_FORMAT = "trackloader-npy-1"
_OPEN_FILES = 16  # ROOT files a process keeps open between tasks (~1-6 MB each)
_HEADER_BYTES = 1024  # read for a basket's key and TBasket header (the key holds three names)
_STAGING = "trackloader-"  # prefix of the folders columns are filled in
_SHM = "/dev/shm"

# A path, glob, folder or URL, or a list of them.
Paths = str | os.PathLike | Sequence[str | os.PathLike]

_BAD_FILE_FIX = (
    "Fix: re-create or re-copy the file, remove it from the sample, "
    "or set skip_bad_files = True in config.py to go on without it."
)
# What uproot reports for CMSSW's std::vector<std::vector<int>> branches...
_VECTOR_VECTOR_INT = uproot.AsObjects(
    uproot.containers.AsVector(True, uproot.containers.AsVector(False, np.dtype(">i4")))
)
# ...and the same bytes seen as plain int32 words: after the 10-byte header (byte count, version,
# number of tracks) each track is its number of matches followed by that many indices.
_VECTOR_VECTOR_INT_WORDS = uproot.AsJagged(uproot.AsDtype(">i4"), header_bytes=10)


class NtupleError(Exception):
    """A file or path that cannot be loaded; the message names it, the problem and the fix."""


class ColumnWriteError(RuntimeError):
    """The decoded columns cannot be written (a full disk or /dev/shm); says where."""


class CacheWarning(UserWarning):
    """A cache entry that cannot be used (stale, truncated, corrupt) or written; says why."""


@dataclass
class FileScan:
    """What the scan of one file finds.

    `boundaries` are the entries where a decode task may start or stop (cluster boundaries common
    to every branch read, from 0 to num_entries); `tracks` the tracks between consecutive ones.
    """

    num_entries: int
    label_branch: str
    boundaries: np.ndarray
    tracks: np.ndarray
    bytes_per_entry: float  # uncompressed bytes of the branches read, per entry

    @property
    def num_tracks(self) -> int:
        return int(self.tracks.sum())


@dataclass(frozen=True)
class Task:
    """Entries [entry_start, entry_stop) of one file, decoded into rows [row_start, row_stop)."""

    file: int  # index in the call's list of files
    path: str
    label_branch: str
    entry_start: int
    entry_stop: int
    row_start: int
    row_stop: int
    event_offset: int  # added to the entry number to make event_index
    sample_code: int


@dataclass(frozen=True)
class Columns:
    """The .npy files of the columns: their folder, length, (name, dtype)s and the byte offset
    of the data in each file (after the .npy header)."""

    directory: str
    length: int
    dtypes: tuple[tuple[str, str], ...]
    offsets: tuple[int, ...] = ()

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name + ".npy")


class DatasetLoader:
    """Loads trackingNtuple files into a DataFrame; see the module docstring for the columns."""

    def __init__(
        self,
        max_workers: int = 2,
        tree_path: str = TREE_PATH,
        features: Sequence[str] | None = None,
        algo_branch: str = "trk_originalAlgo",
        label: str = "auto",
        extra_branches: Sequence[str] = ("trk_mva",),
        skip_bad_files: bool = False,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        reader: str = "own",
    ) -> None:
        """features=None takes config.features; cache_dir=None loads without a cache;
        progress=False hides the progress bars and the cache messages. reader="uproot" reads
        every basket through uproot's own reading, ZLIB inflated by libdeflate (the
        comparison benchmarks/bench_loader.py makes with the loader's own basket reading)."""
        if reader not in READERS:
            raise ValueError(f"reader = {reader!r}: give one of {READERS}")
        self.reader = reader
        if label not in LABEL_CHOICES:
            raise ValueError(
                f"label = {label!r}: the `label` setting must be one of {LABEL_CHOICES}"
            )
        if features is None:
            import config  # only here, so the loader works without config.py when given features

            features = config.features
        self.max_workers = max(1, int(max_workers))
        self.tree_path = tree_path
        self.features = list(dict.fromkeys(features))
        self.algo_branch = algo_branch
        reserved = {algo_branch, LABEL_COLUMN, "event_index", "sample"}
        clashes = [name for name in self.features if name in reserved]
        if clashes:
            raise ValueError(
                f"features {clashes}: these are columns of their own (algo branch, label, "
                "event_index, sample); remove them from `features` in config.py"
            )
        self.label = label
        # An extra branch that already is a column would be a duplicate column.
        taken = {*self.features, *reserved}
        self.extra_branches = [b for b in dict.fromkeys(extra_branches) if b not in taken]
        self.skip_bad_files = skip_bad_files
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.progress = progress
        self.skipped_files: dict[str, str] = {}  # of the last call: path -> why it was skipped
        self.num_files = 0  # files the last call tried to read
        # Of the last call: "source" ("cache" or "ntuples"), "cache_entry", "tracks", "seconds".
        self.last_load: dict[str, Any] = {}

    def load_into_dataframe(self, paths: Paths, sample: str = "") -> pd.DataFrame:
        """Load the files of one sample: a file, a glob, a folder (its *.root files) or a list."""
        return self.load_samples({sample: paths})

    def load_samples(self, samples: Mapping[str, Paths]) -> pd.DataFrame:
        """Load several named samples with one pool of workers; adds the `sample` column."""
        start = time.perf_counter()
        if not samples:
            raise ValueError("no samples given")
        if len(samples) > np.iinfo(np.int8).max:  # the codes of the `sample` column are int8
            raise ValueError(f"{len(samples)} samples: at most 127 can be loaded at once")
        files: list[str] = []
        file_sample: list[int] = []
        for code, (sample, sample_paths) in enumerate(samples.items()):
            sample_files = expand_paths(sample_paths)
            if not sample_files:
                raise ValueError(f"sample {sample!r}: no path given")
            files += sample_files
            file_sample += [code] * len(sample_files)
        sample_names = list(samples)
        self.skipped_files = {}
        self.num_files = len(files)
        self.last_load = {"source": "ntuples", "cache_entry": None}

        entry = None
        if self.cache_dir is not None:
            identity = self._identity(files, file_sample, sample_names)
            entry = CacheEntry(self.cache_dir, identity, files)
            cached = entry.read(self.skip_bad_files)
            if cached is not None:
                arrays, manifest = cached
                self.skipped_files = dict(manifest["skipped_files"])
                self._warn_skipped(len(files))
                seconds = time.perf_counter() - start
                tracks = int(manifest["num_tracks"])
                self.last_load.update(source="cache", cache_entry=str(entry.path))
                self.last_load.update(tracks=tracks, seconds=seconds)
                self._say(f"{tracks:,} tracks from the cache {entry.path} in {seconds:.2f} s")
                return _dataframe(arrays, sample_names)

        arrays = self._decode(files, file_sample, entry)
        self.last_load.update(
            tracks=len(arrays["event_index"]), seconds=time.perf_counter() - start
        )
        return _dataframe(arrays, sample_names)

    # --- decoding ----------------------------------------------------------------------------

    def _decode(
        self, files: list[str], file_sample: list[int], entry: CacheEntry | None
    ) -> dict[str, np.ndarray]:
        """Scan, size the columns, decode every entry range into them; returns them mapped."""
        options = self._read_options()
        # Started at once: this process scans and decodes until the first worker is up.
        pool = WorkerPool(self.max_workers) if self.max_workers > 1 else None
        run = pool.run if pool is not None else run_here
        columns: Columns | None = None
        installed = succeeded = False
        phases: dict[str, float] = {}
        clock = time.perf_counter()
        try:
            scans = self._scan(files, options, run)
            tasks, num_events, file_rows = self._plan(files, file_sample, scans)
            length = tasks[-1].row_stop if tasks else 0
            dtypes = tuple((name, np.dtype(dtype).str) for name, dtype in self._dtypes().items())
            nbytes = length * sum(np.dtype(dtype).itemsize for _, dtype in dtypes)
            folder = entry.staging_folder(nbytes) if entry is not None else None
            columns = _create_columns(folder or _scratch_folder(nbytes), length, dtypes)
            phases["scan"], clock = time.perf_counter() - clock, time.perf_counter()

            digests = self._run_tasks(tasks, options, columns, run)
            phases["decode"], clock = time.perf_counter() - clock, time.perf_counter()
            failed = {task.file for task, digest in zip(tasks, digests, strict=True) if not digest}
            if failed:  # files that broke while decoding (skip_bad_files=True): drop their rows
                forget_open_files()  # no open file descriptors on the columns being cut
                dropped = [file_rows[index] for index in sorted(failed)]
                columns = _drop_rows(columns, dropped)
                splits, column_digests = _digest_columns(columns)
            else:
                splits = [[task.row_start, task.row_stop] for task in tasks]
                column_digests = {
                    name: [digest["digests"][name] for digest in digests] for name, _ in dtypes
                }
            self.last_load["processes"] = _per_process(digests, tasks)
            self._warn_skipped(len(files))
            if folder is not None:
                manifest = {
                    "format": _CACHE_FORMAT,
                    "identity": entry.identity,
                    "files": entry.states,
                    "num_tracks": columns.length,
                    "num_events": num_events,
                    "column_bytes": {
                        name: os.path.getsize(columns.path(name)) for name, _ in dtypes
                    },
                    "row_splits": splits,
                    "xxh3_64": column_digests,
                    "skipped_files": self.skipped_files,
                    "decode_seconds": round(phases["decode"], 3),
                    "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
                installed = entry.install(columns.directory, manifest)
                if installed:
                    columns = dataclasses.replace(columns, directory=str(entry.path))
                    self.last_load["cache_entry"] = str(entry.path)
            arrays = _map_columns(columns)
            phases["finish"] = time.perf_counter() - clock
            self.last_load["phases"] = phases
            succeeded = True
            return arrays
        finally:
            if pool is not None:
                pool.close(wait=succeeded)
            forget_open_files()
            if columns is not None and not installed:
                # Mapped columns stay valid after their files are removed.
                shutil.rmtree(columns.directory, ignore_errors=True)

    def _scan(self, files: list[str], options: dict, run: Runner) -> list[FileScan | None]:
        scans: list[FileScan | None] = [None] * len(files)
        calls = [Call(scan_file, (path, options), path) for path in files]
        with progress(
            total=len(files),
            unit="file",
            desc="scanning ntuples",
            disable=not self.progress or len(files) < 2,
        ) as bar:
            for index, result in run(calls):
                try:
                    scans[index] = result()
                except NtupleError as err:
                    self._bad_file(files[index], err)
                bar.update()
        if all(scan is None for scan in scans):
            first = next(iter(self.skipped_files.values()))
            raise NtupleError(
                f"all {len(files)} files are bad, nothing to load. First one: {first}"
            )
        return scans

    def _plan(
        self, files: list[str], file_sample: list[int], scans: list[FileScan | None]
    ) -> tuple[list[Task], int, dict[int, tuple[int, int]]]:
        """Decode tasks of about equal size on cluster boundaries; rows and event numbers."""
        kept = [index for index, scan in enumerate(scans) if scan is not None]
        num_events = sum(scans[index].num_entries for index in kept)
        if num_events > np.iinfo(np.uint32).max:
            raise NtupleError(
                f"{num_events:,} events in one call do not fit the uint32 event_index. "
                "Fix: load fewer files at once."
            )
        total_bytes = sum(scans[i].bytes_per_entry * scans[i].num_entries for i in kept)
        per_task = max(1.0, min(TASK_BYTES, total_bytes / (self.max_workers * TASKS_PER_WORKER)))
        tasks: list[Task] = []
        file_rows: dict[int, tuple[int, int]] = {}
        row = event = 0
        for index in kept:
            scan = scans[index]
            first_row = row
            ends = np.cumsum(scan.tracks)
            bounds = scan.boundaries
            start = 0  # index into bounds
            for stop in range(1, len(bounds)):
                size = (bounds[stop] - bounds[start]) * scan.bytes_per_entry
                if size < per_task and stop < len(bounds) - 1:
                    continue
                tracks = int(ends[stop - 1] - (ends[start - 1] if start else 0))
                if tracks:  # a range without tracks has nothing to write
                    tasks.append(
                        Task(
                            file=index,
                            path=files[index],
                            label_branch=scan.label_branch,
                            entry_start=int(bounds[start]),
                            entry_stop=int(bounds[stop]),
                            row_start=row,
                            row_stop=row + tracks,
                            event_offset=event,
                            sample_code=file_sample[index],
                        )
                    )
                row += tracks
                start = stop
            file_rows[index] = (first_row, row)
            event += scan.num_entries
        return tasks, num_events, file_rows

    def _run_tasks(
        self, tasks: list[Task], options: dict, columns: Columns, run: Runner
    ) -> list[dict[str, Any] | None]:
        """Run the decode tasks; what decode_task returns, None for tasks of skipped files."""
        digests: list[dict[str, Any] | None] = [None] * len(tasks)
        failed: set[int] = set()
        files = len({task.file for task in tasks})
        workers = self.max_workers if len(tasks) > 1 else 1
        with progress(
            total=columns.length,
            unit="track",
            unit_scale=True,
            desc=f"decoding {files} file{'s' * (files != 1)}, {workers} "
            f"worker{'s' * (workers != 1)}",
            disable=not self.progress,
        ) as bar:
            calls = [Call(decode_task, (task, options, columns), task.path) for task in tasks]
            for index, result in run(calls):
                task = tasks[index]
                try:
                    digests[index] = result()
                except NtupleError as err:
                    if task.file not in failed:
                        failed.add(task.file)
                        self._bad_file(task.path, err)
                bar.update(task.row_stop - task.row_start)
        return digests

    def _bad_file(self, path: str, err: NtupleError) -> None:
        if not self.skip_bad_files:
            raise err
        warnings.warn(f"skipping bad file: {err}", stacklevel=4)
        self.skipped_files[path] = str(err)

    def _warn_skipped(self, num_files: int) -> None:
        if self.skipped_files:
            warnings.warn(
                f"skipped {len(self.skipped_files)} of {num_files} files "
                f"(skip_bad_files=True): {', '.join(self.skipped_files)}",
                stacklevel=3,
            )

    def _say(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr)

    def _read_options(self) -> dict:
        return {
            "tree_path": self.tree_path,
            "features": self.features,
            "algo_branch": self.algo_branch,
            "label": self.label,
            "extra_branches": self.extra_branches,
            "reader": self.reader,
        }

    def _dtypes(self) -> dict[str, type]:
        return {
            **{name: np.float32 for name in self.features},
            self.algo_branch: np.uint8,
            LABEL_COLUMN: np.int8,
            **{name: np.float32 for name in self.extra_branches},
            "event_index": np.uint32,
            "sample": np.int8,  # the codes of the categorical column
        }

    def _identity(self, files: list[str], file_sample: list[int], samples: list[str]) -> dict:
        """What the cache key covers, besides each file's size and modification time."""
        return {
            "loader_version": LOADER_VERSION,
            "tree_path": self.tree_path,
            "features": self.features,
            "algo_branch": self.algo_branch,
            "label": self.label,
            "extra_branches": self.extra_branches,
            "columns": [[name, np.dtype(dtype).str] for name, dtype in self._dtypes().items()],
            "samples": samples,
            "files": [
                [_absolute(path), code] for path, code in zip(files, file_sample, strict=True)
            ],
        }


def _per_process(results: list[dict | None], tasks: list[Task]) -> dict[str, dict]:
    """Tasks, tracks, wall and CPU seconds, files opened while decoding, per process ("parent":
    this one)."""
    processes: dict[str, dict] = {}
    for result, task in zip(results, tasks, strict=True):
        if result:
            name = "parent" if result["pid"] == os.getpid() else str(result["pid"])
            entry = processes.setdefault(
                name, dict.fromkeys(["tasks", "tracks", "seconds", "cpu", "opened"], 0)
            )
            entry["tasks"] += 1
            entry["tracks"] += task.row_stop - task.row_start
            entry["seconds"] += result["seconds"]
            entry["cpu"] += result["cpu"]
            entry["opened"] += result["opened"]
    return processes


def _dataframe(arrays: dict[str, np.ndarray], sample_names: list[str]) -> pd.DataFrame:
    """The columns as a DataFrame, without copying them."""
    import pandas as pd

    columns = dict(arrays)
    # Our own codes, known to be in range: validate=False keeps them instead of copying.
    columns["sample"] = pd.Categorical.from_codes(
        columns.pop("sample"), categories=sample_names, validate=False
    )
    return pd.DataFrame(columns, copy=False)


# --- paths -------------------------------------------------------------------------------------


def expand_paths(paths: Paths) -> list[str]:
    """Files named by a path, glob, folder or URL (or a list of them), in order, without repeats.

    Globs and folders are sorted. In URLs (root://...) they need fsspec's filesystem for the
    protocol (fsspec-xrootd for root://); a URL ending in .root is passed to uproot as it is.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[str] = []
    for item in map(os.fspath, items):
        is_pattern = any(char in item for char in "*?[")
        if "://" in item:
            if not is_pattern and item.endswith(".root"):
                files.append(item)
                continue
            found = _list_url(item, is_pattern)
        elif is_pattern:
            found = sorted(glob.glob(item, recursive=True))
        elif os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(glob.escape(item), "*.root")))
        else:
            files.append(item)  # a missing file is reported by the scan, as a bad file
            continue
        if not found:
            kind = "pattern" if is_pattern else "folder"
            raise NtupleError(
                f"{item}: no .root file matches this {kind}. Fix: check the path in `samples` "
                "(config.py); folders are searched for *.root (not recursively), patterns follow "
                "Python's glob (** for subfolders)."
            )
        files += found
    return list(dict.fromkeys(files))


def check_paths(paths: Paths, where: str) -> list[str]:
    """The files of a sample, each local one checked to exist: for a message naming the setting
    before anything is loaded. URLs are checked when they are read."""
    try:
        files = expand_paths(paths)
    except NtupleError as err:
        raise NtupleError(f"{where}: {err}") from None
    if not files:
        raise NtupleError(f"{where}: no path given. Fix: name the sample's files in `samples`.")
    for path in files:
        if "://" not in path and not os.path.isfile(path):
            raise NtupleError(
                f"{where}: {path}: no such file. Fix: check the path in `samples` (config.py)."
            )
    return files


def _list_url(url: str, is_pattern: bool) -> list[str]:
    """The .root files a URL pattern or folder names, listed with fsspec."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        found = fs.glob(path if is_pattern else path.rstrip("/") + "/*.root")
    except (ImportError, ValueError, OSError) as err:
        raise NtupleError(
            f"{url}: cannot list the files of this URL ({err}). Fix: install the fsspec "
            "filesystem for it (pip install fsspec-xrootd for root://), or list the files "
            "explicitly, each URL ending in .root."
        ) from None
    return sorted(fs.unstrip_protocol(p) for p in found)


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


# --- worker side: opening, scanning, decoding --------------------------------------------------

# Per process: the ROOT files open between tasks ((path, tree path) -> (uproot file, tree, file
# descriptor of a local file or None)), the column files of the current load (folder -> name ->
# file descriptor) and reusable conversion buffers (dtype -> array).
_OPEN: OrderedDict[tuple[str, str], tuple[Any, Any, int | None]] = OrderedDict()
_COLUMN_FILES: dict[str, dict[str, int]] = {}
_BUFFERS: dict[np.dtype, np.ndarray] = {}
_OPENED = [0]  # files opened by this process, for last_load["processes"]


def _open_tree(path: str, tree_path: str):
    """(file, tree, descriptor) of a ROOT file, kept open for the next tasks of this process."""
    key = (path, tree_path)
    if key in _OPEN:
        _OPEN.move_to_end(key)
        return _OPEN[key]
    options: dict[str, Any] = {
        "array_cache": None,
        # Decompress in the calling thread: N workers are N busy threads, not N x cores.
        "decompression_executor": uproot.source.futures.TrivialExecutor(),
        "interpretation_executor": uproot.source.futures.TrivialExecutor(),
    }
    if "://" not in path:
        _check_local_file(path)
        # pread into buffers: memory-mapping would count the whole file in this process's RSS.
        options.update(handler=uproot.source.file.MultithreadedFileSource, num_workers=1)
    directory = uproot.open(path, **options)
    _OPENED[0] += 1
    try:
        tree = _get_tree(directory, path, tree_path)
    except BaseException:
        directory.close()
        raise
    # Baskets of a local file are read with os.pread: less Python per basket than uproot's
    # sources (its chunks, futures and reader thread).
    descriptor = os.open(path, os.O_RDONLY) if "://" not in path else None
    _OPEN[key] = (tree.file, tree, descriptor)
    while len(_OPEN) > _OPEN_FILES:
        _close(*_OPEN.popitem(last=False)[1])
    return _OPEN[key]


def _close(file, tree, descriptor: int | None) -> None:
    file.close()
    if descriptor is not None:
        os.close(descriptor)


def forget_open_files() -> None:
    """Close the ROOT and column files this process holds open, and drop its buffers."""
    while _OPEN:
        _close(*_OPEN.popitem()[1])
    for descriptors in _COLUMN_FILES.values():
        for descriptor in descriptors.values():
            os.close(descriptor)
    _COLUMN_FILES.clear()
    _BUFFERS.clear()


def _wrap_errors(path: str, where: str, call: Callable):
    """Every failure as NtupleError with a plain message, which survives the trip back to the
    parent process (some uproot exceptions do not pickle)."""
    try:
        return call()
    except (NtupleError, ColumnWriteError, MemoryError):
        raise
    except Exception as err:
        raise NtupleError(
            f"{path}: {where} could not be read ({type(err).__name__}: {err}); it is probably "
            f"corrupted or truncated. {_BAD_FILE_FIX}"
        ) from None


def scan_file(path: str, options: dict) -> FileScan:
    """Open and check one file and count its tracks per cluster: the first worker function."""
    return _wrap_errors(path, "the file", lambda: _scan(path, **options))


def _scan(
    path: str,
    tree_path: str,
    features: Sequence[str],
    algo_branch: str,
    label: str,
    extra_branches: Sequence[str],
    reader: str = "own",
) -> FileScan:
    _use_reader(reader)
    _, tree, _ = _open_tree(path, tree_path)
    num_entries = tree.num_entries
    if num_entries == 0:
        raise NtupleError(
            f"{path}: tree '{tree_path}' has 0 entries (no events; a failed or empty job?). "
            "Fix: remove the file from the sample, or set skip_bad_files = True in config.py "
            "to go on without it."
        )
    label_branch = _label_branch(tree, path, label)
    sources = list(dict.fromkeys(_source_branch(name) for name in features))
    _check_branches(tree, path, sources, algo_branch, label, label_branch, extra_branches)
    names = [name for name, _, _ in _reads(features, algo_branch, extra_branches, label_branch)]
    common = {0, num_entries}
    common.update(tree[algo_branch].entry_offsets)
    for name in names:
        common.intersection_update(tree[name].entry_offsets)
    boundaries = np.array(sorted(common | {0, num_entries}), dtype=np.int64)
    tracks = _tracks_from_headers(tree[algo_branch], boundaries) if reader == "own" else None
    if tracks is None:  # a layout the headers do not tell: count by decompressing the branch
        ends = np.concatenate([[0], np.cumsum(_entry_counts(tree[algo_branch], path))])
        tracks = ends[boundaries[1:]] - ends[boundaries[:-1]]
    branch_bytes = sum(int(tree[name].member("fTotBytes")) for name in names)
    return FileScan(num_entries, label_branch, boundaries, tracks, branch_bytes / num_entries)


def _use_reader(reader: str) -> None:
    """With uproot's reader, uproot inflates ZLIB with ISA-L (the `isal` package), its fastest
    choice here: its "deflate" choice calls deflate.zlib_decompress(data, bufsize=...), which
    deflate 0.9 does not accept. The switch is a class attribute of uproot's decompressor."""
    library = "zlib"
    if reader == "uproot":
        try:
            import isal  # noqa: F401

            library = "isal"
        except ImportError:
            pass
    uproot.compression._DecompressZLIB.library = library


def _jagged_layout(interpretation) -> tuple[int, np.dtype] | None:
    """(header bytes per entry, element dtype) of a branch of numbers per entry, else None."""
    if interpretation == _VECTOR_VECTOR_INT:
        return 10, np.dtype(">i4")  # the words of _VECTOR_VECTOR_INT_WORDS
    if not isinstance(interpretation, uproot.AsJagged):
        return None
    content = interpretation.content
    if type(content) is not uproot.AsDtype:
        return None
    dtype = content.from_dtype
    if dtype.kind not in "biuf" or dtype.names is not None or dtype.subdtype is not None:
        return None
    return interpretation.header_bytes, dtype


def _tracks_from_headers(branch, boundaries: np.ndarray) -> np.ndarray | None:
    """Tracks between the boundaries, from the branch's basket headers alone: a basket of E
    entries holds (data bytes - E x header) / itemsize values. None if that cannot be used."""
    layout = _jagged_layout(branch.interpretation)
    if layout is None or branch.interpretation == _VECTOR_VECTOR_INT:
        return None
    header, dtype = layout
    file = branch.file
    try:
        parts = branch.entries_to_ranges_or_baskets(0, branch.num_entries)
        ranges = [
            (int(start), int(min(stop, start + _HEADER_BYTES)))
            for _, part in parts
            if isinstance(part, tuple)
            for start, stop in [part]
        ]
        chunks = iter(file.source.chunks(ranges, notifications=queue.Queue()) if ranges else [])
        offsets = branch.entry_offsets
        per_basket = []
        for number, part in parts:
            if isinstance(part, tuple):
                context = {"basket_num": number, "read_basket": False}
                part = Model_TBasket.read(
                    next(chunks), Cursor(part[0]), context, file, file, branch
                )
            entries = part.num_entries
            values, rest = divmod(part.border - header * entries, dtype.itemsize)
            if entries != offsets[number + 1] - offsets[number] or values < 0 or rest:
                return None
            per_basket.append(values)
    except Exception:  # an unusual basket (long key, no header): the caller decompresses instead
        return None
    ends = np.concatenate([[0], np.cumsum(per_basket, dtype=np.int64)])
    where = np.searchsorted(offsets, boundaries)
    if not np.array_equal(np.asarray(offsets)[np.minimum(where, len(offsets) - 1)], boundaries):
        return None
    return ends[where[1:]] - ends[where[:-1]]


def _entry_counts(branch, path: str) -> np.ndarray:
    """Tracks per entry of the algo branch, by reading it."""
    array = branch.array(library="ak")
    if array.ndim != 2:
        raise NtupleError(
            f"{path}: branch '{branch.name}' (the algo branch, `algo_branch`) does not hold one "
            "value per track. Fix: set `algo_branch` in config.py to trk_originalAlgo."
        )
    return ak.to_numpy(ak.num(array)).astype(np.int64)


def _reads(
    features: Sequence[str], algo_branch: str, extra_branches: Sequence[str], label_branch: str
) -> list[tuple[str, str, str]]:
    """(branch, column, kind) of everything a task reads, the algo branch first: its per-event
    counts are the reference the other branches are checked against."""
    reads = [(algo_branch, algo_branch, "algo")]
    reads += [(_source_branch(name), name, _float_kind(name)) for name in features]
    label_kind = "flag" if label_branch == "trk_isTrue" else "matches"
    reads.append((label_branch, LABEL_COLUMN, label_kind))
    reads += [(name, name, "float") for name in extra_branches]
    return reads


def _source_branch(column: str) -> str:
    """The branch a column is read from: itself, or for a derived input (cmssw.classifiers:
    CMSSW computes it from a branch) that branch."""
    return DERIVED_INPUTS[column][0] if column in DERIVED_INPUTS else column


def _float_kind(column: str) -> str:
    """ "float", or "clamp:<low>:<high>" for a derived input that CMSSW clamps."""
    clamp = DERIVED_INPUTS[column][1] if column in DERIVED_INPUTS else None
    return "float" if clamp is None else f"clamp:{clamp[0]!r}:{clamp[1]!r}"


def decode_task(task: Task, options: dict, columns: Columns) -> dict[str, Any]:
    """Decode one entry range into its rows of the shared columns: the second worker function.

    Returns the xxh3-64 digest of every column's rows (for the cache manifest), and which
    process took how long (for last_load["processes"]).
    """
    start, cpu, opened = time.perf_counter(), time.process_time(), _OPENED[0]
    where = f"entries {task.entry_start}-{task.entry_stop}"
    digests = _wrap_errors(task.path, where, lambda: _decode(task, columns, **options))
    return {
        "digests": digests,
        "pid": os.getpid(),
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "opened": _OPENED[0] - opened,
    }


def _decode(
    task: Task,
    columns: Columns,
    tree_path: str,
    features: Sequence[str],
    algo_branch: str,
    label: str,
    extra_branches: Sequence[str],
    reader: str = "own",
) -> dict[str, str]:
    _use_reader(reader)
    _, tree, descriptor = _open_tree(task.path, tree_path)
    rows = _Rows(columns, task.row_start)
    reads = _reads(features, algo_branch, extra_branches, task.label_branch)
    branches = [tree[name] for name, _, _ in reads]
    baskets = None  # reader "uproot": every branch through uproot's reading
    if reader == "own":
        baskets = _Baskets(branches, task.entry_start, task.entry_stop, descriptor)
    counts = None  # tracks per entry, from the algo branch
    last_use = {name: i for i, (name, _, _) in enumerate(reads)}  # a branch may feed 2 columns
    for i, (name, column, kind) in enumerate(reads):
        if kind == "matches":
            _decode_matches(tree[name], baskets, task, counts, rows.writer(column))
        else:
            counts = _decode_branch(tree[name], baskets, task, counts, rows.writer(column), kind)
        if last_use[name] == i and baskets is not None:
            baskets.release(tree[name])
    entries = np.arange(task.entry_start, task.entry_stop, dtype=np.uint32)
    rows.write("event_index", np.repeat(entries + np.uint32(task.event_offset), counts))
    rows.write("sample", np.full(len(rows), task.sample_code, dtype=np.int8))
    return rows.digests(task)


class _Rows:
    """Writes one task's rows of every column in order, with pwrite (cheaper than filling fresh
    pages of a shared mapping), and hashes them on the way for the cache manifest."""

    def __init__(self, columns: Columns, row_start: int) -> None:
        descriptors = _COLUMN_FILES.get(columns.directory)
        if descriptors is None:
            _forget_column_files()
            descriptors = {
                name: os.open(columns.path(name), os.O_WRONLY) for name, _ in columns.dtypes
            }
            _COLUMN_FILES[columns.directory] = descriptors
        self.columns = columns
        self.descriptors = descriptors
        self.dtypes = {name: np.dtype(dtype) for name, dtype in columns.dtypes}
        self.offsets = dict(zip(self.dtypes, columns.offsets, strict=True))
        self.start = row_start
        self.rows = dict.fromkeys(self.dtypes, row_start)
        self.hashes = {name: xxhash.xxh3_64() for name in self.dtypes}

    def __len__(self) -> int:
        return max(self.rows.values()) - self.start

    def write(self, name: str, values: np.ndarray) -> None:
        if values.dtype != self.dtypes[name] or not values.flags.c_contiguous:
            raise TypeError(
                f"column {name} takes contiguous {self.dtypes[name]}, not {values.dtype}"
            )
        data = memoryview(values).cast("B")
        position = self.offsets[name] + self.rows[name] * values.itemsize
        while data:
            try:
                written = os.pwrite(self.descriptors[name], data, position)
            except OSError as err:  # not a problem of the ROOT file: never skipped
                raise ColumnWriteError(
                    f"cannot write the column {name} in {self.columns.directory} ({err}). Fix: "
                    "free space there, or set `cache_dir` in config.py to a disk with room "
                    "(without a cache, the columns are written to /dev/shm, i.e. memory)."
                ) from None
            self.hashes[name].update(data[:written])
            data, position = data[written:], position + written
        self.rows[name] += len(values)

    def writer(self, name: str) -> Callable[[np.ndarray], None]:
        return lambda values: self.write(name, values)

    def digests(self, task: Task) -> dict[str, str]:
        for row in self.rows.values():
            if row != task.row_stop:  # every column got exactly the task's rows
                raise NtupleError(_inconsistent(task, row - task.row_start, len(self)))
        return {name: digest.hexdigest() for name, digest in self.hashes.items()}


def _forget_column_files() -> None:
    for descriptors in _COLUMN_FILES.values():
        for descriptor in descriptors.values():
            os.close(descriptor)
    _COLUMN_FILES.clear()


def _buffer(dtype: np.dtype | type, size: int) -> np.ndarray:
    """A reused array of `size` elements: no fresh pages to fault in for every basket."""
    dtype = np.dtype(dtype)
    array = _BUFFERS.get(dtype)
    if array is None or len(array) < size:
        array = _BUFFERS[dtype] = np.empty(max(size, 1 << 16), dtype=dtype)
    return array[:size]


def _digest(array: np.ndarray) -> str:
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(array).view(np.uint8))


class _Basket(NamedTuple):
    """A decompressed basket: its data (up to fLast), entry byte offsets (None for entries of
    fixed size) and entry range."""

    data: np.ndarray
    byte_offsets: np.ndarray | None
    entry_start: int
    entry_stop: int


class _Baskets:
    """The baskets of some branches over an entry range, read with os.pread from a local file,
    or requested at once from a remote one (one vector read), and decompressed one at a time as
    they are used."""

    def __init__(
        self, branches: list, entry_start: int, entry_stop: int, descriptor: int | None
    ) -> None:
        self.descriptor = descriptor
        self.parts: dict[str, list] = {}
        ranges = []
        for branch in branches:
            parts = branch.entries_to_ranges_or_baskets(entry_start, entry_stop)
            self.parts[branch.name] = parts
            ranges += [
                (int(a), int(b)) for _, part in parts if isinstance(part, tuple) for a, b in [part]
            ]
        self.chunks = {}
        if ranges and descriptor is None:
            source = branches[0].file.source
            chunks = source.chunks(ranges, notifications=queue.Queue())
            self.chunks = dict(zip(ranges, chunks, strict=True))

    def __call__(self, branch) -> Iterator[_Basket]:
        offsets = branch.entry_offsets
        for number, part in self.parts[branch.name]:
            if isinstance(part, tuple):
                start, stop = int(part[0]), int(part[1])
                if self.descriptor is not None:
                    raw = os.pread(self.descriptor, stop - start, start)
                else:
                    raw = self.chunks[start, stop].raw_data
                basket = _read_basket(raw, offsets[number], offsets[number + 1])
                if basket is not None:
                    yield basket
                    continue
                # A layout _read_basket leaves to uproot.
                chunk = self.chunks.get((start, stop)) or branch.file.source.chunk(start, stop)
                context = {"basket_num": number}
                file = branch.file
                part = Model_TBasket.read(chunk, Cursor(start), context, file, file, branch)
            # Embedded in the TBranch (already in memory), or read by uproot.
            yield _Basket(part.data, part.byte_offsets, *part.entry_start_stop)

    def release(self, branch) -> None:
        for _, part in self.parts.pop(branch.name, []):
            if isinstance(part, tuple):
                self.chunks.pop((int(part[0]), int(part[1])), None)


# ROOT's TKey header (fNbytes, fVersion, fObjlen, fDatime, fKeylen, fCycle) and the TBasket
# fields that end the key (fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast, then one byte).
_KEY_HEADER = struct.Struct(">ihiIhh")
_BASKET_HEADER = struct.Struct(">hiiii")


def _read_basket(raw, entry_start: int, entry_stop: int) -> _Basket | None:
    """Decompress one basket from its bytes in the file; None for a layout or compression
    algorithm to leave to uproot (checked against uproot's reading in the tests).

    Our own reading because uproot's costs ~0.1 ms of Python per basket and always inflates
    ZLIB with the zlib module, where libdeflate (pip install deflate) is about 1.8x faster.
    """
    raw = memoryview(raw).cast("B")
    if len(raw) < _KEY_HEADER.size:
        return None
    nbytes, _, objlen, _, keylen, _ = _KEY_HEADER.unpack_from(raw)
    if nbytes != len(raw) or not _BASKET_HEADER.size < keylen <= nbytes:
        return None
    _, _, _, entries, last = _BASKET_HEADER.unpack_from(raw, keylen - _BASKET_HEADER.size - 1)
    border = last - keylen
    if entries != entry_stop - entry_start or not 0 <= border <= objlen:
        return None
    payload = raw[keylen:]
    data = payload if len(payload) == objlen else _decompress(payload, objlen)
    if data is None:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8)
    offsets = None
    if border != objlen:  # entries of variable size: their offsets follow the data
        # [count, the entries' start offsets (from the key's start)..., a spare slot]
        tail = buffer[border : border + 4 * (entries + 1)].view(">i4")
        if len(tail) != entries + 1 or tail[0] not in (entries, entries + 1):
            return None
        offsets = np.empty(entries + 1, dtype=np.int64)
        offsets[:-1] = tail[1:]
        offsets[:-1] -= keylen
        offsets[-1] = border
        if entries and offsets[0] != 0:  # (entry sizes are checked where they are used)
            return None
    return _Basket(buffer[:border], offsets, entry_start, entry_stop)


def _decompress(payload: memoryview, size: int) -> bytes | None:
    """ROOT's compressed blocks, each a 9-byte header (algorithm, method, compressed and
    uncompressed sizes as 3-byte little-endian numbers) and the data; None for an unknown
    algorithm (uproot then reports it)."""
    blocks, position = [], 0
    while position < len(payload):
        header = payload[position : position + 9]
        if len(header) < 9:
            return None
        algorithm = bytes(header[:2])
        compressed = header[3] | header[4] << 8 | header[5] << 16
        uncompressed = header[6] | header[7] << 8 | header[8] << 16
        block = payload[position + 9 : position + 9 + compressed]
        position += 9 + compressed
        if algorithm == b"ZL":
            if _libdeflate is not None:
                data = _libdeflate.zlib_decompress(block, uncompressed)
            else:
                data = zlib.decompress(block, bufsize=uncompressed)
        elif algorithm == b"L4":  # an xxhash64 of the compressed block comes first
            if xxhash.xxh64_intdigest(block[8:]) != int.from_bytes(block[:8], "big"):
                raise ValueError("LZ4 block checksum mismatch")
            data = uproot.LZ4(1).decompress(block[8:], uncompressed)
        elif algorithm == b"ZS":
            data = uproot.ZSTD(1).decompress(block, uncompressed)
        elif algorithm == b"XZ":
            data = uproot.LZMA(1).decompress(block, uncompressed)
        else:
            return None
        if len(data) != uncompressed:
            raise ValueError(
                f"a {algorithm.decode()} block gave {len(data)} bytes, not {uncompressed}"
            )
        blocks.append(data)
    data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
    if len(data) != size:
        raise ValueError(f"a basket gave {len(data)} bytes, not {size}")
    return data


class _NoOffsets(Exception):
    """A basket without entry offsets: the generic reading handles it."""


def _jagged_values(
    branch, baskets: _Baskets, start: int, stop: int, header: int, dtype: np.dtype, path: str
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(first entry, end entry, values, values per entry) of each basket's part in [start, stop).

    The values stay in the file's (big-endian) dtype: the caller converts them once, straight
    into the output. Per-entry headers (ROOT's 10 bytes before each std::vector) are cut out with
    one boolean mask over units of gcd(header, itemsize) bytes.
    """
    size = dtype.itemsize
    for basket in baskets(branch):
        basket_start, basket_stop = basket.entry_start, basket.entry_stop
        first, end = max(start, basket_start), min(stop, basket_stop)
        if first >= end:
            continue
        offsets = basket.byte_offsets
        if offsets is None:
            raise _NoOffsets
        offsets = offsets[first - basket_start : end - basket_start + 1].astype(np.int64)
        data = basket.data[offsets[0] : offsets[-1]]
        offsets -= offsets[0]
        counts, rest = np.divmod(np.diff(offsets) - header, size)
        if rest.any() or (counts < 0).any():
            raise NtupleError(
                f"{path}: branch '{branch.name}' has entries of an unexpected size for "
                f"{branch.interpretation}. Fix: produce the ntuple with CMSSW's TrackingNtuple, "
                "or remove the branch from config.py."
            )
        if header:
            unit = math.gcd(header, size)
            if (offsets % unit).any():
                unit = 1
            keep = np.ones(len(data) // unit, dtype=np.bool_)
            heads = (offsets[:-1, None] // unit + np.arange(header // unit)).ravel()
            keep[heads] = False
            values = data.view(f"u{unit}")[keep].view(dtype)
        else:
            values = data.view(dtype)
        yield first, end, values, counts


def _decode_branch(
    branch,
    baskets: _Baskets,
    task: Task,
    counts: np.ndarray | None,
    write: Callable[[np.ndarray], None],
    kind: str,
) -> np.ndarray:
    """Write one branch's values of the task; returns the tracks per entry (from this branch if
    counts is None, else checked against counts)."""
    start, stop, path = task.entry_start, task.entry_stop, task.path
    convert = _converter(kind)
    expected = task.row_stop - task.row_start
    layout = _jagged_layout(branch.interpretation) if baskets is not None else None
    if layout is not None:
        try:
            written = 0
            parts = []
            for first, end, values, entry_counts in _jagged_values(
                branch, baskets, start, stop, *layout, path
            ):
                if counts is not None and not np.array_equal(
                    entry_counts, counts[first - start : end - start]
                ):
                    raise NtupleError(_not_per_track(path, branch.name))
                written += len(values)
                if written > expected:
                    raise NtupleError(_inconsistent(task, written, expected))
                write(convert(values, path, branch.name))
                parts.append(entry_counts)
            return counts if counts is not None else np.concatenate(parts)
        except _NoOffsets:
            pass
    # Any other layout: uproot's generic reading, then the same conversion.
    array = branch.array(entry_start=start, entry_stop=stop, library="ak")
    if counts is None:
        if array.ndim != 2:
            raise NtupleError(
                f"{path}: branch '{branch.name}' (the algo branch, `algo_branch`) does not hold "
                "one value per track. Fix: set `algo_branch` in config.py to trk_originalAlgo."
            )
        counts = ak.to_numpy(ak.num(array)).astype(np.int64)
        if counts.sum() != expected:
            raise NtupleError(_inconsistent(task, int(counts.sum()), expected))
    write(convert(_per_track(array, counts, path, branch.name), path, branch.name))
    return counts


def _decode_matches(
    branch, baskets: _Baskets, task: Task, counts: np.ndarray, write: Callable
) -> None:
    """The label from trk_simTrkIdx: true when the track's vector of matches is not empty."""
    sizes = None
    if branch.interpretation == _VECTOR_VECTOR_INT and baskets is None:  # uproot reads the words
        array = branch.array(
            _VECTOR_VECTOR_INT_WORDS, entry_start=task.entry_start, entry_stop=task.entry_stop
        )
        words = ak.to_numpy(ak.flatten(array)).astype(np.int32)
        sizes = _inner_sizes(words, ak.to_numpy(ak.num(array)).astype(np.int64), counts)
    elif branch.interpretation == _VECTOR_VECTOR_INT:
        words, words_per_entry = [], []
        for _, _, values, entry_words in _jagged_values(
            branch, baskets, task.entry_start, task.entry_stop, 10, np.dtype(">i4"), task.path
        ):
            words.append(values.astype(np.int32))
            words_per_entry.append(entry_words)
        sizes = _inner_sizes(
            np.concatenate([np.empty(0, np.int32), *words]),
            np.concatenate([np.empty(0, np.int64), *words_per_entry]),
            counts,
        )
    if sizes is None:  # any other layout: uproot's generic (slower) reading
        sizes = _matches_per_track(branch, task.entry_start, task.entry_stop, counts, task.path)
    write(_to_flag(sizes, task.path, branch.name, compare=np.greater))


def _to_float(values: np.ndarray, path: str, name: str) -> np.ndarray:
    out = _buffer(np.float32, len(values))
    np.copyto(out, values, casting="unsafe")  # byte swap and conversion in one pass
    return out


def _to_algo(values: np.ndarray, path: str, name: str) -> np.ndarray:
    # reco::TrackBase::TrackAlgorithm is < 47; check before the cast to uint8.
    if len(values) and (values.min() < 0 or values.max() > 255):
        raise NtupleError(
            f"{path}: branch '{name}' has values outside 0-255, not track algorithms. "
            "Fix: set `algo_branch` in config.py to trk_originalAlgo."
        )
    out = _buffer(np.uint8, len(values))
    np.copyto(out, values, casting="unsafe")
    return out


def _to_flag(values: np.ndarray, path: str, name: str, compare=np.not_equal) -> np.ndarray:
    out = _buffer(np.int8, len(values))
    compare(values, 0, out=out.view(np.bool_))
    return out


_CONVERTERS = {"float": _to_float, "algo": _to_algo, "flag": _to_flag}


def _converter(kind: str) -> Callable[[np.ndarray, str, str], np.ndarray]:
    if not kind.startswith("clamp:"):
        return _CONVERTERS[kind]
    low, high = (float(bound) for bound in kind.split(":")[1:])

    def clamped(values: np.ndarray, path: str, name: str) -> np.ndarray:
        out = _to_float(values, path, name)
        return np.clip(out, low, high, out=out)

    return clamped


def _not_per_track(path: str, name: str) -> str:
    return (
        f"{path}: branch '{name}' does not hold one value per track (its length per event "
        "differs from the algo branch's). Fix: use trk_* per-track branches in config.py."
    )


def _inconsistent(task: Task, found: int, expected: int) -> str:
    return (
        f"{task.path}: entries {task.entry_start}-{task.entry_stop} hold {found:,} tracks, but "
        f"the basket headers announced {expected:,}: the file is inconsistent or corrupted. "
        f"{_BAD_FILE_FIX}"
    )


def _per_track(array: ak.Array, counts: np.ndarray, path: str, name: str) -> np.ndarray:
    """The flat per-track values of a jagged branch, checked to have one value per track."""
    if array.ndim != 2 or not np.array_equal(ak.to_numpy(ak.num(array)), counts):
        raise NtupleError(_not_per_track(path, name))
    return ak.to_numpy(ak.flatten(array))


def _matches_per_track(branch, start, stop, tracks_per_event, path) -> np.ndarray:
    """The size of each track's trk_simTrkIdx vector, with uproot's generic reading."""
    nested = branch.array(entry_start=start, entry_stop=stop, library="ak")
    if nested.ndim != 3 or not np.array_equal(ak.to_numpy(ak.num(nested)), tracks_per_event):
        raise NtupleError(
            f"{path}: branch '{branch.name}' does not hold one vector per track. "
            "Fix: produce the ntuple with CMSSW's TrackingNtuple, or set `label` in config.py."
        )
    return ak.to_numpy(ak.flatten(ak.num(nested, axis=2)))


def _inner_sizes(
    words: np.ndarray, words_per_event: np.ndarray, tracks_per_event: np.ndarray
) -> np.ndarray | None:
    """Each track's vector size from the int32 words [size, indices..., size, indices...] of
    every event; None if the words do not have that layout.

    The records are walked with one numpy step per track position k, for the k-th track of all
    events at once, so the cost grows with the largest event, not with the number of events.
    """
    total = int(tracks_per_event.sum())
    if len(words) < total or len(words_per_event) != len(tracks_per_event):
        return None  # every track has at least its size word
    ends = np.cumsum(words_per_event)
    # Events with the most tracks first, so the events still walking are always a prefix.
    order = np.argsort(-tracks_per_event, kind="stable")
    ntracks = tracks_per_event[order]
    position = (ends - words_per_event)[order]
    first_track = (np.cumsum(tracks_per_event) - tracks_per_event)[order]
    max_tracks = int(ntracks[0]) if len(ntracks) else 0
    walking = np.searchsorted(-ntracks, -np.arange(max_tracks), side="left")  # events with > k

    sizes = np.empty(total, dtype=np.int32)
    for k, n in enumerate(walking):
        size = words.take(position[:n], mode="clip")  # clip: a bad layout must not raise here
        sizes[first_track[:n] + k] = size
        position[:n] += 1 + size
    if not np.array_equal(position, ends[order]) or (total and sizes.min() < 0):
        return None
    return sizes


# --- checks of a file --------------------------------------------------------------------------


def _check_local_file(path: str) -> None:
    """Name the usual problems of a local file from its header: missing, not ROOT, truncated."""
    try:
        with open(path, "rb") as file:
            head = file.read(20)
    except FileNotFoundError:
        raise NtupleError(
            f"{path}: no such file. Fix: check the path in `samples` (config.py)."
        ) from None
    if head[:4] != b"root":
        raise NtupleError(
            f"{path}: not a ROOT file (it starts with {head[:4]!r}, not b'root'). {_BAD_FILE_FIX}"
        )
    # ROOT's file header: "root", version, fBEGIN, then fEND (8 bytes for large-file versions).
    version = struct.unpack(">i", head[4:8])[0]
    end_format = ">q" if version >= 1000000 else ">i"
    end = struct.unpack(end_format, head[12 : 12 + struct.calcsize(end_format)])[0]
    size = os.path.getsize(path)
    if size < end:
        raise NtupleError(
            f"{path}: truncated: the file has {size:,} bytes but its header says {end:,} "
            f"(an interrupted copy or job?). {_BAD_FILE_FIX}"
        )


def _get_tree(directory, path: str, tree_path: str):
    try:
        tree = directory[tree_path]
    except uproot.KeyInFileError:
        tree = None
    if not isinstance(tree, uproot.TTree):
        raise NtupleError(
            f"{path}: no TTree '{tree_path}' in the file (it holds: "
            f"{', '.join(directory.keys(cycle=False)) or 'nothing'}). Fix: set `tree_path` in "
            "config.py to the tree's path in the file (CMSSW writes trackingNtuple/tree), "
            "or check that this is a trackingNtuple."
        )
    return tree


def _label_branch(tree, path: str, label: str) -> str:
    """The label branch of this file: the forced one, or the convention the file uses."""
    if label != "auto":
        return label
    for candidate in ("trk_isTrue", "trk_simTrkIdx"):
        if candidate in tree:
            return candidate
    raise NtupleError(
        f"{path}: missing branch for the label: neither trk_isTrue nor trk_simTrkIdx is in the "
        "tree (`label` = 'auto'). Fix: make the ntuple with TrackingNtuple's track-truth "
        "branches (includeTrackingParticles=True gives trk_simTrkIdx, False gives trk_isTrue)."
    )


def _check_branches(tree, path, features, algo_branch, label, label_branch, extra_branches):
    """One message naming every missing branch, its role and the setting to change."""
    feature = ("a feature, in `features`", "remove it from `features` (the network's inputs)")
    extra = ("an extra branch, in `extra_branches`", "remove it from `extra_branches`")
    roles = [(name, *feature) for name in features]
    roles.append(
        (algo_branch, "the algo branch, `algo_branch`", "set `algo_branch` to trk_originalAlgo")
    )
    roles.append(
        (
            label_branch,
            f"the label, `label` = {label!r}",
            "set `label` = 'auto' to use trk_isTrue or trk_simTrkIdx, whichever the file has",
        )
    )
    roles += [(name, *extra) for name in extra_branches]
    missing = [(name, role, fix) for name, role, fix in roles if name not in tree]
    if missing:
        names = ", ".join(f"'{name}' ({role})" for name, role, _ in missing)
        fixes = "; ".join(dict.fromkeys(fix for _, _, fix in missing))
        raise NtupleError(
            f"{path}: missing branch{'es' if len(missing) > 1 else ''} {names} in tree "
            f"'{tree.object_path.lstrip('/').split(';')[0]}'. Fix: in config.py, {fixes}; "
            "or produce the ntuple with the branch."
        )


# --- the columns on disk -----------------------------------------------------------------------


def _scratch_folder(nbytes: int) -> str:
    """A new folder for columns not kept in a cache: /dev/shm (memory) if it has room."""
    base = tempfile.gettempdir()
    if os.path.isdir(_SHM) and shutil.disk_usage(_SHM).free > nbytes + 256_000_000:
        base = _SHM
    _remove_orphans(Path(base))
    return tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=base)


def _remove_orphans(base: Path) -> None:
    """Remove the column folders of loads whose process died (killed before cleaning up)."""
    for folder in base.glob(f"{_STAGING}*"):
        try:
            pid = int(folder.name[len(_STAGING) :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def _create_columns(directory: str, length: int, dtypes: tuple[tuple[str, str], ...]) -> Columns:
    """Every column at its final size, as a sparse .npy file the workers fill."""
    offsets = []
    for name, dtype in dtypes:
        path = os.path.join(directory, name + ".npy")
        if length:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))
            offsets.append(array.offset)
            del array  # unmapped: the workers write with pwrite
        else:
            np.save(path, np.empty(0, dtype))
            offsets.append(0)
    return Columns(directory, length, dtypes, tuple(offsets))


def _map_columns(columns: Columns) -> dict[str, np.ndarray]:
    """The columns, memory-mapped copy-on-write (writes to them never reach the files); read
    into memory instead from a network filesystem, where a mapped file that another machine
    deletes or rewrites can crash this process (SIGBUS)."""
    mode = "c" if columns.length and not _network_filesystem(columns.directory) else None
    # Plain ndarray views (the memmap stays their base): results of operations on them should
    # not pretend to be memory-mapped.
    return {
        name: np.load(columns.path(name), mmap_mode=mode).view(np.ndarray)
        for name, _ in columns.dtypes
    }


_NETWORK_FILESYSTEMS = (
    "nfs",
    "afs",
    "cifs",
    "smb",
    "fuse",
    "ceph",
    "lustre",
    "gpfs",
    "gluster",
    "9p",
)


def _network_filesystem(path: str) -> bool:
    """Whether the folder is on NFS, AFS, EOS/FUSE and the like (Linux's mount table)."""
    try:
        with open("/proc/self/mounts") as mounts:
            table = [line.split()[1:3] for line in mounts if len(line.split()) > 2]
    except OSError:
        return False
    path = os.path.realpath(path)
    best, kind = "", ""
    for mount, fstype in table:
        mount = mount.replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fstype
    return kind.startswith(_NETWORK_FILESYSTEMS)


def _drop_rows(columns: Columns, ranges: list[tuple[int, int]]) -> Columns:
    """Remove row ranges from every column file, in place."""
    keep, position = [], 0
    for start, stop in sorted(ranges):
        keep.append((position, start))
        position = stop
    keep.append((position, columns.length))
    length = sum(stop - start for start, stop in keep)
    step = 1 << 22
    for name, dtype in columns.dtypes:
        path = columns.path(name)
        if columns.length:
            array = np.load(path, mmap_mode="r+")
            write = 0
            for start, stop in keep:
                for first in range(start, stop, step):
                    end = min(first + step, stop)
                    # numpy copies through a buffer where source and target overlap.
                    array[write : write + end - first] = array[first:end]
                    write += end - first
            array.flush()
            header = array.offset
            del array
            _set_npy_length(path, header, np.dtype(dtype), length)
    return dataclasses.replace(columns, length=length)


def _set_npy_length(path: str, header_size: int, dtype: np.dtype, length: int) -> None:
    """Rewrite a 1-d .npy file's shape in its header (same header size) and cut the file."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (length,),
    }
    with open(path, "r+b") as file:
        magic = file.read(8)
        prefix = 10 if magic[6] == 1 else 12  # magic, version, header length (2 or 4 bytes)
        text = repr(header).ljust(header_size - prefix - 1) + "\n"
        if len(text) != header_size - prefix:
            raise RuntimeError(f"{path}: the new .npy header does not fit")
        file.seek(prefix)
        file.write(text.encode("latin1"))
        file.truncate(header_size + length * dtype.itemsize)


def _digest_columns(columns: Columns) -> tuple[list[list[int]], dict[str, list[str]]]:
    """Checksums of every column in fixed row slices (after rows were dropped)."""
    step = 1 << 24
    splits = [
        [start, min(start + step, columns.length)] for start in range(0, columns.length, step)
    ]
    arrays = _map_columns(columns)
    return splits, {
        name: [_digest(arrays[name][start:stop]) for start, stop in splits]
        for name, _ in columns.dtypes
    }


# --- the cache ---------------------------------------------------------------------------------


def _file_state(path: str) -> dict | None:
    """Size and modification time of a file or URL; None if it cannot be had (missing file)."""
    try:
        if "://" in path:
            import fsspec

            fs, inner = fsspec.core.url_to_fs(path)
            info = fs.info(inner)
            mtime = info.get("mtime", info.get("modified", info.get("LastModified")))
            return {"size": int(info["size"]), "mtime": str(mtime)}
        stat = os.stat(path)
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except (ImportError, OSError, ValueError, KeyError):
        return None


class CacheEntry:
    """The cache entry of one set of inputs: `<cache_dir>/tracks-<key>/`."""

    def __init__(self, root: Path, identity: dict, files: list[str]) -> None:
        self.root = root
        self.identity = identity
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        self.path = root / f"tracks-{key}"
        self.files = files
        if any("://" in path for path in files):  # one round trip per remote file: in parallel
            with ThreadPoolExecutor(max_workers=16) as threads:
                self.states = list(threads.map(_file_state, files))
        else:
            self.states = [_file_state(path) for path in files]

    def read(self, skip_bad_files: bool) -> tuple[dict[str, np.ndarray], dict] | None:
        """The verified, memory-mapped columns and the manifest; None if there is no entry, or
        (with a CacheWarning saying why) if it is stale, truncated or corrupt."""
        if not self.path.exists():
            return None
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except FileNotFoundError:
            problem = "its manifest.json is missing (an interrupted write?)"
        except (OSError, ValueError) as err:
            problem = f"its manifest.json is unreadable ({err})"
        else:
            try:
                problem = self._stale(manifest, skip_bad_files)
                if problem is None:
                    return self._verified_columns(manifest), manifest
            except (OSError, ValueError, KeyError, TypeError) as err:
                problem = f"it is damaged ({type(err).__name__}: {err})"
        warnings.warn(
            f"cache entry {self.path} is not used: {problem}. Rebuilding it from the ROOT files.",
            CacheWarning,
            stacklevel=3,
        )
        return None

    def _stale(self, manifest: dict, skip_bad_files: bool) -> str | None:
        if manifest.get("format") != _CACHE_FORMAT or manifest.get("identity") != self.identity:
            return "it was written by another version of the loader"
        changes = []
        for path, old, new in zip(self.files, manifest["files"], self.states, strict=True):
            if old == new:
                continue
            if new is None:
                changes.append(f"{path} cannot be found any more")
            elif old is None:
                changes.append(f"{path} exists now")
            elif old["size"] != new["size"]:
                changes.append(f"{path} changed size ({old['size']:,} -> {new['size']:,} bytes)")
            else:
                changes.append(f"{path} was modified")
        if changes:
            more = f" and {len(changes) - 3} more files" if len(changes) > 3 else ""
            return f"it is stale: {'; '.join(changes[:3])}{more}, since it was written"
        if manifest["skipped_files"] and not skip_bad_files:
            return (
                f"it leaves out {len(manifest['skipped_files'])} bad files "
                "(written with skip_bad_files=True), which must now be read"
            )
        return None

    def _verified_columns(self, manifest: dict) -> dict[str, np.ndarray]:
        length = manifest["num_tracks"]
        columns = Columns(str(self.path), length, tuple(map(tuple, self.identity["columns"])))
        for name, _ in columns.dtypes:
            size, expected = os.path.getsize(columns.path(name)), manifest["column_bytes"][name]
            if size != expected:
                raise ValueError(
                    f"column file {name}.npy has {size:,} bytes instead of {expected:,} "
                    "(truncated?)"
                )
        arrays = _map_columns(columns)
        for name, dtype in columns.dtypes:
            array = arrays[name]
            if array.dtype != np.dtype(dtype) or array.shape != (length,):
                raise ValueError(f"column file {name}.npy holds {array.dtype}{array.shape}")
            for (start, stop), digest in zip(
                manifest["row_splits"], manifest["xxh3_64"][name], strict=True
            ):
                if _digest(array[start:stop]) != digest:
                    raise ValueError(
                        f"the checksum of column {name}, rows {start:,}-{stop:,}, does not "
                        "match (corrupted on disk?)"
                    )
        return arrays

    def staging_folder(self, nbytes: int) -> str | None:
        """A new folder next to the entry to fill; None (with a warning) if there is no room."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _remove_orphans(self.root)
            free = shutil.disk_usage(self.root).free
            if free < nbytes + 256_000_000:
                warnings.warn(
                    f"cache folder {self.root} has {free / 1e9:.1f} GB free, the cache of this "
                    f"load needs {nbytes / 1e9:.1f} GB: loading without writing it. Fix: free "
                    "space, or set `cache_dir` in config.py to a larger disk.",
                    CacheWarning,
                    stacklevel=4,
                )
                return None
            return tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=self.root)
        except OSError as err:
            warnings.warn(
                f"cannot write the cache in {self.root} ({err}): loading without it. Fix: set "
                "`cache_dir` in config.py to a writable folder, or `cache = False`.",
                CacheWarning,
                stacklevel=4,
            )
            return None

    def install(self, folder: str, manifest: dict) -> bool:
        """Write the manifest last, then rename the folder into place; False if that fails."""
        try:
            with open(os.path.join(folder, "manifest.json"), "w") as file:
                json.dump(manifest, file, indent=1)
            old = None
            if self.path.exists():
                old = self.root / f"{_STAGING}{os.getpid()}-old-{secrets.token_hex(4)}"
                os.rename(self.path, old)
            try:
                os.rename(folder, self.path)
            finally:
                if old is not None:  # processes that still map it keep their data
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            # E.g. another process installed the same entry meanwhile: ours is dropped.
            with contextlib.suppress(OSError):
                if not self.path.exists():
                    warnings.warn(
                        f"cannot write the cache entry {self.path} ({err}).",
                        CacheWarning,
                        stacklevel=4,
                    )
            return False
        return True
