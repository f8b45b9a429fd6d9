"""The evaluate stage: metric code against hand-computed cases, edge cases, and a full run on
synthetic tracks with a small frozen model (report rendered in headless chromium)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd
import pytest

from cmssw.ntuple import ALGORITHMS
from evaluation import MonitorCallback, evaluate
from evaluation.metrics import (
    NEW,
    REFERENCE,
    auc,
    binned_rates,
    derive_working_points,
    not_classifiable,
    ordered,
    pass_fraction,
    passes,
    roc_points,
    sample_metrics,
    short_decimal_in,
    threshold_for_efficiency,
    to_mva,
)
from evaluation.report import load_working_points
from model_freeze import freeze_model
from network import build_model_from_config, fit_sanitizer_bounds, transforms_for_features
from network.inputs import model_inputs
from pipeline.settings import default_config

PRODUCTION = Path(__file__).resolve().parents[2] / "shared" / "cmssw-models"
PRODUCTION_GRAPH = PRODUCTION / "CKF_Run3_12_5_0_pre5.pb"
CFG = default_config()
USED = ["initialStep", "lowPtQuadStep", "tobTecStep", "jetCoreRegionalStep"]


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
    df["trk_isTrue"] = is_true.astype(np.int8)
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
    displaced_test; the other configured iterations are absent everywhere."""
    train = synthetic_tracks(12_000, 1, "qcd")
    qcd = synthetic_tracks(6_000, 11, "qcd_test")
    zee = synthetic_tracks(4_000, 12, "zee_test", [i for i in USED if i != "tobTecStep"])
    zee = zee[(zee.trk_originalAlgo != ALGORITHMS["jetCoreRegionalStep"]) | (zee.trk_isTrue == 1)]
    displaced = synthetic_tracks(3_000, 13, "displaced_test")
    displaced = displaced[
        (displaced.trk_originalAlgo != ALGORITHMS["lowPtQuadStep"]) | (displaced.trk_isTrue == 0)
    ]
    test = pd.concat([qcd, zee, displaced], ignore_index=True)
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
        train["trk_isTrue"].to_numpy(),
        validation_split=0.2,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(run_dir / "training_log.csv")), monitor],
    )
    model.save(run_dir / "model.keras")
    freeze_model(model, run_dir / "frozen_graph.pb", model_inputs(test.iloc[:2000], cfg))
    return run_dir, cfg


@pytest.fixture(scope="module")
def evaluated(data, trained_run):
    train, test = data
    run_dir, cfg = trained_run
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
# Metric code against cases computed by hand
# ---------------------------------------------------------------------------------------------
def test_auc_and_roc_by_hand():
    labels = np.array([1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.1])
    # true {0.9, 0.8, 0.3} vs fake {0.7, 0.1}: 5 of the 6 pairs are ordered right.
    assert auc(labels, scores) == pytest.approx(5 / 6)
    fake, eff = roc_points(labels, scores)
    points = set(zip(fake.round(6), eff.round(6), strict=True))
    # Cuts just below 0.8, 0.7, 0.3, 0.1: (0, 2/3), (1/2, 2/3), (1/2, 1), (1, 1).
    for point in [(0.0, 0.666667), (0.5, 0.666667), (0.5, 1.0), (1.0, 1.0)]:
        assert point in points
    assert np.all(np.diff(fake) >= 0) and np.all(np.diff(eff) >= 0)


def test_roc_points_are_thinned_but_keep_the_ends():
    rng = np.random.default_rng(0)
    labels = rng.random(50_000) < 0.5
    scores = rng.normal(labels.astype(float), 1.0)
    fake, eff = roc_points(labels, scores, max_points=400)
    assert len(fake) <= 410
    assert (fake[0], eff[0]) == (0.0, 0.0) and (fake[-1], eff[-1]) == (1.0, 1.0)


def test_pass_fraction_is_strict_like_cmssw():
    true_scores = np.array([0.9, 0.5, 0.1, -0.3])
    assert pass_fraction(true_scores, 0.1) == 0.5  # 0.1 itself does not pass: mva > cut
    assert pass_fraction(true_scores, -1.0) == 1.0
    assert math.isnan(pass_fraction(np.array([]), 0.0))


