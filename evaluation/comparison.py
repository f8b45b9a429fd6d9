"""The comparison on one test sample: per iteration and classifier, AUC, efficiency, fake rate
and fake-track acceptance with their intervals, and the paired change of the fake rate of the
new model against every other classifier at equal efficiency.

Two sets of cuts are applied (metrics.py derives both):
- working_points: each classifier's own cuts derived on all test samples combined;
- equal_efficiency: cuts set on this sample's tracks to the reference's efficiency on them, the
  like-for-like comparison; the fake-rate change is computed there, on the same tracks, so it
  is a paired difference, and its interval comes from a bootstrap over events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cmssw.ntuple import ALGORITHMS
from evaluation.metrics import (
    classifier_cuts,
    level_numbers,
    not_available,
    not_classifiable,
    target_efficiencies,
)
from evaluation.names import ALL, LEVELS, NEW, REFERENCE
from evaluation.stats import (
    EventBootstrap,
    GroupReplicas,
    fake_rate_difference,
    percentile_interval,
)

WP, EQ = "working_points", "equal_efficiency"


def sample_metrics(
    labels: np.ndarray,
    algo: np.ndarray,
    scores: Mapping[str, np.ndarray],
    working_points: Mapping[str, Mapping[str, Any]],
    cfg: Mapping[str, Any],
    rows: np.ndarray | None = None,
    bootstrap: EventBootstrap | None = None,
) -> dict[str, dict[str, Any]]:
    """Per iteration (and "all"), per classifier, on the tracks `rows` (a bool mask; default
    all) of the arrays given.

    An entry: n_true, n_fake, status ("n/a" with a reason when AUC and comparisons are
    undefined), target_efficiency, classifiers {name: {auc, auc_interval, working_points,
    equal_efficiency}} and fake_rate_change {other: {level: ...}} (new model vs other).
    "all" sums the iterations, each with its own cuts, as CMSSW applies them.
    bootstrap: the event resampling (default: tracks resampled one by one, seeded).
    """
    labels = np.asarray(labels).astype(bool)
    index = np.flatnonzero(np.ones(len(labels), bool) if rows is None else rows)
    if bootstrap is None:
        bootstrap = EventBootstrap(
            None, len(labels), int(cfg.get("bootstrap_samples", 200)), int(cfg.get("seed", 0))
        )
    y, it_algo = labels[index], np.asarray(algo)[index]
    values = {name: np.asarray(s, dtype=np.float64)[index] for name, s in scores.items()}
    # Pass flags [tracks, levels] of every classifier, each iteration with its own cuts.
    flags = {
        key: {n: np.zeros((len(index), len(LEVELS)), bool) for n in scores} for key in (WP, EQ)
    }
    out: dict[str, dict[str, Any]] = {}
    for iteration in cfg["iterations"]:
        members = it_algo == ALGORITHMS[iteration]
        cuts = _iteration_cuts(iteration, y[members], values, members, working_points, cfg)
        for name, (wp_cuts, eq_cuts) in cuts["cuts"].items():
            s = values[name][members][:, None]
            if wp_cuts is not None:
                flags[WP][name][members] = s > np.asarray(wp_cuts)
            # In "all", an iteration without true tracks here keeps its working-point cuts.
            if eq_cuts or wp_cuts:
                flags[EQ][name][members] = s > np.asarray(eq_cuts or wp_cuts)
        out[iteration] = _group(
            index[members], y[members], values, flags, members, cuts, cfg, bootstrap
        )
    every = np.ones(len(index), bool)
    out[ALL] = _group(index, y, values, flags, every, {"all": True}, cfg, bootstrap)
    return out


def _iteration_cuts(
    iteration: str,
    y: np.ndarray,
    values: Mapping[str, np.ndarray],
    members: np.ndarray,
    working_points: Mapping[str, Mapping[str, Any]],
    cfg: Mapping[str, Any],
) -> dict[str, Any]:
    """The targets on these tracks and every classifier's (working-point, equal-efficiency)
    cuts; equal-efficiency cuts are None without true tracks or without a target."""
    wp = working_points.get(iteration, {"status": "n/a", "reason": "no working point"})
    targets, target_reason = None, None
    if y.any():
        reference = values.get(REFERENCE)
        try:
            ref_rows = None if reference is None else reference[members]
            targets = target_efficiencies(iteration, y, ref_rows, cfg)[0]
        except ValueError as error:
            target_reason = str(error)
    cuts = {}
    for name, s in values.items():
        wp_cuts = wp["thresholds"].get(name) if wp["status"] == "ok" else None
        eq_cuts = None
        if targets is not None:
            eq_cuts = classifier_cuts(name, iteration, s[members][y], targets, cfg)
        cuts[name] = (wp_cuts, eq_cuts)
    return {"cuts": cuts, "targets": targets, "target_reason": target_reason, "wp": wp}


def _group(
    index: np.ndarray,
    y: np.ndarray,
    values: Mapping[str, np.ndarray],
    flags: Mapping[str, Mapping[str, np.ndarray]],
    members: np.ndarray,
    cuts: Mapping[str, Any],
    cfg: Mapping[str, Any],
    bootstrap: EventBootstrap,
) -> dict[str, Any]:
    """The entry of one group of tracks (an iteration, or all of them)."""
    confidence = float(cfg.get("confidence_level", 0.95))
    n_true, n_fake = int(y.sum()), int((~y).sum())
    entry: dict[str, Any] = {"n_true": n_true, "n_fake": n_fake, "classifiers": {}}
    reason = not_classifiable(n_true, n_fake)
    entry.update({"status": "n/a", "reason": reason} if reason else {"status": "ok"})
    if reason:
        entry["classifiers"] = {n: not_available(reason, n_true, n_fake) for n in values}
        return entry
    per_iteration = "cuts" in cuts
    kept = {}
    for name in values:
        kept[name] = {}
        for key in (WP, EQ):
            passed = flags[key][name][members]
            true_kept = np.count_nonzero(passed & y[:, None], axis=0)
            kept[name][key] = (true_kept, np.count_nonzero(passed, axis=0) - true_kept)
    replicas = bootstrap.group(index)
    for name, s in values.items():
        wp_cuts, eq_cuts = cuts["cuts"][name] if per_iteration else (None, None)
        score = s[members]
        exact_auc = float(roc_auc_score(y, score))
        auc_replicas = replicas.aucs(y, score, exact_auc)
        info: dict[str, Any] = {
            "status": "ok",
            "auc": exact_auc,
            "auc_interval": percentile_interval(auc_replicas, confidence),
            "n_true": n_true,
            "n_fake": n_fake,
        }
        if per_iteration and wp_cuts is None:
            info["working_points"] = {
                "status": "n/a",
                "reason": f"no working point: {cuts['wp'].get('reason')}",
            }
        else:
            info["working_points"] = level_numbers(
                wp_cuts, *kept[name][WP], n_true, n_fake, confidence
            )
        if per_iteration and eq_cuts is None:
            info["equal_efficiency"] = {
                "status": "n/a",
                "reason": cuts["target_reason"] or "no true track",
            }
        else:
            info["equal_efficiency"] = level_numbers(
                eq_cuts, *kept[name][EQ], n_true, n_fake, confidence
            )
        entry["classifiers"][name] = info
    if per_iteration:
        entry["target_efficiency"] = cuts["targets"]
    elif REFERENCE in kept:
        entry["target_efficiency"] = [float(t) / n_true for t in kept[REFERENCE][EQ][0]]
    entry["fake_rate_change"] = _fake_rate_changes(y, flags, members, entry, cfg, replicas)
    return entry


def _fake_rate_changes(
    y: np.ndarray,
    flags: Mapping[str, Mapping[str, np.ndarray]],
    members: np.ndarray,
    entry: Mapping[str, Any],
    cfg: Mapping[str, Any],
    replicas: GroupReplicas,
) -> dict[str, dict[str, Any]]:
    """{other: {level: change}}: the new model's fake rate minus each other classifier's, at
    equal efficiency on the same tracks, with the bootstrap interval over events."""
    confidence = float(cfg.get("confidence_level", 0.95))
    classifiers = entry["classifiers"]
    if NEW not in classifiers or "status" in classifiers[NEW]["equal_efficiency"]:
        return {}
    others = [
        n
        for n, info in classifiers.items()
        if n != NEW and "status" not in info["equal_efficiency"]
    ]
    names = [NEW, *others]
    # Columns per classifier and level: (true and kept, fake and kept), summed per replica.
    columns = np.concatenate(
        [
            np.stack([f & y[:, None], f & ~y[:, None]], axis=2).reshape(len(y), -1)
            for f in (flags[EQ][n][members] for n in names)
        ],
        axis=1,
    ).astype(np.float64)
    observed = columns.sum(axis=0, keepdims=True)
    totals = np.concatenate([observed, replicas.totals(columns)])
    totals = totals.reshape(len(totals), len(names), len(LEVELS), 2)
    changes: dict[str, dict[str, Any]] = {}
    for k, other in enumerate(names[1:], start=1):
        changes[other] = {}
        for i, level in enumerate(LEVELS):
            counts = np.concatenate([totals[:, 0, i, :], totals[:, k, i, :]], axis=1)
            change = fake_rate_difference(counts, confidence)
            change["new"] = classifiers[NEW]["equal_efficiency"][level]["fake_rate"]
            change["other"] = classifiers[other]["equal_efficiency"][level]["fake_rate"]
            changes[other][level] = change
    return changes
