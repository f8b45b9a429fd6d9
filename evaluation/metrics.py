"""The numbers of the evaluation: ROC, AUC, rates, and the cuts that set the working points.

Conventions: those of CMSSW's TrackMVAClassifierBase, and the tracking-validation vocabulary
(MultiTrackValidator) that tracking physicists read plots with:
- scores are mva = 2p - 1 in [-1, 1]; a track passes a cut c when mva > c (strictly);
- efficiency = true tracks kept / true tracks;
- fake rate = fake tracks among the tracks kept;
- fake-track acceptance = fake tracks kept / fake tracks (the x axis of a ROC curve);
- three levels per iteration, [loose, tight, highPurity].

Cuts are derived in one place, classifier_cuts. No plotting here; nothing here reads files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.metrics import roc_auc_score, roc_curve

from cmssw.classifiers import step_name
from cmssw.ntuple import ALGORITHMS
from evaluation.names import LEVELS, REFERENCE
from evaluation.quality_cuts import release_cuts
from evaluation.stats import clopper_pearson


def to_mva(probability: np.ndarray) -> np.ndarray:
    """CMSSW's mva = 2p - 1 of a sigmoid output, flattened to 1-D float64."""
    return 2.0 * np.asarray(probability, dtype=np.float64).ravel() - 1.0


# A NaN mva passes no cut in CMSSW (every comparison with NaN is false); below -1, the lowest
# mva a sigmoid gives, stands for that in rates, ROCs and AUCs, which cannot take NaN.
NO_CUT_SCORE = -2.0


def below_every_cut(scores: np.ndarray) -> np.ndarray:
    """The scores with every non-finite one replaced by NO_CUT_SCORE."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isfinite(scores), scores, NO_CUT_SCORE)


# ---------------------------------------------------------------------------------------------
# Rates and curves
# ---------------------------------------------------------------------------------------------
def pass_fraction(scores: np.ndarray, cut: float) -> float:
    """Fraction of scores strictly above cut; NaN for no score."""
    scores = np.asarray(scores)
    return float(np.count_nonzero(scores > cut) / scores.size) if scores.size else math.nan


def not_classifiable(n_true: int, n_fake: int) -> str | None:
    """Why a set of tracks has no ROC / AUC / comparison, or None when it has them."""
    if n_true == 0 and n_fake == 0:
        return "no tracks"
    if n_fake == 0:
        return f"only true tracks ({n_true}), no fake track"
    if n_true == 0:
        return f"only fake tracks ({n_fake}), no true track"
    return None


def not_available(reason: str, n_true: int, n_fake: int) -> dict[str, Any]:
    """The metrics entry of a classifier that cannot be evaluated here, with the reason."""
    return {"status": "n/a", "reason": reason, "n_true": n_true, "n_fake": n_fake}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; raises ValueError when one class is missing."""
    labels = np.asarray(labels).astype(bool)
    reason = not_classifiable(int(labels.sum()), int((~labels).sum()))
    if reason:
        raise ValueError(f"AUC undefined: {reason}")
    return float(roc_auc_score(labels, scores))


def roc_points(
    labels: np.ndarray, scores: np.ndarray, max_points: int = 1500
) -> tuple[np.ndarray, np.ndarray]:
    """(fake-track acceptance, efficiency) along the ROC curve, thinned to about max_points.

    The thinning keeps points spread evenly in efficiency and in log(acceptance), so the
    low-acceptance end a log axis shows stays detailed.
    """
    labels = np.asarray(labels).astype(bool)
    acceptance, efficiency, _ = roc_curve(labels, scores)
    if len(acceptance) > max_points:
        half = max_points // 2
        by_eff = np.searchsorted(efficiency, np.linspace(0, 1, half))
        positive = acceptance[acceptance > 0]
        low = positive.min() if positive.size else 1.0
        by_acc = np.searchsorted(acceptance, np.geomspace(low, 1.0, half))
        last = len(acceptance) - 1
        keep = np.unique(np.clip(np.concatenate([by_eff, by_acc, [0, last]]), 0, last))
        acceptance, efficiency = acceptance[keep], efficiency[keep]
    return acceptance, efficiency