@pytest.mark.parametrize(
    ("target", "cut", "efficiency"),
    [
        (0.5, 0.1, 0.5),  # cut in [0.1, 0.5): fewest decimals is 0.1
        (0.75, 0.0, 0.75),  # in [-0.3, 0.1): 0.0
        (1.0, -1.0, 1.0),  # below every score
        (0.0, 1.0, 0.0),  # from 0.9 on: 1.0
        (0.6, 0.1, 0.5),  # 0.6 * 4 = 2.4 tracks: 2 is the closest count
    ],
)
def test_threshold_for_efficiency_by_hand(target, cut, efficiency):
    true_scores = np.array([0.9, 0.5, 0.1, -0.3])
    found = threshold_for_efficiency(true_scores, target)
    assert found == pytest.approx(cut)
    assert pass_fraction(true_scores, found) == efficiency


def test_threshold_with_tied_scores_takes_the_closest_reachable_efficiency():
    true_scores = np.array([0.5, 0.5, 0.5, 0.1])
    # 2 of 4 is out of reach: 3 (cut in [0.1, 0.5)) is closer than 0 (cut >= 0.5).
    assert threshold_for_efficiency(true_scores, 0.5) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no true track"):
        threshold_for_efficiency(np.array([]), 0.5)


def test_short_decimal_in():
    assert short_decimal_in(0.123, 0.1238) == pytest.approx(0.123)
    assert short_decimal_in(0.1231, 0.1238) == pytest.approx(0.1231)
    assert short_decimal_in(-math.inf, -0.3) == -1.0
    assert short_decimal_in(-math.inf, -1.0) == -2.0
    assert short_decimal_in(0.93, math.inf) == 1.0


def test_to_mva_and_ordered():
    assert to_mva(np.array([[0.0], [0.5], [1.0]])).tolist() == [-1.0, 0.0, 1.0]
    with pytest.warns(UserWarning, match="not ordered"):
        assert ordered([0.2, 0.1, 0.3]) == [0.2, 0.2, 0.3]


