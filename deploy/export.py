"""Every deployable file of a run, each checked before it is written.

deploy_target "tf_graph" (TrackTfClassifier) and "custom": frozen_graph.pb, then model.onnx
converted from it; "lwtnn" (TrackLwtnnClassifier): lwtnn_network.json. Then model_card.json
beside them. main.py calls export_model and write_run_model_card; `python model_freeze.py
results/<run>` calls export_run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cmssw.classifiers import TF_GRAPH_ALGO_INPUT, target_inputs
from deploy.lwtnn import LWTNN_FILE, LwtnnReport, export_lwtnn
from deploy.model_card import MODEL_CARD_FILE, build_model_card, describe_inputs, write_model_card
from deploy.onnx_export import ONNX_FILE, OnnxReport, export_onnx
from model_freeze import (
    GRAPH_FILE,
    FreezeReport,
    freeze_model,
    load_graph_def,
    load_holdout,
    run_setting,
)


@dataclass
class DeployReport:
    deploy_target: str
    files: list[Path] = field(default_factory=list)
    freeze: FreezeReport | None = None
    onnx: OnnxReport | None = None
    lwtnn: LwtnnReport | None = None

    def lines(self) -> list[str]:
        """One summary line per file written."""
        out = []
        if self.freeze:
            f = self.freeze
            out.append(
                f"frozen graph: {f.path} ({f.nodes} nodes; agrees with the Keras model within "
                f"{f.max_abs_difference:.1e} on {f.checked_tracks} held-out tracks; {f.note})"
            )
        if self.onnx:
            o = self.onnx
            out.append(
                f"ONNX: {o.path} (opset {o.opset}, IR {o.ir_version}; ONNX Runtime agrees with "
                f"the Keras model within {o.max_abs_difference:.1e} on {o.checked_tracks} tracks)"
            )
        if self.lwtnn:
            w = self.lwtnn
            out.append(
                f"lwtnn: {w.path} (lwtnn's forward pass agrees with the Keras model within "
                f"{w.max_abs_difference:.1e} on {w.checked_tracks} held-out tracks; "
                f"{w.non_finite_tracks} with a non-finite input give NaN in both)"
            )
        return out


def export_model(
    model: keras.Model,
    run_dir: Path,
    deploy_target: str,
    features: Sequence[str],
    check_inputs: Mapping[str, np.ndarray],
    tolerance: float = 1e-5,
) -> DeployReport:
    """Write the deploy target's files into run_dir, each checked against the Keras model on
    check_inputs ({"x", "y"}: the held-out tracks; lwtnn uses x only)."""
    run_dir = Path(run_dir)
    report = DeployReport(deploy_target)
    inputs = {name: np.asarray(value) for name, value in check_inputs.items()}
    if deploy_target == "lwtnn":
        report.lwtnn = export_lwtnn(model, run_dir / LWTNN_FILE, features, inputs["x"], tolerance)
        report.files.append(report.lwtnn.path)
        return report
    report.freeze = freeze_model(model, run_dir / GRAPH_FILE, inputs, tolerance, deploy_target)
    graph_def = load_graph_def(report.freeze.path)
    report.onnx = export_onnx(graph_def, run_dir / ONNX_FILE, model, inputs, tolerance)
    report.files += [report.freeze.path, report.onnx.path]
    return report


def write_run_model_card(
    run_dir: Path,
    report: DeployReport,
    model: keras.Model,
    features: Sequence[str],
    algo_branch: str | None,
    training_tracks: Mapping[str, int] | None,
    test_auc: Mapping[str, float | None] | None = None,
    auc_reason: str | None = None,
) -> Path:
    """run_dir/model_card.json for the files of `report` (config hash from run_dir/config.py)."""
    config = Path(run_dir) / "config.py"
    card = build_model_card(
        report.deploy_target,
        report.files,
        describe_inputs(model, features, algo_branch),
        training_tracks,
        config.read_text() if config.is_file() else None,
        test_auc,
        auc_reason,
    )
    return write_model_card(card, Path(run_dir) / MODEL_CARD_FILE)


def existing_exports(run_dir: Path, deploy_target: str) -> DeployReport:
    """A DeployReport of the files an earlier export left in run_dir (for a later stage, e.g.
    the evaluation, to rewrite the model card with the AUCs)."""
    names = [LWTNN_FILE] if deploy_target == "lwtnn" else [GRAPH_FILE, ONNX_FILE]
    files = [Path(run_dir) / name for name in names if (Path(run_dir) / name).is_file()]
    return DeployReport(deploy_target, files)


def _previous_card(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MODEL_CARD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def export_run(
    run_dir: Path, tolerance: float = 1e-5, deploy_target: str | None = None
) -> list[str]:
    """Export results/<run>/model.keras as its deploy_target asks (the run's own setting by
    default) and rewrite model_card.json, keeping the training counts and AUCs an earlier card
    recorded for the same model. Returns summary lines."""
    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(
            f"{model_path} is missing: export a run whose training has finished "
            "(python main.py --stage train --run <run> trains it)."
        )
    target = deploy_target or run_setting(run_dir, "deploy_target", "tf_graph")
    features = run_setting(run_dir, "features", None) or list(target_inputs(target) or ())
    algo_branch = run_setting(run_dir, "algo_branch", TF_GRAPH_ALGO_INPUT)
    model = keras.models.load_model(model_path)
    report = export_model(model, run_dir, target, features, load_holdout(run_dir), tolerance)
    previous = _previous_card(run_dir)
    auc = previous.get("test_auc") or {}
    card = write_run_model_card(
        run_dir,
        report,
        model,
        features,
        algo_branch,
        (previous.get("training") or {}).get("tracks_by_sample"),
        auc.get("by_sample"),
        auc.get("reason") or "the evaluation has not run since this export",
    )
    return report.lines() + [f"model card: {card}"]
