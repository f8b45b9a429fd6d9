"""The evaluate stage: does the new model keep fewer fakes than what runs in CMSSW today?

    metrics = evaluate(train, test, cfg, run_dir)

compares, on the same held-out test tracks, per sample and iteration: the new model scored as
it will be deployed (its frozen graph run_dir/frozen_graph.pb by default), trk_mva from the
ntuple, the production graphs of cfg["compare_graphs"] and a BDT baseline trained on `train`.
Every number carries its interval. It writes into output_dir (default run_dir): report.html
(self-contained), metrics.json, dnnQualityCuts.py (CMSSW's working-points file), plots/*.png.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmssw.ntuple import LABEL
from evaluation.classifiers import classifier_scores
from evaluation.comparison import sample_metrics
from evaluation.metrics import below_every_cut, derive_working_points, reference_description
from evaluation.names import ALL, DEFINITIONS, LEVELS
from evaluation.plots_rates import add_rate_columns
from evaluation.quality_cuts import (
    DEFAULT_BLOCK,
    FILE_NAME,
    chosen_block,
    release_cuts,
    write_quality_cuts,
)
from evaluation.quality_cuts import quality_cuts_text as cuts_text
from evaluation.quality_cuts import summary as quality_cuts_summary
from evaluation.report import print_summary, write_metrics_json, write_report
from evaluation.stats import EventBootstrap, event_codes
from evaluation.verdict import verdicts
from pipeline.console import progress as progress_bar
from tracks.balance import select_iterations

__all__ = ["MonitorCallback", "evaluate", "monitor_callback"]


def __getattr__(name: str) -> Any:
    """The training monitor needs Keras: imported only when asked for."""
    if name in ("MonitorCallback", "monitor_callback"):
        from evaluation import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")


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


def sanitizer_of(model: Any, origin: str = "the model") -> Callable | None:
    """The model's InputSanitizerLayer as a function x -> sanitized x, or None."""
    import keras

    import network.custom  # noqa: F401  (registers the custom layers)
    from network.custom.input_sanitizer import InputSanitizerLayer

    layers = [layer for layer in model.layers if isinstance(layer, InputSanitizerLayer)]
    if not layers:
        print(f"note: {origin} has no InputSanitizerLayer: no plot of the sanitized inputs")
        return None
    layer = layers[0]
    return lambda x: keras.ops.convert_to_numpy(layer(np.asarray(x, dtype=np.float32)))


def load_sanitizer(run_dir: Path) -> Callable | None:
    """The sanitizer of run_dir/model.keras, or None when there is no model file."""
    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        print(f"note: {path} is missing: no plot of the sanitized inputs")
        return None
    import keras

    import network.custom  # noqa: F401  (registers the custom layers)

    return sanitizer_of(keras.models.load_model(path, compile=False), str(path))


def read_training_log(run_dir: Path) -> pd.DataFrame | None:
    path = Path(run_dir) / "training_log.csv"
    if not path.is_file():
        print(f"note: {path} is missing: no training curves")
        return None
    return pd.read_csv(path)


def finite_scores(scores: dict[str, np.ndarray]) -> list[str]:
    """Put non-finite scores below every cut (metrics.below_every_cut); returns a note per
    classifier that had any."""
    notes = []
    for name, values in scores.items():
        bad = ~np.isfinite(values)
        if bad.any():
            notes.append(
                f"{name} gives a non-finite score to {bad.sum()} of {len(bad)} tracks; "
                "they are counted as passing no cut"
            )
            print(f"note: {notes[-1]}")
            scores[name] = below_every_cut(values)
    return notes


