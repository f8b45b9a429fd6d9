"""model_card.json: provenance of the exported files; the whole export of a run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from cmssw.classifiers import LWTNN_INPUTS
from deploy.export import existing_exports, export_model, write_run_model_card
from deploy.model_card import build_model_card, describe_inputs, git_state, write_model_card
from network import build_lwtnn_model, build_model_from_config
from pipeline.settings import default_config

CFG = default_config()
N = len(CFG["features"])
CONFIG_TEXT = "epochs = 3\ndeploy_target = 'tf_graph'\n"


@pytest.fixture(scope="module")
def tf_model():
    lower, upper = np.linspace(-1, 0, N), np.linspace(1, 5, N)
    return build_model_from_config(dict(CFG, hidden_layers=[8]), lower, upper)


def test_inputs_carry_the_fitted_constants(tf_model):
    inputs = describe_inputs(tf_model, CFG["features"], "trk_originalAlgo")
    assert [entry["name"] for entry in inputs] == [*CFG["features"], "trk_originalAlgo"]
    assert inputs[0] == {
        "name": "trk_pt",
        "input": "x",
        "transform": "log",
        "clip": [-1.0, 1.0],
        "then": "scaled to [-1, 1]; NaN -> 0",
    }
    assert inputs[-2]["clip"] == [0.0, 5.0] and inputs[-1]["input"] == "y"
    lwtnn = build_lwtnn_model(LWTNN_INPUTS, np.arange(22.0), np.full(22, 0.5), hidden_layers=[4])
    entry = describe_inputs(lwtnn, LWTNN_INPUTS, None)[3]
    assert entry == {"name": "trk_dxy", "transform": "(x + offset) * scale", "offset": 3.0,
                     "scale": 0.5, "training_clip": None}  # fmt: skip


def test_card_records_what_a_maintainer_needs(tf_model, tmp_path):
    model_file = tmp_path / "frozen_graph.pb"
    model_file.write_bytes(b"graph bytes")
    inputs = describe_inputs(tf_model, CFG["features"], "trk_originalAlgo")
    card = build_model_card(
        "tf_graph", [model_file], inputs, {"qcd": 1200, "ttbar": 800}, CONFIG_TEXT,
        {"zee_test": 0.95, "qcd_test": float("nan")}, repo=tmp_path,
    )  # fmt: skip
    assert card["deploy_target"] == "tf_graph" and card["loaded_by"] == "TrackTfClassifier"
    assert card["inputs_match_cmssw"] is True
    assert card["files"] == {
        "frozen_graph.pb": {"sha256": hashlib.sha256(b"graph bytes").hexdigest()}
    }
    assert card["training"] == {"tracks_by_sample": {"qcd": 1200, "ttbar": 800}, "tracks": 2000}
    assert card["config_sha256"] == hashlib.sha256(CONFIG_TEXT.encode()).hexdigest()
    assert card["test_auc"] == {"by_sample": {"zee_test": 0.95, "qcd_test": None}, "reason": None}
    assert card["packages"]["tensorflow"] and card["packages"]["numpy"] == np.__version__
    assert card["packages"]["onnxruntime"]
    assert card["git"] == {"commit": None, "dirty": None}  # tmp_path is no git work tree
    assert card["date"].endswith("+00:00")
    path = write_model_card(card, tmp_path / "model_card.json")
    assert json.loads(path.read_text()) == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen_graph.pb", "model_card.json"]


def test_custom_cards_say_no_cmssw_classifier_loads_them(tf_model, tmp_path):
    card = build_model_card("custom", [], [{"name": "trk_pt"}], None, None, repo=tmp_path)
    assert card["loaded_by"].startswith("no CMSSW classifier")
    assert card["inputs_match_cmssw"] is None and card["config_sha256"] is None
    assert card["test_auc"] == {"by_sample": None, "reason": "the evaluation has not run"}
    with pytest.raises(ValueError, match="unknown deploy_target"):
        build_model_card("onnx", [], [], None, None)


def test_git_commit_and_dirty_tree(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}


def test_export_of_an_lwtnn_run_writes_json_and_card(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 22)).astype(np.float32)
    model = build_lwtnn_model(LWTNN_INPUTS, np.zeros(22), np.ones(22), hidden_layers=[6])
    (tmp_path / "config.py").write_text(CONFIG_TEXT)
    report = export_model(model, tmp_path, "lwtnn", LWTNN_INPUTS, {"x": x})
    assert [p.name for p in report.files] == ["lwtnn_network.json"]
    assert report.freeze is None and report.onnx is None
    assert "lwtnn's forward pass agrees" in report.lines()[0]
    card_path = write_run_model_card(
        tmp_path, report, model, LWTNN_INPUTS, None, {"displaced": 500}, None,
        "the evaluation has not run yet",
    )  # fmt: skip
    card = json.loads(card_path.read_text())
    assert card["loaded_by"] == "TrackLwtnnClassifier" and card["inputs_match_cmssw"] is True
    assert list(card["files"]) == ["lwtnn_network.json"]
    assert card["config_sha256"] == hashlib.sha256(CONFIG_TEXT.encode()).hexdigest()
    assert card["test_auc"]["reason"] == "the evaluation has not run yet"
    later = existing_exports(tmp_path, "lwtnn")  # a later evaluation: the same files, AUCs
    assert later.files == report.files
    with pytest.raises(FileExistsError):  # a card is a record: never rewritten
        write_run_model_card(tmp_path, later, model, LWTNN_INPUTS, None, None, {"zee": 0.9})
    stage = tmp_path / "stages" / "evaluate_1"  # the later evaluation's own folder
    stage.mkdir(parents=True)
    again = write_run_model_card(
        stage, later, model, LWTNN_INPUTS, None, None, {"zee": 0.9}, config=tmp_path / "config.py"
    )
    assert json.loads(again.read_text())["test_auc"]["by_sample"] == {"zee": 0.9}
    assert json.loads(card_path.read_text())["test_auc"]["by_sample"] is None
    assert existing_exports(tmp_path, "tf_graph").files == []
