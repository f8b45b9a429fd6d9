"""make_ntuples: determinism, the on-disk layout of both writers, physics sanity, failures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import DATA_DIR
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import config
import make_ntuples
import synthetic.events
from cmssw.ntuple import ALGORITHMS, DNN_ITERATIONS
from make_ntuples import generate_events, generate_sample, write_ntuple
from synthetic import write_root

TREE = "trackingNtuple/tree"
CLASSIFIED = [ALGORITHMS[name] for name in config.iterations]
UPROOT_CODECS = {"ZLIB": uproot.ZLIB, "LZMA": uproot.LZMA, "LZ4": uproot.LZ4, "ZSTD": uproot.ZSTD}


def flat(tree, name: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(tree[name].array(library="ak"), axis=None))


def assert_same_values(tree, counts: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """Every branch written equals the generated arrays (NaN included), events split right."""
    np.testing.assert_array_equal(ak.to_numpy(ak.num(tree["trk_pt"].array())), counts)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(tree["vtx_z"].array())), arrays["vtx_counts"])
    for name in [*make_ntuples.TRACK_BRANCHES, *make_ntuples.VERTEX_BRANCHES]:
        np.testing.assert_array_equal(flat(tree, name), arrays[name], err_msg=name)
    for name in [*make_ntuples.EVENT_BRANCHES, *make_ntuples.BEAMSPOT_BRANCHES]:
        np.testing.assert_array_equal(tree[name].array(library="np"), arrays[name], err_msg=name)


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """A few hundred events of each process (about 200k tracks, generated in ~1 s)."""
    events = {"qcd": 600, "ttbar": 250, "displaced": 600, "zee": 400}
    return {p: generate_events(p, n, seed=11) for p, n in events.items()}


# ---------------------------------------------------------------------------------------------
# Determinism and the structure of generate_events
# ---------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    counts, arrays = generate_events("ttbar", 30, seed=5)
    counts_again, again = generate_events("ttbar", 30, seed=5)
    np.testing.assert_array_equal(counts, counts_again)
    assert arrays.keys() == again.keys()
    for name in arrays:
        assert arrays[name].tobytes() == again[name].tobytes(), name

    _, other_seed = generate_events("ttbar", 30, seed=6)
    _, other_file = generate_events("ttbar", 30, seed=5, file_index=1)
    for other in (other_seed, other_file):
        n = min(len(other["trk_pt"]), len(arrays["trk_pt"]))
        assert not np.array_equal(other["trk_pt"][:n], arrays["trk_pt"][:n])


def test_generate_events_structure():
    counts, arrays = generate_events("displaced", 50, seed=1, first_event=101)
    assert counts.dtype == np.int64 and len(counts) == 50
    n = int(counts.sum())
    for name, dtype in make_ntuples.TRACK_BRANCHES.items():
        assert arrays[name].dtype == dtype and len(arrays[name]) == n, name
    assert arrays["trk_isTrue"].dtype == np.int16
    for name, dtype in {**make_ntuples.EVENT_BRANCHES, **make_ntuples.BEAMSPOT_BRANCHES}.items():
        assert arrays[name].dtype == dtype and len(arrays[name]) == 50, name
    np.testing.assert_array_equal(arrays["event"], np.arange(101, 151))
    assert (arrays["vtx_counts"] >= 1).all()  # at least the beam-spot fake vertex
    for name in make_ntuples.VERTEX_BRANCHES:
        assert len(arrays[name]) == arrays["vtx_counts"].sum()
    # The doubly-jagged simulation match: non-empty exactly for the true tracks.
    sim_counts = arrays["simTrkIdx_counts"]
    assert len(sim_counts) == n and sim_counts.sum() == len(arrays["simTrkIdx_flat"])
    np.testing.assert_array_equal(sim_counts > 0, arrays["trk_isTrue"] == 1)
    assert (sim_counts == 2).any() and sim_counts.max() == 2
    assert (arrays["simTrkShareFrac_flat"] >= 0.75).all()
    first = np.concatenate([[0], np.cumsum(sim_counts)[:-1]])[sim_counts > 0]
    np.testing.assert_array_equal(
        arrays["simTrkIdx_flat"][first], arrays["trk_bestSimTrkIdx"][sim_counts > 0]
    )


# ---------------------------------------------------------------------------------------------
# Writers: layout, values, compressions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["ZLIB", "LZMA", "LZ4", "ZSTD"])
def test_uproot_writer_round_trip(tmp_path, compression):
    counts, arrays = generate_events("zee", 12, seed=3)
    path = write_ntuple(tmp_path / "zee.root", counts, arrays, compression=compression)
    assert [p.name for p in tmp_path.iterdir()] == ["zee.root"]

    with uproot.open(path) as file:
        assert isinstance(file.file.compression, UPROOT_CODECS[compression])
        tree = file[TREE]
        expected = [
            *make_ntuples.EVENT_BRANCHES,
            "ntrk",
            *make_ntuples.TRACK_BRANCHES,
            "trk_isTrue",
            "nvtx",
            *make_ntuples.VERTEX_BRANCHES,
            *make_ntuples.BEAMSPOT_BRANCHES,
        ]
        assert tree.keys() == expected
        # Counter-based jagged branches (float[] ...) with the spec's element types.
        types = {**make_ntuples.TRACK_BRANCHES, "trk_isTrue": np.int16}
        for name, dtype in types.items():
            assert tree[name].interpretation.content.from_dtype == np.dtype(dtype).newbyteorder(">")
        assert tree["event"].interpretation.from_dtype == np.dtype(">u8")
        assert_same_values(tree, counts, arrays)
        np.testing.assert_array_equal(flat(tree, "trk_isTrue"), arrays["trk_isTrue"])


def test_root_writer_matches_the_cmssw_layout_with_sim_matches(tmp_path):
    """Two files through one ROOT child (the pipelined path of generate_sample)."""
    paths = generate_sample(
        tmp_path, "displaced", 24, seed=4, label="trk_simTrkIdx", events_per_file=12
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "displaced_4_0.root",
        "displaced_4_1.root",
    ]
    with uproot.open(DATA_DIR / "trackingNtuple_simTrkIdx.root") as fixture:
        layout = [(b.name, b.typename) for b in fixture[TREE].branches]

    for k, path in enumerate(paths):
        counts, arrays = generate_events(
            "displaced", 12, seed=4, file_index=k, first_event=1 + 12 * k
        )
        with uproot.open(path) as file:
            tree = file[TREE]
            assert [(b.name, b.typename) for b in tree.branches] == layout
            assert "trk_isTrue" not in tree
            assert_same_values(tree, counts, arrays)
            matches = tree["trk_simTrkIdx"].array(library="ak")
            share = tree["trk_simTrkShareFrac"].array(library="ak")
            is_true = ak.to_numpy(ak.flatten(ak.num(matches, axis=2))) > 0
            np.testing.assert_array_equal(is_true, arrays["trk_isTrue"] == 1)
            np.testing.assert_array_equal(
                ak.to_numpy(ak.flatten(matches, axis=None)), arrays["simTrkIdx_flat"]
            )
            assert ak.all(ak.flatten(share, axis=None) >= 0.75)
            assert ak.max(ak.num(matches, axis=2)) == 2


def test_root_writer_with_is_true_label_and_lzma(tmp_path):
    counts, arrays = generate_events("qcd", 8, seed=9)
    path = write_ntuple(tmp_path / "qcd.root", counts, arrays, compression="LZMA", writer="root")
    assert [p.name for p in tmp_path.iterdir()] == ["qcd.root"]
    with uproot.open(DATA_DIR / "trackingNtuple_isTrue.root") as fixture:
        layout = [(b.name, b.typename) for b in fixture[TREE].branches]
    with uproot.open(path) as file:
        assert isinstance(file.file.compression, uproot.LZMA)
        tree = file[TREE]
        assert [(b.name, b.typename) for b in tree.branches] == layout
        assert "trk_simTrkIdx" not in tree
        assert_same_values(tree, counts, arrays)
        np.testing.assert_array_equal(flat(tree, "trk_isTrue"), arrays["trk_isTrue"])


def test_a_cached_dictionary_that_no_longer_loads_is_rebuilt(tmp_path, monkeypatch, capfd):
    """As after the virtual environment that compiled it was deleted: rebuild, never fail."""
    if importlib.util.find_spec("ROOT") is None:
        pytest.skip("ROOT is not installed")
    # Asked of a child, as make_ntuples does: ROOT never shares a process with the tests.
    ask = "import ROOT, pathlib; print(ROOT.gROOT.GetVersion(), pathlib.Path(ROOT.__file__).parent)"
    answer = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, check=True)
    version, installation = answer.stdout.split()[-2:]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    stale = write_root.dictionary_cache(version, Path(installation))
    assert stale.is_relative_to(tmp_path / "cache")
    stale.mkdir(parents=True)
    (stale / "AutoDict_vector_vector_int_cxx.so").write_bytes(b"\x7fELF linked to a lost venv")

    counts, arrays = generate_events("qcd", 4, seed=2)
    path = write_ntuple(tmp_path / "qcd.root", counts, arrays, label="trk_simTrkIdx")
    assert "does not load; rebuilding it" in capfd.readouterr().err
    libraries = list(stale.glob("*.so"))
    assert len(libraries) == 1 and libraries[0].read_bytes()[:4] == b"\x7fELF"
    assert libraries[0].stat().st_size > 1000
    with uproot.open(path) as file:
        matches = file[TREE]["trk_simTrkIdx"].array(library="ak")
        np.testing.assert_array_equal(
            ak.to_numpy(ak.flatten(matches, axis=None)), arrays["simTrkIdx_flat"]
        )


def test_option_errors_name_the_option():
    counts, arrays = generate_events("qcd", 2, seed=0)
    with pytest.raises(ValueError, match="--writer root"):
        write_ntuple("x.root", counts, arrays, label="trk_simTrkIdx", writer="uproot")
    with pytest.raises(ValueError, match="--compression"):
        write_ntuple("x.root", counts, arrays, compression="GZIP")
    with pytest.raises(ValueError, match="--process"):
        generate_events("minbias", 2, seed=0)
    with pytest.raises(FileNotFoundError, match="--out"):
        write_ntuple("/nonexistent/dir/x.root", counts, arrays)


# ---------------------------------------------------------------------------------------------
# Failures leave no temporary file behind
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failing_uproot_writer_leaves_nothing(tmp_path, monkeypatch, error):
    def half_write(path, *args):
        Path(path).write_bytes(b"root\0 half a file")
        raise error("disk full")

    monkeypatch.setattr(make_ntuples, "write_uproot", half_write)
    counts, arrays = generate_events("qcd", 3, seed=0)
    with pytest.raises(error):
        write_ntuple(tmp_path / "qcd.root", counts, arrays)
    assert list(tmp_path.iterdir()) == []


# A child that starts writing its file and dies, as a crashing ROOT would.
CRASHING_CHILD = (
    "import json, sys\n"
    "job = json.loads(sys.stdin.readline())\n"
    "open(job['out'], 'wb').write(b'root half a file')\n"
    "sys.exit(3)\n"
)


def test_crashing_root_writer_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(write_root, "child_command", lambda: [sys.executable, "-c", CRASHING_CHILD])
    counts, arrays = generate_events("qcd", 3, seed=0)
    with pytest.raises(RuntimeError, match="exit code 3"):
        write_ntuple(tmp_path / "qcd.root", counts, arrays, writer="root")
    with pytest.raises(RuntimeError, match="exit code 3"):
        generate_sample(
            tmp_path, "qcd", 30, seed=0, label="trk_simTrkIdx", events_per_file=10, progress=False
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_root_says_how_to_install_it(tmp_path, monkeypatch):
    # The real child, with `import ROOT` made to fail.
    code = (
        "import sys; sys.modules['ROOT'] = None; "
        f"sys.path.insert(0, {str(Path(make_ntuples.__file__).parent)!r}); "
        "from synthetic import write_root; write_root.child_main()"
    )
    monkeypatch.setattr(write_root, "child_command", lambda: [sys.executable, "-c", code])
    counts, arrays = generate_events("qcd", 3, seed=0)
    with pytest.raises(RuntimeError, match=r"pip install -r requirements.txt.*--writer uproot"):
        write_ntuple(tmp_path / "qcd.root", counts, arrays, label="trk_simTrkIdx")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_sample_and_summarises(tmp_path, capsys):
    make_ntuples.main(
        [
            "--out",
            str(tmp_path),
            "--events",
            "25",
            "--process",
            "zee",
            "--seed",
            "2",
            "--events-per-file",
            "10",
            "--compression",
            "LZ4",
        ]
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["zee_2_0.root", "zee_2_1.root", "zee_2_2.root"]
    assert "tracks/s" in capsys.readouterr().out
    entries = [uproot.open(tmp_path / n)[TREE].num_entries for n in names]
    assert entries == [10, 10, 5]
    pts = [flat(uproot.open(tmp_path / n)[TREE], "trk_pt")[:20] for n in names[:2]]
    assert not np.array_equal(pts[0], pts[1])  # files of a sample differ


# ---------------------------------------------------------------------------------------------
# Physics
# ---------------------------------------------------------------------------------------------
def fractions(arrays) -> dict[str, float]:
    algo = arrays["trk_originalAlgo"]
    return {name: float(np.mean(algo == code)) for name, code in ALGORITHMS.items()}


def test_iteration_populations(samples):
    qcd = fractions(samples["qcd"][1])
    assert 0.35 < qcd["initialStep"] < 0.55
    decreasing = DNN_ITERATIONS[: DNN_ITERATIONS.index("tobTecStep") + 1]
    values = [qcd[name] for name in decreasing]
    assert values == sorted(values, reverse=True), dict(zip(decreasing, values, strict=True))
    by_process = {p: fractions(arrays) for p, (_, arrays) in samples.items()}
    jetcore = {p: f["jetCoreRegionalStep"] for p, f in by_process.items()}
    displaced = {p: f["displacedRegionalStep"] for p, f in by_process.items()}
    assert jetcore["ttbar"] > jetcore["qcd"] > jetcore["zee"] and jetcore["zee"] < 0.003
    assert 0.02 < displaced["displaced"] < 0.07
    assert all(displaced[p] < 0.003 for p in ("qcd", "ttbar", "zee"))
    for f in by_process.values():  # muon-seeded tracks exist, the loader must drop them
        assert 0 < f["muonSeededStepInOut"] + f["muonSeededStepOutIn"] < 0.02
    # Multiplicities: pileup-like, ttbar busiest, and some events without any track.
    means = {p: counts.mean() for p, (counts, _) in samples.items()}
    assert 30 < means["zee"] < means["qcd"] < means["ttbar"] < 400
    assert all((counts == 0).any() for counts, _ in samples.values())


def test_fake_fractions_by_iteration(samples):
    arrays = samples["qcd"][1]
    algo, fake = arrays["trk_originalAlgo"], arrays["trk_isTrue"] == 0
    rate = {name: fake[algo == ALGORITHMS[name]].mean() for name in config.iterations}
    assert rate["initialStep"] < 0.06
    for name in ("mixedTripletStep", "pixelLessStep", "tobTecStep"):
        assert rate[name] > 0.2, rate
    assert 0.05 < fake.mean() < 0.2
    # ttbar is busier, so its fake rate is higher.
    assert (samples["ttbar"][1]["trk_isTrue"] == 0).mean() > fake.mean()


def test_fakes_are_worse_but_overlap(samples):
    arrays = samples["qcd"][1]
    true, fake = arrays["trk_isTrue"] == 1, arrays["trk_isTrue"] == 0
    median = {
        k: (np.nanmedian(arrays[k][true]), np.nanmedian(arrays[k][fake]))
        for k in ("trk_nChi2", "trk_dxyErr", "trk_ndof")
    }
    assert median["trk_nChi2"][1] > 1.15 * median["trk_nChi2"][0]
    assert median["trk_dxyErr"][1] > 1.3 * median["trk_dxyErr"][0]
    assert median["trk_ndof"][1] < median["trk_ndof"][0]
    hits = arrays["trk_nPixel"].astype(float) + arrays["trk_nStrip"]
    assert hits[fake].mean() < hits[true].mean() - 2
    for name in ("trk_nLostLay", "trk_nInnerLost", "trk_nOuterLost"):
        assert arrays[name][fake].mean() > 2 * arrays[name][true].mean(), name


def test_no_single_feature_separates_but_a_combination_does(samples):
    _, train = samples["qcd"]
    _, test = generate_events("qcd", 400, seed=12)

    def table(arrays):
        keep = np.isin(arrays["trk_originalAlgo"], CLASSIFIED)
        x = np.stack([np.nan_to_num(arrays[f][keep].astype(np.float64)) for f in config.features])
        return x.T, arrays["trk_isTrue"][keep], arrays["trk_mva"][keep]

    x_train, y_train, _ = table(train)
    x_test, y_test, mva = table(test)
    single = [roc_auc_score(y_test, x) for x in x_test.T]
    # Nor does the consistency of the three momentum states (a hidden near-perfect discriminant
    # there would make the sample a toy): inner and outer pt relative to the reference pt.
    pt = x_test[:, config.features.index("trk_pt")]
    for state in ("trk_inner_pt", "trk_outer_pt"):
        mismatch = np.abs(np.log(x_test[:, config.features.index(state)] / pt))
        single.append(roc_auc_score(y_test, np.nan_to_num(mismatch)))
    best_single = max(max(a, 1 - a) for a in single)
    # A plain logistic regression on log-compressed features: no tuning, well below a DNN.
    squash = lambda x: np.sign(x) * np.log1p(np.abs(np.clip(x, -1e6, 1e6)))  # noqa: E731
    model = LogisticRegression(max_iter=500).fit(squash(x_train), y_train)
    combined = roc_auc_score(y_test, model.decision_function(squash(x_test)))
    old = roc_auc_score(y_test, mva)
    assert best_single < 0.85
    assert combined > best_single + 0.05
    assert 0.8 < old < 0.97 and old > best_single


def test_kinematics_are_consistent(samples):
    arrays = samples["ttbar"][1]
    ok = arrays["trk_pt"] < 1e4  # outliers aside
    a = {k: v[ok].astype(np.float64) for k, v in arrays.items() if k.startswith("trk_")}
    for prefix in ("trk_", "trk_inner_", "trk_outer_"):
        np.testing.assert_allclose(
            np.hypot(a[prefix + "px"], a[prefix + "py"]), a[prefix + "pt"], rtol=1e-5
        )
    np.testing.assert_allclose(a["trk_pz"], a["trk_pt"] * np.sinh(a["trk_eta"]), rtol=1e-4)
    np.testing.assert_allclose(a["trk_cotTheta"], np.sinh(a["trk_eta"]), rtol=1e-5)
    np.testing.assert_allclose(a["trk_lambda"], np.arctan(a["trk_cotTheta"]), atol=1e-6)
    assert np.abs(a["trk_eta"]).max() < 2.5
    assert set(np.unique(a["trk_q"])) == {-1, 1}
    true = a["trk_isTrue"] == 1
    # Energy loss: the outer state has less pt, by about the fit's precision for true tracks.
    ratio = a["trk_outer_pt"][true] / a["trk_pt"][true]
    assert np.median(ratio) < 0.995 and (ratio < 1).mean() > 0.8
    # The field bends positive tracks clockwise: phi decreases outwards, more at low pt.
    outer_phi = np.arctan2(a["trk_outer_py"], a["trk_outer_px"])
    dphi = np.angle(np.exp(1j * (outer_phi - a["trk_phi"])))
    low = (a["trk_pt"] < 2) & (a["trk_pt"] > 0.9)
    assert np.median(dphi[low & (a["trk_q"] > 0)]) < -0.15
    assert np.median(dphi[low & (a["trk_q"] < 0)]) > 0.15
    expected = np.arcsin(np.minimum(0.3 * 3.8 * 1.08 / (2 * a["trk_pt"]), 1))
    assert (np.abs(dphi) <= expected + 1e-4).all()
    # The hit counts.
    ndof = 2 * a["trk_nPixel"] + a["trk_nStrip"] - 5
    assert np.mean(a["trk_ndof"] == ndof) > 0.999
    np.testing.assert_array_equal(a["trk_nValid"], a["trk_nPixel"] + a["trk_nStrip"])
    assert (a["trk_nPixelLay"] <= a["trk_nPixel"]).all()


def test_impact_parameters_and_vertices(samples):
    counts, arrays = samples["displaced"]
    evt = np.repeat(np.arange(len(counts)), counts)
    a = {k: v.astype(np.float64) for k, v in arrays.items()}
    # The reference point is the point of closest approach to the beam spot.
    dx, dy = a["trk_refpoint_x"] - a["bsp_x"][evt], a["trk_refpoint_y"] - a["bsp_y"][evt]
    dxy = -dx * np.sin(a["trk_phi"]) + dy * np.cos(a["trk_phi"])
    assert (np.abs(dxy - a["trk_dxy"]) <= 2e-4 * (1 + np.abs(a["trk_dxy"]))).all()
    np.testing.assert_allclose(a["trk_refpoint_z"] - a["bsp_z"][evt], a["trk_dz"], atol=1e-3)
    # dzClosestPV: reco::TrackBase::dz w.r.t. the good vertex (ndof > 0) closest in z.
    vtx_evt = np.repeat(np.arange(len(counts)), arrays["vtx_counts"])
    nearest, expected = np.full(len(evt), np.inf), np.full(len(evt), np.nan)
    cos, sin, cot = np.cos(a["trk_phi"]), np.sin(a["trk_phi"]), a["trk_cotTheta"]
    for v in np.flatnonzero(a["vtx_ndof"] > 0):
        dz_v = a["trk_refpoint_z"] - a["vtx_z"][v]
        closer = (evt == vtx_evt[v]) & (np.abs(dz_v) < np.abs(nearest))
        transverse = (a["trk_refpoint_x"] - a["vtx_x"][v]) * cos + (
            a["trk_refpoint_y"] - a["vtx_y"][v]
        ) * sin
        nearest = np.where(closer, dz_v, nearest)
        expected = np.where(closer, dz_v - transverse * cot, expected)
    has = np.isfinite(nearest) & np.isfinite(a["trk_dzClosestPV"])
    close = np.abs(a["trk_dzClosestPV"][has] - expected[has]) < 1e-3 * (1 + np.abs(expected[has]))
    assert close.mean() > 0.999
    no_vertex = ~np.isfinite(nearest)  # whole events, 0.1 %: often none in 600 events
    assert no_vertex.mean() < 0.02 and (a["trk_dzClosestPV"][no_vertex] > 9e4).all()
    # Displaced iterations reach far out; displacedRegionalStep the farthest.
    algo = arrays["trk_originalAlgo"]
    abs_dxy = {
        n: np.median(np.abs(a["trk_dxy"][algo == ALGORITHMS[n]]))
        for n in ("initialStep", "detachedTripletStep", "displacedRegionalStep")
    }
    assert abs_dxy["displacedRegionalStep"] > 5 * abs_dxy["detachedTripletStep"]
    assert abs_dxy["detachedTripletStep"] > 5 * abs_dxy["initialStep"]
    assert (np.abs(a["trk_dxy"]) > 10).sum() > 20
    # vtxIdx points into the event's vertices.
    assert (arrays["trk_vtxIdx"] >= -1).all()
    assert (arrays["trk_vtxIdx"] < arrays["vtx_counts"][evt]).all()


def test_events_without_a_good_vertex(monkeypatch):
    monkeypatch.setattr(synthetic.events, "FAILED_VERTEX_FRACTION", 0.3)
    counts, arrays = generate_events("qcd", 40, seed=3)
    evt = np.repeat(np.arange(len(counts)), counts)
    vtx_evt = np.repeat(np.arange(len(counts)), arrays["vtx_counts"])
    # Such an event keeps one vertex, the beam spot with ndof 0, and no track has a good one.
    failed = vtx_evt[arrays["vtx_ndof"] == 0]
    assert len(failed) >= 5 and (arrays["vtx_counts"][failed] == 1).all()
    in_failed = np.isin(evt, failed)
    assert (arrays["trk_dzClosestPV"][in_failed] > 9e4).all()
    assert (np.abs(arrays["trk_dzClosestPV"][~in_failed]) < 9e4).mean() > 0.99


def test_outliers_nan_and_bookkeeping_are_rare_but_present(samples):
    arrays = {
        k: np.concatenate([s[1][k] for s in samples.values()]) for k in make_ntuples.TRACK_BRANCHES
    }
    n = len(arrays["trk_pt"])
    floats = [k for k, t in make_ntuples.TRACK_BRANCHES.items() if t == np.float32]
    has_nan = np.any([np.isnan(arrays[k]) for k in floats], axis=0)
    assert 0 < has_nan.mean() < 1e-3
    extreme = (arrays["trk_pt"] > 1e4) | (arrays["trk_nChi2"] > 1e3) | (arrays["trk_phiErr"] > 10)
    assert extreme.sum() > 0 and extreme.mean() < 1e-3
    # "No good vertex": whole events (0.1 %, so lumpy in small samples) and single tracks.
    assert 0 < (np.abs(arrays["trk_dzClosestPV"]) > 5e4).mean() < 0.01
    assert arrays["trk_pt"].max() > 1e4 and np.nanmax(arrays["trk_ptErr"]) > 1e6
    assert np.nanmax(arrays["trk_nChi2"]) > 1e3 and arrays["trk_ndof"].min() == -2
    assert (arrays["trk_dzClosestPV"] == -99999).any()
    # algo / algoMask / quality bookkeeping.
    merged = arrays["trk_algo"] != arrays["trk_originalAlgo"]
    assert (arrays["trk_algo"][merged] == ALGORITHMS["duplicateMerge"]).all()
    assert 0.005 < merged.mean() < 0.05
    bit = np.uint64(1) << arrays["trk_originalAlgo"].astype(np.uint64)
    assert ((arrays["trk_algoMask"] & bit) != 0).all()
    assert ((arrays["trk_mva"] >= -1) & (arrays["trk_mva"] <= 1)).all()
    np.testing.assert_array_equal(arrays["trk_isHP"] == 1, (arrays["trk_qualityMask"] & 4) > 0)
    assert n > 100_000
