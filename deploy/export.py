"""Every deployable file of a run, each checked before it is written.

deploy_target "tf_graph" (TrackTfClassifier) and "custom": frozen_graph.pb, then model.onnx
converted from it; "lwtnn" (TrackLwtnnClassifier): lwtnn_network.json. Then model_card.json
beside them. main.py's freeze stage calls export_model (which checks again, instead of
writing, a file the run has already) and write_run_model_card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from deploy.lwtnn import LWTNN_FILE, LwtnnReport, check_lwtnn, export_lwtnn
from deploy.model_card import MODEL_CARD_FILE, build_model_card, describe_inputs, write_model_card
from deploy.onnx_export import ONNX_FILE, OnnxReport, check_onnx, export_onnx
from model_freeze import GRAPH_FILE, FreezeReport, freeze_model, load_graph_def, verify_graph


@dataclass
class DeployReport:
    deploy_target: str
    files: list[Path] = field(default_factory=list)
    freeze: FreezeReport | None = None
    onnx: OnnxReport | None = None
    lwtnn: LwtnnReport | None = None
    checked: list[Path] = field(default_factory=list)  # files the run had, checked again

    def lines(self) -> list[str]:
        """One summary line per file, written or checked again."""
        names = {path.name for path in self.checked}

        def again(path: Path) -> str:
            return " [checked again]" if Path(path).name in names else ""

        out = []
        if self.freeze:
            f = self.freeze
            out.append(
                f"frozen graph: {f.path} ({f.nodes} nodes; agrees with the Keras model within "
                f"{f.max_abs_difference:.1e} on {f.checked_tracks} held-out tracks; {f.note})"
                + again(f.path)
            )
        if self.onnx:
            o = self.onnx
            out.append(
                f"ONNX: {o.path} (opset {o.opset}, IR {o.ir_version}; ONNX Runtime agrees with "
                f"the Keras model within {o.max_abs_difference:.1e} on {o.checked_tracks} tracks)"
                + again(o.path)
            )
        if self.lwtnn:
            w = self.lwtnn
            out.append(
                f"lwtnn: {w.path} (lwtnn's forward pass agrees with the Keras model within "
                f"{w.max_abs_difference:.1e} on {w.checked_tracks} held-out tracks; "
                f"{w.non_finite_tracks} with a non-finite input give NaN in both)" + again(w.path)
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
    check_inputs ({"x", "y"}: the held-out tracks; lwtnn uses x only). A file the run has
    already is checked the same way instead of written again (report.checked names it)."""
    run_dir = Path(run_dir)
    report = DeployReport(deploy_target)
    inputs = {name: np.asarray(value) for name, value in check_inputs.items()}
    if deploy_target == "lwtnn":
        path = run_dir / LWTNN_FILE
        if path.is_file():
            report.lwtnn = check_lwtnn(model, path, inputs["x"], tolerance)
            report.checked.append(path)
        else:
            report.lwtnn = export_lwtnn(model, path, features, inputs["x"], tolerance)
        report.files.append(path)
        return report
    graph, onnx = run_dir / GRAPH_FILE, run_dir / ONNX_FILE
    if graph.is_file():
        report.freeze = verify_graph(graph, model, inputs, tolerance, deploy_target)
        report.checked.append(graph)
    else:
        report.freeze = freeze_model(model, graph, inputs, tolerance, deploy_target)
    if onnx.is_file():
        report.onnx = check_onnx(onnx, model, inputs, tolerance)
        report.checked.append(onnx)
    else:
        report.onnx = export_onnx(load_graph_def(graph), onnx, model, inputs, tolerance)
    report.files += [graph, onnx]
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
    config: Path | None = None,
) -> Path:
    """run_dir/model_card.json for the files of `report` (config hash from `config`, by default
    run_dir/config.py)."""
    config = Path(config) if config is not None else Path(run_dir) / "config.py"
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
    """A DeployReport of the files an earlier export left in run_dir."""
    names = [LWTNN_FILE] if deploy_target == "lwtnn" else [GRAPH_FILE, ONNX_FILE]
    files = [Path(run_dir) / name for name in names if (Path(run_dir) / name).is_file()]
    return DeployReport(deploy_target, files)


def deployment_summary(
    run_dir: Path,
    cfg: Mapping[str, Any],
    exports: DeployReport,
    model: keras.Model,
    test: Any,
    rounds: int = 5,
) -> dict[str, Any]:
    """What the report shows of the deployment: the deploy target, the model card's facts
    (the card itself is written with the test AUCs once the evaluation has them), and the
    inference cost of the frozen graph next to the production graphs, as CMSSW runs them."""
    from pipeline.runs import history

    trained = [e for e in history(run_dir) if e["event"] == "stage done" and e["stage"] == "train"]
    config = Path(run_dir) / "config.py"
    card = build_model_card(
        cfg["deploy_target"],
        exports.files,
        describe_inputs(model, cfg["features"], cfg["algo_branch"]),
        trained[-1].get("tracks") if trained else None,
        config.read_text() if config.is_file() else None,
        None,
        "in this report's tables",
    )
    facts = {
        "loaded by": card["loaded_by"],
        "inputs as CMSSW feeds them": card["inputs_match_cmssw"],
        **{f"{name} sha256": entry["sha256"][:16] for name, entry in card["files"].items()},
        "training tracks": card["training"]["tracks"],
        "config.py sha256": (card["config_sha256"] or "")[:16],
        "git commit": card["git"].get("commit"),
        "tensorflow / keras": f"{card['packages'].get('tensorflow')} / "
        f"{card['packages'].get('keras')}",
    }
    return {
        "deploy_target": cfg["deploy_target"],
        "model_card": facts,
        "inference_cost": inference_cost(run_dir, cfg, test, rounds),
    }


def inference_cost(
    run_dir: Path, cfg: Mapping[str, Any], test: Any, rounds: int = 5
) -> dict[str, dict[str, str]] | None:
    """µs per track of frozen_graph.pb and of the production graphs (compare_graphs) on one
    thread at CMSSW's batch size and at 1024, the harness's own cost subtracted (deploy.cost);
    None when there is no TrackTfClassifier graph to time."""
    from deploy.cost import best_of, measure_rounds, net_of_floor
    from evaluation.classifiers import production_graph_inputs, resolve_path

    graph = Path(run_dir) / GRAPH_FILE
    if cfg["deploy_target"] != "tf_graph" or not graph.is_file() or len(test) == 0:
        return None
    graphs = {"new model": graph}
    for name, path in cfg.get("compare_graphs", {}).items():
        found = resolve_path(path)
        if found is not None:
            graphs[name] = found
    inputs = production_graph_inputs(test.iloc[:4096])
    samples = measure_rounds(graphs, inputs, rounds=rounds, seconds_per_measurement=0.05)
    cost = net_of_floor(best_of(samples))
    return {
        name: {f"µs/track, batch {b}": f"{value:.2f}" for b, value in per_batch.items()}
        for name, per_batch in cost.items()
    }