def evaluate(
    train: pd.DataFrame | None,
    test: pd.DataFrame,
    cfg: dict[str, Any],
    run_dir: Path,
    model: Any = None,
    config_text: str | None = None,
    monitor_plots: Sequence[str | Path] | None = None,
    deployment: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
    bdt_max_tracks: int = 300_000,
    plots: bool = True,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Compare the classifiers on the test tracks, derive the working points, write the report.

    train: the balanced training split (for the BDT baseline and the input plots; None: no
    BDT). test: every track of the held-out test samples (all iterations: the tracks per event
    count them all), with the features, originalAlgo, trk_isTrue, trk_mva, event_index and
    sample. model: the trained Keras model (its sanitizer is plotted; default: reloaded from
    run_dir/model.keras). config_text, monitor_plots: shown in the report (default: the run
    folder's config.py and monitor/ plots). deployment, run_info: optional report sections
    (see report.report_html). output_dir: where the outputs go (default run_dir; a later
    evaluation of a run writes into its own folder). Returns the metrics dict that metrics.json
    holds.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    out = Path(output_dir) if output_dir is not None else run_dir
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for block in (DEFAULT_BLOCK, chosen_block(cfg)):  # bad settings fail before the work
        release_cuts(cfg, block)
    test = classified_tracks(add_rate_columns(held_out_samples(test, cfg)), cfg)
    train = None if train is None else classified_tracks(train, cfg)
    print(
        f"Evaluating on {len(test)} test tracks of the classified iterations"
        + ("" if train is None else f"; {len(train)} training tracks for the BDT")
    )
    scores, skipped = classifier_scores(train, test, cfg, run_dir, bdt_max_tracks)
    notes = finite_scores(scores)
    timing = {"scores_s": time.perf_counter() - start}

    metrics = compute_metrics(test, scores, cfg, run_dir.name)
    if cfg.get("sample_weights") or cfg.get("track_weight"):
        notes.append(unweighted_note(cfg))
        print(f"note: {notes[-1]}")
    metrics.update(skipped_classifiers=skipped, notes=notes + metrics["notes"])
    timing["metrics_s"] = time.perf_counter() - start - timing["scores_s"]

    plot_list: list[dict[str, str]] = []
    if plots:
        plot_start = time.perf_counter()
        plot_list = evaluation_plots(train, test, scores, metrics, cfg, run_dir, model, out)
        timing["plots_s"] = time.perf_counter() - plot_start
    timing["total_s"] = time.perf_counter() - start
    metrics["timing"] = {k: round(v, 2) for k, v in timing.items()}

    write_metrics_json(metrics, out / "metrics.json")
    write_quality_cuts(metrics, cfg, out / FILE_NAME)
    if monitor_plots is None:
        monitor_plots = sorted((run_dir / "monitor").glob("epoch_*.png"))
    report = write_report(
        metrics,
        plot_list,
        out,
        config_text,
        monitor_plots,
        cuts_text(metrics, cfg),
        deployment,
        run_info,
    )
    print_summary(metrics)
    print(
        f"Wrote {report}, metrics.json, {FILE_NAME} and {len(plot_list)} plots "
        f"in {timing['total_s']:.1f} s"
    )
    return metrics


def unweighted_note(cfg: dict[str, Any]) -> str:
    """What a report of a weighted training says about its (unweighted) test numbers."""
    return (
        "the training weighted its tracks (sample_weights "
        f"{cfg.get('sample_weights') or {}}, track_weight {cfg.get('track_weight') or '-'!r}); "
        "every number here counts each test track once, unweighted"
    )


def evaluation_plots(
    train: pd.DataFrame | None,
    test: pd.DataFrame,
    scores: dict[str, np.ndarray],
    metrics: dict[str, Any],
    cfg: dict[str, Any],
    run_dir: Path,
    model: Any,
    out: Path,
) -> list[dict[str, str]]:
    """Every plot of the report into out/plots; the sanitizer's from the model (or run_dir's)."""
    from evaluation.figures import make_evaluation_plots

    sanitizer = sanitizer_of(model) if model is not None else load_sanitizer(run_dir)
    return make_evaluation_plots(
        test,
        scores,
        sample_masks(test, cfg),
        metrics,
        cfg,
        out / "plots",
        train=train,
        sanitizer=sanitizer,
        training_log=read_training_log(run_dir),
        progress=sys.stderr,
    )


def compute_metrics(
    test: pd.DataFrame, scores: dict[str, np.ndarray], cfg: dict[str, Any], run: str
) -> dict[str, Any]:
    """Every number of metrics.json from the scores of the classified test tracks: working
    points, per-sample metrics with intervals, the dnnQualityCuts.py steps and the verdicts."""
    labels = test[LABEL].to_numpy().astype(bool)
    algo = test[cfg["algo_branch"]].to_numpy()
    masks = sample_masks(test, cfg)
    codes = event_codes(test)
    replicas, seed = int(cfg.get("bootstrap_samples", 200)), int(cfg.get("seed", 0))
    bootstrap = EventBootstrap(codes, len(test), replicas, seed)
    working_points = derive_working_points(labels, algo, scores, cfg)
    samples = {
        name: sample_metrics(labels, algo, scores, working_points, cfg, rows, bootstrap)
        for name, rows in progress_bar(masks.items(), desc="metrics", unit="sample")
    }
    metrics: dict[str, Any] = {
        "run": run,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "test_samples": [name for name in masks if name != ALL],
        "iterations": list(cfg["iterations"]),
        "classifiers": list(scores),
        "notes": [] if codes is not None else ["no event_index: bootstrap over single tracks"],
        "levels": list(LEVELS),
        "reference": reference_description(cfg),
        "definitions": DEFINITIONS,
        "statistics": {
            "confidence_level": float(cfg.get("confidence_level", 0.95)),
            "rate_interval": "Clopper-Pearson",
            "auc_and_change_interval": "percentile bootstrap",
            "bootstrap_samples": replicas,
            "bootstrap_unit": bootstrap.unit,
            "seed": seed,
        },
        "working_points": working_points,
        "samples": samples,
    }
    metrics["quality_cuts"] = quality_cuts_summary(metrics, cfg)
    kept = [s for s, info in metrics["quality_cuts"]["steps"].items() if not info["derived"]]
    if kept:
        metrics["notes"].append(f"{FILE_NAME} keeps the release's cuts for {', '.join(kept)}")
    metrics["verdicts"] = verdicts(metrics)
    return metrics
