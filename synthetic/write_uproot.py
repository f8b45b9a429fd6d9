"""The uproot writer: counter-based jagged branches (``ntrk`` + ``trk_pt`` as ``float[]``), fast,
label trk_isTrue only (uproot cannot write ``std::vector<std::vector<int>>``)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from cmssw.ntuple import TREE_PATH
from synthetic.layout import BEAMSPOT_BRANCHES, EVENT_BRANCHES, TRACK_BRANCHES, VERTEX_BRANCHES


def write_uproot(path: Path, counts: np.ndarray, arrays: dict[str, np.ndarray], codec) -> None:
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
                tree = file.mktree(TREE_PATH, types)
            tree.extend(chunk)
