"""The synthetic sample's physics: determinism, CMS-like hit patterns, fits and fakes, no toy.

Every check runs on a few hundred events (seconds); the production-graph test is skipped when
the public models are not next to the repository.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CMSSW_MODELS
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from cmssw.ntuple import ALGORITHMS, DNN_ITERATIONS
from synthetic import generate_events
from synthetic.artefacts import NAN_BRANCHES
from synthetic.realism import (
    MAX_SINGLE_AUC,
    aucs_by_iteration,
    known_iterations,
    single_input_aucs,
    track_table,
)
from synthetic.tables import PROCESS_NAMES

MODELS = CMSSW_MODELS
GRAPH_2020 = MODELS / "QCDFlatPU_QCDHighPt_ZEE_DisplacedSUSY_2020.pb"
CLASSIFIED = [name for name in DNN_ITERATIONS if name != "displacedRegionalStep"]


@pytest.fixture(scope="module")
def tracks() -> dict[str, np.ndarray]:
    """400 QCD + 200 TTbar events (~130k tracks), the track branches concatenated."""
    parts = [generate_events("qcd", 400, 31)[1], generate_events("ttbar", 200, 32)[1]]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k.startswith("trk_")}


def in_iteration(a: dict[str, np.ndarray], name: str) -> np.ndarray:
    return a["trk_originalAlgo"] == ALGORITHMS[name]


def regular(a: dict[str, np.ndarray]) -> np.ndarray:
    """Tracks without the pathological values of real data (outliers, NaN)."""
    finite = np.all([np.isfinite(a[k]) for k in NAN_BRANCHES], axis=0)
    return finite & (a["trk_pt"] < 1e4) & (a["trk_nChi2"] < 1e3) & (a["trk_nInnerLost"] < 5)


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", PROCESS_NAMES)
def test_every_process_is_deterministic_for_a_seed(process):
    counts, arrays = generate_events(process, 40, seed=3, file_index=2)
    counts_again, again = generate_events(process, 40, seed=3, file_index=2)
    np.testing.assert_array_equal(counts, counts_again)
    for name in arrays:
        assert arrays[name].tobytes() == again[name].tobytes(), name
    _, other = generate_events(process, 40, seed=4, file_index=2)
    assert not np.array_equal(other["trk_pt"][:100], arrays["trk_pt"][:100])


# ---------------------------------------------------------------------------------------------
# Iterations and fakes
# ---------------------------------------------------------------------------------------------
# Fake fraction before any classifier cut, per iteration: CMS-like ranges in QCD/TTbar with
# pileup. Pixel-quadruplet steps are cleanest, strip-seeded ones dirtiest.
FAKE_FRACTION_RANGES = {
    "initialStep": (0.01, 0.07),
    "lowPtQuadStep": (0.04, 0.16),
    "highPtTripletStep": (0.03, 0.13),
    "lowPtTripletStep": (0.07, 0.25),
    "detachedQuadStep": (0.08, 0.30),
    "detachedTripletStep": (0.12, 0.38),
    "pixelPairStep": (0.10, 0.35),
    "mixedTripletStep": (0.20, 0.50),
    "pixelLessStep": (0.25, 0.60),
    "tobTecStep": (0.30, 0.65),
    "jetCoreRegionalStep": (0.15, 0.50),
}


def test_fake_fractions_per_iteration_are_cms_like(tracks):
    fake = tracks["trk_isTrue"] == 0
    rate = {name: fake[in_iteration(tracks, name)].mean() for name in FAKE_FRACTION_RANGES}
    for name, (low, high) in FAKE_FRACTION_RANGES.items():
        assert low < rate[name] < high, (name, rate[name])
    quads = max(rate[n] for n in ("initialStep", "lowPtQuadStep"))
    assert quads < rate["lowPtTripletStep"] < rate["detachedTripletStep"]
    assert rate["detachedTripletStep"] < min(rate["pixelLessStep"], rate["tobTecStep"])


def test_fake_rate_is_highest_at_low_pt_and_forward(tracks):
    ok = regular(tracks)
    fake = (tracks["trk_isTrue"] == 0)[ok]
    pt, eta = tracks["trk_pt"][ok], np.abs(tracks["trk_eta"][ok])

    def rate(chosen: np.ndarray) -> float:
        return fake[chosen].mean()

    soft, medium = rate(pt < 0.5), rate((pt > 1) & (pt < 5))
    assert soft > 1.8 * medium
    assert rate(pt > 20) > medium  # straight-line fakes of aligned random hits
    assert rate(eta > 1.5) > 1.4 * rate(eta < 1.0)


def test_true_tracks_fit_well_fakes_badly(tracks):
    ok = regular(tracks)
    true, fake = ok & (tracks["trk_isTrue"] == 1), ok & (tracks["trk_isTrue"] == 0)
    nchi2 = tracks["trk_nChi2"]
    # Hit errors are slightly conservative: chi2/ndof of true tracks peaks below 1.
    assert 0.6 < np.median(nchi2[true]) < 1.0
    assert np.median(nchi2[fake]) > 1.5
    assert (tracks["trk_nLostLay"][true] == 0).mean() > 0.8
    assert (tracks["trk_nLostLay"][fake] > 0).mean() > 0.35
    # Fakes are short: building through random hits stops early.
    strips = tracks["trk_nStripLay"]
    assert np.median(strips[fake]) < 0.6 * np.median(strips[true])


# ---------------------------------------------------------------------------------------------
# Hit patterns
# ---------------------------------------------------------------------------------------------
def test_loopers_and_long_barrel_tracks(tracks):
    ok = regular(tracks) & (tracks["trk_isTrue"] == 1)
    barrel = np.abs(tracks["trk_eta"]) < 0.8
    strips = tracks["trk_nStripLay"]
    # A 0.25 GeV track curls up within 2R = 44 cm: at most the four TIB layers (three here).
    looper = ok & barrel & (tracks["trk_pt"] < 0.25)
    assert looper.sum() > 100 and (strips[looper] <= 3).all()
    # A stiff barrel track that did not stop crosses TIB and TOB: ten layers, a hole or two.
    stiff = ok & barrel & (tracks["trk_pt"] > 2) & (tracks["trk_nOuterLost"] == 0)
    assert stiff.sum() > 100 and (strips[stiff] >= 8).mean() > 0.95


def test_missing_inner_hits_follow_the_inward_search(tracks):
    """The final fit looks for hits inward down to the closest approach to the beam line."""
    ok = regular(tracks)
    inner = tracks["trk_nInnerLost"] + tracks["trk_nInnerInactive"]
    # A track starting in the strips but pointing to the beam line crossed four pixel layers.
    pixelless = ok & (tracks["trk_nPixelLay"] == 0) & (np.abs(tracks["trk_dxy"]) < 1.5)
    assert pixelless.sum() > 100 and (inner[pixelless] >= 4).mean() > 0.95
    # Prompt quadruplet-seeded true tracks start on the first pixel layer.
    quad = ok & in_iteration(tracks, "initialStep") & (tracks["trk_isTrue"] == 1)
    quad &= tracks["trk_nPixelLay"] == 4
    assert (inner[quad] == 0).mean() > 0.97


def test_impact_parameter_pulls(tracks):
    ok = regular(tracks) & in_iteration(tracks, "initialStep")
    pull = tracks["trk_dxyClosestPV"] / tracks["trk_dxyErr"]

    def robust_sigma(values: np.ndarray) -> float:
        return 1.4826 * np.median(np.abs(values - np.median(values)))

    true, fake = ok & (tracks["trk_isTrue"] == 1), ok & (tracks["trk_isTrue"] == 0)
    assert 0.8 < robust_sigma(pull[true]) < 1.3  # errors describe true tracks
    assert robust_sigma(pull[fake]) > 1.5  # a fake's parameters estimate no particle's


# ---------------------------------------------------------------------------------------------
# No toy: no single input separates, a combination does, the old classifier is weaker
# ---------------------------------------------------------------------------------------------
def test_no_single_input_or_ratio_separates_but_all_together_do():
    train = track_table(("qcd", "ttbar"), 150, 41, CLASSIFIED)
    test = track_table(("qcd", "ttbar"), 150, 42, CLASSIFIED)
    singles = single_input_aucs(train, test)
    best = max(singles, key=singles.get)
    assert singles[best] < MAX_SINGLE_AUC, (best, singles[best])
    model = HistGradientBoostingClassifier(max_iter=100, categorical_features=[29])
    with threadpool_limits(1):  # small: threads would only contend on a busy CPU
        model.fit(np.concatenate([train.x, train.algo], axis=1), train.is_true)
    score = model.predict_proba(np.concatenate([test.x, test.algo], axis=1))[:, 1]
    combined = roc_auc_score(test.is_true, score)
    old = roc_auc_score(test.is_true, test.mva)
    assert combined > singles[best] + 0.08
    assert singles[best] < old < combined - 0.04  # trk_mva: useful, clearly beatable


@pytest.mark.skipif(not GRAPH_2020.is_file(), reason=f"production model absent: {GRAPH_2020}")
def test_the_2020_production_graph_recognises_true_and_fake_tracks():
    """Trained on real tracks, it separates the synthetic ones as it separates real ones."""
    from model_freeze import load_graph_def, run_graph_def

    graph_def = load_graph_def(GRAPH_2020)
    iterations = known_iterations(graph_def)
    assert iterations == CLASSIFIED
    test = track_table(("qcd", "ttbar"), 200, 51, iterations)
    score = run_graph_def(graph_def, {"x": test.x, "y": test.algo})[:, 0]
    aucs = aucs_by_iteration(test.is_true, score, test.algo, iterations)
    assert aucs["all"] >= 0.85, aucs
    assert all(aucs[name] >= 0.80 for name in iterations), aucs
