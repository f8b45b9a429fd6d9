"""The set of figures of the report: which plot of which tracks, in which file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmssw.ntuple import ALGORITHMS, LABEL
from evaluation.metrics import passes, thresholds_by_algo
from evaluation.names import ALL, LEVELS, NEW, REFERENCE, label
from evaluation.plots import features_grid, roc_grid, score_grid, training_curves
from evaluation.plots_rates import QUANTITIES, available_variables, rates_grid
from pipeline.console import progress as progress_bar

BY_ITERATION_LEVEL = "highPurity"  # the level of the per-iteration rate figure


def file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def make_evaluation_plots(
    test: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    metrics: Mapping[str, Any],
    cfg: Mapping[str, Any],
    plots_dir: Path,
    train: pd.DataFrame | None = None,
    sanitizer: Any = None,
    training_log: pd.DataFrame | None = None,
    progress: Any = None,
) -> list[dict[str, str]]:
    """Every PNG of the report; returns [{section, title, file}] with file relative to the
    output folder (the parent of plots_dir). masks: {sample name or "all": bool row mask of
    test}."""
    plots_dir = Path(plots_dir)
    context = _Context(test, scores, metrics, cfg, plots_dir)
    out: list[dict[str, str]] = []

    def add(section: str, title: str, path: Path) -> None:
        out.append({"section": section, "title": title, "file": f"{plots_dir.name}/{path.name}"})

    # All test samples together get every figure; each sample alone its own smaller set. A
    # sample without any track has only its n/a row in the tables: no empty figures.
    singles = [s for s, m in masks.items() if s != ALL and m.any()]
    jobs = [(ALL, kind) for kind in ("roc", "scores", "efficiency", "fake_rate", "by_iteration")]
    jobs += [(None, "samples")] + [(s, "rates") for s in singles]
    jobs += [(None, "features"), (None, "training")]
    for sample, kind in progress_bar(jobs, desc="plots", unit="figure", file=progress):
        if kind == "features":
            for path, title in _feature_plots(test, train, cfg, plots_dir, sanitizer):
                add("inputs", title, path)
        elif kind == "training":
            if training_log is not None and len(training_log):
                path = training_curves(training_log, plots_dir / "training_curves.png")
                add("training", "Training curves", path)
        elif kind == "samples":
            for title, path in context.sample_overview({s: masks[s] for s in singles}):
                add("each test sample", title, path)
        else:
            name = "all test samples" if sample == ALL else sample
            section = name if sample == ALL else "each test sample"
            for title, path in context.figures(sample, masks[sample], kind):
                add(section, f"{title}, {name}", path)
    return out


class _Context:
    """What every figure of the test tracks shares: labels, iterations, cuts, bins."""

    def __init__(
        self,
        test: pd.DataFrame,
        scores: Mapping[str, np.ndarray],
        metrics: Mapping[str, Any],
        cfg: Mapping[str, Any],
        plots_dir: Path,
    ) -> None:
        self.test, self.scores, self.metrics, self.plots_dir = test, scores, metrics, plots_dir
        self.labels = test[LABEL].to_numpy().astype(bool)
        self.algo = test[cfg["algo_branch"]].to_numpy()
        self.confidence = float(cfg.get("confidence_level", 0.95))
        self.wps = metrics["working_points"]
        self.present = [
            it for it in cfg["iterations"] if self.wps[it]["n_true"] + self.wps[it]["n_fake"] > 0
        ]
        self.variables = available_variables(test)
        self.passed = {
            name: passes(values, self.algo, thresholds_by_algo(self.wps, name))
            for name, values in scores.items()
        }

    def rows_of(self, rows: np.ndarray, iteration: str) -> np.ndarray:
        return rows if iteration == ALL else rows & (self.algo == ALGORITHMS[iteration])

    def rate_row(self, rows: np.ndarray, entry: Mapping[str, Any]) -> dict[str, Any]:
        if not rows.any():
            return {"reason": entry.get("reason") or "no tracks"}
        columns = {col: self.test[col].to_numpy()[rows] for col, _, _ in self.variables.values()}
        return {
            "labels": self.labels[rows],
            "columns": columns,
            "passed": {name: flags[rows] for name, flags in self.passed.items()},
        }

    def figures(self, sample: str, rows: np.ndarray, kind: str) -> list[tuple[str, Path]]:
        """The figures of one kind for the tracks `rows` of a sample (or of all samples)."""
        entries = self.metrics["samples"][sample]
        name = "all test samples" if sample == ALL else sample
        tag = file_safe(sample)
        if kind in ("roc", "scores"):
            panels = [self.panel(rows, it, entries) for it in [ALL, *self.present]]
            if kind == "roc":
                path = roc_grid(panels, self.plots_dir / f"roc_{tag}.png", f"ROC: {name}")
                return [("ROC curves per iteration", path)]
            return [("Score distributions per iteration", self.score_figure(panels, tag, name))]
        if kind == "by_iteration":
            lines = [
                (it, self.rate_row(self.rows_of(rows, it), entries[it]), BY_ITERATION_LEVEL)
                for it in self.present
            ]
            panels = [(which, "pt") for which in QUANTITIES if "pt" in self.variables]
            title = f"Efficiency and fake rate per iteration, {BY_ITERATION_LEVEL}"
            heading = f"{title}: {name}"
            return self.rates(lines, panels, "rates_by_iteration.png", heading, title, per_row=2)
        row = self.rate_row(rows, entries[ALL])  # one row for every level: binned once
        lines = [("all iterations", row, level) for level in LEVELS]
        if kind == "rates":  # one sample alone: both rates vs pt and |dxy|
            chosen = [v for v in ("pt", "dxy") if v in self.variables]
            panels = [(which, v) for which in QUANTITIES for v in chosen]
            title = "Efficiency and fake rate at the working points"
            return self.rates(lines, panels, f"rates_{tag}.png", f"{title}: {name}", title)
        panels = [(kind, v) for v in self.variables]
        title = f"{QUANTITIES[kind].capitalize()} at the working points"
        return self.rates(lines, panels, f"{kind}_{tag}.png", f"{title}: {name}", title)

    def rates(
        self, lines: list, panels: list, file: str, heading: str, title: str, per_row: int = 1
    ) -> list[tuple[str, Path]]:
        if not panels or all(row.get("reason") for _, row, _ in lines):
            return []
        path = self.plots_dir / file
        path = rates_grid(lines, panels, path, heading, self.confidence, per_row)
        return [(title, path)]

    def sample_overview(self, masks: Mapping[str, np.ndarray]) -> list[tuple[str, Path]]:
        """ROC curves and score distributions of every sample alone, all iterations."""
        if not masks:
            return []
        panels = [
            dict(self.panel(rows, ALL, self.metrics["samples"][s]), title=s)
            for s, rows in masks.items()
        ]
        roc = roc_grid(panels, self.plots_dir / "roc_samples.png", "ROC: each test sample")
        detail = [
            dict(p, scores={n: p["scores"][n] for n in (NEW, REFERENCE) if n in p["scores"]})
            for p in panels
        ]
        scores = score_grid(
            detail, self.plots_dir / "scores_samples.png", "mva: each test sample", ncols=3
        )
        return [
            ("ROC curves, all iterations", roc),
            ("Score distributions, all iterations", scores),
        ]

    def panel(self, rows: np.ndarray, iteration: str, entries: Mapping[str, Any]) -> dict:
        it_rows = self.rows_of(rows, iteration)
        wp = self.wps.get(iteration, {})
        return {
            "title": "all iterations" if iteration == ALL else iteration,
            "labels": self.labels[it_rows],
            "scores": {n: s[it_rows] for n, s in self.scores.items()},
            "entry": entries[iteration],
            "reason": entries[iteration].get("reason"),
            "cuts": wp["thresholds"].get(NEW) if wp.get("status") == "ok" else None,
        }

    def score_figure(self, panels: list[dict], tag: str, name: str) -> Path:
        first = panels[0]
        overview = [
            {
                "title": f"{label(n)}, all iterations",
                "labels": first["labels"],
                "scores": {n: first["scores"][n]},
                "filled": n,
                "reason": first["reason"],
            }
            for n in self.scores
        ]
        detail = [
            dict(p, scores={n: p["scores"][n] for n in (NEW, REFERENCE) if n in p["scores"]})
            for p in panels[1:]
        ]
        return score_grid(
            overview + detail,
            self.plots_dir / f"scores_{tag}.png",
            f"mva of true and fake tracks: {name}",
        )


def _feature_plots(
    test: pd.DataFrame,
    train: pd.DataFrame | None,
    cfg: Mapping[str, Any],
    plots_dir: Path,
    sanitizer: Any,
    max_tracks: int = 50_000,
) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(cfg.get("seed", 0))
    groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for group, df in (("test", test), ("training", train)):
        if df is None or len(df) == 0:
            continue
        rows = np.sort(rng.choice(len(df), min(len(df), max_tracks), replace=False))
        groups[group] = (
            df[cfg["features"]].iloc[rows].to_numpy(np.float32),
            df[LABEL].to_numpy()[rows],
        )
    if not groups:
        return []
    features = list(cfg["features"])
    raw = features_grid(
        features, groups, plots_dir / "features_raw.png", "input features, raw", sanitized=False
    )
    made = [(raw, "Input features, raw")]
    if sanitizer is not None:
        cleaned = {g: (np.asarray(sanitizer(x)), y) for g, (x, y) in groups.items()}
        path = features_grid(
            features,
            cleaned,
            plots_dir / "features_sanitized.png",
            "input features after the InputSanitizerLayer",
            sanitized=True,
        )
        made.append((path, "Input features after the sanitizer"))
    return made
