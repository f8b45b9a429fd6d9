"""A Keras callback that shows, every N epochs, how the model under training does on test
samples: ROC curves and score distributions next to trk_mva, in run_dir/monitor/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from cmssw.ntuple import ALGORITHMS, LABEL
from evaluation.metrics import auc, below_every_cut, not_classifiable, to_mva
from evaluation.names import NEW, REFERENCE
from evaluation.plots import roc_grid, score_grid
from network.data import predict
from network.inputs import model_inputs
from pipeline.files import write_atomically


class MonitorCallback(keras.callbacks.Callback):
    """Every `every` epochs: the model's scores (network.data.predict) on (up to) `max_samples`
    test samples, subsampled to `max_tracks` tracks each so it returns in seconds; writes
    monitor/epoch_XXX_roc.png, monitor/epoch_XXX_scores.png and appends the AUCs to
    monitor/monitor_log.csv."""

    def __init__(
        self,
        samples: dict[str, pd.DataFrame],
        cfg: dict[str, Any],
        run_dir: Path,
        every: int = 10,
        max_tracks: int = 50_000,
        max_samples: int = 2,
    ) -> None:
        super().__init__()
        self.every = int(every)
        self.folder = Path(run_dir) / "monitor"
        self.history: list[dict[str, Any]] = []
        algos = [ALGORITHMS[name] for name in cfg["iterations"]]
        self.samples: dict[str, dict[str, Any]] = {}
        for name, df in list(samples.items())[:max_samples]:
            df = df[df[cfg["algo_branch"]].isin(algos)]
            if len(df) > max_tracks:  # the same tracks every time: epochs compare like for like
                df = df.sample(max_tracks, random_state=cfg.get("seed", 0))
            self.samples[name] = {
                "inputs": model_inputs(df, cfg),  # as CMSSW feeds them (lwtnn: no y)
                "labels": df[LABEL].to_numpy().astype(bool),
                "reference": df[REFERENCE].to_numpy(np.float64) if REFERENCE in df else None,
            }

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.every > 0 and (epoch + 1) % self.every == 0 and self.samples:
            self.monitor(epoch + 1)

    def monitor(self, epoch: int) -> dict[str, float | None]:
        """Score the samples with the current weights and write the plots; returns the AUCs."""
        start = time.perf_counter()
        panels = []
        aucs: dict[str, float | None] = {}
        for name, data in self.samples.items():
            labels = data["labels"]
            scores = {NEW: np.zeros(0)}
            if len(labels):
                predicted = predict(self.model, data["inputs"])
                # lwtnn models give NaN for a NaN input, as CMSSW would: such tracks pass no cut
                scores = {NEW: below_every_cut(to_mva(predicted))}
            if data["reference"] is not None:
                scores[REFERENCE] = data["reference"]
            reason = not_classifiable(int(labels.sum()), int((~labels).sum()))
            entry: dict[str, Any] = {"classifiers": {}}
            if not reason:
                for classifier, values in scores.items():
                    entry["classifiers"][classifier] = {"auc": auc(labels, values)}
            aucs[name] = None if reason else entry["classifiers"][NEW]["auc"]
            self.history.append(
                {
                    "epoch": epoch,
                    "sample": name,
                    "tracks": len(labels),
                    **{f"auc_{k}": v["auc"] for k, v in entry["classifiers"].items()},
                }
            )
            panels.append(
                {
                    "title": name,
                    "labels": labels,
                    "scores": scores,
                    "entry": entry,
                    "reason": reason,
                }
            )
        prefix = self.folder / f"epoch_{epoch:03d}"
        roc_grid(panels, Path(f"{prefix}_roc.png"), f"epoch {epoch}", ncols=2)
        score_grid(panels, Path(f"{prefix}_scores.png"), f"epoch {epoch}", ncols=2)
        write_atomically(
            self.folder / "monitor_log.csv", pd.DataFrame(self.history).to_csv(index=False)
        )
        text = ", ".join(f"{n} AUC {'n/a' if a is None else f'{a:.4f}'}" for n, a in aucs.items())
        print(f"monitor, epoch {epoch}: {text} ({time.perf_counter() - start:.1f} s)", flush=True)
        return aucs


def monitor_callback(
    tracks: pd.DataFrame, cfg: dict[str, Any], run_dir: Path
) -> MonitorCallback | None:
    """The callback for cfg's monitor_samples (taken from tracks' "sample" column) every
    monitor_every epochs; None when monitoring is off or none of those samples is loaded."""
    every = int(cfg.get("monitor_every", 0))
    wanted = cfg.get("monitor_samples") or cfg.get("test_samples", [])[:2]
    names = [n for n in wanted if (tracks["sample"] == n).any()]
    if every <= 0 or not names:
        return None
    return MonitorCallback({n: tracks[tracks["sample"] == n] for n in names}, cfg, run_dir, every)
