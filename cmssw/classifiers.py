"""What CMSSW's track classifiers load, and how they feed it.

TrackTfClassifier (RecoTracker/FinalTrackSelectors) loads a frozen GraphDef through the
TfGraphDefProducer ES producer and feeds, per track, ``x`` = the 29 values of TF_GRAPH_FEATURES
in this order and ``y`` = originalAlgo() as a float; it fetches ``Identity``, the probability p
that the track is true, and uses mva = 2p - 1. It evaluates tracks in batches of 16 by default.

TrackLwtnnClassifier (the older path) loads an lwtnn JSON and fills its inputs by name with the
22 values of LWTNN_INPUTS; lwtnn applies (value + offset) * scale to each and can express no
other preprocessing.

Per iteration, three thresholds [loose, tight, highPurity] on the mva set the quality bits
(a bit is set when mva > cut); for the DNN they live in
RecoTracker/IterativeTracking/python/dnnQualityCuts.py, keyed by CMSSW's step names.
"""

from __future__ import annotations

# --- TrackTfClassifier ------------------------------------------------------------------------
# The branch of the ntuple that holds what CMSSW computes for each input, in CMSSW's order:
# pt(), innerMomentum() x/y/z/rho, outerMomentum() x/y/z/rho, ptError(), dxy/dz w.r.t. the best
# vertex, dxy/dz w.r.t. the beam spot, dxyError(), dzError(), normalizedChi2(), eta(), phi(),
# etaError(), phiError(), valid pixel and strip hits, ndof(), lost hits missing inner/outer,
# inactive layers missing inner/outer, trackerLayersWithoutMeasurement.
TF_GRAPH_FEATURES = (
    "trk_pt",
    "trk_inner_px",
    "trk_inner_py",
    "trk_inner_pz",
    "trk_inner_pt",
    "trk_outer_px",
    "trk_outer_py",
    "trk_outer_pz",
    "trk_outer_pt",
    "trk_ptErr",
    "trk_dxyClosestPV",
    "trk_dzClosestPV",
    "trk_dxy",
    "trk_dz",
    "trk_dxyErr",
    "trk_dzErr",
    "trk_nChi2",
    "trk_eta",
    "trk_phi",
    "trk_etaErr",
    "trk_phiErr",
    "trk_nPixel",
    "trk_nStrip",
    "trk_ndof",
    "trk_nInnerLost",
    "trk_nOuterLost",
    "trk_nInnerInactive",
    "trk_nOuterInactive",
    "trk_nLostLay",
)
TF_GRAPH_ALGO_INPUT = "trk_originalAlgo"  # fed as the graph's second input, y
FEATURE_INPUT, ALGO_INPUT = "x", "y"  # the graph's placeholders
OUTPUT_NODE = "Identity"  # the node CMSSW fetches
CMSSW_BATCH_SIZE = 16  # tracks per evaluation in TrackTfClassifier by default

# --- TrackLwtnnClassifier ---------------------------------------------------------------------
# The inputs it fills by name, in the order it fills them.
LWTNN_INPUTS = (
    "trk_pt",
    "trk_eta",
    "trk_lambda",
    "trk_dxy",
    "trk_dz",
    "trk_dxyClosestPV",
    "trk_dzClosestPVNorm",
    "trk_ptErr",
    "trk_etaErr",
    "trk_lambdaErr",
    "trk_dxyErr",
    "trk_dzErr",
    "trk_nChi2",
    "trk_ndof",
    "trk_nInvalid",
    "trk_nPixel",
    "trk_nStrip",
    "trk_nPixelLay",
    "trk_nStripLay",
    "trk_n3DLay",
    "trk_nLostLay",
    "trk_algo",
)
# Inputs that are no ntuple branch: name -> (the branch CMSSW's value equals, clamp range or
# None). trk_dzClosestPVNorm is dz(best vertex) clamped to [-0.2, 0.2]; trk_nInvalid is the
# number of lost hits, the ntuple's trk_nLost.
DERIVED_INPUTS = {
    "trk_dzClosestPVNorm": ("trk_dzClosestPV", (-0.2, 0.2)),
    "trk_nInvalid": ("trk_nLost", None),
}

# --- dnnQualityCuts.py --------------------------------------------------------------------------
QUALITY_LEVELS = ("loose", "tight", "highPurity")


def step_name(iteration: str) -> str:
    """The key of an iteration in dnnQualityCuts.py: initialStep -> InitialStep."""
    return iteration[:1].upper() + iteration[1:]
