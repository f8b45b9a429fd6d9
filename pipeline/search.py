"""Hyperparameter search: `python main.py --search` runs an Optuna study over `search_space`.

The search has a run folder results/<time>_<run_name>/ like any run; every trial trains in a
child run folder of it, trials/<time>_trialNNNN/, with its own config.py (the settings plus the
trial's values, epochs = search_epochs), training log and model. The tracks are loaded and
balanced once per process; each trial trains `search_epochs` epochs and is worth its best
validation loss. TPE (seeded from `seed`) chooses the values; a median pruner stops a trial whose
validation loss, epoch by epoch, is worse than the median of the earlier trials at that epoch.

The study lives in a database (`search_storage`; by default search/study.db in the search
folder), so that
- a killed search continues with `--resume`: finished trials stay done, the trial that was
  running is marked failed and queued again with the same values, and its training continues
  from its last saved state in its own folder;
- several processes (one per GPU, or an array of batch jobs) share one study: each one given
  the same storage and search_name adds trials until `search_trials` have finished. A process
  joining a study made with other settings is refused.

At the end (pipeline/search_outputs.py): search/trials.csv, plots, search/best_config.py
(train the final model with `python main.py --config results/<run>/search/best_config.py`)
and search/summary.json (search_summary() reads it back for the evaluation's report).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.runs import (
    LOG,
    Interrupted,
    Job,
    RunError,
    _alive,
    existing_run,
    history,
    mark_failed,
    new_run,
    record,
    status,
)
from pipeline.search_outputs import (
    SEARCH_FOLDER,
    SearchSummary,
    format_params,
    write_outputs,
    write_trials_csv,
)
from pipeline.search_space import Dimension, describe, parse_space, suggest
from pipeline.settings import SettingsError, default_config, describe_config, read_config_file

TRIALS_FOLDER = "trials"
STUDY_FILE = "study.db"
SEARCH_STAGES = ("load", "balance", "search")
# A running trial writes a heartbeat to the storage this often; one silent for the grace
# period (its process was killed on another node) is marked failed and queued again.
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 300
MAX_ATTEMPTS = 3  # a trial whose process dies this often is not queued again
# The median pruner: no pruning before 5 trials have finished, nor in a trial's first epoch.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_EPOCHS = 1
# What --resume of a search may change: how files are read, devices, outputs, and the number of
# trials the study should reach.
RESUME_SECTIONS = ("Loading", "Devices", "Outputs")
RESUME_SETTINGS = ("search_trials",)
# Settings that decide what a trial's validation loss means: processes sharing a study agree on
# them (and on the space and search_epochs), or the trials would not be comparable.
COMPARED_SECTIONS = ("Features", "Balancing and splitting", "Model", "Training")
NOT_COMPARED = ("checkpoint_every", "monitor_every", "monitor_samples")


# ---------------------------------------------------------------------------------------------
# The command: a new search, or --resume of one
# ---------------------------------------------------------------------------------------------
def is_search_run(path: Path | None) -> bool:
    """Whether a folder is the run folder of a search."""
    if path is None:
        return False
    created = next((e for e in history(Path(path)) if e["event"] == "created"), {})
    return created.get("stage") == "search"


def wants_search(args: Any) -> bool:
    """--search, or --resume of a search's run folder."""
    return bool(args.search) or is_search_run(args.resume)


def open_search(cfg: dict[str, Any], args: Any) -> Job:
    """The job of a search command, checked; nothing is written yet."""
    if args.stage != "all" or args.record:
        raise SettingsError("--search runs its own stages (load, balance, trials): drop --stage "
                            "and --record.")  # fmt: skip
    if args.resume is None:
        parent = None if args.run is None else existing_run(args.run, "--run")
        check_joined_study(cfg)
        return Job(cfg, SEARCH_STAGES, new=True, parent=parent, requested="search")
    if args.run is not None:
        raise SettingsError("--resume continues the search in its folder: drop --run.")
    run = existing_run(args.resume, "--resume")
    if not is_search_run(run):
        raise SettingsError(f"--resume {args.resume}: a run, not a search; drop --search to "
                            "continue it.")  # fmt: skip
    _check_resume_overrides(run, cfg, args)
    if status(run) == "running":
        raise RunError(f"{run} is being run by another process right now (see its history.jsonl)")
    check_joined_study(cfg)
    return Job(cfg, SEARCH_STAGES, run_dir=run, later_stage="resume")


