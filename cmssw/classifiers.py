"""What CMSSW's track classifiers load, and how they feed it.

TrackTfClassifier (RecoTracker/FinalTrackSelectors) loads a frozen GraphDef through the
TfGraphDefProducer ES producer and feeds, per track, ``x`` = the 29 values of TF_GRAPH_FEATURES
in this order and ``y`` = originalAlgo() as a float; it fetches ``Identity``, the probability p
that the track is true, and uses mva = 2p - 1. It evaluates tracks in batches of 16 by default.

The same graph converted to ONNX (opset <= ONNX_MAX_OPSET) can be run by the ONNX Runtime that
CMSSW also ships, from a producer of one's own: no track classifier of CMSSW loads ONNX.

TrackLwtnnClassifier (the older path) loads an lwtnn JSON and fills its inputs by name with the
22 values of LWTNN_INPUTS; lwtnn applies (value + offset) * scale to each and can express no
other preprocessing.

Per iteration, three thresholds [loose, tight, highPurity] on the mva set the quality bits
(a bit is set when mva > cut); for the DNN they live in
RecoTracker/IterativeTracking/python/dnnQualityCuts.py, keyed by CMSSW's step names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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
# The placeholders' and the output's shapes (-1: any number of tracks), all float32.
TF_GRAPH_INPUT_SHAPES = {FEATURE_INPUT: (-1, len(TF_GRAPH_FEATURES)), ALGO_INPUT: (-1, 1)}
TF_GRAPH_OUTPUT_SHAPE = (-1, 1)

# --- ONNX Runtime (shipped by CMSSW too: 1.14 in 13_x, 1.17 in 14_x, newer later) -------------
# Opset 17 and IR version 8 are what the oldest of those, 1.14, reads.
ONNX_MAX_OPSET = 17
ONNX_MAX_IR_VERSION = 8

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

# lwtnn's names of the activations it computes exactly like Keras, by Keras name. lwtnn reads
# "elu" given as a plain name with alpha = 1, Keras' default. Keras' hard_sigmoid (slope 1/6)
# is not lwtnn's (slope 0.2), and swish/leaky_relu need a form older lwtnn releases cannot read.
LWTNN_ACTIVATIONS = {
    "linear": "linear",
    "relu": "rectified",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "elu": "elu",
}
LWTNN_OUTPUT = "out_0"  # the name of the one output, as in the production file

# --- What a run is deployed to ------------------------------------------------------------------
# deploy_target -> the CMSSW module that loads the result (None: no CMSSW classifier does).
DEPLOY_TARGETS = {
    "tf_graph": "TrackTfClassifier",
    "lwtnn": "TrackLwtnnClassifier",
    "custom": None,
}


def target_inputs(deploy_target: str) -> tuple[str, ...] | None:
    """The inputs the target's CMSSW module feeds, in its order (None for "custom")."""
    return {"tf_graph": TF_GRAPH_FEATURES, "lwtnn": LWTNN_INPUTS}.get(deploy_target)


def deploy_target_mismatch(
    deploy_target: str, features: Sequence[str], algo_branch: str | None
) -> str | None:
    """None when the settings fit what deploy_target's CMSSW module feeds; otherwise one line
    naming the first mismatch and the fix.

    tf_graph: `features` must be TF_GRAPH_FEATURES in that order and `algo_branch` the branch
    fed as y. lwtnn: `features` must be LWTNN_INPUTS in that order (trk_algo is one of them;
    `algo_branch` only selects iterations). custom: anything goes (no CMSSW module loads it).
    """
    if deploy_target not in DEPLOY_TARGETS:
        return f"deploy_target is {deploy_target!r}: choose one of " + ", ".join(
            repr(name) for name in DEPLOY_TARGETS
        )
    expected = target_inputs(deploy_target)
    if expected is None:
        return None
    module = DEPLOY_TARGETS[deploy_target]
    fix = (
        f"use the {len(expected)} inputs in CMSSW's order (cmssw.classifiers."
        f"{'TF_GRAPH_FEATURES' if deploy_target == 'tf_graph' else 'LWTNN_INPUTS'}), "
        "or set deploy_target = 'custom'"
    )
    features = list(features)
    count = f"{len(features)} features, {module} feeds {len(expected)}"
    for i, (have, want) in enumerate(zip(features, expected, strict=False)):
        if have != want:
            sizes = f" ({count})" if len(features) != len(expected) else ""
            return f"features[{i}] is {have!r} but {module} feeds {want!r} there{sizes}: {fix}"
    if len(features) != len(expected):
        return f"{count}: {fix}"
    if deploy_target == "tf_graph" and algo_branch != TF_GRAPH_ALGO_INPUT:
        return (
            f"algo_branch is {algo_branch!r} but {module} feeds originalAlgo() "
            f"({TF_GRAPH_ALGO_INPUT!r}) as {ALGO_INPUT}: set algo_branch = "
            f"{TF_GRAPH_ALGO_INPUT!r}, or deploy_target = 'custom'"
        )
    return None


def derived_input(name: str, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The value CMSSW computes for a DERIVED_INPUTS entry, from the ntuple's columns."""
    if name not in DERIVED_INPUTS:
        raise KeyError(f"{name!r} is no derived input; those are {sorted(DERIVED_INPUTS)}")
    branch, clamp = DERIVED_INPUTS[name]
    values = np.asarray(columns[branch], dtype=np.float32)
    return values if clamp is None else np.clip(values, *clamp).astype(np.float32)


# --- dnnQualityCuts.py --------------------------------------------------------------------------
QUALITY_LEVELS = ("loose", "tight", "highPurity")


def step_name(iteration: str) -> str:
    """The key of an iteration in dnnQualityCuts.py: initialStep -> InitialStep."""
    return iteration[:1].upper() + iteration[1:]


def quality_cut_steps(dnn_iterations: Sequence[str], iterations: Sequence[str]) -> set[str]:
    """The steps a run's dnnQualityCuts.py holds: the DNN's and any other iteration it
    evaluates (so the only ones its reference cuts may name)."""
    return {step_name(i) for i in [*dnn_iterations, *iterations]}
