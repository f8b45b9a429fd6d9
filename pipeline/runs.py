"""Run folders: written once, then only added to.

    results/<time>_<run_name>/
        config.py        the settings the run was made with; never rewritten
        history.jsonl    what happened to it, one JSON line per event, appended
        run.log          everything the terminal did not need (library messages, tracebacks)
        stages/<stage>_<time>/config.py   settings of a later freeze/evaluate/resume on it
        ... the outputs of its stages

`results/latest` points at the newest run that finished everything it was asked to do,
training included; a run that fails or is interrupted never becomes latest. A run is failed
when its history says so (and a failed_<stage>_<time>.txt file holds the error); interrupted
when it was stopped by a signal or its process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.files import write_new_file
from pipeline.settings import SettingsError, describe_config, write_config

HISTORY = "history.jsonl"
HOLDOUT = "holdout_tracks.npz"  # the held-out tracks every export of the run is checked on
LOG = "run.log"
LATEST = "latest"
STAGES_FOLDER = "stages"

# What a later stage on an existing run may change, by config.py section: how files are read,
# which devices run it, and the settings of that stage itself (the search's settings never
# matter to one run). Anything else would contradict what the run trained.
CHANGEABLE = {
    "freeze": {"Loading", "Devices", "Freezing", "Outputs", "Search"},
    "evaluate": {"Loading", "Devices", "Evaluation", "Outputs", "Search"},
    "resume": {"Loading", "Devices", "Outputs", "Search"},
}


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def new_run(cfg: dict[str, Any], stage: str, parent: Path | None = None) -> Path:
    """Make results/<time>_<run_name>/ with its config.py and the first history line."""
    results = Path(cfg["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    base = f"{timestamp()}_{cfg['run_name']}"
    for suffix in range(1000):
        run_dir = results / (base if suffix == 0 else f"{base}_{suffix}")
        try:
            run_dir.mkdir()
            break
        except FileExistsError:  # two runs started within the same second
            continue
    else:
        raise RuntimeError(f"cannot make a run folder under {results}")
    header = "Settings of this run: python main.py --config <this file> repeats it."
    if parent is not None:
        header += f"\n\nRetrained from {parent}."
    write_config(cfg, run_dir / "config.py", header)
    record(run_dir, "created", stage=stage, parent=None if parent is None else str(parent))
    return run_dir.resolve()


def record(run_dir: Path, event: str, **fields: Any) -> None:
    """Append one event to the run's history."""
    entry = {"event": event, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **fields}
    if event in ("created", "started"):
        entry.update(pid=os.getpid(), host=socket.gethostname(), command=sys.argv)
    with open(Path(run_dir) / HISTORY, "a") as history:
        history.write(json.dumps(entry, default=str) + "\n")
        history.flush()
        os.fsync(history.fileno())


def history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut by a crash while it was written
            continue
    return events


def stages_done(run_dir: Path) -> set[str]:
    """The stages this run has completed (a run made before histories existed: from its files)."""
    events = history(run_dir)
    if not events:
        run_dir = Path(run_dir)
        found = {"train"} if (run_dir / "model.keras").is_file() else set()
        if (run_dir / "frozen_graph.pb").is_file():
            found.add("freeze")
        return found
    return {e["stage"] for e in events if e["event"] == "stage done"}


def run_summary(run_dir: Path) -> dict[str, Any]:
    """What the report says about how the run came about (from its history): its parent,
    whether its training was resumed or stopped early, and the hyperparameter search its
    settings came from (links to its outputs)."""
    events = history(run_dir)
    created = next((e for e in events if e["event"] == "created"), {})
    trained = [e for e in events if e["event"] == "stage done" and e["stage"] == "train"]
    summary: dict[str, Any] = {}
    if created.get("parent"):
        summary["parent_run"] = created["parent"]
    if trained:
        last = trained[-1]
        if last.get("resumed_from"):
            epoch, batch = last["resumed_from"]
            summary["resumed_from_epoch"] = (
                epoch + 1 if not batch else f"{epoch + 1}, batch {batch}"
            )
        if last.get("stopped_early"):
            summary["stopped_early_at_epoch"] = last.get("epochs")
    from pipeline.search_outputs import search_of_run, search_summary

    search = search_of_run(run_dir)
    found = search_summary(search) if search is not None else None
    if found is not None:  # the run trains a search's best settings: link the search
        files = [found.trials_csv, found.best_config, *found.plots]
        summary["hyperparameter_search"] = [
            {"title": path.name, "href": str(path)} for path in files if path is not None
        ]
    return summary


