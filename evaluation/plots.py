"""The evaluation's figures, in CMS style: ROC curves, scores, rates vs pt/eta/dxy, inputs.

Figures are built with matplotlib.figure.Figure (no pyplot state, nothing to close, any
backend) under mplhep's CMS style, and written atomically as PNG. Each function takes the
numbers it shows and a path, and returns the path; a panel with nothing to show says why.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.style
import mplhep
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from tqdm import tqdm

from cmssw.ntuple import ALGORITHMS
from evaluation.metrics import (
    ALL,
    LEVELS,
    NEW,
    REFERENCE,
    binned_rates,
    passes,
    roc_points,
    thresholds_by_algo,
)

DPI = 72  # small PNGs that still read well at the report's width
LEVEL_COLORS = {"loose": "#5790fc", "tight": "#f89c20", "highPurity": "#e42536"}
FIXED_COLORS = {NEW: "#5790fc", REFERENCE: "black", "bdt": "#e42536"}
OTHER_COLORS = ["#964a8b", "#f89c20", "#9c9ca1", "#7a21dd", "#2ca02c", "#8c564b"]
TRUE_COLOR, FAKE_COLOR = "#5790fc", "#e42536"
PANEL_RC = {
    "font.size": 13,
    "axes.labelsize": 13,
    "axes.titlesize": 13,
    "legend.fontsize": 10,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "lines.linewidth": 1.6,
    "axes.titley": 1.0,  # a fixed title position: placing it automatically costs a layout pass
    "axes.titlepad": 4.0,
}

Panel = dict[str, Any]  # title, labels, scores {name: mva}, entry (metrics) or reason


@contextlib.contextmanager
def cms_style(rc: Mapping[str, Any] | None = None) -> Iterator[None]:
    """mplhep's CMS style for the figures made inside, without touching global rcParams."""
    with matplotlib.style.context([mplhep.style.CMS, dict(PANEL_RC, **(rc or {}))]):
        yield


def classifier_colors(names: Sequence[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * 3)
    return {name: FIXED_COLORS.get(name) or next(others) for name in names}


def label(name: str) -> str:
    return {NEW: "new DNN", REFERENCE: "trk_mva (RECO)", "bdt": "BDT baseline"}.get(name, name)


def save(fig: Figure, path: Path) -> Path:
    """Write the PNG under a temporary name, then rename: no half-written image is ever seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    _light_ticks([ax for ax in fig.axes if ax.get_visible() and ax.axison])
    fig.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
    return path


# Fixed margins in inches instead of constrained layout, which costs as much as the drawing.
HEADER_IN, LEGEND_IN, LEFT_IN, RIGHT_IN, BOTTOM_IN, WSPACE_IN, HSPACE_IN = (
    0.5,
    0.45,
    0.8,
    0.2,
    0.6,
    0.85,
    0.9,
)


def _grid(
    n: int, ncols: int, size: tuple[float, float], legend: bool = False
) -> tuple[Figure, list[Any]]:
    """n panels of size inches each (their labels and titles included), ncols per row."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    top = HEADER_IN + (LEGEND_IN if legend else 0.0)
    width = size[0] * ncols + LEFT_IN + RIGHT_IN - WSPACE_IN
    height = size[1] * nrows + top + BOTTOM_IN - HSPACE_IN + 0.35  # 0.35: the top row's title
    fig = Figure(figsize=(width, height))
    axes_w, axes_h = size[0] - WSPACE_IN, size[1] - HSPACE_IN
    grid = fig.add_gridspec(
        nrows,
        ncols,
        left=LEFT_IN / width,
        right=1 - RIGHT_IN / width,
        bottom=BOTTOM_IN / height,
        top=1 - (top + 0.35) / height,
        wspace=WSPACE_IN / axes_w,
        hspace=HSPACE_IN / axes_h,
    )
    axes = grid.subplots(squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _header(fig: Figure, heading: str) -> None:
    """CMS label and what the figure shows, above all panels (panel titles stay free)."""
    fig.text(
        0.12 / fig.get_figwidth(),
        1 - 0.1 / fig.get_figheight(),
        r"$\mathbf{CMS}$ $\mathit{Simulation\ Internal}$" + f"    {heading}",
        ha="left",
        va="top",
        fontsize=15,
    )


def _figure_legend(fig: Figure, handles: list[Any], names: list[str], ncols: int) -> None:
    fig.legend(
        handles,
        names,
        loc="upper center",
        ncols=ncols,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - HEADER_IN / fig.get_figheight()),
    )


def _plain_number(value: float, _position: Any = None) -> str:
    return f"{value:g}"


def _light_ticks(axes: Sequence[Any], nbins: int = 5) -> None:
    """Few ticks and no minor ones: with dozens of panels, tick artists dominate the time."""
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_locator(NullLocator())
            if axis.get_scale() == "log":
                low, high = sorted(axis.get_view_interval())
                narrow = low > 0 and high / low < 30  # under ~1.5 decades: label 1, 2, 5 too
                axis.set_major_locator(
                    LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,), numticks=nbins)
                )
                axis.set_major_formatter(FuncFormatter(_plain_number))  # mathtext is slow
            else:
                axis.set_major_locator(MaxNLocator(nbins, steps=[1, 2, 2.5, 5, 10]))


