"""The evaluate stage: does the new model keep fewer fakes than what runs in CMSSW today?

    metrics = evaluate(train, test, cfg, run_dir)

compares, on the same held-out test tracks, per sample and iteration: the new model through its
frozen graph run_dir/frozen_graph.pb, trk_mva from the ntuple, the frozen graphs of
cfg["compare_graphs"] and a BDT baseline trained on `train`. It writes into run_dir:
report.html, metrics.json, working_points.py and plots/*.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from evaluation.classifiers import LABEL, classifier_scores
from evaluation.metrics import ALL, derive_working_points, sample_metrics
from evaluation.monitor import MonitorCallback, monitor_callback
from evaluation.report import (
    DEFINITIONS,
    print_summary,
    write_metrics_json,
    write_report,
    write_working_points,
)
from helper_functions import select_iterations

__all__ = ["MonitorCallback", "evaluate", "monitor_callback"]


def classified_tracks(df: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """The tracks of the iterations the DNN classifies, index reset."""
    return select_iterations(df, cfg["iterations"], cfg["algo_branch"])


def held_out_samples(df: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Only the test_samples' tracks: a training sample passed by mistake would be scored as
    if it were held out."""
    wanted = cfg.get("test_samples") or []
    if not wanted or "sample" not in df:
        return df
    keep = df["sample"].astype(str).isin(wanted).to_numpy()
    if not keep.all():
        dropped = sorted(set(df["sample"].astype(str)[~keep]))
        print(f"note: evaluating the test_samples only; left out the tracks of {dropped}")
        df = df[keep]
    return df


def sample_masks(test: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """{sample: row mask} for the configured test samples (present or not), any other sample
    found in the data, and "all" (every test track)."""
    names = test["sample"].astype(str).to_numpy() if "sample" in test else np.full(len(test), "")
    order = list(dict.fromkeys([*cfg.get("test_samples", []), *pd.unique(names)]))
    masks = {name: names == name for name in order if name != ALL}
    masks[ALL] = np.ones(len(test), dtype=bool)
    return masks


def load_sanitizer(run_dir: Path) -> Any:
    """The InputSanitizerLayer of run_dir/model.keras as a function x -> sanitized x, or None."""
    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        print(f"note: {path} is missing: no plot of the sanitized inputs")
        return None
    import keras

    import network.custom  # noqa: F401  (registers the custom layers)
    from network.custom.input_sanitizer import InputSanitizerLayer

    model = keras.models.load_model(path, compile=False)
    layers = [layer for layer in model.layers if isinstance(layer, InputSanitizerLayer)]
    if not layers:
        print(f"note: {path} has no InputSanitizerLayer: no plot of the sanitized inputs")
        return None
    layer = layers[0]
    return lambda x: keras.ops.convert_to_numpy(layer(np.asarray(x, dtype=np.float32)))


def read_training_log(run_dir: Path) -> pd.DataFrame | None:
    path = Path(run_dir) / "training_log.csv"
    if not path.is_file():
        print(f"note: {path} is missing: no training curves")
        return None
    return pd.read_csv(path)


def evaluate(
    train: pd.DataFrame | None,
    test: pd.DataFrame,
    cfg: dict[str, Any],
    run_dir: Path,
    bdt_max_tracks: int = 300_000,
    plots: bool = True,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Compare the classifiers on the test tracks, derive the working points, write the report.

    train: the balanced training split (for the BDT baseline and the input plots; None: no
    BDT). test: the held-out test samples, one row per track with the features, originalAlgo,
    trk_isTrue, trk_mva and sample. Returns the metrics dict that metrics.json holds.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    out = Path(output_dir) if output_dir is not None else run_dir  # a later evaluation's folder
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    test = classified_tracks(held_out_samples(test, cfg), cfg)
    train = None if train is None else classified_tracks(train, cfg)
    print(
        f"Evaluating on {len(test)} test tracks of the classified iterations"
        + ("" if train is None else f"; {len(train)} training tracks for the BDT")
    )

    scores, skipped = classifier_scores(train, test, cfg, run_dir, bdt_max_tracks)
    notes = []
    for name, values in scores.items():
        bad = ~np.isfinite(values)
        if bad.any():  # a NaN mva passes no cut in CMSSW: keep it below every threshold
            notes.append(
                f"{name} gives a non-finite score to {bad.sum()} of {len(bad)} tracks; "
                "they are counted as passing no cut"
            )
            print(f"note: {notes[-1]}")
            scores[name] = np.where(bad, -2.0, values)
    labels = test[LABEL].to_numpy().astype(bool)
    algo = test[cfg["algo_branch"]].to_numpy()
    masks = sample_masks(test, cfg)
    timing = {"scores_s": time.perf_counter() - start}

    working_points = derive_working_points(labels, algo, scores, cfg)
    samples = {
        name: sample_metrics(
            labels[rows], algo[rows], {k: v[rows] for k, v in scores.items()}, working_points, cfg
        )
        for name, rows in tqdm(masks.items(), desc="metrics", unit="sample")
    }
    metrics: dict[str, Any] = {
        "run": run_dir.name,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "test_samples": [name for name in masks if name != ALL],
        "iterations": list(cfg["iterations"]),
        "classifiers": list(scores),
        "skipped_classifiers": skipped,
        "notes": notes,
        "levels": ["loose", "tight", "highPurity"],
        "reference": (
            f"target_efficiencies {cfg['target_efficiencies']}"
            if cfg.get("target_efficiencies")
            else "trk_mva at reference_cuts / default_reference_cuts"
        ),
        "definitions": DEFINITIONS,
        "working_points": working_points,
        "samples": samples,
    }
    timing["metrics_s"] = time.perf_counter() - start - timing["scores_s"]

    plot_list: list[dict[str, str]] = []
    if plots:
        plot_start = time.perf_counter()
        plot_list = make_plots(train, test, scores, masks, metrics, cfg, run_dir, out)
        timing["plots_s"] = time.perf_counter() - plot_start
    timing["total_s"] = time.perf_counter() - start
    metrics["timing"] = {k: round(v, 2) for k, v in timing.items()}

    write_metrics_json(metrics, out / "metrics.json")
    write_working_points(metrics, out / "working_points.py")
    report = write_report(metrics, plot_list, out)
    print_summary(metrics)
    print(
        f"Wrote {report}, metrics.json, working_points.py and {len(plot_list)} plots "
        f"in {timing['total_s']:.1f} s"
    )
    return metrics


def make_plots(
    train: pd.DataFrame | None,
    test: pd.DataFrame,
    scores: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    metrics: dict[str, Any],
    cfg: dict[str, Any],
    run_dir: Path,
    out: Path,
) -> list[dict[str, str]]:
    from evaluation.plots import make_evaluation_plots

    return make_evaluation_plots(
        test,
        scores,
        masks,
        metrics,
        cfg,
        Path(out) / "plots",
        train=train,
        sanitizer=load_sanitizer(run_dir),
        training_log=read_training_log(run_dir),
        progress=sys.stderr,
    )
