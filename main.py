"""Retrain CMSSW's track classifier: ntuples -> tracks -> balanced splits -> model -> frozen graph
-> evaluation against what runs in CMSSW today.

    python main.py                                  # the whole pipeline, settings from config.py
    python main.py --epochs 3 --batch_size 4096     # any setting of config.py, overridden
    python main.py --config my_config.py            # a file of settings over config.py
    python main.py --resume results/<run>           # continue an interrupted run (or search)
    python main.py --search --search_trials 40      # a hyperparameter search (pipeline/search.py)
    python main.py --stage evaluate --run results/latest

Each run has its own folder results/<time>_<run_name>/, written once and then only added to
(pipeline/runs.py); results/latest points at the newest run that finished.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmssw.ntuple import ALGORITHMS, LABEL
from gpusetter import cluster_role
from helper_functions import (
    balance_iterations,
    finite_inputs,
    format_track_table,
    select_iterations,
    split_by_events,
    track_table,
    training_weights,
)
from pipeline.console import StageTimer
from pipeline.files import write_new_file
from pipeline.runs import HOLDOUT, Interrupted, Job, RunError, history, open_job, run_summary
from pipeline.search import wants_search
from pipeline.settings import SettingsError, load_config, settings_text
from tracks.weights import WEIGHT, split_weights


def main(argv: list[str] | None = None) -> int:
    """Run what the command line asks; returns the exit status (errors raise)."""
    cfg, args = load_config(argv)  # every setting checked before anything is read
    if wants_search(args):
        return search(cfg, args)
    role = cluster_role(cfg["cluster"])  # one of several workers training together?
    if role.count > 1 and args.resume is not None:
        raise SettingsError(
            "--resume continues a training on one node; a multi-worker training starts anew "
            "(cluster = 'none' resumes it on this node alone)"
        )
    job = open_job(cfg, args, chief=role.chief)  # the run folder to make or use, the stages
    check_inputs(cfg, job.stages)
    timer = StageTimer()
    summary: dict[str, Any] = {}
    with job:
        if job.scratch:
            print(f"Worker {role.index} of {role.count}: training with the chief, which writes "
                  "the run folder")  # fmt: skip
        elif job.run_dir is not None:
            print(f"Run folder: {job.run_dir}")
        run_stages(cfg, job, timer, summary)
    summary["run folder"] = None if job.scratch else job.run_dir
    print_summary(summary, timer)
    return 0


def run_stages(cfg: dict[str, Any], job: Job, timer: StageTimer, summary: dict[str, Any]) -> None:
    tracks = train = validation = test = model = holdout = None
    if "load" in job.stages:
        job.stage("load")
        with timer("load"):
            generate_missing_synthetic_samples(cfg)
            tracks = load_tracks(cfg)
        summary["tracks"] = track_table(tracks)
        print("Tracks per iteration and sample (true fraction):")
        print(format_track_table(summary["tracks"]))

    if "balance" in job.stages:
        job.stage("balance")
        with timer("balance"):
            train, validation, test = balanced_splits(tracks, cfg)
            holdout = holdout_tracks(test, cfg)
            if job.run_dir is not None and not (job.run_dir / HOLDOUT).exists():
                save_holdout(holdout, job.run_dir / HOLDOUT)
        summary["splits"] = {"train": len(train), "validation": len(validation), "test": len(test)}
        print("Balanced splits: " + describe_splits(summary["splits"]))

    # TensorFlow is imported only from here on: loading and balancing never need it.
    if "train" in job.stages:
        job.stage("train")
        with timer("train"):
            result = train_stage(tracks, train, validation, cfg, job.run_dir)
        model = result.model
        summary["validation AUC"] = result.validation_auc
        summary["final weights"] = result.weights_sha256
        summary["training"] = describe_training(result, cfg)
        tracks_by_sample = train["sample"].astype(str).value_counts().to_dict()
        job.done("train", epochs=result.epochs, stopped_early=result.stopped_early,
                 resumed_from=result.resumed_from, tracks=tracks_by_sample)  # fmt: skip

    exports = None
    if "freeze" in job.stages:
        job.stage("freeze")
        with timer("freeze"):
            exports, model = freeze(job, cfg, model, holdout)
        summary["exports"] = exports.lines()
        job.done("freeze", files=[path.name for path in exports.files])
        if "evaluate" not in job.stages:
            write_model_card(job, cfg, exports, model, None, "the evaluation has not run yet")

    if "evaluate" in job.stages:
        job.stage("evaluate")
        from deploy.export import deployment_summary, existing_exports
        from evaluation import evaluate

        with timer("evaluate"):
            out = job.output_dir("report.html")
            test_tracks = tracks[tracks["sample"].isin(cfg["test_samples"])]
            model = model if model is not None else load_model(job.run_dir)
            exports = exports or existing_exports(job.run_dir, cfg["deploy_target"])
            metrics = evaluate(
                train,
                test_tracks,
                cfg,
                job.run_dir,
                model=model,
                config_text=settings_text(cfg),
                deployment=deployment_summary(job.run_dir, cfg, exports, model, test_tracks),
                run_info=run_summary(job.run_dir),
                output_dir=out,
            )
        summary["report"] = out / "report.html"
        job.done("evaluate", folder=str(out))
        write_model_card(job, cfg, exports, model, new_model_auc(metrics), None)


def search(cfg: dict[str, Any], args: Any) -> int:
    """--search (or --resume of a search): the study's trials, each in a run folder under the
    search's folder, on tracks loaded and balanced once (pipeline/search.py)."""
    from pipeline.search import open_search, run_search
    from pipeline.search_outputs import format_summary

    job = open_search(cfg, args)
    check_inputs(cfg, job.stages)
    timer = StageTimer()
    summary: dict[str, Any] = {}
    with job:
        print(f"Search folder: {job.run_dir}")
        job.stage("search")
        result = run_search(
            cfg, job.run_dir, lambda: search_splits(cfg, job, timer, summary), timer
        )
        job.done("search", trials=result.trials, best_trial=result.best_trial)
    if timer.seconds:  # nothing was loaded if the study had all its trials already
        summary["run folder"] = job.run_dir
        print_summary(summary, timer)
    print(format_summary(result))
    return 0