def _check_resume_overrides(run: Path, cfg: dict[str, Any], args: Any) -> None:
    defaults = default_config()
    run_cfg = {**defaults, **read_config_file(run / "config.py", defaults)}
    sections = {name: setting.section for name, setting in describe_config().items()}
    for name in sorted(args.overrides):
        if cfg[name] == run_cfg.get(name, cfg[name]) or name in RESUME_SETTINGS:
            continue
        if sections.get(name) in RESUME_SECTIONS:
            continue
        raise SettingsError(
            f"{args.origins.get(name, 'the command line')}: setting '{name}' contradicts the "
            f"search {run.name} ({name} = {run_cfg[name]!r} in its config.py); --resume continues "
            "the same study. Start another with python main.py --search ... instead."
        )


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------
def run_search(
    cfg: dict[str, Any],
    run_dir: Path,
    splits: Callable[[], tuple[pd.DataFrame, pd.DataFrame]],
    timer: Any = None,
) -> SearchSummary:
    """Run trials until the study has search_trials finished ones; write the outputs.

    splits() loads and balances the (training, validation) tracks: called once, and only if
    the study needs more trials. timer: a StageTimer for the trials' stage, or None.
    """
    import optuna
    from optuna.trial import TrialState

    dimensions = parse_space(
        cfg["search_space"],
        {n: s.section for n, s in describe_config().items()},
        default_config(),
    )
    folder = Path(run_dir) / SEARCH_FOLDER
    folder.mkdir(exist_ok=True)
    study = open_study(cfg, run_dir)
    fail_abandoned_trials(study)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    print(f"Study {study.study_name!r} in {storage_label(cfg, run_dir)}: {done} trials "
          f"finished, search_trials = {cfg['search_trials']}")  # fmt: skip
    if done < cfg["search_trials"]:
        train, validation = splits()
        with timer("search") if timer is not None else contextlib.nullcontext():
            objective = Objective(cfg, Path(run_dir), dimensions, train, validation)
            study.optimize(
                objective,
                callbacks=[
                    optuna.study.MaxTrialsCallback(cfg["search_trials"], states=finished),
                    lambda study, trial: write_trials_csv(study, dimensions, folder),
                ],
                gc_after_trial=True,
            )
    return write_outputs(study, cfg, Path(run_dir), dimensions, storage_label(cfg, run_dir))


def storage_url(cfg: dict[str, Any], run_dir: Path | None) -> str:
    """The study's database: search_storage, or search/study.db in the search folder (found
    from the folder each time, so that a moved folder still resumes)."""
    if cfg["search_storage"] or run_dir is None:
        return cfg["search_storage"]
    return f"sqlite:///{Path(run_dir).resolve() / SEARCH_FOLDER / STUDY_FILE}"


def storage_label(cfg: dict[str, Any], run_dir: Path | None) -> str:
    """The storage URL as it may be printed and written down: without a password."""
    from sqlalchemy.engine import make_url

    return make_url(storage_url(cfg, run_dir)).render_as_string(hide_password=True)


def open_study(cfg: dict[str, Any], run_dir: Path) -> Any:
    """Create the study, or join the one of that name in the storage (same settings only)."""
    import optuna

    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS
    )
    study = optuna.create_study(
        storage=_storage(storage_url(cfg, run_dir)),
        study_name=study_name(cfg),
        direction="minimize",
        pruner=pruner,
        load_if_exists=True,
    )
    _check_same_settings(study, cfg, storage_label(cfg, run_dir))
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(cfg, study))
    return study


