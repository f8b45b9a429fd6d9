"""The second pass: one entry range of one file decoded into its rows of every column."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import uproot

from cmssw.classifiers import DERIVED_INPUTS
from cmssw.ntuple import LABEL
from loader.baskets import Baskets, NoOffsets, jagged_layout, jagged_values
from loader.columns import Columns, Rows, buffer, forget_column_files
from loader.errors import BAD_FILE_FIX, NtupleError
from loader.ntuples import (
    OPENED,
    VECTOR_VECTOR_INT,
    VECTOR_VECTOR_INT_WORDS,
    ReadOptions,
    forget_open_files,
    open_tree,
    wrap_errors,
)


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


def decode_task(task: Task, options: ReadOptions, columns: Columns) -> dict[str, Any]:
    """Decode one entry range into its rows of the shared columns: the second worker function.

    Returns the xxh3-64 digest of every column's rows (for the cache manifest), and which
    process took how long (for last_load["processes"]).
    """
    start, cpu, opened = time.perf_counter(), time.process_time(), OPENED[0]
    where = f"entries {task.entry_start}-{task.entry_stop}"
    digests = wrap_errors(task.path, where, lambda: _decode(task, columns, options))
    return {
        "digests": digests,
        "pid": os.getpid(),
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "opened": OPENED[0] - opened,
    }


def _decode(task: Task, columns: Columns, options: ReadOptions) -> dict[str, str]:
    reader = options.reader
    use_reader(reader)
    _, tree, descriptor = open_tree(task.path, options.tree_path)
    rows = Rows(columns, task.row_start)
    planned = reads(options, task.label_branch)
    branches = [tree[name] for name, _, _ in planned]
    baskets = None  # reader "uproot": every branch through uproot's reading
    if reader == "own":
        baskets = Baskets(branches, task.entry_start, task.entry_stop, descriptor)
    counts = None  # tracks per entry, from the algo branch
    last_use = {name: i for i, (name, _, _) in enumerate(planned)}  # a branch may feed 2 columns
    for i, (name, column, kind) in enumerate(planned):
        if kind == "matches":
            _decode_matches(tree[name], baskets, task, counts, rows.writer(column))
        else:
            convert = _converter(kind, column)
            counts = _decode_branch(tree[name], baskets, task, counts, rows.writer(column), convert)
        if last_use[name] == i and baskets is not None:
            baskets.release(tree[name])
    entries = np.arange(task.entry_start, task.entry_stop, dtype=np.uint32)
    rows.write("event_index", np.repeat(entries + np.uint32(task.event_offset), counts))
    rows.write("sample", np.full(len(rows), task.sample_code, dtype=np.int8))
    expected = task.row_stop - task.row_start
    written = rows.rows_written()
    if written != {expected}:  # every column got exactly the task's rows
        raise NtupleError(_inconsistent(task, min(written - {expected}), expected))
    return rows.digests()


def reads(options: ReadOptions, label_branch: str) -> list[tuple[str, str, str]]:
    """(branch, column, kind) of everything a task reads, the algo branch first: its per-event
    counts are the reference the other branches are checked against."""
    planned = [(options.algo_branch, options.algo_branch, "algo")]
    planned += [(source_branch(name), name, _float_kind(name)) for name in options.features]
    label_kind = "flag" if label_branch == LABEL else "matches"
    planned.append((label_branch, LABEL, label_kind))
    planned += [(name, name, "float") for name in options.extra_branches]
    return planned


def source_branch(column: str) -> str:
    """The branch a column is read from: itself, or for a derived input (cmssw.classifiers:
    CMSSW computes it from a branch) that branch."""
    return DERIVED_INPUTS[column][0] if column in DERIVED_INPUTS else column


def _float_kind(column: str) -> str:
    """ "float", or "clamp" for a derived input that CMSSW clamps (to its DERIVED_INPUTS bounds)."""
    clamp = DERIVED_INPUTS[column][1] if column in DERIVED_INPUTS else None
    return "float" if clamp is None else "clamp"


def use_reader(reader: str) -> None:
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


def _decode_branch(
    branch,
    baskets: Baskets,
    task: Task,
    counts: np.ndarray | None,
    write: Callable[[np.ndarray], None],
    convert: Callable[[np.ndarray, str, str], np.ndarray],
) -> np.ndarray:
    """Write one branch's values of the task; returns the tracks per entry (from this branch if
    counts is None, else checked against counts)."""
    start, stop, path = task.entry_start, task.entry_stop, task.path
    expected = task.row_stop - task.row_start
    layout = jagged_layout(branch.interpretation) if baskets is not None else None
    if layout is not None:
        try:
            written = 0
            parts = []
            for first, end, values, entry_counts in jagged_values(
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
        except NoOffsets:
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
    branch, baskets: Baskets, task: Task, counts: np.ndarray, write: Callable
) -> None:
    """The label from trk_simTrkIdx: true when the track's vector of matches is not empty."""
    sizes = None
    if branch.interpretation == VECTOR_VECTOR_INT and baskets is None:  # uproot reads the words
        array = branch.array(
            VECTOR_VECTOR_INT_WORDS, entry_start=task.entry_start, entry_stop=task.entry_stop
        )
        words = ak.to_numpy(ak.flatten(array)).astype(np.int32)
        sizes = inner_sizes(words, ak.to_numpy(ak.num(array)).astype(np.int64), counts)
    elif branch.interpretation == VECTOR_VECTOR_INT:
        words, words_per_entry = [], []
        for _, _, values, entry_words in jagged_values(
            branch, baskets, task.entry_start, task.entry_stop, 10, np.dtype(">i4"), task.path
        ):
            words.append(values.astype(np.int32))
            words_per_entry.append(entry_words)
        sizes = inner_sizes(
            np.concatenate([np.empty(0, np.int32), *words]),
            np.concatenate([np.empty(0, np.int64), *words_per_entry]),
            counts,
        )
    if sizes is None:  # any other layout: uproot's generic (slower) reading
        sizes = _matches_per_track(branch, task.entry_start, task.entry_stop, counts, task.path)
    write(_to_flag(sizes, task.path, branch.name, compare=np.greater))


def _to_float(values: np.ndarray, path: str, name: str) -> np.ndarray:
    out = buffer(np.float32, len(values))
    np.copyto(out, values, casting="unsafe")  # byte swap and conversion in one pass
    return out


def _to_algo(values: np.ndarray, path: str, name: str) -> np.ndarray:
    # reco::TrackBase::TrackAlgorithm is < 47; check before the cast to uint8.
    if len(values) and (values.min() < 0 or values.max() > 255):
        raise NtupleError(
            f"{path}: branch '{name}' has values outside 0-255, not track algorithms. "
            "Fix: set `algo_branch` in config.py to trk_originalAlgo."
        )
    out = buffer(np.uint8, len(values))
    np.copyto(out, values, casting="unsafe")
    return out


def _to_flag(values: np.ndarray, path: str, name: str, compare=np.not_equal) -> np.ndarray:
    out = buffer(np.int8, len(values))
    compare(values, 0, out=out.view(np.bool_))
    return out


_CONVERTERS = {"float": _to_float, "algo": _to_algo, "flag": _to_flag}


def _converter(kind: str, column: str) -> Callable[[np.ndarray, str, str], np.ndarray]:
    if kind != "clamp":
        return _CONVERTERS[kind]
    low, high = DERIVED_INPUTS[column][1]

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
        f"{BAD_FILE_FIX}"
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


def inner_sizes(
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


def forget_process_state() -> None:
    """Close the ROOT and column files this process holds open, and drop its buffers."""
    forget_open_files()
    forget_column_files()
