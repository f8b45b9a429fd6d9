"""Efficiency and fake rate at the working points vs track and event quantities.

Efficiency (true tracks kept / true tracks) and fake rate (fake tracks among the tracks kept),
in bins of pt, eta, |dxy|, the number of valid hits and the number of tracks in the event, for
every classifier at its own working points. Error bars are Clopper-Pearson intervals: correct
at 0 and 1, asymmetric near them. A bin without the tracks a rate needs is left empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.metrics import binned_rates
from evaluation.names import LEVELS, label
from evaluation.plots import classifier_colors, cms_style, finish, grid, not_available

HITS_COLUMN = "valid_hits"  # trk_nPixel + trk_nStrip: the track's valid hits
EVENT_TRACKS_COLUMN = "tracks_in_event"  # reconstructed tracks of the event, all iterations
# name -> (column, axis label, binning)
VARIABLES = {
    "pt": ("trk_pt", r"$p_T$ [GeV]", "log"),
    "eta": ("trk_eta", r"$\eta$", "linear"),
    "dxy": ("trk_dxy", r"$|d_{xy}|$ to the beam spot [cm]", "abslog"),
    "hits": (HITS_COLUMN, "valid hits, pixel + strip [hits]", "integer"),
    "event_tracks": (EVENT_TRACKS_COLUMN, "tracks in the event [tracks]", "count"),
}
QUANTITIES = {"efficiency": "efficiency", "fake_rate": "fake rate"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<"]

Row = dict[str, Any]  # title, labels [N], columns {column: [N]}, passed {name: bool [N, 3]}


def add_rate_columns(tracks: pd.DataFrame) -> pd.DataFrame:
    """tracks with the number of valid hits and the number of tracks in the event.

    Give it every track of the test samples, before any selection of iterations: an event's
    track count is all its reconstructed tracks (an event is a sample and an event_index)."""
    tracks = tracks.copy()
    if {"trk_nPixel", "trk_nStrip"} <= set(tracks.columns):
        tracks[HITS_COLUMN] = tracks["trk_nPixel"].astype(np.float32) + tracks["trk_nStrip"]
    if "event_index" in tracks.columns:
        keys = [c for c in ("sample", "event_index") if c in tracks.columns]
        counts = tracks.groupby(keys, observed=True, sort=False)["event_index"].transform("size")
        tracks[EVENT_TRACKS_COLUMN] = counts.to_numpy(np.float32)
    return tracks


def available_variables(tracks: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    """The variables whose column the tracks have."""
    return {name: spec for name, spec in VARIABLES.items() if spec[0] in tracks.columns}


def variable_bins(values: np.ndarray, kind: str, n: int = 20) -> np.ndarray:
    """Bin edges over the bulk (0.5 %-99.5 %) of values: log-spaced for pt and |dxy|, linear
    and symmetric for eta, one bin per value (or per few values) for counts. The sparse tails
    beyond would only show error bars spanning 0 to 1."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if kind == "abslog":
        values = np.abs(values)
    if values.size == 0:
        return np.linspace(0, 1, n + 1)
    if kind == "linear":
        edge = math.ceil(float(np.quantile(np.abs(values), 0.995)) * 10) / 10 or 1.0
        return np.linspace(-edge, edge, n + 1)
    if kind in ("integer", "count"):
        low, high = np.floor(np.quantile(values, [0.005, 0.995]))
        step = max(1.0, math.ceil((high - low + 1) / (n if kind == "count" else 2 * n)))
        return np.arange(low - 0.5, high + step + 0.5, step)
    positive = values[values > 0]
    if positive.size == 0:
        return np.geomspace(1e-4, 1, n + 1)
    low, high = np.quantile(positive, [0.005, 0.995])
    low = max(low, 1e-4 if kind == "abslog" else 1e-2)
    return np.geomspace(low, max(high, low * 10), n + 1)


