"""The evaluation's numbers against cases computed by hand: rates, cuts, working points,
intervals (Clopper-Pearson, bootstrap over events), the paired fake-rate change, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from cmssw.ntuple import ALGORITHMS
from evaluation.comparison import sample_metrics
from evaluation.metrics import (
    auc,
    binned_rates,
    classifier_cuts,
    derive_working_points,
    level_numbers,
    not_classifiable,
    ordered,
    pass_fraction,
    passes,
    roc_points,
    short_decimal_in,
    threshold_for_efficiency,
    to_mva,
)
from evaluation.names import ALL, NEW, REFERENCE
from evaluation.plots_rates import (
    EVENT_TRACKS_COLUMN,
    HITS_COLUMN,
    add_rate_columns,
    variable_bins,
)
from evaluation.stats import (
    EventBootstrap,
    clopper_pearson,
    event_codes,
    fake_rate_difference,
    percentile_interval,
)
from evaluation.verdict import sentence, tally
from pipeline.settings import default_config

CFG = default_config()


def test_auc_and_roc_by_hand():
    labels = np.array([1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.1])
    # true {0.9, 0.8, 0.3} vs fake {0.7, 0.1}: 5 of the 6 pairs are ordered right.
    assert auc(labels, scores) == pytest.approx(5 / 6)
    acceptance, eff = roc_points(labels, scores)
    points = set(zip(acceptance.round(6), eff.round(6), strict=True))
    # Cuts just below 0.8, 0.7, 0.3, 0.1: (0, 2/3), (1/2, 2/3), (1/2, 1), (1, 1).
    for point in [(0.0, 0.666667), (0.5, 0.666667), (0.5, 1.0), (1.0, 1.0)]:
        assert point in points
    assert np.all(np.diff(acceptance) >= 0) and np.all(np.diff(eff) >= 0)


def test_roc_points_are_thinned_but_keep_the_ends():
    rng = np.random.default_rng(0)
    labels = rng.random(50_000) < 0.5
    acceptance, eff = roc_points(labels, rng.normal(labels.astype(float), 1.0), max_points=400)
    assert len(acceptance) <= 410
    assert (acceptance[0], eff[0]) == (0.0, 0.0) and (acceptance[-1], eff[-1]) == (1.0, 1.0)


def test_pass_fraction_is_strict_like_cmssw():
    true_scores = np.array([0.9, 0.5, 0.1, -0.3])
    assert pass_fraction(true_scores, 0.1) == 0.5  # 0.1 itself does not pass: mva > cut
    assert pass_fraction(true_scores, -1.0) == 1.0
    assert math.isnan(pass_fraction(np.array([]), 0.0))


@pytest.mark.parametrize(
    ("target", "cut", "efficiency"),
    [
        (0.5, 0.1, 0.5),  # cut in [0.1, 0.5): fewest decimals is 0.1
        (0.75, 0.0, 0.75),  # in [-0.3, 0.1): 0.0
        (1.0, -1.0, 1.0),  # below every score
        (0.0, 1.0, 0.0),  # from 0.9 on: 1.0
        (0.6, 0.1, 0.5),  # 0.6 * 4 = 2.4 tracks: 2 is the closest count
    ],
)
def test_threshold_for_efficiency_by_hand(target, cut, efficiency):
    true_scores = np.array([0.9, 0.5, 0.1, -0.3])
    found = threshold_for_efficiency(true_scores, target)
    assert found == pytest.approx(cut)
    assert pass_fraction(true_scores, found) == efficiency


def test_threshold_with_tied_scores_takes_the_closest_reachable_efficiency():
    true_scores = np.array([0.5, 0.5, 0.5, 0.1])
    # 2 of 4 is out of reach: 3 (cut in [0.1, 0.5)) is closer than 0 (cut >= 0.5).
    assert threshold_for_efficiency(true_scores, 0.5) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no true track"):
        threshold_for_efficiency(np.array([]), 0.5)


def test_short_decimal_in():
    assert short_decimal_in(0.123, 0.1238) == pytest.approx(0.123)
    assert short_decimal_in(0.1231, 0.1238) == pytest.approx(0.1231)
    assert short_decimal_in(-math.inf, -0.3) == -1.0
    assert short_decimal_in(-math.inf, -1.0) == -2.0
    assert short_decimal_in(0.93, math.inf) == 1.0


def test_to_mva_and_ordered():
    assert to_mva(np.array([[0.0], [0.5], [1.0]])).tolist() == [-1.0, 0.0, 1.0]
    with pytest.warns(UserWarning, match="not ordered"):
        assert ordered([0.2, 0.1, 0.3]) == [0.2, 0.2, 0.3]


def test_derived_cuts_stay_within_the_mva_range():
    # Every true track at the very bottom: keeping all of them would need a cut below -1.
    cuts = classifier_cuts(NEW, "initialStep", np.array([-1.0, -1.0, 0.5]), [1.0, 0.5, 0.0], CFG)
    assert cuts == sorted(cuts) and all(-1.0 <= c <= 1.0 for c in cuts)


def test_passes_uses_each_iterations_cuts():
    scores = np.array([0.5, 0.5, 0.5])
    algo = np.array([4, 10, 5])  # initialStep, tobTecStep, an iteration without cuts
    flags = passes(scores, algo, {4: [0.0, 0.4, 0.6], 10: [0.6, 0.7, 0.8]})
    assert flags.tolist() == [[True, True, False], [False, False, False], [False] * 3]


# ---------------------------------------------------------------------------------------------
# Rates in tracking vocabulary, with Clopper-Pearson intervals
# ---------------------------------------------------------------------------------------------
def test_clopper_pearson_matches_scipys_exact_interval_and_the_ends():
    kept, total = np.array([0, 1, 7, 19, 20, 5]), np.array([20, 20, 20, 20, 20, 0])
    low, high = clopper_pearson(kept, total, 0.95)
    for k, n, lo, hi in zip(kept[:5], total[:5], low[:5], high[:5], strict=True):
        exact = binomtest(int(k), int(n)).proportion_ci(0.95, method="exact")
        assert lo == pytest.approx(exact.low, abs=1e-9) and hi == pytest.approx(exact.high)
    assert low[0] == 0.0 and high[0] > 0.1  # 0 of 20: the upper bound is not 0
    assert high[4] == 1.0 and low[4] < 0.9  # 20 of 20: the lower bound is not 1
    assert math.isnan(low[5]) and math.isnan(high[5])  # nothing to count


def test_level_numbers_use_tracking_vocabulary():
    # 100 true, 20 fake tracks; the level keeps 90 true and 10 fake ones.
    numbers = level_numbers([0.1, 0.2, 0.3], [90, 80, 0], [10, 0, 0], 100, 20, 0.95)
    loose = numbers["loose"]
    assert loose["efficiency"] == pytest.approx(0.9)  # true kept / true
    assert loose["fake_rate"] == pytest.approx(0.1)  # fakes among kept: 10 / 100
    assert loose["fake_acceptance"] == pytest.approx(0.5)  # fakes kept / fakes
    assert loose["fake_rate_interval"][0] < 0.1 < loose["fake_rate_interval"][1]
    assert numbers["tight"]["fake_rate"] == 0.0 and numbers["tight"]["fake_rate_interval"][0] == 0
    assert numbers["tight"]["fake_rate_interval"][1] > 0  # 0 of 80 kept: not exactly 0
    assert numbers["highPurity"]["fake_rate"] is None  # nothing kept: undefined
    assert numbers["highPurity"]["fake_rate_interval"] == [None, None]


def test_binned_rates_by_hand():
    values = np.array([0.5, 0.6, 1.5, 1.5, 2.5, 7.0])  # 7.0 is outside the bins: dropped
    labels = np.array([1, 0, 1, 0, 0, 1])
    passed = np.array([True, True, False, True, False, True])
    rates = binned_rates(values, labels, passed, np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(rates["efficiency"], [1.0, 0.0, np.nan])  # no true in bin 3
    # fake rate = fakes among kept: bin 1 keeps 1 true + 1 fake, bin 2 only a fake, bin 3 none.
    np.testing.assert_array_equal(rates["fake_rate"], [0.5, 1.0, np.nan])
    assert rates["efficiency_low"][1] == 0.0 and rates["efficiency_high"][1] > 0.5
    assert rates["efficiency_high"][0] == 1.0 and rates["efficiency_low"][0] < 1.0
    # several classifiers and levels at once keep their shape
    stacked = binned_rates(values, labels, np.stack([passed, ~passed], 1)[:, :, None], [0, 1, 3])
    assert stacked["fake_rate"].shape == (2, 2, 1)


def test_rate_columns_count_every_track_of_the_event():
    df = pd.DataFrame(
        {
            "trk_nPixel": [3, 4, 2, 5, 1],
            "trk_nStrip": [10, 0, 8, 7, 9],
            "event_index": [0, 0, 0, 1, 0],
            "sample": ["a", "a", "a", "a", "b"],  # event 0 of sample b is another event
            "trk_originalAlgo": [4, 13, 4, 4, 4],  # a muon-seeded track counts too
        }
    )
    out = add_rate_columns(df)
    assert out[HITS_COLUMN].tolist() == [13, 4, 10, 12, 10]
    assert out[EVENT_TRACKS_COLUMN].tolist() == [3, 3, 3, 1, 1]
    edges = variable_bins(out[HITS_COLUMN].to_numpy(), "integer")
    assert np.allclose(edges - np.floor(edges), 0.5)  # integers sit in the middle of bins


# ---------------------------------------------------------------------------------------------
# Bootstrap over events
# ---------------------------------------------------------------------------------------------
def test_bootstrap_auc_is_exact_at_unit_weights_and_wider_for_correlated_events():
    rng = np.random.default_rng(2)
    n_events, per_event = 300, 40
    events = np.repeat(np.arange(n_events), per_event)
    labels = rng.random(events.size) < 0.7
    # Each event shifts the scores of all its fakes together (pileup, say): the tracks of an
    # event are not independent, and resampling them one by one would understate the spread.
    shift = 1.5 * rng.normal(0, 1, n_events)[events]
    scores = labels + rng.normal(0, 1, events.size) + shift * ~labels
    exact = roc_auc_score(labels, scores)
    rows = np.arange(events.size)
    by_event = EventBootstrap(events, events.size, 300, 5).group(rows)
    by_track = EventBootstrap(None, events.size, 300, 5).group(rows)
    unit = by_event.__class__(np.ones((1, n_events)), by_event.inverse)
    assert unit.aucs(labels, scores, exact)[0] == pytest.approx(exact, abs=1e-12)
    spread_event = np.std(by_event.aucs(labels, scores, exact))
    spread_track = np.std(by_track.aucs(labels, scores, exact))
    assert spread_event > 2 * spread_track
    low, high = percentile_interval(by_event.aucs(labels, scores, exact))
    assert low < exact < high


def test_bootstrap_totals_are_weighted_sums_per_event():
    events = np.array([0, 0, 1, 2, 2, 2])
    boot = EventBootstrap(events, 6, 4, 1)
    values = np.arange(12, dtype=float).reshape(6, 2)
    totals = boot.group(np.ones(6, bool)).totals(values)
    per_event = np.array([values[:2].sum(0), values[2], values[3:].sum(0)])
    np.testing.assert_allclose(totals, boot.weights.astype(float) @ per_event)
    np.testing.assert_array_equal(
        event_codes(pd.DataFrame({"sample": ["a", "a", "b"], "event_index": [0, 1, 0]})),
        [0, 1, 2],
    )


def test_fake_rate_difference_and_its_significance_by_hand():
    # (true kept A, fake kept A, true kept B, fake kept B): A keeps 10 % fakes, B 20 %.
    observed = [90, 10, 80, 20]
    replicas = [[90 + d, 10, 80, 20 - d % 3] for d in range(-5, 6)]
    change = fake_rate_difference(np.array([observed, *replicas]), 0.9)
    assert change["difference"] == pytest.approx(-0.1)
    assert change["relative_change"] == pytest.approx(-0.5)
    assert change["difference_interval"][1] < 0 and change["significant"] is True
    same = fake_rate_difference(np.array([[90, 10, 90, 10]] * 5 + [[90, 10, 91, 9]]), 0.95)
    assert same["difference"] == 0.0 and same["significant"] is False


def _paired_sample(shift: float, seed: int = 4) -> tuple:
    """Tracks of initialStep: trk_mva, and a new model whose fake scores are shifted down by
    `shift` (0: the very same scores)."""
    rng = np.random.default_rng(seed)
    n = 6000
    labels = rng.random(n) < 0.8
    algo = np.full(n, ALGORITHMS["initialStep"])
    reference = np.tanh(np.where(labels, 1.0, -0.5) + rng.normal(0, 0.8, n))
    new = np.clip(reference - np.where(labels, 0.0, shift), -1, 1)
    events = np.arange(n) // 30
    return labels, algo, {NEW: new, REFERENCE: reference}, events


@pytest.mark.parametrize(("shift", "significant"), [(0.0, False), (0.6, True)])
def test_paired_change_at_equal_efficiency(shift, significant):
    labels, algo, scores, events = _paired_sample(shift)
    cfg = dict(CFG, iterations=["initialStep"], bootstrap_samples=200)
    wps = derive_working_points(labels, algo, scores, cfg)
    boot = EventBootstrap(events, len(labels), 200, 3)
    result = sample_metrics(labels, algo, scores, wps, cfg, None, boot)
    change = result["initialStep"]["fake_rate_change"][REFERENCE]
    for level in ("loose", "tight", "highPurity"):
        assert change[level]["significant"] is significant, (level, change[level])
        if significant:
            assert change[level]["difference"] < 0 and change[level]["difference_interval"][1] < 0
    new_eff = result["initialStep"]["classifiers"][NEW]["equal_efficiency"]["tight"]["efficiency"]
    ref_eff = result["initialStep"]["classifiers"][REFERENCE]["equal_efficiency"]["tight"]
    assert new_eff == pytest.approx(ref_eff["efficiency"], abs=2e-3)  # equal efficiency
    auc_info = result[ALL]["classifiers"][NEW]
    assert auc_info["auc_interval"][0] < auc_info["auc"] < auc_info["auc_interval"][1]


# ---------------------------------------------------------------------------------------------
# Working points: one derivation, reference cuts from the release's table
# ---------------------------------------------------------------------------------------------
def hand_cfg(**changes) -> dict:
    cfg = dict(CFG, iterations=["initialStep", "tobTecStep"], target_efficiencies=[])
    cfg.update(changes)
    return cfg


def test_working_points_by_hand():
    initial, tob = ALGORITHMS["initialStep"], ALGORITHMS["tobTecStep"]
    labels = np.array([1, 1, 1, 1, 0, 0, 1, 0])
    algo = np.array([initial] * 6 + [tob] * 2)
    scores = {
        REFERENCE: np.array([0.9, 0.5, 0.1, -0.3, 0.2, -0.5, -0.7, 0.1]),
        NEW: np.array([0.2, 0.4, 0.6, 0.8, 0.5, 0.1, 0.9, -0.9]),
    }
    wps = derive_working_points(labels, algo, scores, hand_cfg())
    entry = wps["initialStep"]
    # trk_mva > the release's InitialStep cuts [-0.35, 0.1, 0.28] keeps 4, 2, 2 of 4 true.
    assert entry["target_efficiency"] == [1.0, 0.5, 0.5]
    assert entry["thresholds"][REFERENCE] == [-0.35, 0.1, 0.28]
    assert entry["release_cuts"] == [-0.35, 0.1, 0.28]
    # new: 1.0 -> below 0.2: 0.0; 0.5 -> in [0.4, 0.6): 0.4.
    assert entry["thresholds"][NEW] == [0.0, 0.4, 0.4]
    # TobTecStep [-0.76, -0.65, -0.55]: its true track (-0.7) passes loose only.
    assert wps["tobTecStep"]["target_efficiency"] == [1.0, 0.0, 0.0]
    assert wps["tobTecStep"]["thresholds"][NEW] == [0.0, 1.0, 1.0]  # its true track: 0.9
    # The same cuts come out of the per-sample derivation on the same tracks.
    result = sample_metrics(labels, algo, scores, wps, hand_cfg(), None)
    eq = result["initialStep"]["classifiers"][NEW]["equal_efficiency"]
    assert [eq[lv]["threshold"] for lv in ("loose", "tight", "highPurity")] == [0.0, 0.4, 0.4]
    # Fakes (0.5, 0.1) with the new cuts: kept 2, 1, 1; true kept 4, 2, 2.
    assert eq["loose"]["fake_rate"] == pytest.approx(2 / 6)
    assert eq["tight"]["fake_acceptance"] == pytest.approx(0.5)


def test_working_points_with_target_efficiencies():
    rng = np.random.default_rng(5)
    labels = rng.random(20_000) < 0.6
    algo = np.full(20_000, ALGORITHMS["initialStep"])
    scores = {NEW: np.tanh(rng.normal(labels * 2.0 - 1.0, 1.0))}
    cfg = hand_cfg(iterations=["initialStep"])
    cfg["target_efficiencies"] = [0.99, 0.9, 0.8]
    entry = derive_working_points(labels, algo, scores, cfg)["initialStep"]
    assert entry["source"] == "target_efficiencies"
    cuts = entry["thresholds"][NEW]
    assert cuts == sorted(cuts)
    for cut, target in zip(cuts, [0.99, 0.9, 0.8], strict=True):
        assert abs(pass_fraction(scores[NEW][labels], cut) - target) < 1e-3


def test_edge_cases_are_na_with_a_reason():
    initial, tob, jet = (
        ALGORITHMS[i] for i in ("initialStep", "tobTecStep", "jetCoreRegionalStep")
    )
    cfg = hand_cfg(iterations=["initialStep", "tobTecStep", "jetCoreRegionalStep", "pixelPairStep"])
    labels = np.array([1, 0, 1, 1, 0, 0])
    algo = np.array([initial, initial, tob, tob, jet, jet])  # tob only true, jet only fake
    scores = {
        REFERENCE: np.array([0.5, -0.5, 0.2, 0.4, 0.1, -0.1]),
        NEW: np.array([0.6, -0.6, 0.3, 0.5, 0.2, 0.0]),
    }
    wps = derive_working_points(labels, algo, scores, cfg)
    assert wps["pixelPairStep"]["status"] == "n/a"
    assert "no tracks" in wps["pixelPairStep"]["reason"]
    assert "only fake" in wps["jetCoreRegionalStep"]["reason"]
    assert wps["tobTecStep"]["status"] == "ok"  # thresholds need true tracks only
    result = sample_metrics(labels, algo, scores, wps, cfg, None)
    for iteration, words in [
        ("pixelPairStep", "no tracks"),
        ("tobTecStep", "only true"),
        ("jetCoreRegionalStep", "only fake"),
    ]:
        entry = result[iteration]
        assert entry["status"] == "n/a" and words in entry["reason"]
        for info in entry["classifiers"].values():
            assert info["status"] == "n/a" and words in info["reason"]
            assert "auc" not in info
    assert result["initialStep"]["classifiers"][NEW]["auc"] == 1.0
    assert result[ALL]["status"] == "ok"
    empty = sample_metrics(labels[:0], algo[:0], {k: v[:0] for k, v in scores.items()}, wps, cfg)
    assert all(e["status"] == "n/a" for e in empty.values())
    assert not_classifiable(0, 0) == "no tracks"


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------
def _change(difference: float, significant: bool) -> dict:
    return {
        "difference": difference,
        "difference_interval": [difference - 0.01, difference + 0.01],
        "relative_change": difference / 0.1,
        "significant": significant,
        "new": 0.1 + difference,
        "other": 0.1,
    }


def test_verdict_counts_only_significant_changes():
    levels = ("loose", "tight", "highPurity")
    fewer = {lv: _change(-0.02, True) for lv in levels}
    unclear = {lv: _change(0.01, False) for lv in levels}
    more = dict(fewer, highPurity=_change(0.03, True))
    metrics = {
        "classifiers": [NEW, REFERENCE],
        "statistics": {"confidence_level": 0.95},
        "samples": {
            "a": {
                "initialStep": {"fake_rate_change": {REFERENCE: fewer}},
                "tobTecStep": {"fake_rate_change": {REFERENCE: unclear}},
                ALL: {"fake_rate_change": {REFERENCE: more}},  # not counted: a sum
            },
            "b": {"initialStep": {"fake_rate_change": {REFERENCE: more}}},
            ALL: {"initialStep": {"fake_rate_change": {REFERENCE: more}}},  # not counted
        },
    }
    result = tally(metrics, REFERENCE)
    assert (result["comparisons"], result["fewer"], result["more"]) == (9, 5, 1)
    assert result["not_significant"] == 3
    assert [c["sample"] for c in result["more_cases"]] == ["b"]
    assert result["sentence"].startswith("vs trk_mva (RECO): Mixed")
    assert (
        "more in 1" in result["sentence"] and "no significant difference in 3" in result["sentence"]
    )
    none = {"fewer": 0, "more": 0, "not significant": 4}
    assert "Undecided" in sentence("bdt", none, 4, 0.95)
    worse = {"fewer": 1, "more": 101, "not significant": 6}
    assert sentence("bdt", worse, 108, 0.95).startswith("vs BDT baseline: No: ")
