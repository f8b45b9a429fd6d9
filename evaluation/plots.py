"""The evaluation's figures, in CMS style: ROC curves, scores, input features, training curves.

Figures are built with matplotlib.figure.Figure (no pyplot state, nothing to close, any
backend) under mplhep's CMS style, laid out by matplotlib's constrained layout with legends
outside the panels, and written atomically as PNG. Each function takes the numbers it shows and
a path, and returns the path; a panel with nothing to show says why. Empty histogram bins are
left empty (NaN), not drawn at zero.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.style
import mplhep
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator, StrMethodFormatter

from evaluation.metrics import roc_points
from evaluation.names import BDT, LEVELS, NEW, REFERENCE, label
from pipeline.files import atomic_path

DPI = 72  # small PNGs that still read well on a slide and at the report's width
LEVEL_COLORS = {"loose": "#5790fc", "tight": "#f89c20", "highPurity": "#e42536"}
FIXED_COLORS = {NEW: "#5790fc", REFERENCE: "black", BDT: "#e42536"}
OTHER_COLORS = ["#964a8b", "#f89c20", "#9c9ca1", "#7a21dd", "#2ca02c", "#8c564b"]
TRUE_COLOR, FAKE_COLOR = "#5790fc", "#e42536"
PANEL_RC = {
    "font.size": 13,
    "axes.labelsize": 13,
    "axes.titlesize": 13,
    "legend.fontsize": 11,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "lines.linewidth": 1.6,
}
CMS_LABEL = r"$\mathbf{CMS}$ $\mathit{Simulation\ Internal}$"

# Units of the ntuple's track quantities, for axis labels.
FEATURE_UNITS = {
    **dict.fromkeys(
        [
            "trk_pt",
            "trk_px",
            "trk_py",
            "trk_pz",
            "trk_ptErr",
            *(f"trk_{side}_{c}" for side in ("inner", "outer") for c in ("px", "py", "pz", "pt")),
        ],
        "GeV",
    ),
    **dict.fromkeys(
        ["trk_dxy", "trk_dz", "trk_dxyClosestPV", "trk_dzClosestPV", "trk_dxyPV", "trk_dzPV"],
        "cm",
    ),
    **dict.fromkeys(["trk_dxyErr", "trk_dzErr", "trk_dzClosestPVNorm"], "cm"),
    **dict.fromkeys(["trk_phi", "trk_phiErr", "trk_lambda", "trk_lambdaErr"], "rad"),
    **dict.fromkeys(
        [
            "trk_nPixel",
            "trk_nStrip",
            "trk_nValid",
            "trk_nLost",
            "trk_nInvalid",
            "trk_nInnerLost",
            "trk_nOuterLost",
            "trk_nInnerInactive",
            "trk_nOuterInactive",
        ],
        "hits",
    ),
    **dict.fromkeys(["trk_nLostLay", "trk_nPixelLay", "trk_nStripLay", "trk_n3DLay"], "layers"),
}  # eta, etaErr, nChi2 (chi2 / ndof) and ndof have no unit

Panel = dict[str, Any]  # title, labels, scores {name: mva}, entry (metrics) or reason


@contextlib.contextmanager
def cms_style(rc: Mapping[str, Any] | None = None) -> Iterator[None]:
    """mplhep's CMS style for the figures made inside, without touching global rcParams."""
    with matplotlib.style.context([mplhep.style.CMS, dict(PANEL_RC, **(rc or {}))]):
        yield


def classifier_colors(names: Sequence[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * 3)
    return {name: FIXED_COLORS.get(name) or next(others) for name in names}


def feature_label(feature: str, suffix: str = "") -> str:
    """An axis label with the unit: 'trk_pt [GeV]'."""
    unit = FEATURE_UNITS.get(feature)
    return f"{feature}{suffix}" + (f" [{unit}]" if unit else "")


def grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list[Any]]:
    """A constrained-layout figure of n panels of about panel inches each, ncols per row."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def finish(
    fig: Figure,
    heading: str,
    path: Path,
    legend: tuple[list[Any], list[str]] | None = None,
    ncols: int = 6,
) -> Path:
    """CMS label and heading on top, the shared legend outside the panels (below them), saved."""
    fig.suptitle(f"{CMS_LABEL}    {heading}", x=0.01, ha="left", fontsize=15)
    for ax in fig.axes:  # tick artists dominate the time of figures of dozens of panels
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            axis.set_minor_locator(NullLocator())
            if axis.get_scale() == "log":  # under two decades, label 1-2-5 too
                narrow = min(limits) > 0 and max(limits) / min(limits) < 100
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
                axis.set_major_formatter(StrMethodFormatter("{x:g}"))
            else:
                axis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    if legend and legend[0]:
        fig.legend(*legend, loc="outside lower center", ncols=ncols, frameon=False)
    return save(fig, path)


def save(fig: Figure, path: Path) -> Path:
    """Write the PNG under a temporary name, then rename: no half-written image is ever seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def not_available(ax: Any, title: str, reason: str) -> None:
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


