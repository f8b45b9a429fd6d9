"""The names the evaluation gives its classifiers and groups, and how they are shown."""

from __future__ import annotations

from cmssw.classifiers import QUALITY_LEVELS

NEW = "new_dnn"  # the model of this run, through what CMSSW will run
REFERENCE = "trk_mva"  # the ntuple's branch: the classifier that ran in RECO
BDT = "bdt"  # the gradient-boosted-tree baseline trained here
ALL = "all"  # the key of "all iterations" and of "all test samples combined"
LEVELS = QUALITY_LEVELS  # [loose, tight, highPurity]

DISPLAY = {NEW: "new DNN", REFERENCE: "trk_mva (RECO)", BDT: "BDT baseline"}


def label(name: str) -> str:
    """How a classifier is named in tables, legends and sentences."""
    return DISPLAY.get(name, name)


# What the numbers of metrics.json and of the report mean (MultiTrackValidator's vocabulary).
DEFINITIONS = {
    "mva": "2p - 1 of the sigmoid output p; trk_mva as stored in the ntuple",
    "pass": "a track is kept at a level when mva > threshold (CMSSW's TrackMVAClassifierBase)",
    "efficiency": "true tracks kept / true tracks",
    "fake_rate": "fake tracks among the tracks kept: fake tracks kept / tracks kept",
    "fake_acceptance": "fake-track acceptance: fake tracks kept / fake tracks (the x axis of "
    "the ROC curves; 1 - the fake-track rejection)",
    "working_points": "each classifier's own per-iteration thresholds, derived on all test "
    "samples combined so that its efficiency equals the reference's, applied to these tracks",
    "equal_efficiency": "thresholds set on these very tracks (per iteration) to the reference's "
    "efficiency on them: the like-for-like comparison",
    "fake_rate_change": "new DNN's fake rate minus the other classifier's at equal efficiency, "
    "on the same tracks (paired); relative_change = new / other - 1",
    "intervals": "efficiency, fake rate, acceptance: Clopper-Pearson; AUC and fake-rate "
    "change: percentile bootstrap over events (Poisson weights); all at confidence_level",
    "significant": "the interval of the fake-rate change excludes zero (no change)",
    "all": "'all' iteration: the classified iterations together, each with its own thresholds "
    "(the AUC uses one global cut); 'all' sample: the test samples combined",
}
