"""dnnQualityCuts.py as CMSSW reads it: the written file is executed against minimal stand-ins
of FWCore.ParameterSet.Config and of the trackdnn_CKF process modifier, and every step is read
back the way the iteration configs read it (qualityCutDictionary.<Step>.value())."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmssw.classifiers import step_name
from cmssw.ntuple import ALGORITHMS, DNN_ITERATIONS, LABEL
from evaluation import compute_metrics
from evaluation.metrics import pass_fraction
from evaluation.names import NEW, REFERENCE
from evaluation.quality_cuts import quality_cuts_text, release_cuts, write_quality_cuts
from pipeline.settings import default_config

CFG = default_config()
STEPS = list(CFG["reference_cuts"])  # the release's file order
PLACEHOLDER = [-0.5, 0.0, 0.5]  # what 10 of the 12 steps used to get
# Iterations of the synthetic test tracks; the other steps have no track.
PRESENT = ["initialStep", "lowPtQuadStep", "tobTecStep", "jetCoreRegionalStep"]

STANDIN_CONFIG = """
class vdouble(list):
    def __init__(self, *values):
        super().__init__(float(v) for v in values)

    def value(self):
        return list(self)


class PSet:
    def __init__(self, **parameters):
        self.__dict__.update(parameters)
"""
STANDIN_MODIFIER = """
class Modifier:
    active = False

    def toModify(self, pset, **changes):
        if self.active:  # as CMSSW does when the process runs with this modifier
            for name, values in changes.items():
                setattr(pset, name, type(getattr(pset, name))(*values))