def histogram(values: np.ndarray, bins: np.ndarray, density: bool = True) -> np.ndarray:
    """Counts (or density) per bin, NaN where a bin is empty: drawn as a gap, not a zero."""
    counts, _ = np.histogram(values, bins)
    scale = counts.sum() * np.diff(bins) if density else np.ones(len(counts))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, counts / scale, np.nan)


# ---------------------------------------------------------------------------------------------
# ROC curves and scores
# ---------------------------------------------------------------------------------------------
def roc_grid(panels: Sequence[Panel], path: Path, heading: str, ncols: int = 3) -> Path:
    """One ROC panel per entry: efficiency vs fake-track acceptance (log), each classifier's
    working points as open markers, its AUC in the panel's legend (right of the panel); the
    figure's legend names the classifiers."""
    with cms_style({"legend.fontsize": 10, "legend.title_fontsize": 10}):
        fig, axes = grid(len(panels), ncols, (5.4, 3.8))
        names: list[str] = []
        for ax, panel in zip(axes, panels, strict=True):
            names += [n for n in _roc_panel(ax, panel) if n not in names]
        colors = classifier_colors(names)
        handles = [Line2D([], [], color=colors[n], linestyle=_roc_style(n)) for n in names]
        handles.append(
            Line2D([], [], marker="o", color="0.3", markerfacecolor="white", linestyle="")
        )
        labels = [label(n) for n in names] + ["working points (loose, tight, HP)"]
        return finish(fig, heading, path, (handles, labels), ncols=len(labels))


def _roc_style(name: str) -> str:
    return "--" if name == REFERENCE else "-"


