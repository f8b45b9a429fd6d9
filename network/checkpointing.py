"""What lets a training stop at any moment and continue as if it never had.

- TrainingState saves, at the end of every epoch and, after SIGINT/SIGTERM, at the next batch
  boundary: the model and optimizer (Keras' own weights file: learning-rate schedule position
  included, since it follows the optimizer's step count), the dropout RNG states and the metric
  accumulators (save_weights leaves them out), the state of the callbacks that decide (early
  stopping, the learning-rate plateau, the best model) and the logs of every completed epoch.
  Keras' BackupAndRestore keeps only weights and the epoch, writes in place, and restarts an
  interrupted epoch from its beginning; this saves under new names and commits with one atomic
  rename of state.json, and resumes inside the epoch.
- BestModel and PeriodicModel are Keras' ModelCheckpoint; the Trainer they save writes
  atomically.
- The logs (CSV, TensorBoard) are written after the state of their epoch is committed, and are
  brought back in line with the state when a training resumes: no epoch twice, none missing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.files import atomic_path, write_atomically
from pipeline.runs import Interrupted

STATE_FOLDER = "training_state"
STATE_FILE = "state.json"
# Attributes of Keras' callbacks that carry their decisions from epoch to epoch.
CALLBACK_ATTRIBUTES = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


class TrainingInterrupted(Interrupted):
    """The training was stopped by a signal after its state was saved."""

    def __init__(self, epoch: int, batch: int, signal_name: str) -> None:
        where = f"in epoch {epoch + 1}, after batch {batch}" if batch else f"after epoch {epoch}"
        super().__init__(f"training stopped by {signal_name} {where}", signal_name)
        self.epoch, self.batch = epoch, batch


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (a batch system's pre-emption) ask the training to stop at
    the next batch boundary; a second one stops at once."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(number: int, frame: Any) -> None:
            if self.signal_name is not None:  # the second one: stop now
                signal.signal(number, signal.SIG_DFL)
                raise KeyboardInterrupt
            self.signal_name = signal.Signals(number).name
            print(
                f"\n{self.signal_name}: saving the training state at the next batch boundary "
                "(send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The committed training state of a run, or None if it has none."""
    path = Path(run_dir) / STATE_FOLDER / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class TrainingState(keras.callbacks.Callback):
    """Saves and restores the whole training state; see the module docstring.

    `deciders` are the callbacks whose state is kept (EarlyStopping, ReduceLROnPlateau,
    ModelCheckpoint); place this callback after them and before the loggers.
    """

    def __init__(
        self, run_dir: Path, stop: StopRequest, deciders: list[keras.callbacks.Callback]
    ) -> None:
        super().__init__()
        self.folder = Path(run_dir) / STATE_FOLDER
        self.stop = stop
        self.deciders = deciders
        self.state = read_state(run_dir) or {"epoch": 0, "batch": 0, "history": [], "number": 0}
        self.first_batch = 0  # batches done before this fit began, in its first epoch
        self._pending_metrics: list[np.ndarray] | None = None
        self._decider_states: list[dict[str, Any]] = self.state.get("callbacks", [])

    # --- resuming -----------------------------------------------------------------------------
    @property
    def resumed(self) -> bool:
        return self.state["epoch"] > 0 or self.state["batch"] > 0

    def restore(self, trainer: keras.Model) -> None:
        """Load the saved model, optimizer, RNG and metric state into the trainer."""
        if not self.resumed:
            return
        trainer.optimizer.build(trainer.trainable_variables)
        trainer.load_weights(self.folder / self.state["files"]["weights"])
        with np.load(self.folder / self.state["files"]["extra"]) as extra:
            _assign(_rng_variables(trainer), extra, "rng")
            if self.state["batch"]:
                self._pending_metrics = _arrays(extra, "metric")

    def on_train_begin(self, logs: dict | None = None) -> None:
        for callback, saved in zip(self.deciders, self._decider_states, strict=False):
            for name, value in saved.items():
                setattr(callback, name, _from_plain(value))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        if self._pending_metrics is not None:  # resuming inside this epoch
            for variable, value in zip(
                self.model.metrics_variables, self._pending_metrics, strict=True
            ):
                variable.assign(value)
            self._pending_metrics = None

    # --- saving -------------------------------------------------------------------------------
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stop.requested:
            done = self.first_batch + batch + 1
            self.save(self.epoch, done, mid_epoch=True)
            raise TrainingInterrupted(self.epoch, done, self.stop.signal_name or "a signal")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        entry = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        self.state["history"] = [h for h in self.state["history"] if h["epoch"] < epoch] + [entry]
        self.first_batch = 0
        self.save(epoch + 1, 0, stopped_early=bool(self.model.stop_training))
        if self.stop.requested:
            raise TrainingInterrupted(epoch + 1, 0, self.stop.signal_name or "a signal")

    def save(self, epoch: int, batch: int, mid_epoch: bool = False, **extra: Any) -> None:
        """Write the new files under new names, then commit them by renaming state.json."""
        self.folder.mkdir(parents=True, exist_ok=True)
        number = self.state.get("number", 0) + 1
        files = {"weights": f"state-{number:06d}.weights.h5", "extra": f"state-{number:06d}.npz"}
        with atomic_path(self.folder / files["weights"], ".weights.h5") as tmp:
            self.model.save_weights(tmp)
        arrays = {f"rng_{i}": v.numpy() for i, v in enumerate(_rng_variables(self.model))}
        if mid_epoch:
            arrays.update(
                {f"metric_{i}": v.numpy() for i, v in enumerate(self.model.metrics_variables)}
            )
        with atomic_path(self.folder / files["extra"]) as tmp, open(tmp, "wb") as file:
            np.savez(file, **arrays)
        old = self.state.get("files")
        self.state.update(epoch=epoch, batch=batch, files=files, number=number, **extra)
        self.state["callbacks"] = self._decider_states = [
            {name: _plain(getattr(c, name)) for name in _attributes(c)} for c in self.deciders
        ]
        write_atomically(self.folder / STATE_FILE, json.dumps(self.state, indent=1))
        for name in (old or {}).values():  # superseded now that the new state is committed
            (self.folder / name).unlink(missing_ok=True)

    def mark_finished(self) -> None:
        self.state["finished"] = True
        write_atomically(self.folder / STATE_FILE, json.dumps(self.state, indent=1))


def _rng_variables(model: keras.Model) -> list[keras.Variable]:
    """The state variables of the model's random generators (dropout), in a fixed order."""
    return [v for v in model.non_trainable_variables if "seed_generator" in v.path]


def _assign(variables: list, arrays: Any, prefix: str) -> None:
    saved = _count(arrays, prefix)
    if saved != len(variables):
        raise ValueError(
            f"the saved training state has {saved} {prefix} variables, the model {len(variables)}: "
            "it was saved by another model"
        )
    for i, variable in enumerate(variables):
        variable.assign(arrays[f"{prefix}_{i}"])


def _arrays(arrays: Any, prefix: str) -> list[np.ndarray]:
    return [arrays[f"{prefix}_{i}"] for i in range(_count(arrays, prefix))]


def _count(arrays: Any, prefix: str) -> int:
    return sum(1 for name in arrays.files if name.startswith(f"{prefix}_"))


def _attributes(callback: keras.callbacks.Callback) -> tuple[str, ...]:
    for kind, names in CALLBACK_ATTRIBUTES.items():
        if isinstance(callback, kind):
            return names
    return ()


NON_FINITE = ("inf", "-inf", "nan")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray) or tf.is_tensor(value):
        value = np.asarray(value).item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf: "inf", "-inf" or "nan", read back by _from_plain
    return value


def _from_plain(value: Any) -> Any:
    return float(value) if isinstance(value, str) and value in NON_FINITE else value


class BestModel(keras.callbacks.ModelCheckpoint):
    """model.keras: the model of the epoch with the lowest validation loss so far; its weights
    also stay in memory (best_weights), so nobody has to read the file back."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), monitor="val_loss", save_best_only=True)
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not np.isfinite((logs or {}).get(self.monitor, np.nan)):
            return  # a NaN loss (Keras takes the first value as an improvement) is never best
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before:
            self.best_weights = self.model.get_weights()


class PeriodicModel(keras.callbacks.ModelCheckpoint):
    """checkpoints/epoch_NNN.keras every `every` epochs."""

    def __init__(self, folder: Path, every: int) -> None:
        super().__init__(str(Path(folder) / "epoch_{epoch:03d}.keras"), save_best_only=False)
        self.every = every

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            super().on_epoch_end(epoch, logs)


# ---------------------------------------------------------------------------------------------
# Logs in line with the state
# ---------------------------------------------------------------------------------------------
def sync_logs(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Make training_log.csv and tensorboard/ hold exactly the epochs of the saved history."""
    run_dir = Path(run_dir)
    path = run_dir / "training_log.csv"
    if history:
        columns = ["epoch", *sorted(k for k in history[0] if k != "epoch")]  # as CSVLogger
        rows = [[h.get(c, "") for c in columns] for h in history]
        text = _csv_text(columns, rows)
        if not path.is_file() or path.read_text() != text:
            write_atomically(path, text)
    else:
        path.unlink(missing_ok=True)
    logged = _tensorboard_epochs(run_dir / "tensorboard" / "validation")
    missing = [h for h in history if h["epoch"] not in logged]
    for split, prefix in (("train", ""), ("validation", "val_")):
        writer = tf.summary.create_file_writer(str(run_dir / "tensorboard" / split))
        with writer.as_default():
            for entry in missing:
                for name, value in entry.items():
                    if name == "epoch" or name.startswith("val_") != bool(prefix):
                        continue
                    tf.summary.scalar(f"epoch_{name[len(prefix) :]}", value, step=entry["epoch"])
        writer.close()


def _csv_text(columns: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # the excel dialect, as CSVLogger writes
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _tensorboard_epochs(folder: Path) -> set[int]:
    """The epochs whose validation loss is in the TensorBoard event files of a folder."""
    if not folder.is_dir():
        return set()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: set[int] = set()
    for events in folder.glob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        if "epoch_loss" in accumulator.Tags().get("tensors", []):
            steps.update(e.step for e in accumulator.Tensors("epoch_loss"))
    return steps