trackdnn_CKF = Modifier()
"""


@pytest.fixture
def read_cuts(tmp_path, monkeypatch):
    """read_cuts(path, modifier_active) -> {step: cuts}: exec a dnnQualityCuts.py against the
    stand-ins placed on sys.path in a temporary folder."""
    for package in (
        "FWCore",
        "FWCore/ParameterSet",
        "Configuration",
        "Configuration/ProcessModifiers",
    ):  # noqa: E501
        (tmp_path / "cmssw" / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cmssw" / package / "__init__.py").write_text("")
    (tmp_path / "cmssw/FWCore/ParameterSet/Config.py").write_text(STANDIN_CONFIG)
    modifier = tmp_path / "cmssw/Configuration/ProcessModifiers/trackdnn_CKF_cff.py"
    modifier.write_text(STANDIN_MODIFIER)
    monkeypatch.syspath_prepend(str(tmp_path / "cmssw"))

    def read(path: Path, modifier_active: bool = False) -> dict[str, list[float]]:
        for name in [m for m in sys.modules if m.split(".")[0] in ("FWCore", "Configuration")]:
            del sys.modules[name]
        from Configuration.ProcessModifiers.trackdnn_CKF_cff import trackdnn_CKF

        trackdnn_CKF.active = modifier_active
        pset = runpy.run_path(str(path))["qualityCutDictionary"]
        return {step: getattr(pset, step).value() for step in vars(pset)}

    yield read
    for name in [m for m in sys.modules if m.split(".")[0] in ("FWCore", "Configuration")]:
        del sys.modules[name]


def scored_tracks(seed: int = 3, n: int = 30_000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.85
    algo = rng.choice([ALGORITHMS[i] for i in PRESENT], n)
    quality = np.where(labels, 1.0, -1.0) + rng.normal(0, 1, n)
    return pd.DataFrame(
        {
            "trk_originalAlgo": algo.astype(np.uint8),
            LABEL: labels.astype(np.int8),
            REFERENCE: np.tanh(0.6 * quality + rng.normal(0, 0.7, n)),
            "event_index": np.arange(n) // 100,
            "sample": pd.Categorical(np.where(np.arange(n) < n // 2, "a_test", "b_test")),
        }
    )


def metrics_of(cfg: dict, seed: int = 3) -> tuple[dict, pd.DataFrame, dict]:
    tracks = scored_tracks(seed)
    rng = np.random.default_rng(seed + 1)
    labels = tracks[LABEL].to_numpy() == 1
    new = np.tanh(np.where(labels, 1.5, -1.5) + rng.normal(0, 1, len(tracks)))
    scores = {NEW: new, REFERENCE: tracks[REFERENCE].to_numpy()}
    cfg = dict(cfg, test_samples=["a_test", "b_test"], bootstrap_samples=20)
    return compute_metrics(tracks, scores, cfg, "20261201-000000_test"), tracks, scores


@pytest.mark.parametrize("block", ["default", "trackdnn_CKF"])
def test_written_file_holds_every_step_in_cmsswss_form(block, tmp_path, read_cuts):
    cfg = dict(CFG, working_points_block=block)
    metrics, tracks, scores = metrics_of(cfg)
    path = write_quality_cuts(metrics, cfg, tmp_path / "dnnQualityCuts.py")
    text = path.read_text()
    assert "import FWCore.ParameterSet.Config as cms" in text
    assert "qualityCutDictionary = cms.PSet(" in text and "cms.vdouble(" in text
    has_modifier = "trackdnn_CKF.toModify(qualityCutDictionary," in text
    assert has_modifier == (block == "trackdnn_CKF")
    assert "20261201-000000_test" in text and "a_test, b_test" in text and "tf_graph" in text
    default_read = read_cuts(path, modifier_active=False)
    modified = read_cuts(path, modifier_active=True)
    # The block of the new cuts: the PSet, or the toModify block when the modifier runs.
    new_cuts = modified if block == "trackdnn_CKF" else default_read
    release = release_cuts(cfg)
    assert list(new_cuts) == STEPS
    for step, cuts in new_cuts.items():
        assert len(cuts) == 3 and cuts == sorted(cuts), step
        assert all(-1.0 <= c <= 1.0 for c in cuts), step
        assert cuts != PLACEHOLDER, step
    labels, algo = tracks[LABEL].to_numpy() == 1, tracks["trk_originalAlgo"].to_numpy()
    for iteration in DNN_ITERATIONS:
        step = step_name(iteration)
        if iteration not in PRESENT:  # no track: the release's cuts, flagged in the file
            assert new_cuts[step] == release[step]
            flagged = [line for line in text.splitlines() if line.lstrip().startswith(f"{step} ")]
            assert any(
                line.endswith("# release cuts: no tracks in the test samples") for line in flagged
            ), step
            continue
        true_rows = labels & (algo == ALGORITHMS[iteration])
        for cut, ref_cut in zip(new_cuts[step], release[step], strict=True):
            target = pass_fraction(scores[REFERENCE][true_rows], ref_cut)
            assert abs(pass_fraction(scores[NEW][true_rows], cut) - target) < 0.003, step
    if block == "trackdnn_CKF":  # the PSet above keeps the release's default block
        assert default_read == release_cuts(cfg, "default")
        assert list(default_read) == STEPS
    assert metrics["quality_cuts"]["steps"]["PixelPairStep"]["derived"] is False


def test_trk_mva_is_matched_at_the_chosen_blocks_cuts():
    ckf = dict(CFG, working_points_block="trackdnn_CKF")
    metrics, tracks, _ = metrics_of(ckf)
    entry = metrics["working_points"]["initialStep"]
    assert entry["thresholds"][REFERENCE] == [-0.57, 0.02, 0.3]
    labels = tracks[LABEL].to_numpy() == 1
    rows = labels & (tracks["trk_originalAlgo"].to_numpy() == ALGORITHMS["initialStep"])
    expected = [pass_fraction(tracks[REFERENCE].to_numpy()[rows], c) for c in (-0.57, 0.02, 0.3)]
    assert entry["target_efficiency"] == expected
    assert "trackdnn_CKF block" in metrics["reference"]


def test_reference_cuts_default_to_the_releases_full_table():
    assert "default_reference_cuts" not in CFG
    for setting in ("reference_cuts", "reference_cuts_trackdnn_CKF"):
        assert sorted(CFG[setting]) == sorted(step_name(i) for i in DNN_ITERATIONS)
    assert CFG["reference_cuts"]["JetCoreRegionalStep"] == [-0.62, -0.49, 0.02]
    assert CFG["reference_cuts_trackdnn_CKF"]["JetCoreRegionalStep"] == [-0.14, -0.12, 0.63]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"working_points_block": "ckf"}, "working_points_block"),
        ({"reference_cuts": {"InitialStep": [-0.35, 0.1, 0.28]}}, "lacks"),
        ({"reference_cuts": dict(CFG["reference_cuts"], initialStep=[0, 0, 0])}, "'InitialStep'"),
        ({"reference_cuts": dict(CFG["reference_cuts"], TobTecStep=[0.5, 0.1, 0.6])}, "ascending"),
        ({"reference_cuts": dict(CFG["reference_cuts"], TobTecStep=[-2, 0, 0.6])}, "ascending"),
        ({"reference_cuts": dict(CFG["reference_cuts"], TobTecStep=[0.1, 0.2])}, "three cuts"),
    ],
)
def test_bad_reference_cuts_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        release_cuts(dict(CFG, **changes))


def test_file_text_is_the_same_as_the_written_file(tmp_path):
    metrics, _, _ = metrics_of(CFG)
    path = write_quality_cuts(metrics, CFG, tmp_path / "dnnQualityCuts.py")
    assert path.read_text() == quality_cuts_text(metrics, CFG)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind
