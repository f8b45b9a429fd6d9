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
[size, indices...] records to get each track's number of matches (loader.decode.inner_sizes).

The parts, in the order a load uses them: loader/paths.py (paths, globs, folders, URLs),
loader/ntuples.py (opening files, checking branches), loader/scan.py (step 1),
loader/columns.py (step 2), loader/baskets.py and loader/decode.py (step 3), loader/cache.py.

Workers are plain Python processes (loader/workers.py): they never re-run the caller's
__main__, so the loader works from a script without an `if __name__ == "__main__":` guard,
from `python -c`, from stdin, from Jupyter and next to TensorFlow. Each worker is one busy
thread: baskets are read and decompressed in the calling thread (uproot too is given
TrivialExecutors), and numpy's element-wise operations are single-threaded (BLAS is not used),
so N workers use N cores.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cmssw.ntuple import LABEL, LABEL_BRANCHES, TREE_PATH
from loader.cache import CACHE_FORMAT, CacheEntry
from loader.columns import (
    Columns,
    create_columns,
    digest_columns,
    drop_rows,
    map_columns,
    scratch_folder,
)
from loader.decode import Task, decode_task, forget_process_state
from loader.errors import CacheWarning, ColumnWriteError, NtupleError
from loader.ntuples import ReadOptions
from loader.paths import Paths, absolute, check_paths, expand_paths
from loader.scan import FileScan, scan_file
from loader.workers import Call, Runner, WorkerPool, run_here
from pipeline.console import progress

__all__ = [
    "CacheWarning",
    "ColumnWriteError",
    "DatasetLoader",
    "NtupleError",
    "check_paths",
    "expand_paths",
]

if TYPE_CHECKING:  # pandas is imported when the DataFrame is built: workers never need it
    import pandas as pd
LABEL_CHOICES = ("auto", *LABEL_BRANCHES)
READERS = ("own", "uproot")
# Part of the cache key: bump it whenever the decoded values or the cache layout change.
LOADER_VERSION = 2
TASK_BYTES = 32_000_000  # uncompressed branch data of one decode task, at most
TASKS_PER_WORKER = 16  # smaller tasks when needed, so that every worker stays busy to the end


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
        every basket through uproot's own reading, ZLIB inflated by ISA-L (the
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
        reserved = {algo_branch, LABEL, "event_index", "sample"}
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
            columns = create_columns(folder or scratch_folder(nbytes), length, dtypes)
            phases["scan"], clock = time.perf_counter() - clock, time.perf_counter()

            digests = self._run_tasks(tasks, options, columns, run)
            phases["decode"], clock = time.perf_counter() - clock, time.perf_counter()
            failed = {task.file for task, digest in zip(tasks, digests, strict=True) if not digest}
            if failed:  # files that broke while decoding (skip_bad_files=True): drop their rows
                forget_process_state()  # no open file descriptors on the columns being cut
                dropped = [file_rows[index] for index in sorted(failed)]
                columns = drop_rows(columns, dropped)
                splits, column_digests = digest_columns(columns)
            else:
                splits = [[task.row_start, task.row_stop] for task in tasks]
                column_digests = {
                    name: [digest["digests"][name] for digest in digests] for name, _ in dtypes
                }
            self.last_load["processes"] = _per_process(digests, tasks)
            self._warn_skipped(len(files))
            if folder is not None:
                manifest = {
                    "format": CACHE_FORMAT,
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
            arrays = map_columns(columns)
            phases["finish"] = time.perf_counter() - clock
            self.last_load["phases"] = phases
            succeeded = True
            return arrays
        finally:
            if pool is not None:
                pool.close(wait=succeeded)
            forget_process_state()
            if columns is not None and not installed:
                # Mapped columns stay valid after their files are removed.
                shutil.rmtree(columns.directory, ignore_errors=True)

    def _scan(self, files: list[str], options: ReadOptions, run: Runner) -> list[FileScan | None]:
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
        self, tasks: list[Task], options: ReadOptions, columns: Columns, run: Runner
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

    def _read_options(self) -> ReadOptions:
        return ReadOptions(
            tree_path=self.tree_path,
            features=tuple(self.features),
            algo_branch=self.algo_branch,
            label=self.label,
            extra_branches=tuple(self.extra_branches),
            reader=self.reader,
        )

    def _dtypes(self) -> dict[str, type]:
        return {
            **{name: np.float32 for name in self.features},
            self.algo_branch: np.uint8,
            LABEL: np.int8,
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
                [absolute(path), code] for path, code in zip(files, file_sample, strict=True)
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