def status(run_dir: Path) -> str:
    """finished, failed, interrupted or running, from the last events of the history."""
    for event in reversed(history(run_dir)):
        kind = event["event"]
        if kind in ("finished", "failed", "interrupted"):
            return kind
        if kind == "started" or kind == "created":
            alive = event.get("host") == socket.gethostname() and _alive(event.get("pid"))
            return "running" if alive else "interrupted"
    return "finished" if "train" in stages_done(run_dir) else "interrupted"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_failed(run_dir: Path, stage: str, message: str, details: str) -> Path:
    """Record a failure: a history event and failed_<stage>_<time>.txt with the error."""
    record(run_dir, "failed", stage=stage, error=message)
    path = Path(run_dir) / f"failed_{stage}_{timestamp()}.txt"
    if path.exists():
        path = path.with_name(f"{path.stem}_{os.getpid()}.txt")
    write_new_file(path, f"{message}\n\n{details}")
    return path


def mark_latest(run_dir: Path) -> None:
    """Point results/latest at run_dir, atomically (a new symlink renamed over the old one)."""
    run_dir = Path(run_dir).resolve()
    results = run_dir.parent
    tmp = results / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, results / LATEST)


def existing_run(path: Path, option: str) -> Path:
    """A run folder given on the command line, resolved (results/latest to its target)."""
    path = Path(path)
    if not (path / "config.py").is_file():
        what = "no such folder" if not path.is_dir() else "not a run folder (it has no config.py)"
        raise SettingsError(
            f"{option} {path}: {what}. Give a folder under results/, e.g. {option} results/latest."
        )
    return path.resolve()


def stage_folder(run_dir: Path, stage: str, cfg: dict[str, Any]) -> Path:
    """R/stages/<stage>_<time>/ with the settings this later stage runs with."""
    base = Path(run_dir) / STAGES_FOLDER / f"{stage}_{timestamp()}"
    folder = base
    suffix = 1
    while True:
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            folder = base.with_name(f"{base.name}_{suffix}")
            suffix += 1
    write_config(cfg, folder / "config.py", f"Settings of `{stage}` on this run, {timestamp()}.")
    return folder


def check_overrides(
    stage: str,
    run_dir: Path,
    cfg: dict[str, Any],
    run_cfg: dict[str, Any],
    overrides: set[str],
    origins: dict[str, str],
) -> None:
    """Refuse, in one line, a setting that contradicts what the run trained."""
    sections = {name: setting.section for name, setting in describe_config().items()}
    allowed = CHANGEABLE[stage]
    for name in sorted(overrides):
        if name not in run_cfg or cfg[name] == run_cfg[name] or sections.get(name) in allowed:
            continue
        if stage == "evaluate" and name in ("samples", "synthetic_samples", "test_samples"):
            problem = _changed_training_samples(name, cfg, run_cfg)
            if problem is None:
                continue
        shown = repr(run_cfg[name])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        verb = {"resume": "--resume continues"}.get(stage, f"--stage {stage} uses")
        raise SettingsError(
            f"{origins.get(name, 'the command line')}: setting '{name}' contradicts the run "
            f"{run_dir.name} ({name} = {shown} in its config.py); {verb} the trained model as it "
            f"is. To change it, retrain: python main.py --run {run_dir} --{name} ... (a new run "
            "folder)."
        )


def _changed_training_samples(name: str, cfg: dict, run_cfg: dict) -> str | None:
    """An evaluation may add test samples, but the training samples stay what they were."""
    if name == "test_samples":
        return None
    for sample in run_cfg["train_samples"]:
        if cfg[name].get(sample) != run_cfg[name].get(sample):
            return f"the training sample {sample!r} changed"
    return None


# ---------------------------------------------------------------------------------------------
# A job: what one `python main.py` does, in which folder
# ---------------------------------------------------------------------------------------------
PLANS = {
    "all": ("load", "balance", "train", "freeze", "evaluate"),
    "train": ("load", "balance", "train"),
    "load": ("load",),
    "balance": ("load", "balance"),
    "freeze": ("freeze",),
    "evaluate": ("load", "balance", "evaluate"),
}