def study_name(cfg: dict[str, Any]) -> str:
    return cfg["search_name"] or cfg["run_name"]


def check_joined_study(cfg: dict[str, Any]) -> None:
    """Before any folder is made: a study this command would join in a storage it is given
    was made with the same settings."""
    import optuna

    if not cfg["search_storage"]:
        return
    storage = _storage(cfg["search_storage"])
    if study_name(cfg) in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=study_name(cfg), storage=storage)
        _check_same_settings(study, cfg, storage_label(cfg, None))


def _storage(url: str) -> Any:
    import optuna
    from sqlalchemy.engine import make_url

    optuna.logging.disable_default_handler()  # its lines go to run.log, through the root logger
    optuna.logging.enable_propagation()
    # Heartbeats are "experimental" in Optuna 5: no warning about it on every run.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    engine = None
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # wait for another process's lock
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=requeue,
    )


def sampler_seed(cfg: dict[str, Any], study: Any) -> int:
    """`seed`, shifted by the trials the study has: a resumed search does not draw again the
    values of its first trials. Processes sharing a storage also mix in host and pid, so that
    two starting at once do not draw the same values; only a search in its own storage is
    reproducible."""
    seed = cfg["seed"] + len(study.trials)
    if cfg["search_storage"]:
        seed = seed * 1_000_003 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return seed % 2**32


def compared_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the processes sharing a study must agree on (see COMPARED_SECTIONS)."""
    sections = {name: setting.section for name, setting in describe_config().items()}
    values = {
        name: cfg[name]
        for name, section in sections.items()
        if section in COMPARED_SECTIONS
        and name not in NOT_COMPARED
        and name not in cfg["search_space"]
    }
    values.update(
        epochs=cfg["search_epochs"],
        train_samples=cfg["train_samples"],
        search_space=describe(cfg["search_space"]),
    )
    return json.loads(json.dumps(values, default=repr))  # tuples as lists, as stored


def _check_same_settings(study: Any, cfg: dict[str, Any], label: str) -> None:
    ours = compared_settings(cfg)
    theirs = study.user_attrs.get("settings")
    if theirs is None:
        study.set_user_attr("settings", ours)
        return
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name):
            raise SettingsError(
                f"the study {study.study_name!r} in {label} was started with {name} = "
                f"{_short(theirs.get(name))}, this command has {_short(ours.get(name))}: join it "
                "with the same settings, or give another --search_name"
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# Trials that stopped without finishing
# ---------------------------------------------------------------------------------------------
def fail_abandoned_trials(study: Any) -> None:
    """Mark failed, and queue again, the trials left running by a killed process of this host
    (those of other hosts are found by their heartbeat, when a trial starts)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and not _alive(attrs.get("pid")):
            failed = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            if failed.state == TrialState.FAIL:
                print(f"trial {trial.number} was left running by a killed process: queued again")
                requeue(study, failed)


def requeue(study: Any, trial: Any) -> None:
    """Queue a failed trial's values again; the new trial continues its run folder."""
    import optuna

    attempt = trial.user_attrs.get("attempt", 1)
    if attempt >= MAX_ATTEMPTS:
        return
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={
                "continues": trial.user_attrs.get("run_dir"),
                "retry_of": trial.number,
                "attempt": attempt + 1,
            },
        )
    )


