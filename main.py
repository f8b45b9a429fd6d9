"""Retrain CMSSW's track classifier: ntuples -> tracks -> balanced splits -> model -> frozen graph.

    python main.py                                  # the whole pipeline, settings from config.py
    python main.py --epochs 3 --batch_size 4096     # any setting of config.py, overridden
    python main.py --config my_config.py            # a file of settings over config.py
    python main.py --stage freeze --run results/latest

Each run works in its own folder results/<timestamp>_<run_name>/ (results/latest points at the
newest): config.py, model.keras, checkpoints/, training_log.csv, tensorboard/, frozen_graph.pb.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dataset_loader import DatasetLoader
from helper_functions import (
    StageTimer,
    balance_iterations,
    format_track_table,
    load_config,
    select_iterations,
    split_by_events,
    track_table,
    write_config,
)
from make_ntuples import generate_sample

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out


def main(argv: list[str] | None = None) -> int:
    cfg, args = load_config(argv)
    stage = args.stage
    fresh = args.run is None and stage not in ("freeze", "evaluate")
    run_dir = open_run_dir(cfg, args.run, new=fresh)
    write_config(cfg, run_dir / "config.py")
    print(f"Run folder: {run_dir}")
    timer = StageTimer()
    summary: dict[str, Any] = {"run folder": run_dir}

    if stage != "freeze":
        with timer("load"):
            generate_missing_synthetic_samples(cfg)
            tracks = load_tracks(cfg)
        summary["tracks"] = track_table(tracks)
        print("Tracks per iteration and sample (true fraction):")
        print(format_track_table(summary["tracks"]))
        if stage == "load":
            return finish(summary, timer)

        with timer("balance"):
            training_tracks = tracks[tracks["sample"].isin(cfg["train_samples"])]
            if cfg["balance_iterations"]:
                balanced = balance_iterations(
                    training_tracks,
                    cfg["iterations"],
                    seed=cfg["seed"],
                    balance_true_fake=cfg["balance_true_fake"],
                    max_per_iteration=cfg["max_tracks_per_iteration"],
                )
            else:
                balanced = select_iterations(training_tracks, cfg["iterations"], cfg["algo_branch"])
            train, validation, test = split_by_events(balanced, cfg["split_fractions"], cfg["seed"])
            save_holdout(test, cfg, run_dir)
        summary["splits"] = {"train": len(train), "validation": len(validation), "test": len(test)}
        print(f"Balanced: {len(balanced)} tracks; " + describe_splits(summary["splits"]))
        if stage == "balance":
            return finish(summary, timer)

    # TensorFlow is imported only from here on: loading and balancing never need it.
    if stage in ("all", "train"):
        from evaluation import monitor_callback
        from gpusetter import setup_strategy
        from network.training import train_model

        strategy = setup_strategy(
            gpus=cfg["gpus"],
            min_free_gpu_memory_mb=cfg["min_free_gpu_memory_mb"],
            logical_devices_per_gpu=cfg["logical_devices_per_gpu"],
            gpu_memory_growth=cfg["gpu_memory_growth"],
            cpu_replicas=cfg["cpu_replicas"],
        )
        monitor = monitor_callback(tracks, cfg, run_dir)
        with timer("train"):
            model, summary["validation AUC"] = train_model(
                train, validation, cfg, strategy, run_dir, callbacks=[monitor] if monitor else []
            )
        if stage == "train":
            return finish(summary, timer)

    if stage in ("all", "freeze"):
        from model_freeze import freeze_model, freeze_run, load_holdout

        with timer("freeze"):
            if stage == "all":
                holdout = load_holdout(run_dir)
                graph = run_dir / "frozen_graph.pb"
                report = freeze_model(model, graph, holdout, cfg["freeze_tolerance"])
            else:
                report = freeze_run(run_dir, cfg["freeze_tolerance"])
        summary["frozen graph"] = (
            f"{report.path} ({report.nodes} nodes; agrees with the Keras model within "
            f"{report.max_abs_difference:.1e} on {report.checked_tracks} held-out tracks)"
        )
        if stage == "freeze":
            return finish(summary, timer)

    from evaluation import evaluate

    with timer("evaluate"):
        test_tracks = tracks[tracks["sample"].isin(cfg["test_samples"])]
        evaluate(train, test_tracks, cfg, run_dir)
    summary["report"] = run_dir / "report.html"
    return finish(summary, timer)


def open_run_dir(cfg: dict[str, Any], run: Path | None, new: bool) -> Path:
    """A new results/<timestamp>_<run_name>/ (results/latest points at it), or an existing run."""
    results = Path(cfg["results_dir"])
    if not new:
        run_dir = run if run is not None else results / "latest"
        if not run_dir.is_dir():
            raise SystemExit(f"--run {run_dir}: no such run folder. Give one under {results}/.")
        return run_dir.resolve()
    run_dir = results / f"{time.strftime('%Y%m%d-%H%M%S')}_{cfg['run_name']}"
    suffix = 1
    while run_dir.exists():  # two runs started within the same second
        run_dir = results / f"{time.strftime('%Y%m%d-%H%M%S')}_{cfg['run_name']}_{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    latest = results / "latest"
    tmp_link = results / ".latest.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(run_dir.name)
    os.replace(tmp_link, latest)  # atomic: latest always points at a complete folder name
    return run_dir.resolve()


def generate_missing_synthetic_samples(cfg: dict[str, Any]) -> None:
    """Generate the embedded synthetic samples whose folder holds no ROOT file yet."""
    for name in cfg["train_samples"] + cfg["test_samples"]:
        if name not in cfg["synthetic_samples"] or not isinstance(cfg["samples"].get(name), str):
            continue
        folder = Path(cfg["samples"][name])
        if folder.suffix != ".root" and not any(folder.glob("*.root")):
            process, events, seed, label = cfg["synthetic_samples"][name]
            print(f"Generating the synthetic sample '{name}' ({process}) into {folder}/")
            generate_sample(folder, process, events, seed, label=label)


def load_tracks(cfg: dict[str, Any]) -> pd.DataFrame:
    """All tracks of the training and test samples, one row per track."""
    names = list(dict.fromkeys(cfg["train_samples"] + cfg["test_samples"]))
    missing = [name for name in names if name not in cfg["samples"]]
    if missing:
        raise SystemExit(
            f"Samples {missing} are named in train_samples/test_samples but not defined in "
            "'samples' (config.py): add them there with their files."
        )
    loader = DatasetLoader(
        max_workers=cfg["max_workers"],
        tree_path=cfg["tree_path"],
        features=cfg["features"],
        algo_branch=cfg["algo_branch"],
        label=cfg["label"],
        extra_branches=cfg["extra_branches"],
        skip_bad_files=cfg["skip_bad_files"],
        cache_dir=cfg["cache_dir"] if cfg["cache"] else None,
    )
    return loader.load_samples({name: cfg["samples"][name] for name in names})


def save_holdout(test: pd.DataFrame, cfg: dict[str, Any], run_dir: Path) -> None:
    """Keep some held-out tracks in the run folder: the freeze stage checks the graph on them."""
    rows = test.sample(min(len(test), cfg["freeze_check_tracks"]), random_state=cfg["seed"])
    tmp = run_dir / ".holdout_tracks.tmp.npz"
    np.savez(
        tmp,
        x=rows[cfg["features"]].to_numpy(np.float32),
        y=rows[cfg["algo_branch"]].to_numpy(np.float32).reshape(-1, 1),
        label=rows["trk_isTrue"].to_numpy(),
    )
    os.replace(tmp, run_dir / "holdout_tracks.npz")


def describe_splits(splits: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in splits.items())


def finish(summary: dict[str, Any], timer: StageTimer) -> int:
    """Print what the run produced and how long each stage took."""
    print("\n=== summary ===")
    if "tracks" in summary:
        totals = summary["tracks"].xs("all", level="iteration")
        for sample, row in totals.iterrows():
            print(
                f"sample {sample:>16}: {int(row['tracks']):>9} tracks, "
                f"{row['true fraction']:.1%} true / {1 - row['true fraction']:.1%} fake"
            )
    if "splits" in summary:
        print(f"balanced splits: {describe_splits(summary['splits'])}")
    if "validation AUC" in summary:
        print(f"validation AUC: {summary['validation AUC']:.4f}")
    if "frozen graph" in summary:
        print(f"frozen graph: {summary['frozen graph']}")
    if "report" in summary:
        print(f"report: {summary['report']} (metrics.json, working_points.py, plots/ beside it)")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timer.seconds.items())
    print(f"stage times: {stages} (total {sum(timer.seconds.values()):.1f} s)")
    print(f"run folder: {summary['run folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
