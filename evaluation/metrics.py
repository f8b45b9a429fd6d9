"""The numbers of the evaluation: ROC, AUC, efficiencies, fake rates, working points.

Conventions (those of CMSSW's TrackMVAClassifierBase):
- scores are mva = 2p - 1 in [-1, 1]; a track passes a cut c when mva > c (strictly);
- efficiency = fraction of true tracks that pass; fake rate = fraction of fake tracks that pass
  (the x axis of a ROC curve); fake fraction = fakes among the tracks that pass;
- three levels per iteration, [loose, tight, highPurity].

No plotting here; nothing here reads files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from cmssw.ntuple import ALGORITHMS

LEVELS = ("loose", "tight", "highPurity")
ALL = "all"  # the key of "all iterations" and of "all test samples combined"
REFERENCE = "trk_mva"
NEW = "new_dnn"


def to_mva(probability: np.ndarray) -> np.ndarray:
    """CMSSW's mva = 2p - 1 of a sigmoid output, flattened to 1-D float64."""
    return 2.0 * np.asarray(probability, dtype=np.float64).ravel() - 1.0


def cmssw_step_name(iteration: str) -> str:
    """initialStep -> InitialStep, as the keys of dnnQualityCuts.py are spelt."""
    return iteration[:1].upper() + iteration[1:]


# ---------------------------------------------------------------------------------------------
# Rates and curves
# ---------------------------------------------------------------------------------------------
def pass_fraction(scores: np.ndarray, cut: float) -> float:
    """Fraction of scores strictly above cut; NaN for no score."""
    scores = np.asarray(scores)
    return float(np.count_nonzero(scores > cut) / scores.size) if scores.size else math.nan


def not_classifiable(n_true: int, n_fake: int) -> str | None:
    """Why a set of tracks has no ROC / AUC / fake rate, or None when it has them."""
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
    """(fake rate, efficiency) along the ROC curve, thinned to about max_points for plotting.

    The thinning keeps points spread evenly in efficiency and in log(fake rate), so the
    low-fake-rate end a log axis shows stays detailed.
    """
    labels = np.asarray(labels).astype(bool)
    fake_rate, efficiency, _ = roc_curve(labels, scores)
    if len(fake_rate) > max_points:
        half = max_points // 2
        by_eff = np.searchsorted(efficiency, np.linspace(0, 1, half))
        positive = fake_rate[fake_rate > 0]
        low = positive.min() if positive.size else 1.0
        by_fake = np.searchsorted(fake_rate, np.geomspace(low, 1.0, half))
        keep = np.unique(
            np.clip(
                np.concatenate([by_eff, by_fake, [0, len(fake_rate) - 1]]), 0, len(fake_rate) - 1
            )
        )
        fake_rate, efficiency = fake_rate[keep], efficiency[keep]
    return fake_rate, efficiency