def _not_available(ax: Any, title: str, reason: str) -> None:
    ax.set_title(title, loc="left")
    ax.text(
        0.5,
        0.5,
        f"n/a\n{reason}",
        ha="center",
        va="center",
        transform=ax.transAxes,
        wrap=True,
        color="0.35",
    )
    ax.axis("off")


# ---------------------------------------------------------------------------------------------
# ROC curves and scores
# ---------------------------------------------------------------------------------------------
def roc_grid(panels: Sequence[Panel], path: Path, heading: str, ncols: int = 4) -> Path:
    """One ROC panel per entry: efficiency vs fake rate (log), AUC in the legend, and the
    working points of each classifier as markers."""
    with cms_style():
        fig, axes = _grid(len(panels), ncols, (4.6, 4.2))
        for ax, panel in zip(axes, panels, strict=True):
            _roc_panel(ax, panel)
        _header(fig, heading)
        return save(fig, path)


def _roc_panel(ax: Any, panel: Panel) -> None:
    entry = panel.get("entry") or {}
    reason = panel.get("reason") or entry.get("reason")
    if reason:
        _not_available(ax, panel["title"], reason)
        return
    labels = np.asarray(panel["labels"]).astype(bool)
    colors = classifier_colors(list(panel["scores"]))
    curves = {name: roc_points(labels, scores) for name, scores in panel["scores"].items()}
    bottom = _roc_bottom(entry)
    for name, (fake, eff) in curves.items():
        info = entry.get("classifiers", {}).get(name, {})
        auc_text = f" (AUC {info['auc']:.3f})" if "auc" in info else ""
        style = "--" if name == REFERENCE else "-"
        ax.plot(fake, eff, style, color=colors[name], label=label(name) + auc_text)
        wps = info.get("working_points", {})
        points = [wps[lv] for lv in LEVELS if isinstance(wps.get(lv), dict)]
        points = [p for p in points if p.get("fake_rate") and p.get("efficiency") is not None]
        if points:
            ax.plot(
                [p["fake_rate"] for p in points],
                [p["efficiency"] for p in points],
                "o",
                color=colors[name],
                markersize=5,
                markerfacecolor="white",
            )
    n_fake = int((~labels).sum())
    # x from the smallest fake rate any curve has inside the shown efficiency range.
    shown = [f[(e >= bottom) & (f > 0)] for f, e in curves.values()]
    low = min((x.min() for x in shown if x.size), default=1.0)
    ax.set_xscale("log")
    ax.set_xlim(max(low / 2, 0.5 / max(n_fake, 1), 1e-6), 1.0)
    ax.set_ylim(bottom, 1.0 + 0.02 * (1.0 - bottom))
    ax.set_xlabel("fake rate (fake tracks kept)")
    ax.set_ylabel("true-track efficiency")
    ax.set_title(f"{panel['title']}  ({int(labels.sum())} true, {n_fake} fake)", loc="left")
    ax.legend(
        loc="lower right",
        frameon=True,
        facecolor="white",
        framealpha=0.8,
        edgecolor="none",
        fontsize=9,
    )


