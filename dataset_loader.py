"""Read CMSSW trackingNtuple ROOT files into one pandas DataFrame with one row per track.

    loader = DatasetLoader(max_workers=4)
    df = loader.load_samples({"qcd": "data/qcd/", "ttbar": "root://eosuser.cern.ch//eos/.../x.root"})

Columns, in this order:
    the features (config.features)  float32, named as their branches
    the algo branch (trk_originalAlgo)  uint8
    trk_isTrue                      int8 0/1, from whichever label convention the file uses
    the extra branches (trk_mva)    float32
    event_index                     uint32, unique per event across everything one call loads
    sample                          categorical, the sample names in the order given

Only the branches needed are read, with uproot, in worker processes (one task per file); each worker
converts chunk by chunk to the final dtypes, so no float64 or awkward copy of the whole set exists.
Bad input raises NtupleError with the file, the problem and the fix; with skip_bad_files=True the
bad files are warned about and left out instead.

The label: a file with `trk_isTrue` uses it; otherwise a track is true when its `trk_simTrkIdx`
(std::vector<std::vector<int>>) entry is non-empty. uproot only reads that branch as generic
objects, so we read its raw bytes as a flat int32 array per event instead and walk the
[size, indices...] records to get each track's number of matches (see _matches_per_track).
On a 2.8M-track file this takes 0.27 s (10 M tracks/s, most of it decompression) against 0.97 s
for uproot's AwkwardForth path + ak.num(axis=2) and ~25 s for library="np".

Workers are not forked from the caller, which may run threads (TensorFlow) and deadlock a fork:
they come from multiprocessing's "forkserver" (or "spawn"), so a script calling the loader needs
the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import glob
import os
import struct
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context

import awkward as ak
import numpy as np
import pandas as pd
import uproot
from tqdm import tqdm

LABEL_COLUMN = "trk_isTrue"
LABEL_CHOICES = ("auto", "trk_isTrue", "trk_simTrkIdx")
STEP_BYTES = 100_000_000  # uncompressed branch data a worker reads at once

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


@dataclass
class FileTracks:
    """What a worker returns for one file (or an entry range of it).

    Each chunk maps every column to one value per track, in its final dtype, plus "entry": the
    uint32 entry (event) number in the file of each track. The chunks are not concatenated here,
    only once into the final columns, to keep one copy of the data at a time.
    """

    chunks: list[dict[str, np.ndarray]]
    num_entries: int  # entries of the whole file, to number events uniquely across files

    @property
    def num_tracks(self) -> int:
        return sum(len(chunk["entry"]) for chunk in self.chunks)


class DatasetLoader:
    """Loads trackingNtuple files into a DataFrame; see the module docstring for the columns."""

    def __init__(
        self,
        max_workers: int = 2,
        tree_path: str = "trackingNtuple/tree",
        features: Sequence[str] | None = None,
        algo_branch: str = "trk_originalAlgo",
        label: str = "auto",
        extra_branches: Sequence[str] = ("trk_mva",),
        skip_bad_files: bool = False,
    ) -> None:
        """features=None takes config.features."""
        if label not in LABEL_CHOICES:
            raise ValueError(
                f"label = {label!r}: the `label` setting must be one of {LABEL_CHOICES}"
            )
        if features is None:
            import config  # only here, so the loader works without config.py when given features

            features = config.features
        self.max_workers = max(1, int(max_workers))
        self.tree_path = tree_path
        self.features = list(features)
        self.algo_branch = algo_branch
        self.label = label
        # An extra branch that already is a column would be a duplicate column.
        taken = {*self.features, algo_branch, LABEL_COLUMN}
        self.extra_branches = [b for b in dict.fromkeys(extra_branches) if b not in taken]
        self.skip_bad_files = skip_bad_files
        self.skipped_files: dict[str, str] = {}  # of the last call: path -> why it was skipped
        self.num_files = 0  # files the last call tried to read

    def load_into_dataframe(self, paths: Paths, sample: str = "") -> pd.DataFrame:
        """Load the files of one sample: a file, a glob, a folder (its *.root files) or a list."""
        return self.load_samples({sample: paths})

    def load_samples(self, samples: Mapping[str, Paths]) -> pd.DataFrame:
        """Load several named samples with one pool of workers; adds the `sample` column."""
        if not samples:
            raise ValueError("no samples given")
        files: list[str] = []
        file_sample: list[int] = []
        for code, (sample, sample_paths) in enumerate(samples.items()):
            sample_files = expand_paths(sample_paths)
            if not sample_files:
                raise ValueError(f"sample {sample!r}: no path given")
            files += sample_files
            file_sample += [code] * len(sample_files)

        self.skipped_files = {}
        self.num_files = len(files)
        results = self._read_files(files)
        if self.skipped_files:
            warnings.warn(
                f"skipped {len(self.skipped_files)} of {len(files)} files "
                f"(skip_bad_files=True): {', '.join(self.skipped_files)}",
                stacklevel=2,
            )
        if all(result is None for result in results):
            first = next(iter(self.skipped_files.values()))
            raise NtupleError(
                f"all {len(files)} files are bad, nothing to load. First one: {first}"
            )
        return self._assemble(results, file_sample, list(samples))

    def _read_options(self) -> dict:
        return {
            "tree_path": self.tree_path,
            "features": self.features,
            "algo_branch": self.algo_branch,
            "label": self.label,
            "extra_branches": self.extra_branches,
        }

    def _read_files(self, files: list[str]) -> list[FileTracks | None]:
        """Read every file, in worker processes if max_workers > 1; None for a skipped file."""
        results: list[FileTracks | None] = [None] * len(files)
        options = self._read_options()
        start = time.perf_counter()
        tracks = 0
        with tqdm(total=len(files), unit="file", desc="reading ntuples") as bar:

            def collect(index: int, get_result) -> None:
                nonlocal tracks
                try:
                    results[index] = get_result()
                except NtupleError as err:
                    if not self.skip_bad_files:
                        raise
                    warnings.warn(f"skipping bad file: {err}", stacklevel=2)
                    self.skipped_files[files[index]] = str(err)
                else:
                    tracks += results[index].num_tracks
                rate = tracks / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix_str(f"{tracks:,} tracks, {rate:,.0f} tracks/s")
                bar.update()

            if self.max_workers == 1 or len(files) == 1:
                for index, path in enumerate(files):
                    collect(index, lambda path=path: read_entries(path, 0, None, **options))
                return results
            pool = ProcessPoolExecutor(
                max_workers=min(self.max_workers, len(files)), mp_context=_worker_context()
            )
            try:
                futures = {
                    pool.submit(read_entries, path, 0, None, **options): index
                    for index, path in enumerate(files)
                }
                for future in as_completed(futures):
                    collect(futures[future], future.result)
            finally:
                # On an error, do not wait for the other files.
                pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _assemble(
        self, results: list[FileTracks | None], file_sample: list[int], sample_names: list[str]
    ) -> pd.DataFrame:
        """Concatenate the files column by column, freeing each file's copy as we go."""
        kept = [
            (result, code)
            for result, code in zip(results, file_sample, strict=True)
            if result is not None
        ]
        offsets = np.cumsum([0] + [result.num_entries for result, _ in kept])
        if offsets[-1] > np.iinfo(np.uint32).max:
            raise NtupleError(
                f"{offsets[-1]:,} events in one call do not fit the uint32 event_index. "
                "Fix: load fewer files at once."
            )
        pieces = [
            (chunk, np.uint32(offset), code)
            for (result, code), offset in zip(kept, offsets[:-1], strict=True)
            for chunk in result.chunks
        ]
        # The leading empty array fixes the dtype, also when no file has any track.
        codes = np.concatenate(
            [np.empty(0, np.int16)]
            + [np.full(len(c["entry"]), code, np.int16) for c, _, code in pieces]
        )
        columns = {}
        for name, dtype in self._column_dtypes().items():
            columns[name] = np.concatenate(
                [np.empty(0, dtype)] + [c.pop(name) for c, _, _ in pieces]
            )
        columns["event_index"] = np.concatenate(
            [np.empty(0, np.uint32)] + [c.pop("entry") + offset for c, offset, _ in pieces]
        )
        columns["sample"] = pd.Categorical.from_codes(codes, categories=sample_names)
        return pd.DataFrame(columns, copy=False)

    def _column_dtypes(self) -> dict[str, type]:
        return {
            **{name: np.float32 for name in self.features},
            self.algo_branch: np.uint8,
            LABEL_COLUMN: np.int8,
            **{name: np.float32 for name in self.extra_branches},
        }


