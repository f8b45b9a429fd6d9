"""The first pass over a file: open and check it, and count its tracks per cluster from the
basket headers of the algo branch, without decompressing anything."""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from loader.baskets import tracks_from_headers
from loader.decode import reads, source_branch, use_reader
from loader.errors import NtupleError
from loader.ntuples import ReadOptions, check_branches, label_branch, open_tree, wrap_errors


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


def scan_file(path: str, options: ReadOptions) -> FileScan:
    """Open and check one file and count its tracks per cluster: the first worker function."""
    return wrap_errors(path, "the file", lambda: _scan(path, options))


def _scan(path: str, options: ReadOptions) -> FileScan:
    tree_path, algo_branch = options.tree_path, options.algo_branch
    use_reader(options.reader)
    _, tree, _ = open_tree(path, tree_path)
    num_entries = tree.num_entries
    if num_entries == 0:
        raise NtupleError(
            f"{path}: tree '{tree_path}' has 0 entries (no events; a failed or empty job?). "
            "Fix: remove the file from the sample, or set skip_bad_files = True in config.py "
            "to go on without it."
        )
    branch = label_branch(tree, path, options.label)
    sources = list(dict.fromkeys(source_branch(name) for name in options.features))
    check_branches(tree, path, sources, algo_branch, options.label, branch, options.extra_branches)
    names = [name for name, _, _ in reads(options, branch)]
    # Tasks start and stop where every branch read starts a new basket (a cluster).
    read = {algo_branch, *names}
    common = tree.common_entry_offsets(filter_branch=lambda branch: branch.name in read)
    boundaries = np.array(sorted({0, num_entries, *common}), dtype=np.int64)
    tracks = tracks_from_headers(tree[algo_branch], boundaries)
    if tracks is None:  # a layout the headers do not tell: count by decompressing the branch
        ends = np.concatenate([[0], np.cumsum(_entry_counts(tree[algo_branch], path))])
        tracks = ends[boundaries[1:]] - ends[boundaries[:-1]]
    branch_bytes = sum(int(tree[name].member("fTotBytes")) for name in names)
    return FileScan(num_entries, branch, boundaries, tracks, branch_bytes / num_entries)


def _entry_counts(branch, path: str) -> np.ndarray:
    """Tracks per entry of the algo branch, by reading it."""
    array = branch.array(library="ak")
    if array.ndim != 2:
        raise NtupleError(
            f"{path}: branch '{branch.name}' (the algo branch, `algo_branch`) does not hold one "
            "value per track. Fix: set `algo_branch` in config.py to trk_originalAlgo."
        )
    return ak.to_numpy(ak.num(array)).astype(np.int64)