def binned_rates(
    values: np.ndarray, labels: np.ndarray, passed: np.ndarray, edges: np.ndarray
) -> dict[str, np.ndarray]:
    """Efficiency and fake rate with binomial errors in bins of values (outside edges: dropped).

    passed is a bool array [N] or [N, levels]; the rates get the same trailing shape.
    Bins without true (fake) tracks give NaN efficiency (fake rate).
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    passed = np.asarray(passed, dtype=bool)
    bins = np.digitize(values, edges) - 1
    inside = (bins >= 0) & (bins < len(edges) - 1)
    out: dict[str, np.ndarray] = {}
    for name, mask in (("efficiency", labels & inside), ("fake_rate", ~labels & inside)):
        total = np.bincount(bins[mask], minlength=len(edges) - 1).astype(np.float64)
        shape = (len(edges) - 1,) + passed.shape[1:]
        kept = np.zeros(shape)
        np.add.at(kept, bins[mask], passed[mask])
        denominator = np.where(total > 0, total, np.nan).reshape((-1,) + (1,) * (kept.ndim - 1))
        rate = kept / denominator
        out[name] = rate
        out[f"{name}_error"] = np.sqrt(rate * (1 - rate) / denominator)
        out[f"n_{'true' if name == 'efficiency' else 'fake'}"] = total
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
def reference_cuts_for(iteration: str, cfg: Mapping[str, Any]) -> list[float]:
    """The trk_mva cuts of an iteration: reference_cuts (either spelling) or the default."""
    cuts = cfg.get("reference_cuts", {})
    chosen = cuts.get(iteration, cuts.get(cmssw_step_name(iteration)))
    if chosen is None:
        chosen = cfg.get("default_reference_cuts", [-0.5, 0.0, 0.5])
    if len(chosen) != len(LEVELS):
        raise ValueError(f"reference cuts of {iteration} must be [loose, tight, highPurity]")
    return ordered(chosen, f"reference cuts of {iteration}")


def target_efficiencies(
    iteration: str, labels: np.ndarray, reference: np.ndarray | None, cfg: Mapping[str, Any]
) -> tuple[list[float], str]:
    """The three efficiencies to match on these tracks, and where they come from."""
    targets = list(cfg.get("target_efficiencies") or [])
    if targets:
        if len(targets) != len(LEVELS):
            raise ValueError("target_efficiencies must be [loose, tight, highPurity]")
        return [float(t) for t in targets], "target_efficiencies"
    if reference is None:
        raise ValueError("no trk_mva column to match: set target_efficiencies in config.py instead")
    true_reference = np.asarray(reference)[np.asarray(labels).astype(bool)]
    cuts = reference_cuts_for(iteration, cfg)
    return [pass_fraction(true_reference, c) for c in cuts], f"trk_mva > {cuts}"


def derive_working_points(
    labels: np.ndarray,
    algo: np.ndarray,
    scores: Mapping[str, np.ndarray],
    cfg: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per iteration: every classifier's thresholds at the reference's true-track efficiency.

    Derived on the tracks given (the combined test samples). With the default reference the
    thresholds of trk_mva are its reference cuts themselves. Returns iteration -> entry with
    status "ok" (targets, source, thresholds {classifier: [c0, c1, c2]}, efficiency and
    fake_rate {classifier: [...]}, fake_rate_reduction vs trk_mva) or status "n/a" and reason.
    """
    labels = np.asarray(labels).astype(bool)
    reference = scores.get(REFERENCE)
    result: dict[str, dict[str, Any]] = {}
    for iteration in cfg["iterations"]:
        rows = np.asarray(algo) == ALGORITHMS[iteration]
        n_true, n_fake = int(np.count_nonzero(labels & rows)), int(np.count_nonzero(~labels & rows))
        entry: dict[str, Any] = {
            "cmssw_name": cmssw_step_name(iteration),
            "n_true": n_true,
            "n_fake": n_fake,
        }
        result[iteration] = entry
        if n_true == 0:
            reason = "no tracks" if n_fake == 0 else f"only fake tracks ({n_fake}), no true track"
            entry.update(status="n/a", reason=f"{reason} in the test samples")
            continue
        ref_rows = None if reference is None else reference[rows]
        targets, source = target_efficiencies(iteration, labels[rows], ref_rows, cfg)
        entry.update(
            status="ok",
            target_efficiency=targets,
            source=source,
            thresholds={},
            efficiency={},
            fake_rate={},
        )
        for name, values in scores.items():
            if name == REFERENCE and not cfg.get("target_efficiencies"):
                cuts = reference_cuts_for(iteration, cfg)
            else:
                true_scores = values[rows & labels]
                cuts = ordered(
                    [threshold_for_efficiency(true_scores, t) for t in targets],
                    f"{name} thresholds of {iteration}",
                )
            entry["thresholds"][name] = cuts
            entry["efficiency"][name] = [pass_fraction(values[rows & labels], c) for c in cuts]
            entry["fake_rate"][name] = (
                [pass_fraction(values[rows & ~labels], c) for c in cuts] if n_fake else None
            )
        entry["fake_rate_reduction"] = _reduction(entry["fake_rate"])
        if n_fake == 0:
            entry["note"] = "only true tracks in the test samples: fake rates n/a"
    return result


def _reduction(fake_rate: Mapping[str, list[float] | None]) -> list[float | None] | None:
    """1 - fake(new) / fake(trk_mva) per level: the fraction of fakes the new model removes."""
    new, ref = fake_rate.get(NEW), fake_rate.get(REFERENCE)
    if new is None or ref is None:
        return None
    return [None if r == 0 else 1.0 - n / r for n, r in zip(new, ref, strict=True)]


def thresholds_by_algo(
    working_points: Mapping[str, Mapping[str, Any]], classifier: str
) -> dict[int, list[float]]:
    """{originalAlgo value: [c0, c1, c2]} of one classifier, for the iterations that have them."""
    return {
        ALGORITHMS[iteration]: entry["thresholds"][classifier]
        for iteration, entry in working_points.items()
        if entry["status"] == "ok" and classifier in entry["thresholds"]
    }