def binned_rates(
    values: np.ndarray,
    labels: np.ndarray,
    passed: np.ndarray,
    edges: np.ndarray,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Efficiency and fake rate with Clopper-Pearson intervals in bins of values (values
    outside the edges are dropped).

    passed is bool [N] or [N, ...] (e.g. classifiers x levels); the rates get the same
    trailing shape after the bins. Keys: efficiency, fake_rate, and their "_low"/"_high"
    interval bounds; counts n_true, true_kept, kept, fake_kept. A bin without true tracks
    (without kept tracks) has a NaN efficiency (fake rate).
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    passed = np.asarray(passed, dtype=bool)
    n_bins = len(edges) - 1
    bins = np.digitize(values, edges) - 1
    inside = (bins >= 0) & (bins < n_bins)
    flags = passed.reshape(len(values), -1)  # every column of passed counted at once

    def count(mask: np.ndarray) -> np.ndarray:
        selected = bins[mask]
        by_bin = sparse.csr_matrix(
            (np.ones(len(selected)), (selected, np.arange(len(selected)))),
            shape=(n_bins, len(selected)),
        )
        return np.asarray(by_bin @ flags[mask].astype(np.float64))

    n_true = np.bincount(bins[labels & inside], minlength=n_bins).astype(np.float64)
    true_kept = count(labels & inside)
    fake_kept = count(~labels & inside)
    kept = true_kept + fake_kept
    out = {"true_kept": true_kept, "kept": kept, "fake_kept": fake_kept}
    for name, k, n in (
        ("efficiency", true_kept, np.broadcast_to(n_true[:, None], true_kept.shape)),
        ("fake_rate", fake_kept, kept),
    ):
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(n > 0, k / n, np.nan)
        out[f"{name}_low"], out[f"{name}_high"] = clopper_pearson(k, n, confidence)
    shape = (n_bins, *passed.shape[1:])
    out = {key: value.reshape(shape) for key, value in out.items()}
    out["n_true"] = n_true
    return out


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------
def short_decimal_in(low: float, high: float, max_decimals: int = 12) -> float:
    """A number c with low <= c < high and as few decimals as possible (a readable cut).

    low may be -inf (any c below high) and high +inf (any c from low on).
    """
    if not low < high:
        raise ValueError(f"empty interval [{low}, {high})")
    for decimals in range(max_decimals + 1):
        step = 10.0**-decimals
        if math.isinf(low):
            c = math.floor(high / step) * step
            if c >= high:
                c -= step
        else:
            c = math.ceil(low / step) * step
        c = round(c, decimals)
        if low <= c < high:
            return c
    return low if not math.isinf(low) else high - 1.0  # gap below 1e-12: keep the exact bound


def threshold_for_efficiency(true_scores: np.ndarray, target: float) -> float:
    """The cut c for which the fraction of true_scores > c is closest to target.

    Among the cuts giving that fraction, the one with the fewest decimals. With tied scores the
    exact target may be out of reach; then the closest reachable fraction wins.
    """
    scores = np.asarray(true_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no true track to set a threshold on")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target efficiency {target} is not in [0, 1]")
    distinct, counts = np.unique(scores, return_counts=True)
    distinct, counts = distinct[::-1], counts[::-1]  # descending
    # A cut in [distinct[i+1], distinct[i]) keeps kept[i] tracks; a cut >= distinct[0] keeps 0.
    kept = np.concatenate([[0], np.cumsum(counts)])
    best = int(np.argmin(np.abs(kept - target * scores.size)))
    high = math.inf if best == 0 else float(distinct[best - 1])
    low = -math.inf if best == len(distinct) else float(distinct[best])
    return short_decimal_in(low, high)


def ordered(thresholds: Sequence[float], what: str = "thresholds") -> list[float]:
    """loose <= tight <= highPurity, as CMSSW's quality bits nest; warn when forced."""
    values = [float(t) for t in thresholds]
    fixed = list(np.maximum.accumulate(values))
    if fixed != values:
        warnings.warn(f"{what} {values} were not ordered; raised to {fixed}", stacklevel=2)
    return [float(v) for v in fixed]


def cuts_at_efficiency(
    true_scores: np.ndarray, targets: Sequence[float], what: str = "thresholds"
) -> list[float]:
    """The cuts at which the true tracks keep each target efficiency: ascending (CMSSW's
    quality bits nest) and within [-1, 1], the range of mva."""
    found = [threshold_for_efficiency(true_scores, t) for t in targets]
    return [min(max(c, -1.0), 1.0) for c in ordered(found, what)]


def classifier_cuts(
    name: str,
    iteration: str,
    true_scores: np.ndarray,
    targets: Sequence[float],
    cfg: Mapping[str, Any],
) -> list[float]:
    """A classifier's cuts [loose, tight, highPurity] for an iteration at the target
    efficiencies, on the true tracks given: the one place cuts are derived.

    When the targets are trk_mva's efficiencies at the release's cuts, trk_mva's cuts are those
    cuts themselves."""
    if name == REFERENCE and not cfg.get("target_efficiencies"):
        return list(release_cuts(cfg)[step_name(iteration)])
    return cuts_at_efficiency(true_scores, targets, f"{name} thresholds of {iteration}")


def passes(
    scores: np.ndarray, algo: np.ndarray, thresholds: Mapping[int, Sequence[float]]
) -> np.ndarray:
    """bool [N, 3]: does each track pass each level of its own iteration's cuts.

    Tracks of an iteration without thresholds pass nothing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    cuts = np.full((len(scores), len(LEVELS)), np.inf)
    for value, levels in thresholds.items():
        cuts[algo == value] = levels
    return scores[:, None] > cuts


# ---------------------------------------------------------------------------------------------
# Working points
# ---------------------------------------------------------------------------------------------
def target_efficiencies(
    iteration: str, labels: np.ndarray, reference: np.ndarray | None, cfg: Mapping[str, Any]
) -> tuple[list[float], str]:
    """The three efficiencies to match on these tracks, and where they come from.

    Raises ValueError (with the reason) when there is nothing to match."""
    targets = list(cfg.get("target_efficiencies") or [])
    if targets:
        if len(targets) != len(LEVELS):
            raise ValueError("target_efficiencies must be [loose, tight, highPurity]")
        return [float(t) for t in targets], "target_efficiencies"
    if reference is None:
        raise ValueError("no trk_mva column to match: set target_efficiencies in config.py instead")
    cuts = release_cuts(cfg).get(step_name(iteration))
    if cuts is None:
        raise ValueError(f"no release cuts for {step_name(iteration)} to match trk_mva at")
    true_reference = np.asarray(reference)[np.asarray(labels).astype(bool)]
    return [pass_fraction(true_reference, c) for c in cuts], f"trk_mva > {list(cuts)}"


def reference_description(cfg: Mapping[str, Any]) -> str:
    """What the working points match, in words."""
    if cfg.get("target_efficiencies"):
        return f"the target efficiencies {list(cfg['target_efficiencies'])}"
    block = cfg.get("working_points_block", "default")
    return f"trk_mva at the release's cuts ({block} block of dnnQualityCuts.py)"


def derive_working_points(
    labels: np.ndarray,
    algo: np.ndarray,
    scores: Mapping[str, np.ndarray],
    cfg: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per iteration: every classifier's cuts at the reference's true-track efficiency.

    Derived on the tracks given (the combined test samples). Returns iteration -> entry with
    cmssw_name, n_true, n_fake, release_cuts, and status "ok" (target_efficiency, source,
    thresholds {classifier: [c0, c1, c2]}) or status "n/a" and the reason.
    """
    labels = np.asarray(labels).astype(bool)
    reference = scores.get(REFERENCE)
    release = release_cuts(cfg)
    result: dict[str, dict[str, Any]] = {}
    for iteration in cfg["iterations"]:
        rows = np.asarray(algo) == ALGORITHMS[iteration]
        n_true, n_fake = int(np.count_nonzero(labels & rows)), int(np.count_nonzero(~labels & rows))
        entry: dict[str, Any] = {
            "cmssw_name": step_name(iteration),
            "n_true": n_true,
            "n_fake": n_fake,
            "release_cuts": release.get(step_name(iteration)),
        }
        result[iteration] = entry
        if n_true == 0:
            reason = not_classifiable(n_true, n_fake)
            entry.update(status="n/a", reason=f"{reason} in the test samples")
            continue
        try:
            ref_rows = None if reference is None else reference[rows]
            targets, source = target_efficiencies(iteration, labels[rows], ref_rows, cfg)
        except ValueError as error:
            entry.update(status="n/a", reason=str(error))
            continue
        entry.update(status="ok", target_efficiency=targets, source=source, thresholds={})
        for name, values in scores.items():
            entry["thresholds"][name] = classifier_cuts(
                name, iteration, values[rows & labels], targets, cfg
            )
    return result


def thresholds_by_algo(
    working_points: Mapping[str, Mapping[str, Any]], classifier: str
) -> dict[int, list[float]]:
    """{originalAlgo value: [c0, c1, c2]} of one classifier, for the iterations that have them."""
    return {
        ALGORITHMS[iteration]: entry["thresholds"][classifier]
        for iteration, entry in working_points.items()
        if entry["status"] == "ok" and classifier in entry["thresholds"]
    }


def level_numbers(
    cuts: Sequence[float] | None,
    true_kept: Sequence[float],
    fake_kept: Sequence[float],
    n_true: int,
    n_fake: int,
    confidence: float,
) -> dict[str, dict[str, Any]]:
    """Per level: the cut, the kept counts, efficiency, fake rate and fake-track acceptance,
    each with its Clopper-Pearson interval (None where undefined)."""
    t, f = np.asarray(true_kept, dtype=np.float64), np.asarray(fake_kept, dtype=np.float64)
    kept = np.stack([t, f, f])  # quantities x levels
    total = np.stack([np.full_like(t, n_true), t + f, np.full_like(f, n_fake)])
    low, high = clopper_pearson(kept, total, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = kept / total
    result: dict[str, dict[str, Any]] = {}
    for i, level in enumerate(LEVELS):
        numbers: dict[str, Any] = {
            "threshold": None if cuts is None else float(cuts[i]),
            "true_kept": int(t[i]),
            "fake_kept": int(f[i]),
        }
        for q, key in enumerate(("efficiency", "fake_rate", "fake_acceptance")):
            defined = total[q, i] > 0
            numbers[key] = float(value[q, i]) if defined else None
            numbers[f"{key}_interval"] = (
                [float(low[q, i]), float(high[q, i])] if defined else [None, None]
            )
        result[level] = numbers
    return result