def _roc_bottom(entry: Mapping[str, Any]) -> float:
    """The efficiency axis starts 0.25 below the lowest working point, in steps of 0.05: the
    working points sit at high efficiency, where a full 0-1 axis squeezes the curves."""
    efficiencies = [
        level["efficiency"]
        for info in entry.get("classifiers", {}).values()
        for level in (info.get("working_points") or {}).values()
        if isinstance(level, dict) and level.get("efficiency") is not None
    ]
    if not efficiencies:
        return 0.0
    return max(0.0, math.floor((min(efficiencies) - 0.25) * 20) / 20)


def score_grid(panels: Sequence[Panel], path: Path, heading: str, ncols: int = 4) -> Path:
    """mva distributions of true and fake tracks: the new DNN filled, trk_mva dashed; vertical
    lines at the new model's working points."""
    bins = np.linspace(-1.0, 1.0, 41)
    with cms_style():
        fig, axes = _grid(len(panels), ncols, (4.6, 3.8))
        for ax, panel in zip(axes, panels, strict=True):
            labels = np.asarray(panel.get("labels", []), dtype=bool)
            if not labels.size:  # one class alone still has a distribution worth seeing
                _not_available(ax, panel["title"], panel.get("reason") or "no tracks")
                continue
            if panel.get("reason"):
                ax.text(
                    0.03, 0.75, panel["reason"], transform=ax.transAxes, fontsize=9, color="0.35"
                )
            short = len(panel["scores"]) > 1
            for name, scores in panel["scores"].items():
                filled = name == panel.get("filled", NEW)
                for mask, color, kind in (
                    (labels, TRUE_COLOR, "true"),
                    (~labels, FAKE_COLOR, "fake"),
                ):
                    if not mask.any():
                        continue
                    counts, _ = np.histogram(np.clip(scores[mask], -1, 1), bins, density=True)
                    ax.stairs(
                        counts,
                        bins,
                        color=color,
                        fill=filled,
                        alpha=0.35 if filled else 1,
                        linestyle="-" if filled else "--",
                        label=f"{label(name).split(' (')[0]} {kind}" if short else kind,
                    )
            for level, cut in zip(LEVELS, panel.get("cuts") or [], strict=False):
                ax.axvline(cut, color=LEVEL_COLORS[level], linewidth=1.2, linestyle=":")
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ax.set_ylim(low, high * 30)  # headroom for the legend
            ax.set_xlim(-1, 1)
            ax.set_xlabel("mva = 2p - 1")
            ax.set_ylabel("tracks (normalised)")
            ax.set_title(panel["title"], loc="left")
            ax.legend(loc="upper center", frameon=False, ncols=2)
        _header(fig, heading)
        return save(fig, path)


# ---------------------------------------------------------------------------------------------
# Efficiency and fake rate vs pt, eta, dxy
# ---------------------------------------------------------------------------------------------
VARIABLES = {  # column, axis label, how it is binned
    "pt": ("trk_pt", r"$p_T$ [GeV]", "log"),
    "eta": ("trk_eta", r"$\eta$", "linear"),
    "dxy": ("trk_dxy", r"$|d_{xy}|$ (beam spot) [cm]", "abslog"),
}