# ---------------------------------------------------------------------------------------------
# The metrics of one sample
# ---------------------------------------------------------------------------------------------
def sample_metrics(
    labels: np.ndarray,
    algo: np.ndarray,
    scores: Mapping[str, np.ndarray],
    working_points: Mapping[str, Mapping[str, Any]],
    cfg: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per iteration (and "all"), per classifier, on one sample's tracks.

    For every classifier: AUC; n_true, n_fake; "working_points": efficiency and fake rate with
    its thresholds from derive_working_points; "equal_efficiency": its fake rate when its cuts
    are set on these very tracks to the reference's efficiency on them (the like-for-like
    comparison). "all" sums the iterations, each with its own cuts, as CMSSW applies them.
    Entries that cannot be computed are {"status": "n/a", "reason": ...}.
    """
    labels = np.asarray(labels).astype(bool)
    algo = np.asarray(algo)
    reference = scores.get(REFERENCE)
    out: dict[str, dict[str, Any]] = {}
    # Per-iteration counts of passing tracks, summed into "all" afterwards.
    totals = {name: {key: np.zeros((2, len(LEVELS))) for key in ("wp", "eq")} for name in scores}
    for iteration in cfg["iterations"]:
        rows = algo == ALGORITHMS[iteration]
        y = labels[rows]
        n_true, n_fake = int(y.sum()), int((~y).sum())
        reason = not_classifiable(n_true, n_fake)
        entry: dict[str, Any] = {"n_true": n_true, "n_fake": n_fake}
        out[iteration] = entry
        wp = working_points.get(iteration, {"status": "n/a", "reason": "no working point"})
        targets = None
        if n_true:
            ref_rows = None if reference is None else reference[rows]
            targets = target_efficiencies(iteration, y, ref_rows, cfg)[0]
        if reason:
            entry.update(status="n/a", reason=reason)
        else:
            entry.update(status="ok", target_efficiency=targets)
        entry["classifiers"] = {}
        for name, values in scores.items():
            s = values[rows]
            wp_cuts = wp["thresholds"].get(name) if wp["status"] == "ok" else None
            eq_cuts = _equal_efficiency_cuts(name, iteration, s[y], targets, cfg)
            # In "all", an iteration without true tracks here keeps its working-point cuts.
            for key, cuts in (("wp", wp_cuts), ("eq", eq_cuts if eq_cuts else wp_cuts)):
                if cuts is not None:
                    totals[name][key] += _pass_counts(s, y, cuts)
            if reason:
                entry["classifiers"][name] = not_available(reason, n_true, n_fake)
                continue
            entry["classifiers"][name] = {
                "status": "ok",
                "auc": float(roc_auc_score(y, s)),
                "n_true": n_true,
                "n_fake": n_fake,
                "working_points": _levels(wp_cuts, _pass_counts(s, y, wp_cuts), n_true, n_fake)
                if wp_cuts is not None
                else {"status": "n/a", "reason": f"no working point: {wp.get('reason')}"},
                "equal_efficiency": _levels(eq_cuts, _pass_counts(s, y, eq_cuts), n_true, n_fake),
            }
    out[ALL] = _all_iterations(labels, algo, scores, totals, cfg)
    return out


def _equal_efficiency_cuts(
    name: str,
    iteration: str,
    true_scores: np.ndarray,
    targets: list[float] | None,
    cfg: Mapping[str, Any],
) -> list[float] | None:
    if targets is None or true_scores.size == 0:
        return None
    if name == REFERENCE and not cfg.get("target_efficiencies"):
        return reference_cuts_for(iteration, cfg)
    return ordered(
        [threshold_for_efficiency(true_scores, t) for t in targets],
        f"{name} thresholds of {iteration}",
    )


def _pass_counts(scores: np.ndarray, labels: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """[[true passing per level], [fake passing per level]]."""
    passed = scores[:, None] > np.asarray(cuts)[None, :]
    return np.stack([passed[labels].sum(axis=0), passed[~labels].sum(axis=0)]).astype(float)


def _levels(
    cuts: Sequence[float] | None, counts: np.ndarray, n_true: int, n_fake: int
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for i, level in enumerate(LEVELS):
        kept = counts[0, i] + counts[1, i]
        result[level] = {
            "threshold": None if cuts is None else float(cuts[i]),
            "efficiency": counts[0, i] / n_true if n_true else None,
            "fake_rate": counts[1, i] / n_fake if n_fake else None,
            "fake_fraction": counts[1, i] / kept if kept else None,
        }
    return result


def _all_iterations(
    labels: np.ndarray,
    algo: np.ndarray,
    scores: Mapping[str, np.ndarray],
    totals: Mapping[str, Mapping[str, np.ndarray]],
    cfg: Mapping[str, Any],
) -> dict[str, Any]:
    rows = np.isin(algo, [ALGORITHMS[i] for i in cfg["iterations"]])
    y = labels[rows]
    n_true, n_fake = int(y.sum()), int((~y).sum())
    entry: dict[str, Any] = {"n_true": n_true, "n_fake": n_fake, "classifiers": {}}
    reason = not_classifiable(n_true, n_fake)
    entry.update({"status": "n/a", "reason": reason} if reason else {"status": "ok"})
    for name, values in scores.items():
        if reason:
            entry["classifiers"][name] = not_available(reason, n_true, n_fake)
            continue
        entry["classifiers"][name] = {
            "status": "ok",
            "auc": float(roc_auc_score(y, values[rows])),  # one global cut, for a single number
            "n_true": n_true,
            "n_fake": n_fake,
            "working_points": _levels(None, totals[name]["wp"], n_true, n_fake),
            "equal_efficiency": _levels(None, totals[name]["eq"], n_true, n_fake),
        }
    if not reason and REFERENCE in totals:
        entry["target_efficiency"] = list(totals[REFERENCE]["eq"][0] / n_true)
    return entry