class Interrupted(Exception):
    """The command was stopped by a signal (what it had saved is kept for --resume)."""

    def __init__(self, message: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(message)
        self.signal_name = signal_name


class RunError(Exception):
    """A run folder that cannot do what was asked (not trained yet, finished already, ...)."""


class Job:
    """The stages one command runs and the run folder it works in (None: no folder).

    Used as a context manager around the stages: it makes or opens the folder, sends the
    log there, and records how the command ended (finished, failed, interrupted); a run whose
    command trained and finished becomes results/latest.
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        stages: tuple[str, ...],
        run_dir: Path | None = None,
        new: bool = False,
        parent: Path | None = None,
        later_stage: str | None = None,
        requested: str = "all",
        scratch: bool = False,
    ) -> None:
        self.cfg = cfg
        self.requested = requested  # the --stage asked for
        # A worker that is not the chief of a multi-worker training: its files go to a
        # temporary folder, deleted at the end; the chief keeps the run folder.
        self.scratch = scratch
        self.stages = stages
        self.run_dir = run_dir
        self.new = new
        self.parent = parent
        self.later_stage = later_stage  # freeze / evaluate / resume on an existing run
        self.stage_dir: Path | None = None
        self.current = stages[0] if stages else ""
        self.failure: Path | None = None

    @property
    def has_folder(self) -> bool:
        return self.new or self.run_dir is not None

    def __enter__(self) -> Job:
        from pipeline.console import log_to

        if self.scratch:
            self.run_dir = Path(tempfile.mkdtemp(prefix="track-dnn-worker-"))
        elif self.new:
            self.run_dir = new_run(self.cfg, self.requested, self.parent)
        elif self.run_dir is not None:
            record(self.run_dir, "started", stages=list(self.stages), command_kind=self.later_stage)
            self.stage_dir = stage_folder(self.run_dir, self.later_stage or "stage", self.cfg)
        if self.run_dir is not None:
            log_to(self.run_dir / LOG)
        return self

    def stage(self, name: str) -> None:
        self.current = name

    def done(self, name: str, **fields: Any) -> None:
        if self.run_dir is not None and not self.scratch:
            record(self.run_dir, "stage done", stage=name, **fields)

    def output_dir(self, marker: str) -> Path:
        """Where this command writes a stage's outputs: the run folder, unless it already holds
        them (then this command's folder under stages/)."""
        if self.run_dir is None:
            raise RunError("this command has no run folder")
        if (self.run_dir / marker).exists() and self.stage_dir is not None:
            return self.stage_dir
        return self.run_dir

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        if self.run_dir is None:
            return
        if self.scratch:
            from pipeline.console import log_to

            log_to(None)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        import traceback

        from pipeline.console import log_to

        if error is None:
            record(self.run_dir, "finished", stages=list(self.stages))
            if "train" in self.stages:
                mark_latest(self.run_dir)
        else:
            details = "".join(traceback.format_exception(kind, error, trace))
            with open(self.run_dir / LOG, "a") as log:
                log.write(details)
            if isinstance(error, KeyboardInterrupt | Interrupted):
                reason = str(error) or kind.__name__
                record(self.run_dir, "interrupted", stage=self.current, reason=reason)
                error.run_dir = self.run_dir  # type: ignore[union-attr]  (for the resume hint)
            else:
                self.failure = mark_failed(self.run_dir, self.current, str(error), details)
        log_to(None)


def open_job(cfg: dict[str, Any], args: Any, chief: bool = True) -> Job:
    """Check what the command asks of run folders, and plan its stages; nothing is written.
    chief=False: a worker of a multi-worker training that is not the chief."""
    if not chief:
        if args.resume is not None or args.run is not None or args.stage not in ("all", "train"):
            raise SettingsError("the workers of a multi-worker training train a new run: give "
                                "--stage all or train, without --run or --resume")  # fmt: skip
        return Job(cfg, PLANS["train"], scratch=True, requested="train")
    if args.resume is not None:
        if args.run is not None or args.stage != "all":
            raise SettingsError("--resume continues a run's own stages: give it alone, without "
                                "--run or --stage.")  # fmt: skip
        return _resume_job(cfg, args)
    if args.record and args.stage not in ("load", "balance"):
        raise SettingsError("--record keeps a folder of --stage load or balance; other stages "
                            "always have one.")  # fmt: skip
    if args.stage in ("load", "balance"):
        if args.run is not None:
            raise SettingsError(f"--stage {args.stage} works without a run folder: drop --run.")
        return Job(cfg, PLANS[args.stage], new=args.record, requested=args.stage)
    if args.stage in ("freeze", "evaluate"):
        run = existing_run(args.run or Path(cfg["results_dir"]) / LATEST, "--run")
        if "train" not in stages_done(run):
            raise RunError(f"{run} has not finished its training ({status(run)}): resume it "
                           f"with python main.py --resume {run}")  # fmt: skip
        _check_against_run(args.stage, run, cfg, args)
        return Job(cfg, PLANS[args.stage], run_dir=run, later_stage=args.stage)
    parent = None if args.run is None else existing_run(args.run, "--run")
    return Job(cfg, PLANS[args.stage], new=True, parent=parent, requested=args.stage)


def _resume_job(cfg: dict[str, Any], args: Any) -> Job:
    run = existing_run(args.resume, "--resume")
    _check_against_run("resume", run, cfg, args)
    state = status(run)
    if state == "running":
        raise RunError(f"{run} is being run by another process right now (see its history.jsonl)")
    created = next((e for e in history(run) if e["event"] == "created"), {})
    planned = PLANS.get(created.get("stage", "all"), PLANS["all"])
    done = stages_done(run)
    remaining = [s for s in ("train", "freeze", "evaluate") if s in planned and s not in done]
    if not remaining:
        raise RunError(f"{run} has nothing left to do: it finished {', '.join(sorted(done))}")
    data = ("load", "balance") if {"train", "evaluate"} & set(remaining) else ()
    return Job(cfg, (*data, *remaining), run_dir=run, later_stage="resume")


def _check_against_run(stage: str, run: Path, cfg: dict[str, Any], args: Any) -> None:
    from pipeline.settings import default_config, read_config_file

    run_cfg = {**default_config(), **read_config_file(run / "config.py", default_config())}
    check_overrides(stage, run, cfg, run_cfg, args.overrides, args.origins)