def variable_bins(values: np.ndarray, kind: str, n: int = 20) -> np.ndarray:
    """Bin edges over the bulk (0.1 %-99.9 %) of values: log-spaced for pt and |dxy|, linear
    and symmetric for eta."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if kind == "abslog":
        values = np.abs(values)
    if values.size == 0:
        return np.linspace(0, 1, n + 1)
    if kind == "linear":
        edge = float(np.quantile(np.abs(values), 0.999)) or 1.0
        edge = math.ceil(edge * 10) / 10
        return np.linspace(-edge, edge, n + 1)
    positive = values[values > 0]
    if positive.size == 0:
        return np.geomspace(1e-4, 1, n + 1)
    low, high = np.quantile(positive, [0.001, 0.999])
    low = max(low, 1e-4 if kind == "abslog" else 1e-2)
    high = max(high, low * 10)
    return np.geomspace(low, high, n + 1)


def _rate_axes(ax: Any, kind: str, xlabel: str, ylabel: str) -> None:
    if kind in ("log", "abslog"):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _draw_rates(
    ax: Any,
    values: np.ndarray,
    labels: np.ndarray,
    passed: Mapping[str, np.ndarray],
    edges: np.ndarray,
    which: str,
) -> float:
    """Draw the curves; returns the lowest point drawn (error bars included)."""
    centers = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else 0.5 * (edges[:-1] + edges[1:])
    lowest = 1.0
    for name, flags in passed.items():
        rates = binned_rates(values, labels, flags, edges)
        for i, level in enumerate(LEVELS):
            reference = name == REFERENCE
            y, error = rates[which][:, i], rates[f"{which}_error"][:, i]
            color = LEVEL_COLORS[level]
            ax.plot(
                centers,
                y,
                color=color,
                marker="s" if reference else "o",
                markersize=3.5,
                linestyle="--" if reference else "-",
                linewidth=1.1,
                markerfacecolor="white" if reference else color,
                label=f"{label(name)} {level}",
            )
            # All error bars of a curve as one line broken by NaN: errorbar() makes an artist
            # per call and costs 10x more with dozens of panels.
            nan = np.full_like(y, np.nan)
            bars_x = np.stack([centers, centers, nan], axis=1).ravel()
            bars_y = np.stack([y - error, y + error, nan], axis=1).ravel()
            ax.plot(bars_x, bars_y, color=color, linewidth=0.8)
            lowest = min(lowest, float(np.nanmin(y - error, initial=1.0)))
    return max(lowest, 0.0)


def rates_figure(
    rows: Sequence[Panel], edges: Mapping[str, np.ndarray], path: Path, heading: str
) -> Path:
    """Efficiency and fake rate vs pt, eta and |dxy| at the working points.

    rows: one entry per figure row: title, labels, columns {name: trk_pt/trk_eta/trk_dxy},
    passed {classifier: bool [N, 3]}, or reason. Each row has 6 panels: efficiency vs the three
    variables, then fake rate vs them. The new DNN is solid, trk_mva dashed/open, one color per
    level.
    """
    ncols = 3 if len(rows) == 1 else 6  # one row: efficiency above, fake rate below
    with cms_style({"font.size": 11, "axes.labelsize": 11, "legend.fontsize": 9}):
        fig, axes = _grid(len(rows) * 6, ncols, (4.2, 3.4) if ncols == 3 else (3.6, 3.0), True)
        for r, row in enumerate(rows):
            row_axes = axes[6 * r : 6 * r + 6]
            if row.get("reason"):
                _not_available(row_axes[0], row["title"], row["reason"])
                for ax in row_axes[1:]:
                    ax.set_visible(False)
                continue
            labels = np.asarray(row["labels"]).astype(bool)
            for c, (which, ylabel) in enumerate(
                (("efficiency", "efficiency"), ("fake_rate", "fake rate"))
            ):
                for v, (var, (column, xlabel, kind)) in enumerate(VARIABLES.items()):
                    ax = row_axes[3 * c + v]
                    values = row["columns"][column]
                    values = np.abs(values) if kind == "abslog" else values
                    lowest = 0.0
                    if (labels if which == "efficiency" else ~labels).any():
                        lowest = _draw_rates(ax, values, labels, row["passed"], edges[var], which)
                    else:
                        ax.text(
                            0.5,
                            0.5,
                            "n/a: no " + ("true" if c == 0 else "fake") + " track",
                            ha="center",
                            transform=ax.transAxes,
                            color="0.35",
                        )
                    _rate_axes(ax, kind, xlabel, ylabel)
                    if which == "efficiency":  # start near the lowest point: they sit near 1
                        bottom = max(0.0, math.floor((lowest - 0.05) * 20) / 20)
                        ax.set_ylim(bottom, 1.0 + 0.05 * (1.0 - bottom))
                    else:
                        ax.set_ylim(bottom=0)
                    ax.set_title(row["title"], loc="left", fontsize=10)
        first = next((ax for ax in axes if ax.get_legend_handles_labels()[0]), None)
        if first is not None:
            handles, names = first.get_legend_handles_labels()
            _figure_legend(fig, handles, names, 6)
        _header(fig, heading)
        return save(fig, path)


# ---------------------------------------------------------------------------------------------
# Inputs: raw and after the sanitizer
# ---------------------------------------------------------------------------------------------
def _raw_bins(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Bins over the bulk of a raw feature, and whether its axis should be logarithmic: one
    bin per value for small counts (hits), log-spaced when positive values span decades."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.linspace(0, 1, 41), False
    low, high = np.quantile(finite, [0.002, 0.998])
    if np.all(finite == np.round(finite)) and high - low <= 60:
        return np.arange(np.floor(low) - 0.5, np.ceil(high) + 1.5), False
    if low > 0 and high > 100 * low:
        return np.geomspace(low, high, 41), True
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, 41), False


def features_grid(
    names: Sequence[str],
    groups: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    heading: str,
    sanitized: bool,
) -> Path:
    """Per feature, true and fake distributions of each group (e.g. test and training).

    groups: {name: (x [N, features], labels [N])}; the first group is drawn filled. Raw values
    are binned over their 0.2-99.8 % range (the fraction outside is printed); sanitized ones
    over [-1, 1], with the fraction sitting on a clip edge printed (a sign of bad bounds when
    large).
    """
    with cms_style(
        {
            "font.size": 10,
            "axes.labelsize": 10,
            "legend.fontsize": 8,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
        }
    ):
        fig, axes = _grid(len(names), 6, (3.1, 2.6), legend=True)
        first_group = next(iter(groups))
        for j, (ax, feature) in enumerate(zip(axes, names, strict=True)):
            reference = groups[first_group][0][:, j]
            if sanitized:
                bins, logx = np.linspace(-1.05, 1.05, 43), False
            else:
                bins, logx = _raw_bins(reference)
            notes = []
            for g, (group, (x, labels)) in enumerate(groups.items()):
                column = x[:, j]
                labels = np.asarray(labels).astype(bool)
                for mask, color, kind in (
                    (labels, TRUE_COLOR, "true"),
                    (~labels, FAKE_COLOR, "fake"),
                ):
                    values = column[mask]
                    if values.size == 0:
                        continue
                    counts, _ = np.histogram(values, bins)
                    total = max(values.size, 1)
                    ax.stairs(
                        counts / total,
                        bins,
                        color=color,
                        fill=g == 0,
                        alpha=0.3 if g == 0 else 1,
                        linestyle="-" if g == 0 else "--",
                        label=f"{group} {kind}",
                    )
                if g == 0:
                    if sanitized:  # a big pile at +-1 means bounds that clip the bulk
                        low, high = np.mean(column <= -1 + 1e-6), np.mean(column >= 1 - 1e-6)
                        notes.append(f"at -1: {low:.1%}\nat +1: {high:.1%}")
                    else:
                        outside = np.mean(~((column >= bins[0]) & (column <= bins[-1])))
                        notes.append(f"outside: {outside:.1%}")
            if logx:
                ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(feature + (" (sanitized)" if sanitized else ""))
            ax.text(
                0.98,
                0.95,
                "\n".join(notes),
                ha="right",
                va="top",
                transform=ax.transAxes,
                fontsize=8,
                color="0.3",
            )
        handles, names_ = axes[0].get_legend_handles_labels()
        _figure_legend(fig, handles, names_, 4)
        _header(fig, heading)
        return save(fig, path)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------
def training_curves(log: pd.DataFrame, path: Path, heading: str = "training") -> Path:
    """Loss and AUC per epoch, training and validation (and the learning rate when logged)."""
    metrics = [m for m in ("loss", "auc") if m in log.columns or f"val_{m}" in log.columns]
    lr_column = next((c for c in ("learning_rate", "lr") if c in log.columns), None)
    n = len(metrics) + (lr_column is not None)
    epochs = log["epoch"].to_numpy() + 1 if "epoch" in log.columns else np.arange(1, len(log) + 1)
    with cms_style():
        fig, axes = _grid(max(n, 1), 3, (5.2, 4.2))
        for ax, metric in zip(axes, metrics, strict=False):
            for column, style, name in (
                (metric, "-o", "training"),
                (f"val_{metric}", "--s", "validation"),
            ):
                if column in log.columns:
                    ax.plot(epochs, log[column], style, markersize=3, label=name)
            if "val_loss" in log.columns and len(log):
                best = int(np.nanargmin(log["val_loss"].to_numpy()))
                ax.axvline(epochs[best], color="0.6", linestyle=":", label="best val_loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.legend(frameon=False)
        if lr_column is not None:
            ax = axes[len(metrics)]
            ax.plot(epochs, log[lr_column], "-o", markersize=3, color="0.3")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("learning rate")
        _header(fig, heading)
        return save(fig, path)


# ---------------------------------------------------------------------------------------------
# The evaluation's set of figures
# ---------------------------------------------------------------------------------------------
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
    run folder. masks: {sample name or "all": bool row mask of test}."""
    plots_dir = Path(plots_dir)
    labels = test["trk_isTrue"].to_numpy().astype(bool)
    algo = test[cfg["algo_branch"]].to_numpy()
    wps = metrics["working_points"]
    present = [it for it in cfg["iterations"] if wps[it]["n_true"] + wps[it]["n_fake"] > 0]
    edges = {
        var: variable_bins(test[col].to_numpy(), kind)
        for var, (col, _, kind) in VARIABLES.items()
        if col in test.columns
    }
    can_rate = len(edges) == len(VARIABLES)
    cut_sets = {name: thresholds_by_algo(wps, name) for name in (NEW, REFERENCE) if name in scores}
    passed = {name: passes(scores[name], algo, cuts) for name, cuts in cut_sets.items()}
    out: list[dict[str, str]] = []

    def add(section: str, title: str, path: Path) -> None:
        out.append(
            {"section": section, "title": title, "file": f"{plots_dir.name}/{Path(path).name}"}
        )

    # A sample without any track has only its n/a row in the tables: no empty figures.
    jobs = [(s, kind) for s, m in masks.items() if m.any() for kind in ("roc", "scores", "rates")]
    jobs += [(ALL, "rates_by_iteration"), (None, "features"), (None, "training")]
    for sample, kind in tqdm(jobs, desc="plots", unit="figure", file=progress):
        if kind == "features":
            for path, title in _feature_plots(test, train, cfg, plots_dir, sanitizer):
                add("inputs", title, path)
            continue
        if kind == "training":
            if training_log is not None and len(training_log):
                add(
                    "training",
                    "Training curves",
                    training_curves(training_log, plots_dir / "training_curves.png"),
                )
            continue
        rows = masks[sample]
        entries = metrics["samples"][sample]
        name = "all test samples" if sample == ALL else sample
        tag = file_safe(sample)
        panels = []
        for iteration in [ALL, *present]:
            it_rows = rows if iteration == ALL else rows & (algo == ALGORITHMS[iteration])
            panels.append(
                {
                    "title": "all iterations" if iteration == ALL else iteration,
                    "labels": labels[it_rows],
                    "scores": {n: s[it_rows] for n, s in scores.items()},
                    "entry": entries[iteration],
                    "reason": entries[iteration].get("reason"),
                    "cuts": wps[iteration]["thresholds"].get(NEW)
                    if iteration != ALL and wps[iteration]["status"] == "ok"
                    else None,
                }
            )
        if kind == "roc":
            add(
                name,
                f"ROC curves, {name}",
                roc_grid(panels, plots_dir / f"roc_{tag}.png", f"ROC: {name}"),
            )
        elif kind == "scores":
            first = panels[0]
            overview = [
                {
                    "title": f"{label(n)}, all iterations",
                    "labels": first["labels"],
                    "scores": {n: first["scores"][n]},
                    "filled": n,
                    "reason": first["reason"],
                }
                for n in scores
            ]
            detail = [
                dict(p, scores={n: p["scores"][n] for n in (NEW, REFERENCE) if n in p["scores"]})
                for p in panels[1:]
            ]
            add(
                name,
                f"Score distributions, {name}",
                score_grid(
                    overview + detail,
                    plots_dir / f"scores_{tag}.png",
                    f"mva of true and fake tracks: {name}",
                ),
            )
        elif kind == "rates" and can_rate:
            row = _rate_row("all iterations", test, rows, labels, passed, entries[ALL])
            add(
                name,
                f"Efficiency and fake rate at the working points, {name}",
                rates_figure(
                    [row], edges, plots_dir / f"rates_{tag}.png", f"at the working points: {name}"
                ),
            )
        elif kind == "rates_by_iteration" and can_rate:
            rate_rows = [
                _rate_row(it, test, rows & (algo == ALGORITHMS[it]), labels, passed, entries[it])
                for it in present
            ]
            if rate_rows:
                add(
                    name,
                    f"Efficiency and fake rate per iteration, {name}",
                    rates_figure(
                        rate_rows,
                        edges,
                        plots_dir / "rates_by_iteration.png",
                        f"at the working points, per iteration: {name}",
                    ),
                )
    return out