# ---------------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------------
class Objective:
    """Train one trial in its run folder; its value is the best validation loss."""

    def __init__(
        self,
        cfg: dict[str, Any],
        run_dir: Path,
        dimensions: dict[str, Dimension],
        train: pd.DataFrame,
        validation: pd.DataFrame,
    ) -> None:
        from gpusetter import strategy_for

        self.cfg, self.run_dir, self.dimensions = cfg, run_dir, dimensions
        self.train_split, self.validation = train, validation
        # Once per process: TensorFlow configures its devices only once.
        self.strategy = strategy_for(cfg)

    def trial_config(self, number: int, values: dict[str, Any]) -> dict[str, Any]:
        """The settings of a trial: the search's, its drawn values, search_epochs epochs."""
        return {
            **self.cfg,
            **values,
            "epochs": self.cfg["search_epochs"],
            "monitor_every": 0,  # no monitor plots for a trial
            "results_dir": str(self.run_dir / TRIALS_FOLDER),
            "run_name": f"trial{number:04d}",
        }

    def __call__(self, trial: Any) -> float:
        import optuna

        from pipeline.console import log_to

        trial.set_user_attr("host", socket.gethostname())  # who runs it: see fail_abandoned_trials
        trial.set_user_attr("pid", os.getpid())
        values = suggest(trial, self.dimensions)
        trial_cfg = self.trial_config(trial.number, values)
        folder = self.folder_for(trial, trial_cfg)
        trial.set_user_attr("run_dir", str(folder))
        print(f"\ntrial {trial.number}: {format_params(values)}\n  in {folder}", flush=True)
        start = time.perf_counter()
        log_to(folder / LOG)
        try:
            value = self.train(trial, trial_cfg, folder)
        except optuna.TrialPruned:
            epochs = len(_frozen(trial).intermediate_values)
            record(folder, "finished", stages=["train"], pruned_after_epochs=epochs)
            print(f"trial {trial.number}: pruned after {epochs} epoch(s) (validation loss above "
                  f"the median of the earlier trials'), {_seconds(start)}")  # fmt: skip
            raise
        except (Interrupted, KeyboardInterrupt) as error:
            record(folder, "interrupted", stage="train", reason=str(error) or "SIGINT")
            requeue(trial.study, _frozen(trial))
            raise
        except Exception as error:
            mark_failed(folder, "train", str(error), traceback.format_exc())
            raise
        finally:
            log_to(self.run_dir / LOG)
            _release_memory()
        print(f"trial {trial.number}: best validation loss {value:.5f}, {_seconds(start)}")
        return value

    def folder_for(self, trial: Any, trial_cfg: dict[str, Any]) -> Path:
        """The trial's run folder: a new one, or that of the trial it continues."""
        previous = trial.user_attrs.get("continues")
        if previous is None and "retry_of" in trial.user_attrs:  # killed before it noted it
            number = trial.user_attrs["retry_of"]
            previous = next(iter((self.run_dir / TRIALS_FOLDER).glob(f"*_trial{number:04d}")), None)
        if previous and (Path(previous) / "config.py").is_file():
            record(Path(previous), "started", stages=["train"], trial=trial.number)
            return Path(previous)
        return new_run(trial_cfg, "train", parent=self.run_dir)

    def train(self, trial: Any, trial_cfg: dict[str, Any], folder: Path) -> float:
        import numpy as np
        from optuna_integration import KerasPruningCallback

        from network.checkpointing import read_state
        from network.training import train_model
        from tracks.weights import split_weights

        for entry in (read_state(folder) or {}).get("history", []):  # a continued training
            trial.report(entry["val_loss"], entry["epoch"])
        result = train_model(
            self.train_split,
            self.validation,
            trial_cfg,
            self.strategy,
            folder,
            callbacks=[KerasPruningCallback(trial, "val_loss")],
            weights=split_weights(self.train_split, self.validation),  # as the final training
        )
        record(folder, "stage done", stage="train", epochs=result.epochs)
        record(folder, "finished", stages=["train"])
        losses = [entry.get("val_loss", np.nan) for entry in result.history]
        return float(np.nanmin(losses)) if np.isfinite(losses).any() else float("nan")


def _frozen(trial: Any) -> Any:
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def _seconds(start: float) -> str:
    return f"{time.perf_counter() - start:.0f} s"


def _release_memory() -> None:
    """Drop the trial's model and graphs before the next trial builds its own."""
    import keras

    keras.backend.clear_session()
