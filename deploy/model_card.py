"""model_card.json: what an exported model is, how it was made, and how good it is.

Written beside the exported model(s) of a run, so that a file found in a CMSSW area months
later can be traced back: the deploy target and who loads the file, the inputs in order with
their transforms and fitted constants, the training samples and track counts, the sha256 of
the run's config.py and of every exported file, the package versions, the project's git commit
(and whether the work tree had uncommitted changes), the date, and the AUC per test sample
(or why there is none yet).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cmssw.classifiers import DEPLOY_TARGETS, target_inputs
from network.custom.input_sanitizer import InputSanitizerLayer
from network.custom.linear_scaling import LinearScalingLayer
from pipeline.files import write_new_file

MODEL_CARD_FILE = "model_card.json"
REPO = Path(__file__).resolve().parents[1]
PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "uproot",
    "awkward",
    "scikit-learn",
    "onnx",
    "onnxruntime",
    "tf2onnx",
)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, None when it is not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """{"commit": HEAD or None, "dirty": uncommitted changes or None}; None outside git."""

    def git(*args: str) -> str | None:
        try:
            run = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def describe_inputs(
    model: keras.Model, features: Sequence[str], algo_branch: str | None
) -> list[dict[str, Any]]:
    """The model's inputs in order with what happens to each inside it: the sanitizer's
    transform and fitted bounds, or lwtnn's offset and scale; the one-hot of the algorithm."""
    layers = {type(layer): layer for layer in model.layers}
    inputs: list[dict[str, Any]] = []
    if InputSanitizerLayer in layers:
        sanitizer = layers[InputSanitizerLayer]
        lower = keras.ops.convert_to_numpy(sanitizer.lower)
        upper = keras.ops.convert_to_numpy(sanitizer.upper)
        for name, transform, low, high in zip(
            features, sanitizer.transforms, lower, upper, strict=True
        ):
            inputs.append(
                {
                    "name": name,
                    "input": "x",
                    "transform": transform,
                    "clip": [float(low), float(high)],
                    "then": "scaled to [-1, 1]; NaN -> 0",
                }
            )
        if algo_branch is not None and "y" in {t.name for t in model.inputs}:
            inputs.append({"name": algo_branch, "input": "y", "transform": "one-hot in the graph"})
    elif LinearScalingLayer in layers:
        scaling = layers[LinearScalingLayer]
        offset = keras.ops.convert_to_numpy(scaling.offset)
        scale = keras.ops.convert_to_numpy(scaling.scale)
        for name, o, s, low, high in zip(
            features, offset, scale, scaling.lower, scaling.upper, strict=True
        ):
            inputs.append(
                {
                    "name": name,
                    "transform": "(x + offset) * scale",
                    "offset": float(o),
                    "scale": float(s),
                    # in training only; JSON has no infinity: None for "no clip"
                    "training_clip": [float(low), float(high)]
                    if np.isfinite(low) and np.isfinite(high)
                    else None,
                }
            )
    else:
        inputs = [{"name": name, "transform": "none"} for name in features]
    return inputs


def _auc_entry(test_auc: Mapping[str, float | None] | None, reason: str | None) -> dict:
    if test_auc is None:
        return {"by_sample": None, "reason": reason or "the evaluation has not run"}
    by_sample = {
        sample: None if value is None or not np.isfinite(value) else float(value)
        for sample, value in test_auc.items()
    }
    return {"by_sample": by_sample, "reason": reason}


def build_model_card(
    deploy_target: str,
    model_files: Sequence[str | Path],
    inputs: Sequence[Mapping[str, Any]],
    training_tracks: Mapping[str, int] | None,
    config_text: str | None,
    test_auc: Mapping[str, float | None] | None = None,
    auc_reason: str | None = None,
    repo: Path = REPO,
) -> dict[str, Any]:
    """The model card as a dict (plain data in, plain data out; write it with write_model_card).

    model_files: the exported files it describes (frozen_graph.pb, model.onnx or
    lwtnn_network.json); inputs: describe_inputs(...); training_tracks: sample -> tracks the
    model was trained on; config_text: the run's config.py (None: unknown); test_auc:
    sample -> AUC, or None with auc_reason saying why (e.g. "the evaluation has not run yet").
    """
    if deploy_target not in DEPLOY_TARGETS:
        raise ValueError(f"unknown deploy_target {deploy_target!r}")
    loader = DEPLOY_TARGETS[deploy_target]
    expected = target_inputs(deploy_target)
    names = [entry["name"] for entry in inputs if entry.get("input") != "y"]
    return {
        "deploy_target": deploy_target,
        "loaded_by": loader
        or "no CMSSW classifier: a custom model (ONNX Runtime or TensorFlow by hand)",
        # do the inputs (x's columns; y aside) equal what the loading module feeds, in order?
        "inputs_match_cmssw": None if expected is None else names == list(expected),
        "files": {Path(f).name: {"sha256": sha256_of(f)} for f in model_files},
        "inputs": [dict(entry) for entry in inputs],
        "training": {
            "tracks_by_sample": None if training_tracks is None else dict(training_tracks),
            "tracks": None if training_tracks is None else int(sum(training_tracks.values())),
        },
        "config_sha256": (
            None if config_text is None else hashlib.sha256(config_text.encode()).hexdigest()
        ),
        "test_auc": _auc_entry(test_auc, auc_reason),
        "packages": package_versions(),
        "git": git_state(repo),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_model_card(card: Mapping[str, Any], path: str | Path) -> Path:
    """Write the card as indented JSON, once: a card, like the run folder it lies in, is a
    record (pipeline.files.write_new_file refuses to overwrite one)."""
    return write_new_file(path, json.dumps(card, indent=2) + "\n")
