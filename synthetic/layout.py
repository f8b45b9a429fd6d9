"""The branches of a trackingNtuple as CMSSW's TrackingNtuple module books them, and their types.

The generator returns arrays of exactly these element types; the writers of make_ntuples.py
write them in this order.
"""

from __future__ import annotations

import numpy as np

EVENT_BRANCHES = {"event": np.uint64, "lumi": np.uint32, "run": np.uint32}
# fmt: off
_FLOAT_TRACK_BRANCHES = [
    "px", "py", "pz", "pt", "inner_px", "inner_py", "inner_pz", "inner_pt", "outer_px",
    "outer_py", "outer_pz", "outer_pt", "eta", "lambda", "cotTheta", "phi", "dxy", "dz", "dxyPV",
    "dzPV", "dxyClosestPV", "dzClosestPV", "ptErr", "etaErr", "lambdaErr", "phiErr", "dxyErr",
    "dzErr", "refpoint_x", "refpoint_y", "refpoint_z", "nChi2", "nChi2_1Dmod", "ndof", "mva",
    "bestSimTrkShareFrac", "bestSimTrkNChi2",
]
_UINT_TRACK_BRANCHES = [
    "nValid", "nLost", "nInactive", "nPixel", "nStrip", "nOuterLost", "nInnerLost",
    "nOuterInactive", "nInnerInactive", "nPixelLay", "nStripLay", "n3DLay", "nLostLay", "nCluster",
    "algo", "originalAlgo",
]
# fmt: on
TRACK_BRANCHES = {
    **{f"trk_{name}": np.float32 for name in _FLOAT_TRACK_BRANCHES},
    **{f"trk_{name}": np.uint32 for name in _UINT_TRACK_BRANCHES},
    "trk_q": np.int32,
    "trk_vtxIdx": np.int32,
    "trk_bestSimTrkIdx": np.int32,
    "trk_stopReason": np.uint16,
    "trk_qualityMask": np.uint16,
    "trk_isHP": np.int16,
    "trk_algoMask": np.uint64,
}
VERTEX_BRANCHES = {f"vtx_{name}": np.float32 for name in ("x", "y", "z", "ndof", "chi2")}
BEAMSPOT_BRANCHES = {f"bsp_{name}": np.float32 for name in ("x", "y", "z")}