def _centers(edges: np.ndarray, kind: str, k: int, n: int) -> np.ndarray:
    """Bin centres, shifted a little per classifier so that error bars do not overlap."""
    shift = (k - (n - 1) / 2) * 0.5 / max(n, 1)
    if kind in ("log", "abslog"):
        logs = np.log(edges)
        return np.exp(0.5 * (logs[:-1] + logs[1:]) + shift * np.diff(logs))
    return 0.5 * (edges[:-1] + edges[1:]) + shift * np.diff(edges)


def rate_panel(
    ax: Any,
    rates: Mapping[str, np.ndarray],
    names: Sequence[str],
    level: int,
    edges: np.ndarray,
    kind: str,
    which: str,
) -> None:
    """One rate (efficiency or fake_rate) of every classifier at one level; rates are
    binned_rates of the flags [N, classifiers, levels] of `names`."""
    colors = classifier_colors(list(names))
    for k, name in enumerate(names):
        y = rates[which][:, k, level]
        low, high = rates[f"{which}_low"][:, k, level], rates[f"{which}_high"][:, k, level]
        ax.errorbar(
            _centers(edges, kind, k, len(names)),
            y,
            yerr=np.nan_to_num(np.stack([y - low, high - y])),
            fmt=MARKERS[k % len(MARKERS)],
            color=colors[name],
            markersize=4,
            elinewidth=1,
            capsize=0,
            markerfacecolor="white" if k else colors[name],
            label=label(name),
        )
    if kind in ("log", "abslog"):
        ax.set_xscale("log")
    if which == "efficiency":
        low = ax.get_ylim()[0]
        ax.set_ylim(max(0.0, math.floor(low * 20) / 20), 1.005)
    else:
        ax.set_ylim(bottom=0)


def rates_grid(
    lines: Sequence[tuple[str, Row, str]],
    panels: Sequence[tuple[str, str]],
    path: Path,
    heading: str,
    confidence: float = 0.95,
    per_row: int = 1,
) -> Path:
    """One figure row per `per_row` (title, tracks, level), one panel per (rate, variable): the
    rate ("efficiency" or "fake_rate") of every classifier at its cuts of that level. Bins
    follow each row's own tracks (an iteration's pt range is not another's)."""
    with cms_style({"font.size": 11, "axes.labelsize": 11, "axes.titlesize": 11}):
        fig, axes = grid(len(lines) * len(panels), per_row * len(panels), (3.5, 2.7))
        legend = None
        binned: dict[tuple[int, str], tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        for r, (title, row, level) in enumerate(lines):
            row_axes = axes[r * len(panels) : (r + 1) * len(panels)]
            if row.get("reason"):
                not_available(row_axes[0], title, row["reason"])
                for ax in row_axes[1:]:
                    ax.set_visible(False)
                continue
            labels = np.asarray(row["labels"]).astype(bool)
            names = list(row["passed"])
            flags = np.stack([row["passed"][n] for n in names], axis=1)  # tracks, names, levels
            for ax, (which, variable) in zip(row_axes, panels, strict=True):
                column, xlabel, kind = VARIABLES[variable]
                if which == "efficiency" and not labels.any():
                    not_available(ax, title, "no true track")
                    continue
                key = (id(row), variable)  # the rows of a figure share their binned counts
                if key not in binned:
                    values = row["columns"][column]
                    edges = variable_bins(values, kind)
                    values = np.abs(values) if kind == "abslog" else values
                    rates = binned_rates(values, labels, flags, edges, confidence)
                    binned[key] = (edges, rates)
                edges, rates = binned[key]
                rate_panel(ax, rates, names, LEVELS.index(level), edges, kind, which)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(QUANTITIES[which])
                ax.set_title(f"{title}, {level}", loc="left")
                legend = legend or ax.get_legend_handles_labels()
        return finish(fig, heading, path, legend, ncols=len(legend[1]) if legend else 1)