def search_splits(
    cfg: dict[str, Any], job: Job, timer: StageTimer, summary: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation tracks of every trial of the search."""
    job.stage("load")
    with timer("load"):
        generate_missing_synthetic_samples(cfg)
        tracks = load_tracks(cfg)
    job.stage("balance")
    with timer("balance"):
        train, validation, _ = balanced_splits(tracks, cfg)
    summary["splits"] = {"train": len(train), "validation": len(validation)}
    print("Balanced splits: " + describe_splits(summary["splits"]))
    job.stage("search")
    return train, validation


def check_inputs(cfg: dict[str, Any], stages: tuple[str, ...]) -> None:
    """Every sample names files that exist (the synthetic ones may still be generated): a
    wrong path is reported before any run folder is made."""
    if "load" not in stages:
        return
    from dataset_loader import check_paths

    for name in dict.fromkeys(cfg["train_samples"] + cfg["test_samples"]):
        if name not in cfg["synthetic_samples"]:
            check_paths(cfg["samples"][name], f"samples['{name}']")


def generate_missing_synthetic_samples(cfg: dict[str, Any]) -> None:
    """Generate the embedded synthetic samples whose folder holds no ROOT file yet."""
    from make_ntuples import generate_sample

    for name in cfg["train_samples"] + cfg["test_samples"]:
        if name not in cfg["synthetic_samples"]:
            continue
        folder = Path(cfg["samples"][name])
        if folder.suffix != ".root" and not any(folder.glob("*.root")):
            process, events, seed, label = cfg["synthetic_samples"][name]
            print(f"Generating the synthetic sample '{name}' ({process}) into {folder}/")
            generate_sample(folder, process, events, seed, label=label)


def load_tracks(cfg: dict[str, Any]) -> pd.DataFrame:
    """All tracks of the training and test samples, one row per track."""
    from cmssw.classifiers import TF_GRAPH_FEATURES
    from dataset_loader import DatasetLoader

    names = list(dict.fromkeys(cfg["train_samples"] + cfg["test_samples"]))
    from tracks.weights import branches_of

    extra = list(cfg["extra_branches"])
    if cfg["track_weight"]:
        extra += [name for name in branches_of(cfg["track_weight"]) if name not in cfg["features"]]
    if cfg["compare_graphs"]:  # production graphs are fed TrackTfClassifier's inputs
        extra += [name for name in TF_GRAPH_FEATURES if name not in cfg["features"]]
    loader = DatasetLoader(
        max_workers=cfg["max_workers"],
        tree_path=cfg["tree_path"],
        features=cfg["features"],
        algo_branch=cfg["algo_branch"],
        label=cfg["label"],
        extra_branches=extra,
        skip_bad_files=cfg["skip_bad_files"],
        cache_dir=cfg["cache_dir"] if cfg["cache"] else None,
    )
    return loader.load_samples({name: cfg["samples"][name] for name in names})


def balanced_splits(tracks: pd.DataFrame, cfg: dict[str, Any]) -> tuple[pd.DataFrame, ...]:
    """The training samples' tracks of the classified iterations, balanced, split by events."""
    training_tracks = tracks[tracks["sample"].isin(cfg["train_samples"])]
    if cfg["deploy_target"] == "lwtnn":  # lwtnn cannot sanitize: see finite_inputs
        finite = finite_inputs(training_tracks, cfg["features"])
        if len(finite) < len(training_tracks):
            print(f"{len(training_tracks) - len(finite):,} training-sample tracks with a NaN or "
                  "infinite input left out (lwtnn scores them NaN in CMSSW)")  # fmt: skip
        training_tracks = finite
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
    if cfg["sample_weights"] or cfg["track_weight"]:  # normalised after the balancing
        balanced[WEIGHT] = training_weights(
            balanced,
            cfg["sample_weights"],
            cfg["track_weight"],
            cfg["algo_branch"],
            [ALGORITHMS[name] for name in cfg["iterations"]],
        )
    return split_by_events(balanced, cfg["split_fractions"], cfg["seed"])


def holdout_tracks(test: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Some held-out tracks as the model's inputs (and their label): the freeze stage checks
    every exported file against the Keras model on them."""
    from network.inputs import model_inputs

    rows = test.sample(min(len(test), cfg["freeze_check_tracks"]), random_state=cfg["seed"])
    return {**model_inputs(rows, cfg), "label": rows[LABEL].to_numpy()}


def save_holdout(holdout: dict[str, np.ndarray], path: Path) -> None:
    """Kept in the run folder: a later freeze (--stage freeze, --resume) checks on the same."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **holdout)
    write_new_file(path, buffer.getvalue())


def train_stage(
    tracks: pd.DataFrame,
    train_split: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: dict[str, Any],
    run_dir: Path,
) -> Any:
    """Pick the devices, then train (or continue the training saved in run_dir)."""
    from evaluation import monitor_callback
    from gpusetter import strategy_for
    from network.training import train_model

    strategy = strategy_for(cfg)
    chief = cluster_role(cfg["cluster"]).chief
    monitor = monitor_callback(tracks, cfg, run_dir) if chief else None
    return train_model(
        train_split,
        validation,
        cfg,
        strategy,
        run_dir,
        callbacks=[monitor] if monitor else [],
        weights=split_weights(train_split, validation),
    )


def freeze(
    job: Job, cfg: dict[str, Any], model: Any, holdout: dict[str, np.ndarray] | None
) -> tuple[Any, Any]:
    """Export the model as deploy_target asks (frozen_graph.pb and model.onnx, or
    lwtnn_network.json), each checked against the Keras model on the held-out tracks (those
    the balance stage kept in the run folder, when it did not run now); a file the run has
    already is checked again, never rewritten. Returns (the exports, the model)."""
    from deploy.export import export_model
    from model_freeze import load_holdout

    model = model if model is not None else load_model(job.run_dir)
    inputs = load_holdout(job.run_dir) if holdout is None else holdout
    inputs = {name: inputs[name] for name in ("x", "y") if name in inputs}  # lwtnn: no y
    report = export_model(model, job.run_dir, cfg["deploy_target"], cfg["features"], inputs,
                          cfg["freeze_tolerance"])  # fmt: skip
    return report, model


def load_model(run_dir: Path) -> Any:
    import keras

    import network.custom  # noqa: F401  (registers the custom layers)

    return keras.models.load_model(run_dir / "model.keras", compile=False)


def write_model_card(
    job: Job, cfg: dict[str, Any], exports: Any, model: Any, auc: dict | None, reason: str | None
) -> None:
    """model_card.json beside the exports, once: with the test AUCs when the evaluation ran."""
    from deploy.export import write_run_model_card

    trained = [
        e for e in history(job.run_dir) if e["event"] == "stage done" and e["stage"] == "train"
    ]
    tracks = trained[-1].get("tracks") if trained else None
    out = job.output_dir("model_card.json")
    card = write_run_model_card(out, exports, model, cfg["features"], cfg["algo_branch"], tracks,
                                auc, reason, config=job.run_dir / "config.py")  # fmt: skip
    print(f"model card: {card}")


def new_model_auc(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The new model's AUC per test sample (all iterations) from the evaluation's metrics."""
    auc = {}
    for sample, entries in metrics.get("samples", {}).items():
        new = entries.get("all", {}).get("classifiers", {}).get("new_dnn", {})
        value = new.get("auc")
        auc[sample] = value.get("value") if isinstance(value, dict) else value
    return auc


def describe_training(result: Any, cfg: dict[str, Any]) -> str:
    text = f"{result.epochs} of {cfg['epochs']} epochs"
    if result.stopped_early:
        text += " (stopped early: no better validation loss)"
    if result.resumed_from is not None:
        epoch, batch = result.resumed_from
        text += f"; resumed at epoch {epoch + 1}" + (f", batch {batch}" if batch else "")
    return text


def describe_splits(splits: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in splits.items())


def print_summary(summary: dict[str, Any], timer: StageTimer) -> None:
    """What the command produced and how long each stage took."""
    print("\n=== summary ===")
    if "tracks" in summary:
        totals = summary["tracks"].xs("all", level="iteration")
        for sample, row in totals.iterrows():
            print(
                f"sample {sample:>16}: {int(row['tracks']):>9,} tracks, "
                f"{row['true fraction']:.1%} true / {1 - row['true fraction']:.1%} fake"
            )
    if "splits" in summary:
        print(f"balanced splits: {describe_splits(summary['splits'])}")
    if "training" in summary:
        print(f"training: {summary['training']}")
    if "validation AUC" in summary:
        print(f"validation AUC: {summary['validation AUC']:.4f}")
        print(f"final weights: sha256 {summary['final weights']}")
    for line in summary.get("exports", []):
        print(line)
    if "report" in summary:
        print(f"report: {summary['report']} (metrics.json, working points, plots/ beside it)")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timer.seconds.items())
    print(f"stage times: {stages} (total {sum(timer.seconds.values()):.1f} s)")
    if summary.get("run folder") is not None:
        print(f"run folder: {summary['run folder']}")


# ---------------------------------------------------------------------------------------------
# The command line: errors a user can fix are one message, the traceback goes to the run's log
# ---------------------------------------------------------------------------------------------
def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says what to fix: no traceback in the terminal."""
    from dataset_loader import ColumnWriteError, NtupleError

    return (NtupleError, ColumnWriteError, RunError, FileNotFoundError, FileExistsError)


def cli(argv: list[str] | None = None) -> int:
    from pipeline.console import quiet_console

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv

    def terminate(number: int, frame: Any) -> None:  # a batch system's SIGTERM, outside training
        raise Interrupted("stopped by SIGTERM", "SIGTERM")

    signal.signal(signal.SIGTERM, terminate)
    start = time.perf_counter()
    with quiet_console(debug):
        try:
            return main(argv)
        except SettingsError as error:
            print(f"error: {error}", file=sys.stderr)
            return SettingsError.exit_status
        except (Interrupted, KeyboardInterrupt) as error:
            return interrupted(error, time.perf_counter() - start)
        except Exception as error:
            if debug:
                raise
            if isinstance(error, user_errors()):
                print(f"error: {error}", file=sys.stderr)
            else:
                first = (str(error).strip().splitlines() or [""])[0]
                print(f"error: {type(error).__name__}: {first}", file=sys.stderr)
                print("(the traceback is in the run's run.log; --debug shows it here)",
                      file=sys.stderr)  # fmt: skip
            return 1


def interrupted(error: BaseException, seconds: float) -> int:
    """One line: what stopped, and how to continue."""
    name = getattr(error, "signal_name", "SIGINT")
    what = str(error) if isinstance(error, Interrupted) else "stopped by SIGINT (Ctrl-C)"
    run = getattr(error, "run_dir", None)
    hint = f"; continue with: python main.py --resume {run}" if run else ""
    print(f"\ninterrupted after {seconds:.0f} s: {what}{hint}", file=sys.stderr)
    return 128 + signal.Signals[name].value


if __name__ == "__main__":
    sys.exit(cli())
