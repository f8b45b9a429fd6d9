"""The evaluate stage on a synthetic run with a small frozen model: metrics.json, the report
(self-contained, rendered alone in headless chromium), the classifiers' inputs, the monitor."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import CMSSW_MODELS

from cmssw.ntuple import ALGORITHMS, LABEL
from evaluation import MonitorCallback, evaluate
from evaluation.classifiers import (
    classifier_scores,
    graph_inputs,
    graph_scores,
    new_model_scores,
    production_graph_inputs,
)
from evaluation.names import NEW, REFERENCE
from evaluation.report import CUSTOM_TARGET_WARNING, print_summary, report_html
from model_freeze import freeze_model
from network import build_model_from_config, fit_sanitizer_bounds, transforms_for_features
from network.inputs import model_inputs
from pipeline.settings import default_config

PRODUCTION = CMSSW_MODELS
PRODUCTION_GRAPH = PRODUCTION / "CKF_Run3_12_5_0_pre5.pb"
CFG = default_config()
USED = ["initialStep", "lowPtQuadStep", "tobTecStep", "jetCoreRegionalStep"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


# ---------------------------------------------------------------------------------------------
# Synthetic tracks: a latent quality separates true from fake tracks in every feature
# ---------------------------------------------------------------------------------------------
def synthetic_tracks(
    n: int, seed: int, sample: str, iterations: list[str] = USED, true_fraction: float = 0.7
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    is_true = rng.random(n) < true_fraction
    algo = rng.choice([ALGORITHMS[i] for i in iterations], n)
    quality = np.where(is_true, 1.0, -1.0) + rng.normal(0, 1.0, n) + 0.05 * (algo - 10)
    pt = rng.lognormal(0.0 + 0.2 * quality, 0.9, n)
    eta = rng.uniform(-2.5, 2.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    hits = np.clip(rng.poisson(np.clip(10 + 2 * quality, 1, None)), 0, 40)
    pixels = np.clip(rng.poisson(np.clip(3 + 0.5 * quality, 0.5, None)), 0, 15)
    lost = rng.poisson(np.clip(0.6 - 0.3 * quality, 0.05, None)[:, None], (n, 5))
    spread = np.exp(-0.7 * quality)
    columns = {
        "trk_pt": pt,
        "trk_inner_px": pt * np.cos(phi),
        "trk_inner_py": pt * np.sin(phi),
        "trk_inner_pz": pt * np.sinh(eta),
        "trk_inner_pt": pt * rng.normal(1.0, 0.01, n),
        "trk_outer_px": pt * np.cos(phi + 0.01),
        "trk_outer_py": pt * np.sin(phi + 0.01),
        "trk_outer_pz": pt * np.sinh(eta),
        "trk_outer_pt": pt * rng.normal(0.99, 0.01, n),
        "trk_ptErr": pt * rng.lognormal(-3 - 0.4 * quality, 0.5),
        "trk_dxyClosestPV": rng.normal(0, 0.01 * spread),
        "trk_dzClosestPV": rng.normal(0, 0.05 * spread),
        "trk_dxy": rng.normal(0, 0.01 * spread),
        "trk_dz": rng.normal(0, 3.0, n),
        "trk_dxyErr": rng.lognormal(-5 - 0.2 * quality, 0.4),
        "trk_dzErr": rng.lognormal(-4.5 - 0.2 * quality, 0.4),
        "trk_nChi2": rng.lognormal(-0.4 * quality, 0.5),
        "trk_eta": eta,
        "trk_phi": phi,
        "trk_etaErr": rng.lognormal(-7, 0.5, n),
        "trk_phiErr": rng.lognormal(-7, 0.5, n),
        "trk_nPixel": pixels,
        "trk_nStrip": hits,
        "trk_ndof": 2 * (pixels + hits) - 5,
        "trk_nInnerLost": lost[:, 0],
        "trk_nOuterLost": lost[:, 1],
        "trk_nInnerInactive": lost[:, 2],
        "trk_nOuterInactive": lost[:, 3],
        "trk_nLostLay": lost[:, 4],
    }
    df = pd.DataFrame({name: np.asarray(v, dtype=np.float32) for name, v in columns.items()})
    df = df[CFG["features"]]
    df["trk_originalAlgo"] = algo.astype(np.uint8)
    df[LABEL] = is_true.astype(np.int8)
    df["trk_mva"] = np.tanh(0.6 * quality + rng.normal(0, 0.7, n)).astype(np.float32)
    df["event_index"] = (np.arange(n) // 50).astype(np.uint32)
    df["sample"] = pd.Categorical([sample] * n)
    return df


def run_cfg(**changes) -> dict:
    cfg = dict(
        CFG,
        hidden_layers=[32, 16],
        batch_size=256,
        epochs=3,
        seed=3,
        compare_graphs={},
        train_bdt=True,
    )
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="module")
def data():
    """Training tracks and three test samples with the edge cases: tobTecStep absent from
    zee_test, jetCoreRegionalStep only true in zee_test, lowPtQuadStep only fake in
    displaced_test; the other configured iterations are absent everywhere; muon-seeded
    tracks (not classified) in qcd_test."""
    train = synthetic_tracks(12_000, 1, "qcd")
    qcd = synthetic_tracks(6_000, 11, "qcd_test")
    zee = synthetic_tracks(4_000, 12, "zee_test", [i for i in USED if i != "tobTecStep"])
    zee = zee[(zee.trk_originalAlgo != ALGORITHMS["jetCoreRegionalStep"]) | (zee[LABEL] == 1)]
    displaced = synthetic_tracks(3_000, 13, "displaced_test")
    displaced = displaced[
        (displaced.trk_originalAlgo != ALGORITHMS["lowPtQuadStep"]) | (displaced[LABEL] == 0)
    ]
    # Muon-seeded tracks: not classified, but counted in their events' track multiplicity.
    muons = synthetic_tracks(500, 14, "qcd_test", ["muonSeededStepInOut"])
    test = pd.concat([qcd, zee, displaced, muons], ignore_index=True)
    test["sample"] = test["sample"].astype("category")
    return train, test


@pytest.fixture(scope="module")
def trained_run(data, tmp_path_factory):
    """A run folder as the pipeline leaves it: config.py, model.keras, training_log.csv,
    frozen_graph.pb (a small model trained for 3 epochs)."""
    train, test = data
    cfg = run_cfg()
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "config.py").write_text("hidden_layers = [32, 16]\nepochs = 3\n")
    inputs = model_inputs(train, cfg)
    lower, upper = fit_sanitizer_bounds(
        inputs["x"], transforms_for_features(cfg["features"], cfg["feature_transforms"])
    )
    keras.utils.set_random_seed(cfg["seed"])
    model = build_model_from_config(cfg, lower, upper)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), "accuracy"],
    )
    monitor = MonitorCallback(
        {
            "qcd_test": test[test["sample"] == "qcd_test"],
            "zee_test": test[test["sample"] == "zee_test"],
        },
        cfg,
        run_dir,
        every=2,
    )
    model.fit(
        inputs,
        train[LABEL].to_numpy(),
        validation_split=0.2,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(run_dir / "training_log.csv")), monitor],
    )
    model.save(run_dir / "model.keras")
    freeze_model(model, run_dir / "frozen_graph.pb", model_inputs(test.iloc[:2000], cfg))
    return run_dir, cfg, model


@pytest.fixture(scope="module")
def evaluated(data, trained_run):
    train, test = data
    run_dir, cfg, _ = trained_run
    graphs = {"missing_graph": "no/such/graph.pb"}
    if PRODUCTION_GRAPH.is_file():
        graphs["CKF_Run3_12_5_0_pre5"] = str(PRODUCTION_GRAPH)
    cfg = dict(
        cfg,
        compare_graphs=graphs,
        test_samples=["qcd_test", "zee_test", "displaced_test", "ttbar_test"],
    )
    return evaluate(train, test, cfg, run_dir), run_dir, cfg


# ---------------------------------------------------------------------------------------------
# metrics.json
# ---------------------------------------------------------------------------------------------
def test_metrics_json_carries_intervals_and_reasons(evaluated):
    _, run_dir, _ = evaluated
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["classifiers"][:2] == [NEW, REFERENCE] and "bdt" in saved["classifiers"]
    stats = saved["statistics"]
    assert stats["bootstrap_unit"] == "events" and stats["bootstrap_samples"] == 200
    assert stats["confidence_level"] == 0.95 and stats["rate_interval"] == "Clopper-Pearson"
    assert {"efficiency", "fake_rate", "fake_acceptance"} <= set(saved["definitions"])
    for sample in ("qcd_test", "zee_test", "displaced_test", "all"):
        for iteration in [*USED, "all"]:
            entry = saved["samples"][sample][iteration]
            assert {"n_true", "n_fake", "status", "classifiers"} <= entry.keys()
            for name in (NEW, REFERENCE, "bdt"):
                info = entry["classifiers"][name]
                if entry["status"] != "ok":
                    assert info["reason"]
                    continue
                low, high = info["auc_interval"]
                assert 0.5 < low <= info["auc"] <= high <= 1.0, (sample, iteration, name)
                for key in ("working_points", "equal_efficiency"):
                    level = info[key]["highPurity"]
                    for rate in ("efficiency", "fake_rate", "fake_acceptance"):
                        lo, hi = level[f"{rate}_interval"]
                        assert 0 <= lo <= level[rate] <= hi <= 1, (sample, iteration, rate)
                    kept = level["true_kept"] + level["fake_kept"]
                    assert level["fake_rate"] == pytest.approx(level["fake_kept"] / kept)
            if entry["status"] == "ok":
                change = entry["fake_rate_change"]["bdt"]["tight"]
                assert change["difference_interval"][0] <= change["difference"]
                assert change["difference"] <= change["difference_interval"][1]
                assert isinstance(change["significant"], bool)
    edge = saved["samples"]
    assert "no tracks" in edge["zee_test"]["tobTecStep"]["reason"]
    assert "only true" in edge["zee_test"]["jetCoreRegionalStep"]["reason"]
    assert "only fake" in edge["displaced_test"]["lowPtQuadStep"]["reason"]
    assert edge["ttbar_test"]["all"]["reason"] == "no tracks"  # configured, not in the data
    assert "muonSeededStepInOut" not in edge["qcd_test"]  # not classified
    assert "missing_graph" in saved["skipped_classifiers"]
    verdict = saved["verdicts"][REFERENCE]
    assert verdict["comparisons"] == verdict["fewer"] + verdict["more"] + verdict["not_significant"]
    assert saved["quality_cuts"]["steps"]["PixelPairStep"]["derived"] is False
    assert any("PixelPairStep" in note for note in saved["notes"])


def test_terminal_summary_gives_one_verdict_line_per_classifier(evaluated, capsys):
    metrics, _, _ = evaluated
    print_summary(metrics)
    lines = capsys.readouterr().out.splitlines()
    others = [c for c in metrics["classifiers"] if c != NEW]
    for other in others:
        name = {"trk_mva": "trk_mva (RECO)", "bdt": "BDT baseline"}.get(other, other)
        found = [line for line in lines if line.strip().startswith(f"vs {name}:")]
        assert len(found) == 1, other
        counts = metrics["verdicts"][other]
        assert f"of {counts['comparisons']} comparisons" in found[0]
        assert f"more in {counts['more']}," in found[0]


# ---------------------------------------------------------------------------------------------
# report.html: one file that carries everything
# ---------------------------------------------------------------------------------------------
def test_report_embeds_every_image(evaluated):
    _, run_dir, _ = evaluated
    page = (run_dir / "report.html").read_text()
    sources = re.findall(r"<img[^>]+src=\"([^\"]+)\"", page)
    assert len(sources) >= 12
    for source in sources:
        assert source.startswith("data:image/png;base64,"), source[:60]
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing from the network
    assert "plots/" not in " ".join(sources)
    for plot in (
        "roc_all.png",
        "efficiency_all.png",
        "fake_rate_all.png",
        "rates_by_iteration.png",
        "rates_qcd_test.png",
        "features_raw.png",
        "features_sanitized.png",
        "training_curves.png",
    ):
        assert (run_dir / "plots" / plot).stat().st_size > 1000, plot  # kept for slides
    assert "hidden_layers = [32, 16]" in page  # the run's config.py
    assert "qualityCutDictionary = cms.PSet(" in page
    assert "epoch_002_roc" in page  # the monitor's plots
    assert (
        "fake-track acceptance" in page and "Deployment" not in page and '<h2 id="run">' not in page
    )


def test_report_renders_alone_in_a_headless_browser(evaluated, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _, run_dir, _ = evaluated
    alone = tmp_path / "mailed"
    alone.mkdir()
    # The page alone, plus a probe that writes into the DOM how many images failed to decode.
    probe = (
        "<script>addEventListener('load', () => { const i = [...document.images];"
        " document.body.dataset.images = i.length; document.body.dataset.broken ="
        " i.filter(x => !(x.complete && x.naturalWidth > 0)).length; });</script>"
    )
    page = (run_dir / "report.html").read_text().replace("</body>", probe + "</body>")
    (alone / "report.html").write_text(page)
    result = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            (alone / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    found = re.search(r'data-images="(\d+)" data-broken="(\d+)"', result.stdout)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    assert int(found.group(1)) >= 12 and int(found.group(2)) == 0


def test_optional_report_sections(evaluated):
    metrics, _, _ = evaluated
    images: dict[str, str] = {}
    deployment = {
        "deploy_target": "custom",
        "model_card": {"inputs": "29 CMSSW features", "note": "<b>not bold</b>"},
        "inference_cost": {"frozen graph": {"tracks/s": 125000, "ms / 16 tracks": 0.13}},
    }
    run_info = {
        "parent_run": "20261101-120000_dnn",
        "resumed_from_epoch": 12,
        "stopped_early_at_epoch": 27,
        "hyperparameter_search": [{"title": "trial 3", "href": "../trial_3/report.html"}],
    }
    page = report_html(metrics, [], images, deployment=deployment, run_info=run_info)
    assert '<h2 id="deployment">' in page and CUSTOM_TARGET_WARNING.replace("'", "&#39;") in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page  # autoescaped
    assert "125000" in page and "tracks/s" in page
    assert "20261101-120000_dnn" in page and ">12<" in page and ">27<" in page
    assert 'href="../trial_3/report.html"' in page
    plain = report_html(metrics, [], images, deployment={"deploy_target": "tf_graph"})
    assert '<h2 id="deployment">' in plain and "Warning" not in plain
    assert '<h2 id="run">' not in plain


# ---------------------------------------------------------------------------------------------
# What each classifier is fed
# ---------------------------------------------------------------------------------------------
def test_compare_graphs_get_the_cmssw_inputs_whatever_the_features(data, trained_run, tmp_path):
    _, test = data
    run_dir, cfg, _ = trained_run
    test = test.iloc[:3000]
    # A custom model's feature list (here: the same columns in another order) must not
    # reach a production graph, which always gets TrackTfClassifier's 29 inputs in order.
    custom = dict(cfg, features=cfg["features"][::-1], train_bdt=False)
    custom["compare_graphs"] = {"production": str(run_dir / "frozen_graph.pb")}
    scores, skipped = classifier_scores(None, test, custom, run_dir)
    assert not skipped
    right = graph_scores(run_dir / "frozen_graph.pb", production_graph_inputs(test))
    np.testing.assert_allclose(scores["production"], right, atol=1e-6)
    fed_custom = graph_scores(
        run_dir / "frozen_graph.pb", graph_inputs(test, custom["features"], "trk_originalAlgo")
    )
    np.testing.assert_allclose(scores[NEW], fed_custom, atol=1e-6)  # the new model: its own list
    assert not np.allclose(scores[NEW], right, atol=1e-3)


def test_new_model_scorer_follows_deploy_target(data, trained_run):
    _, test = data
    run_dir, cfg, _ = trained_run
    with pytest.raises(FileNotFoundError, match="lwtnn_network.json is missing"):
        new_model_scores(test, dict(cfg, deploy_target="lwtnn"), run_dir)  # lwtnn: its JSON
    with pytest.raises(ValueError, match="deploy_target"):
        new_model_scores(test, dict(cfg, deploy_target="onnx_maybe"), run_dir)


def test_evaluate_takes_the_model_and_texts_from_its_arguments(data, trained_run, tmp_path):
    train, test = data
    run_dir, cfg, model = trained_run
    bare = tmp_path / "bare_run"
    bare.mkdir()
    shutil.copy(run_dir / "frozen_graph.pb", bare)  # no model.keras, config.py or monitor/
    monitor = sorted((run_dir / "monitor").glob("epoch_*_roc.png"))
    cfg = dict(cfg, test_samples=["zee_test"], bootstrap_samples=20)
    evaluate(
        None, test, cfg, bare, model=model, config_text="# given as text", monitor_plots=monitor
    )
    page = (bare / "report.html").read_text()
    assert "# given as text" in page and "epoch_002_roc" in page
    assert (bare / "plots" / "features_sanitized.png").is_file()  # the sanitizer of `model`
    assert (bare / "dnnQualityCuts.py").is_file() and not (bare / "working_points.py").exists()


@pytest.mark.skipif(not PRODUCTION_GRAPH.is_file(), reason="../shared/cmssw-models is not here")
def test_production_graph_is_compared(evaluated):
    metrics, run_dir, _ = evaluated
    name = "CKF_Run3_12_5_0_pre5"
    assert name in metrics["classifiers"]
    info = metrics["samples"]["all"]["all"]["classifiers"][name]
    assert 0.0 < info["auc"] < 1.0
    assert name in metrics["working_points"]["initialStep"]["thresholds"]
    assert name in metrics["verdicts"]
    assert name in (run_dir / "report.html").read_text()


# ---------------------------------------------------------------------------------------------
# The monitor during training, and what is evaluated
# ---------------------------------------------------------------------------------------------
def test_monitor_wrote_its_plots(trained_run):
    run_dir, _, _ = trained_run
    monitor = run_dir / "monitor"
    for name in ("epoch_002_roc.png", "epoch_002_scores.png", "monitor_log.csv"):
        assert (monitor / name).stat().st_size > 0
    assert not (monitor / "epoch_001_roc.png").exists()  # every=2
    log = pd.read_csv(monitor / "monitor_log.csv")
    assert set(log["sample"]) == {"qcd_test", "zee_test"}
    assert log["auc_new_dnn"].between(0.5, 1.0).all()


def test_only_the_test_samples_are_evaluated_and_monitored(data, tmp_path):
    from evaluation import held_out_samples
    from evaluation.monitor import monitor_callback

    train, test = data
    both = pd.concat([train, test], ignore_index=True)
    kept = held_out_samples(both, {"test_samples": ["zee_test"]})
    assert set(kept["sample"].astype(str)) == {"zee_test"}
    cfg = run_cfg(monitor_samples=["zee_test", "no_such_sample"], monitor_every=5)
    callback = monitor_callback(both, cfg, tmp_path)
    assert list(callback.samples) == ["zee_test"] and callback.every == 5
    assert monitor_callback(both, dict(cfg, monitor_every=0), tmp_path) is None
