"""One trackingNtuple file, opened and checked: the tree, the label convention, the branches.

Each process keeps the files it read open between tasks (OPEN_FILES at most): one TTree
parse per file and process, not per task."""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import uproot

from cmssw.ntuple import LABEL_BRANCHES
from loader.errors import BAD_FILE_FIX, ColumnWriteError, NtupleError

# What uproot reports for CMSSW's std::vector<std::vector<int>> branches...
VECTOR_VECTOR_INT = uproot.AsObjects(
    uproot.containers.AsVector(True, uproot.containers.AsVector(False, np.dtype(">i4")))
)


# ...and the same bytes seen as plain int32 words: after the 10-byte header (byte count, version,
# number of tracks) each track is its number of matches followed by that many indices.
VECTOR_VECTOR_INT_WORDS = uproot.AsJagged(uproot.AsDtype(">i4"), header_bytes=10)


@dataclass(frozen=True)
class ReadOptions:
    """What is read of every file of one load (sent to the workers with each call)."""

    tree_path: str
    features: tuple[str, ...]
    algo_branch: str
    label: str  # "auto", "trk_isTrue" or "trk_simTrkIdx"
    extra_branches: tuple[str, ...]
    reader: str = "own"  # "uproot": every basket through uproot's own reading


OPEN_FILES = 16  # ROOT files a process keeps open between tasks (~1-6 MB each)


# Per process: the ROOT files open between tasks ((path, tree path) -> (uproot file, tree, file
# descriptor of a local file or None)).
_OPEN: OrderedDict[tuple[str, str], tuple[Any, Any, int | None]] = OrderedDict()


OPENED = [0]  # files opened by this process, for last_load["processes"]


def open_tree(path: str, tree_path: str):
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
    OPENED[0] += 1
    try:
        tree = _get_tree(directory, path, tree_path)
    except BaseException:
        directory.close()
        raise
    # Baskets of a local file are read with os.pread: less Python per basket than uproot's
    # sources (its chunks, futures and reader thread).
    descriptor = os.open(path, os.O_RDONLY) if "://" not in path else None
    _OPEN[key] = (tree.file, tree, descriptor)
    while len(_OPEN) > OPEN_FILES:
        _close(*_OPEN.popitem(last=False)[1])
    return _OPEN[key]


def _close(file, tree, descriptor: int | None) -> None:
    file.close()
    if descriptor is not None:
        os.close(descriptor)


def forget_open_files() -> None:
    """Close the ROOT files this process holds open."""
    while _OPEN:
        _close(*_OPEN.popitem()[1])


def wrap_errors(path: str, where: str, call: Callable):
    """Every failure as NtupleError with a plain message, which survives the trip back to the
    parent process (some uproot exceptions do not pickle)."""
    try:
        return call()
    except (NtupleError, ColumnWriteError, MemoryError):
        raise
    except Exception as err:
        raise NtupleError(
            f"{path}: {where} could not be read ({type(err).__name__}: {err}); it is probably "
            f"corrupted or truncated. {BAD_FILE_FIX}"
        ) from None


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
            f"{path}: not a ROOT file (it starts with {head[:4]!r}, not b'root'). {BAD_FILE_FIX}"
        )
    # ROOT's file header: "root", version, fBEGIN, then fEND (8 bytes for large-file versions).
    version = struct.unpack(">i", head[4:8])[0]
    end_format = ">q" if version >= 1000000 else ">i"
    end = struct.unpack(end_format, head[12 : 12 + struct.calcsize(end_format)])[0]
    size = os.path.getsize(path)
    if size < end:
        raise NtupleError(
            f"{path}: truncated: the file has {size:,} bytes but its header says {end:,} "
            f"(an interrupted copy or job?). {BAD_FILE_FIX}"
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


def label_branch(tree, path: str, label: str) -> str:
    """The label branch of this file: the forced one, or the convention the file uses."""
    if label != "auto":
        return label
    for candidate in LABEL_BRANCHES:
        if candidate in tree:
            return candidate
    raise NtupleError(
        f"{path}: missing branch for the label: neither trk_isTrue nor trk_simTrkIdx is in the "
        "tree (`label` = 'auto'). Fix: make the ntuple with TrackingNtuple's track-truth "
        "branches (includeTrackingParticles=True gives trk_simTrkIdx, False gives trk_isTrue)."
    )


def check_branches(tree, path, features, algo_branch, label, label_branch, extra_branches):
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