def _worker_context():
    """Workers forked from a clean server process that has imported this module once: as safe
    as "spawn" with a threaded parent (TensorFlow), without paying the imports per worker."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


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
            files.append(item)  # a missing file is reported by the worker, as a bad file
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


def read_entries(
    path: str,
    entry_start: int,
    entry_stop: int | None,
    *,
    tree_path: str,
    features: Sequence[str],
    algo_branch: str,
    label: str,
    extra_branches: Sequence[str],
) -> FileTracks:
    """Read entries [entry_start, entry_stop) of one file: the worker function.

    Every failure comes out as NtupleError with a plain message, which survives the trip back to
    the parent process (some uproot exceptions do not pickle).
    """
    try:
        return _read_entries(
            path, entry_start, entry_stop, tree_path, features, algo_branch, label, extra_branches
        )
    except (NtupleError, MemoryError):
        raise
    except Exception as err:
        raise NtupleError(
            f"{path}: could not be read ({type(err).__name__}: {err}); it is probably corrupted "
            f"or truncated. {_BAD_FILE_FIX}"
        ) from None


def _read_entries(
    path, entry_start, entry_stop, tree_path, features, algo_branch, label, extra_branches
) -> FileTracks:
    if "://" not in path:
        _check_local_file(path)
    with uproot.open(path, array_cache=None) as file:
        tree = _get_tree(file, path, tree_path)
        num_entries = tree.num_entries
        if num_entries == 0:
            raise NtupleError(
                f"{path}: tree '{tree_path}' has 0 entries (no events; a failed or empty job?). "
                "Fix: remove the file from the sample, or set skip_bad_files = True in config.py "
                "to go on without it."
            )
        label_branch = _label_branch(tree, path, label)
        _check_branches(tree, path, features, algo_branch, label, label_branch, extra_branches)

        # The simTrkIdx label is read on its own, the rest in one call.
        branches = list(dict.fromkeys([*features, algo_branch, *extra_branches]))
        if label_branch == "trk_isTrue":
            branches.append(label_branch)
        entry_stop = num_entries if entry_stop is None else min(entry_stop, num_entries)
        # From the branches' uncompressed totals: uproot's num_entries_for reads every basket's key.
        read = dict.fromkeys([*branches, label_branch])
        branch_bytes = sum(tree[name].member("fTotBytes") for name in read)
        step = max(1, int(STEP_BYTES * num_entries / max(branch_bytes, 1)))

        chunks = []
        for start in range(entry_start, entry_stop, step):
            stop = min(start + step, entry_stop)
            chunks.append(_read_chunk(tree, path, start, stop, branches, label_branch, algo_branch))

    return FileTracks(chunks=chunks, num_entries=num_entries)


def _read_chunk(tree, path, start, stop, branches, label_branch, algo_branch) -> dict:
    """One chunk of entries, converted to the final dtypes at once."""
    arrays = tree.arrays(branches, entry_start=start, entry_stop=stop, library="ak", how=dict)
    counts = ak.to_numpy(ak.num(arrays[algo_branch]))  # tracks per event
    out = {}
    for name in branches:
        values = _per_track(arrays.pop(name), counts, path, name)
        if name == label_branch:  # trk_isTrue
            out[LABEL_COLUMN] = (values != 0).astype(np.int8)
        elif name == algo_branch:
            # reco::TrackBase::TrackAlgorithm is < 47; check before the cast to uint8.
            if len(values) and (values.min() < 0 or values.max() > 255):
                raise NtupleError(
                    f"{path}: branch '{name}' has values outside 0-255, not track algorithms. "
                    "Fix: set `algo_branch` in config.py to trk_originalAlgo."
                )
            out[name] = values.astype(np.uint8)
        else:
            out[name] = values.astype(np.float32, copy=False)
    if label_branch != "trk_isTrue":
        matches = _matches_per_track(tree[label_branch], start, stop, counts, path)
        out[LABEL_COLUMN] = (matches > 0).astype(np.int8)
    out["entry"] = np.repeat(np.arange(start, stop, dtype=np.uint32), counts)
    return out


def _per_track(array: ak.Array, counts: np.ndarray, path: str, name: str) -> np.ndarray:
    """The flat per-track values of a jagged branch, checked to have one value per track."""
    if array.ndim != 2 or not np.array_equal(ak.to_numpy(ak.num(array)), counts):
        raise NtupleError(
            f"{path}: branch '{name}' does not hold one value per track (its length per event "
            "differs from the algo branch's). Fix: use trk_* per-track branches in config.py."
        )
    return ak.to_numpy(ak.flatten(array))


def _matches_per_track(branch, start, stop, tracks_per_event, path) -> np.ndarray:
    """The size of each track's trk_simTrkIdx vector (its number of matched sim particles)."""
    if branch.interpretation == _VECTOR_VECTOR_INT:
        words = branch.array(
            _VECTOR_VECTOR_INT_WORDS, entry_start=start, entry_stop=stop, library="ak"
        )
        sizes = _inner_sizes(
            ak.to_numpy(ak.flatten(words)), ak.to_numpy(ak.num(words)), tracks_per_event
        )
        if sizes is not None:
            return sizes
    # Any other layout: uproot's generic (slower) reading.
    nested = branch.array(entry_start=start, entry_stop=stop, library="ak")
    sizes = ak.to_numpy(ak.flatten(ak.num(nested, axis=2)))
    if len(sizes) != tracks_per_event.sum():
        raise NtupleError(
            f"{path}: branch '{branch.name}' does not hold one vector per track. "
            "Fix: produce the ntuple with CMSSW's TrackingNtuple, or set `label` in config.py."
        )
    return sizes


def _inner_sizes(
    words: np.ndarray, words_per_event: np.ndarray, tracks_per_event: np.ndarray
) -> np.ndarray | None:
    """Each track's vector size from the int32 words [size, indices..., size, indices...] of
    every event; None if the words do not have that layout.

    The records are walked with one numpy step per track position k, for the k-th track of all
    events at once, so the cost grows with the largest event, not with the number of events.
    """
    total = int(tracks_per_event.sum())
    if len(words) < total:  # every track has at least its size word
        return None
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


def _get_tree(file, path: str, tree_path: str):
    try:
        tree = file[tree_path]
    except uproot.KeyInFileError:
        tree = None
    if not isinstance(tree, uproot.TTree):
        raise NtupleError(
            f"{path}: no TTree '{tree_path}' in the file (it holds: "
            f"{', '.join(file.keys(cycle=False)) or 'nothing'}). Fix: set `tree_path` in "
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