def test_binned_rates_by_hand():
    values = np.array([0.5, 1.5, 1.5, 2.5, 7.0])  # 7.0 is outside the bins: dropped
    labels = np.array([1, 1, 0, 0, 1])
    passed = np.array([True, False, True, False, True])
    rates = binned_rates(values, labels, passed, np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(rates["efficiency"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(rates["fake_rate"], [np.nan, 1.0, 0.0])
    np.testing.assert_array_equal(rates["n_true"], [1, 1, 0])


def test_passes_uses_each_iterations_cuts():
    scores = np.array([0.5, 0.5, 0.5])
    algo = np.array([4, 10, 5])  # initialStep, tobTecStep, an iteration without cuts
    flags = passes(scores, algo, {4: [0.0, 0.4, 0.6], 10: [0.6, 0.7, 0.8]})
    assert flags.tolist() == [[True, True, False], [False, False, False], [False] * 3]


def hand_cfg(**changes) -> dict:
    cfg = {
        "iterations": ["initialStep", "tobTecStep"],
        "target_efficiencies": [],
        "reference_cuts": {"initialStep": [-0.35, 0.1, 0.28]},
        "default_reference_cuts": [-0.5, 0.0, 0.5],
    }
    cfg.update(changes)
    return cfg


def test_working_points_by_hand():
    initial, tob = ALGORITHMS["initialStep"], ALGORITHMS["tobTecStep"]
    labels = np.array([1, 1, 1, 1, 0, 0, 1, 0])
    algo = np.array([initial] * 6 + [tob] * 2)
    scores = {
        REFERENCE: np.array([0.9, 0.5, 0.1, -0.3, 0.2, -0.5, 0.3, 0.1]),
        NEW: np.array([0.2, 0.4, 0.6, 0.8, 0.5, 0.1, 0.9, -0.9]),
    }
    wps = derive_working_points(labels, algo, scores, hand_cfg())
    entry = wps["initialStep"]
    # trk_mva > [-0.35, 0.1, 0.28] keeps 4, 2, 2 of the 4 true tracks.
    assert entry["target_efficiency"] == [1.0, 0.5, 0.5]
    assert entry["thresholds"][REFERENCE] == [-0.35, 0.1, 0.28]
    # new: 1.0 -> below 0.2: 0.0; 0.5 -> in [0.4, 0.6): 0.4.
    assert entry["thresholds"][NEW] == [0.0, 0.4, 0.4]
    assert entry["efficiency"][NEW] == [1.0, 0.5, 0.5]
    # Fakes (0.2, -0.5) and (0.5, 0.1): trk_mva keeps 1, 1, 0 of 2; new 2, 1, 1.
    assert entry["fake_rate"][REFERENCE] == [0.5, 0.5, 0.0]
    assert entry["fake_rate"][NEW] == [1.0, 0.5, 0.5]
    assert entry["fake_rate_reduction"] == [-1.0, 0.0, None]  # trk_mva keeps no fake: n/a
    # tobTecStep uses the default cuts [-0.5, 0.0, 0.5]: its true track 0.3 -> 1, 1, 0.
    assert wps["tobTecStep"]["target_efficiency"] == [1.0, 1.0, 0.0]
    assert wps["tobTecStep"]["thresholds"][NEW] == [0.0, 0.0, 1.0]  # its true track: 0.9


def test_working_points_with_target_efficiencies():
    rng = np.random.default_rng(5)
    labels = rng.random(20_000) < 0.6
    algo = np.full(20_000, ALGORITHMS["initialStep"])
    scores = {NEW: np.tanh(rng.normal(labels * 2.0 - 1.0, 1.0))}
    cfg = hand_cfg(iterations=["initialStep"], target_efficiencies=[0.99, 0.9, 0.8])
    entry = derive_working_points(labels, algo, scores, cfg)["initialStep"]
    assert entry["source"] == "target_efficiencies"
    cuts = entry["thresholds"][NEW]
    assert cuts == sorted(cuts)
    for cut, target in zip(cuts, [0.99, 0.9, 0.8], strict=True):
        assert abs(pass_fraction(scores[NEW][labels], cut) - target) < 1e-3


def test_edge_cases_are_na_with_a_reason():
    initial, tob, jet = (
        ALGORITHMS[i] for i in ("initialStep", "tobTecStep", "jetCoreRegionalStep")
    )
    cfg = hand_cfg(iterations=["initialStep", "tobTecStep", "jetCoreRegionalStep", "pixelPairStep"])
    labels = np.array([1, 0, 1, 1, 0, 0])
    algo = np.array([initial, initial, tob, tob, jet, jet])  # tob only true, jet only fake
    scores = {
        REFERENCE: np.array([0.5, -0.5, 0.2, 0.4, 0.1, -0.1]),
        NEW: np.array([0.6, -0.6, 0.3, 0.5, 0.2, 0.0]),
    }
    wps = derive_working_points(labels, algo, scores, cfg)
    assert wps["pixelPairStep"]["status"] == "n/a"
    assert "no tracks" in wps["pixelPairStep"]["reason"]
    assert "only fake" in wps["jetCoreRegionalStep"]["reason"]
    assert wps["tobTecStep"]["status"] == "ok"  # thresholds need true tracks only
    assert wps["tobTecStep"]["fake_rate"][NEW] is None
    result = sample_metrics(labels, algo, scores, wps, cfg)
    for iteration, words in [
        ("pixelPairStep", "no tracks"),
        ("tobTecStep", "only true"),
        ("jetCoreRegionalStep", "only fake"),
    ]:
        entry = result[iteration]
        assert entry["status"] == "n/a" and words in entry["reason"]
        for info in entry["classifiers"].values():
            assert info["status"] == "n/a" and words in info["reason"]
            assert "auc" not in info
    assert result["initialStep"]["classifiers"][NEW]["auc"] == 1.0
    assert result["all"]["status"] == "ok"
    # Empty sample: everything n/a, nothing raises.
    empty = sample_metrics(labels[:0], algo[:0], {k: v[:0] for k, v in scores.items()}, wps, cfg)
    assert all(e["status"] == "n/a" for e in empty.values())
    assert not_classifiable(0, 0) == "no tracks"


# ---------------------------------------------------------------------------------------------
# The whole stage on a synthetic run
# ---------------------------------------------------------------------------------------------
def test_metrics_json_holds_every_auc_and_the_reasons(evaluated):
    metrics, run_dir, _ = evaluated
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["classifiers"][:2] == [NEW, REFERENCE] and "bdt" in saved["classifiers"]
    for sample in ("qcd_test", "zee_test", "displaced_test", "all"):
        for iteration in [*USED, "all"]:
            entry = saved["samples"][sample][iteration]
            assert {"n_true", "n_fake", "status", "classifiers"} <= entry.keys()
            for name in (NEW, REFERENCE, "bdt"):
                info = entry["classifiers"][name]
                if entry["status"] == "ok":
                    assert 0.5 < info["auc"] <= 1.0, (sample, iteration, name)
                    wp = info["working_points"]["highPurity"]
                    assert 0 <= wp["efficiency"] <= 1 and 0 <= wp["fake_rate"] <= 1
                else:
                    assert info["reason"]
    edge = saved["samples"]
    assert "no tracks" in edge["zee_test"]["tobTecStep"]["reason"]
    assert "only true" in edge["zee_test"]["jetCoreRegionalStep"]["reason"]
    assert "only fake" in edge["displaced_test"]["lowPtQuadStep"]["reason"]
    assert edge["ttbar_test"]["all"]["reason"] == "no tracks"  # configured, not in the data
    assert "missing_graph" in saved["skipped_classifiers"]


def test_report_images_exist_and_are_local(evaluated):
    _, run_dir, _ = evaluated
    page = (run_dir / "report.html").read_text()
    sources = re.findall(r"<img[^>]+src=\"([^\"]+)\"", page)
    assert len(sources) >= 10
    for source in sources:
        path = run_dir / source
        assert path.is_file() and path.stat().st_size > 1000, source
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", source
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing from the network
    for expected in (
        "roc_all.png",
        "scores_qcd_test.png",
        "rates_by_iteration.png",
        "features_raw.png",
        "features_sanitized.png",
        "training_curves.png",
    ):
        assert f"plots/{expected}" in page
    assert "monitor/epoch_002_roc.png" in page
    assert "hidden_layers = [32, 16]" in page  # the run's config.py
    assert "qualityCutDictionary" in page


def test_report_renders_in_chromium(evaluated, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _, run_dir, _ = evaluated
    # A copy of the page that records, once loaded, how many of its images decoded.
    probe = run_dir / "report_probe.html"
    script = (
        "<script>addEventListener('load', () => { const i = [...document.images]; "
        "document.body.dataset.loaded = i.filter(x => x.complete && x.naturalWidth > 0)"
        ".length + '/' + i.length; });</script>"
    )
    probe.write_text((run_dir / "report.html").read_text().replace("</body>", script + "</body>"))
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
    ]
    try:
        dom = subprocess.run(
            [
                *flags,
                f"--user-data-dir={tmp_path / 'a'}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        shot = tmp_path / "report.png"
        subprocess.run(
            [
                *flags,
                f"--user-data-dir={tmp_path / 'b'}",
                f"--screenshot={shot}",
                "--window-size=1400,4000",
                (run_dir / "report.html").as_uri(),
            ],
            capture_output=True,
            timeout=120,
        )
    finally:
        probe.unlink()
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom)
    assert loaded, dom[-2000:]
    assert int(loaded.group(1)) == int(loaded.group(2)) > 0
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.skipif(not PRODUCTION_GRAPH.is_file(), reason="../shared/cmssw-models is not here")
def test_production_graph_is_compared(evaluated):
    metrics, run_dir, _ = evaluated
    name = "CKF_Run3_12_5_0_pre5"
    assert name in metrics["classifiers"]
    info = metrics["samples"]["all"]["all"]["classifiers"][name]
    assert 0.0 < info["auc"] < 1.0
    assert name in metrics["working_points"]["initialStep"]["thresholds"]
    assert name in (run_dir / "report.html").read_text()


def test_working_points_file_reproduces_the_reference_efficiency(evaluated, data):
    from evaluation.classifiers import graph_inputs, graph_scores

    metrics, run_dir, cfg = evaluated
    cuts = load_working_points(run_dir / "working_points.py")
    _, test = data
    mva = graph_scores(run_dir / "frozen_graph.pb", graph_inputs(test, cfg))
    labels = test["trk_isTrue"].to_numpy() == 1
    algo = test["trk_originalAlgo"].to_numpy()
    assert set(cuts) == {"InitialStep", "LowPtQuadStep", "TobTecStep", "JetCoreRegionalStep"}
    for iteration in USED:
        levels = cuts[iteration[0].upper() + iteration[1:]]
        assert len(levels) == 3 and levels[0] <= levels[1] <= levels[2]
        true_rows = labels & (algo == ALGORITHMS[iteration])
        reference = metrics["working_points"][iteration]["target_efficiency"]
        trk_cuts = CFG["reference_cuts"].get(iteration, CFG["default_reference_cuts"])
        for cut, ref_cut, target in zip(levels, trk_cuts, reference, strict=True):
            assert target == pass_fraction(test["trk_mva"].to_numpy()[true_rows], ref_cut)
            assert abs(pass_fraction(mva[true_rows], cut) - target) <= 0.005, iteration


def test_monitor_wrote_its_plots(trained_run):
    run_dir, _ = trained_run
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
