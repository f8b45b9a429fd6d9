"""Conventions of the trackingNtuple that Validation/RecoTrack's TrackingNtuple module writes.

One entry per event; every ``trk_*`` branch is a ``std::vector`` with one value per track.
The iteration that built a track is ``trk_originalAlgo``, a ``reco::TrackBase::TrackAlgorithm``.
"""

from __future__ import annotations

TREE_PATH = "trackingNtuple/tree"  # the TDirectory and TTree TrackingNtuple writes

# reco::TrackBase::TrackAlgorithm, the values of trk_algo / trk_originalAlgo.
ALGORITHMS = {
    "undefAlgorithm": 0,
    "ctf": 1,
    "duplicateMerge": 2,
    "cosmics": 3,
    "initialStep": 4,
    "lowPtTripletStep": 5,
    "pixelPairStep": 6,
    "detachedTripletStep": 7,
    "mixedTripletStep": 8,
    "pixelLessStep": 9,
    "tobTecStep": 10,
    "jetCoreRegionalStep": 11,
    "conversionStep": 12,
    "muonSeededStepInOut": 13,
    "muonSeededStepOutIn": 14,
    "outInEcalSeededConv": 15,
    "inOutEcalSeededConv": 16,
    "nuclInter": 17,
    "standAloneMuon": 18,
    "globalMuon": 19,
    "cosmicStandAloneMuon": 20,
    "cosmicGlobalMuon": 21,
    "highPtTripletStep": 22,
    "lowPtQuadStep": 23,
    "detachedQuadStep": 24,
    "displacedGeneralStep": 25,
    "displacedRegionalStep": 26,
    "bTagGhostTracks": 27,
    "beamhalo": 28,
    "gsf": 29,
    "hltPixel": 30,
    "hltIter0": 31,
    "hltIter1": 32,
    "hltIter2": 33,
    "hltIter3": 34,
    "hltIter4": 35,
    "hltIterX": 36,
    "hiRegitMuInitialStep": 37,
    "hiRegitMuPixelPairStep": 38,
    "hiRegitMuMixedTripletStep": 39,
    "hiRegitMuPixelLessStep": 40,
    "hiRegitMuDetachedTripletStep": 41,
    "hiRegitMuonSeededStepInOut": 42,
    "hiRegitMuonSeededStepOutIn": 43,
    "hiRegitMuLowPtTripletStep": 44,
    "hiRegitMuTobTecStep": 45,
    "algoSize": 46,
}
ALGORITHM_NAMES = {value: name for name, value in ALGORITHMS.items()}
# Width of the one-hot encoding of originalAlgo: every algorithm value 0..algoSize-1.
ALGO_DEPTH = ALGORITHMS["algoSize"]

# The Phase-1 / Run-3 iterations the DNN classifies (the muon-seeded steps are not).
DNN_ITERATIONS = (
    "initialStep",
    "lowPtQuadStep",
    "highPtTripletStep",
    "lowPtTripletStep",
    "detachedQuadStep",
    "detachedTripletStep",
    "pixelPairStep",
    "mixedTripletStep",
    "pixelLessStep",
    "tobTecStep",
    "jetCoreRegionalStep",
    "displacedRegionalStep",
)

# The truth label, 1 for a track matched to a simulated particle. Ntuples made with
# includeTrackingParticles=False store it as trk_isTrue; with True they store trk_simTrkIdx
# (the matched particles of each track), and a track is true when its entry is non-empty.
LABEL = "trk_isTrue"
LABEL_BRANCHES = ("trk_isTrue", "trk_simTrkIdx")

# The per-track branches (std::vector<T>, one value per track) and their element types.
_FLOAT_TRACK_BRANCHES = (
    "px", "py", "pz", "pt", "inner_px", "inner_py", "inner_pz", "inner_pt", "outer_px",
    "outer_py", "outer_pz", "outer_pt", "eta", "lambda", "cotTheta", "phi", "dxy", "dz", "dxyPV",
    "dzPV", "dxyClosestPV", "dzClosestPV", "ptErr", "etaErr", "lambdaErr", "phiErr", "dxyErr",
    "dzErr", "refpoint_x", "refpoint_y", "refpoint_z", "nChi2", "nChi2_1Dmod", "ndof", "mva",
    "bestSimTrkShareFrac", "bestSimTrkNChi2",
)  # fmt: skip
_UINT_TRACK_BRANCHES = (
    "nValid", "nLost", "nInactive", "nPixel", "nStrip", "nOuterLost", "nInnerLost",
    "nOuterInactive", "nInnerInactive", "nPixelLay", "nStripLay", "n3DLay", "nLostLay", "nCluster",
    "algo", "originalAlgo",
)  # fmt: skip
TRACK_BRANCHES = {
    **{f"trk_{name}": "float32" for name in _FLOAT_TRACK_BRANCHES},
    **{f"trk_{name}": "uint32" for name in _UINT_TRACK_BRANCHES},
    "trk_q": "int32",
    "trk_vtxIdx": "int32",
    "trk_bestSimTrkIdx": "int32",
    "trk_stopReason": "uint16",
    "trk_qualityMask": "uint16",
    "trk_isHP": "int16",
    "trk_algoMask": "uint64",
}