def _rate_row(
    title: str,
    test: pd.DataFrame,
    rows: np.ndarray,
    labels: np.ndarray,
    passed: Mapping[str, np.ndarray],
    entry: Mapping[str, Any],
) -> Panel:
    if not rows.any():
        return {"title": title, "reason": entry.get("reason") or "no tracks"}
    return {
        "title": title,
        "labels": labels[rows],
        "columns": {col: test[col].to_numpy()[rows] for col, _, _ in VARIABLES.values()},
        "passed": {name: flags[rows] for name, flags in passed.items()},
    }


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
            df[cfg["features"]].to_numpy(np.float32)[rows],
            df["trk_isTrue"].to_numpy()[rows],
        )
    if not groups:
        return []
    features = list(cfg["features"])
    made = [
        (
            features_grid(
                features,
                groups,
                plots_dir / "features_raw.png",
                "input features, raw",
                sanitized=False,
            ),
            "Input features, raw",
        )
    ]
    if sanitizer is not None:
        cleaned = {g: (np.asarray(sanitizer(x)), y) for g, (x, y) in groups.items()}
        made.append(
            (
                features_grid(
                    features,
                    cleaned,
                    plots_dir / "features_sanitized.png",
                    "input features after the InputSanitizerLayer",
                    sanitized=True,
                ),
                "Input features after the sanitizer",
            )
        )
    return made