def _roc_panel(ax: Any, panel: Panel) -> list[str]:
    """Draw one panel; returns the classifiers drawn."""
    entry = panel.get("entry") or {}
    reason = panel.get("reason") or entry.get("reason")
    if reason:
        not_available(ax, panel["title"], reason)
        return []
    labels = np.asarray(panel["labels"]).astype(bool)
    colors = classifier_colors(list(panel["scores"]))
    curves = {name: roc_points(labels, scores) for name, scores in panel["scores"].items()}
    bottom = _roc_bottom(entry)
    for name, (acceptance, eff) in curves.items():
        info = entry.get("classifiers", {}).get(name, {})
        auc_text = f"{info['auc']:.3f}" if "auc" in info else "n/a"
        ax.plot(acceptance, eff, _roc_style(name), color=colors[name], label=auc_text)
        wps = info.get("working_points", {})
        points = [wps[lv] for lv in LEVELS if isinstance(wps.get(lv), dict)]
        points = [p for p in points if p.get("fake_acceptance") and p.get("efficiency")]
        if points:
            ax.plot(
                [p["fake_acceptance"] for p in points],
                [p["efficiency"] for p in points],
                "o",
                color=colors[name],
                markersize=5,
                markerfacecolor="white",
            )
    n_fake = int((~labels).sum())
    # x from the smallest acceptance any curve has inside the shown efficiency range.
    shown = [a[(e >= bottom) & (a > 0)] for a, e in curves.values()]
    low = min((x.min() for x in shown if x.size), default=1.0)
    ax.set_xscale("log")
    ax.set_xlim(max(low / 2, 0.5 / max(n_fake, 1), 1e-6), 1.0)
    ax.set_ylim(bottom, 1.0 + 0.02 * (1.0 - bottom))
    ax.set_xlabel("fake-track acceptance")
    ax.set_ylabel("efficiency")
    ax.set_title(f"{panel['title']}  ({int(labels.sum())} true, {n_fake} fake)", loc="left")
    ax.legend(title="AUC", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return list(curves)


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
    """mva distributions of true and fake tracks: one classifier filled (the new DNN unless
    the panel names another), trk_mva dashed over it; dotted lines at the new model's cuts."""
    bins = np.linspace(-1.0, 1.0, 41)
    with cms_style():
        fig, axes = grid(len(panels), ncols, (4.6, 3.6))
        for ax, panel in zip(axes, panels, strict=True):
            _score_panel(ax, panel, bins)
        handles = [
            Patch(color=TRUE_COLOR, alpha=0.35, label="true tracks"),
            Patch(color=FAKE_COLOR, alpha=0.35, label="fake tracks"),
            Line2D([], [], color="0.3", linestyle="--", label=f"{label(REFERENCE)} (dashed)"),
            *(
                Line2D([], [], color=c, linestyle=":", label=f"new DNN cut, {lv}")
                for lv, c in LEVEL_COLORS.items()
            ),
        ]
        return finish(fig, heading, path, (handles, [h.get_label() for h in handles]))


def _score_panel(ax: Any, panel: Panel, bins: np.ndarray) -> None:
    labels = np.asarray(panel.get("labels", []), dtype=bool)
    if not labels.size:  # one class alone still has a distribution worth seeing
        not_available(ax, panel["title"], panel.get("reason") or "no tracks")
        return
    if panel.get("reason"):
        ax.set_title(panel["reason"], loc="right", fontsize=9, color="0.35")
    for name, scores in panel["scores"].items():
        filled = name == panel.get("filled", NEW)
        for mask, color in ((labels, TRUE_COLOR), (~labels, FAKE_COLOR)):
            if mask.any():
                density = histogram(np.clip(scores[mask], -1, 1), bins)
                ax.stairs(
                    density,
                    bins,
                    color=color,
                    fill=filled,
                    alpha=0.35 if filled else 1,
                    linestyle="-" if filled else "--",
                )
    for level, cut in zip(LEVELS, panel.get("cuts") or [], strict=False):
        ax.axvline(cut, color=LEVEL_COLORS[level], linewidth=1.2, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("mva = 2p - 1")
    ax.set_ylabel("tracks (normalised)")
    ax.set_title(panel["title"], loc="left")


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
    small = {"font.size": 10, "axes.labelsize": 10, "xtick.labelsize": 8, "ytick.labelsize": 8}
    with cms_style(small):
        fig, axes = grid(len(names), 6, (3.1, 2.5))
        first_group = next(iter(groups))
        for j, (ax, feature) in enumerate(zip(axes, names, strict=True)):
            reference = groups[first_group][0][:, j]
            if sanitized:
                bins, logx = np.linspace(-1.05, 1.05, 43), False
            else:
                bins, logx = _raw_bins(reference)
            for g, (group, (x, labels)) in enumerate(groups.items()):
                labels = np.asarray(labels).astype(bool)
                for mask, color, kind in (
                    (labels, TRUE_COLOR, "true"),
                    (~labels, FAKE_COLOR, "fake"),
                ):
                    if mask.any():
                        ax.stairs(
                            histogram(x[mask, j], bins, density=False) / mask.sum(),
                            bins,
                            color=color,
                            fill=g == 0,
                            alpha=0.3 if g == 0 else 1,
                            linestyle="-" if g == 0 else "--",
                            label=f"{group} {kind}",
                        )
            if sanitized:  # a big pile at +-1 means bounds that clip the bulk
                low, high = np.mean(reference <= -1 + 1e-6), np.mean(reference >= 1 - 1e-6)
                note = f"at -1: {low:.1%}\nat +1: {high:.1%}"
            else:
                inside = (reference >= bins[0]) & (reference <= bins[-1])
                note = f"outside: {np.mean(~inside):.1%}"
            ax.text(
                0.98,
                0.95,
                note,
                ha="right",
                va="top",
                transform=ax.transAxes,
                fontsize=8,
                color="0.3",
            )
            if logx:
                ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"{feature} (scaled)" if sanitized else feature_label(feature))
            ax.set_ylabel("fraction of tracks")
        return finish(fig, heading, path, axes[0].get_legend_handles_labels(), ncols=4)


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
        fig, axes = grid(max(n, 1), 3, (5.2, 4.0))
        for ax, metric in zip(axes, metrics, strict=False):
            for column, style, name in (
                (metric, "-o", "training"),
                (f"val_{metric}", "--s", "validation"),
            ):  # noqa: E501
                if column in log.columns:
                    ax.plot(epochs, log[column], style, markersize=3, label=name)
            if "val_loss" in log.columns and len(log):
                best = int(np.nanargmin(log["val_loss"].to_numpy()))
                ax.axvline(epochs[best], color="0.6", linestyle=":", label="best val_loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
        if lr_column is not None:
            ax = axes[len(metrics)]
            ax.plot(epochs, log[lr_column], "-o", markersize=3, color="0.3")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("learning rate")
        return finish(fig, heading, path, axes[0].get_legend_handles_labels(), ncols=3)
