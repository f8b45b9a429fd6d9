"""The branches of a trackingNtuple as CMSSW's TrackingNtuple module books them, and their types.

The generator returns arrays of exactly these element types; the writers
(synthetic/write_uproot.py, synthetic/write_root.py) write them in this order.
"""

from __future__ import annotations

import numpy as np

from cmssw.ntuple import TRACK_BRANCHES as NTUPLE_TRACK_BRANCHES

EVENT_BRANCHES = {"event": np.uint64, "lumi": np.uint32, "run": np.uint32}
# The ntuple's per-track branches and their element types (cmssw.ntuple), as NumPy types.
TRACK_BRANCHES = {name: np.dtype(kind).type for name, kind in NTUPLE_TRACK_BRANCHES.items()}
VERTEX_BRANCHES = {f"vtx_{name}": np.float32 for name in ("x", "y", "z", "ndof", "chi2")}
BEAMSPOT_BRANCHES = {f"bsp_{name}": np.float32 for name in ("x", "y", "z")}

# ROOT's default level of each algorithm (RCompressionSetting::EDefaults), for both writers,
# and ROOT's code of each algorithm.
COMPRESSION_LEVELS = {"ZLIB": 1, "LZMA": 7, "LZ4": 4, "ZSTD": 5}
ROOT_ALGORITHM_CODES = {"ZLIB": 1, "LZMA": 2, "LZ4": 4, "ZSTD": 5}
