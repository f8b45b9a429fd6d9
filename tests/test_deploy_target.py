"""deploy_target: what each CMSSW module feeds, the first mismatch named; FileInPath lookup."""

from __future__ import annotations

import numpy as np
import pytest

from cmssw.classifiers import (
    LWTNN_INPUTS,
    TF_GRAPH_FEATURES,
    deploy_target_mismatch,
    derived_input,
    target_inputs,
)
from cmssw.file_in_path import find_file, resolve_file, search_roots

TF = list(TF_GRAPH_FEATURES)


def test_cmsswss_own_inputs_pass():
    assert deploy_target_mismatch("tf_graph", TF, "trk_originalAlgo") is None
    assert deploy_target_mismatch("lwtnn", list(LWTNN_INPUTS), "trk_originalAlgo") is None
    assert deploy_target_mismatch("custom", ["trk_pt", "trk_eta"], "trk_algo") is None
    assert target_inputs("lwtnn") == LWTNN_INPUTS and target_inputs("custom") is None


def test_a_swapped_feature_is_named_with_the_fix():
    swapped = TF.copy()
    swapped[3], swapped[17] = "trk_eta", "trk_inner_pz"
    reason = deploy_target_mismatch("tf_graph", swapped, "trk_originalAlgo")
    assert reason.startswith(
        "features[3] is 'trk_eta' but TrackTfClassifier feeds 'trk_inner_pz' there: use the 29 "
        "inputs in CMSSW's order"
    )
    assert reason.endswith("or set deploy_target = 'custom'") and "\n" not in reason


def test_a_missing_feature_names_the_counts():
    assert deploy_target_mismatch("tf_graph", TF[:-1], "trk_originalAlgo").startswith(
        "28 features, TrackTfClassifier feeds 29: use the 29 inputs"
    )
    shifted = TF[:2] + TF[3:]
    reason = deploy_target_mismatch("tf_graph", shifted, "trk_originalAlgo")
    assert reason.startswith(
        "features[2] is 'trk_inner_pz' but TrackTfClassifier feeds 'trk_inner_py' there "
        "(28 features, TrackTfClassifier feeds 29)"
    )
    longer = deploy_target_mismatch("lwtnn", [*LWTNN_INPUTS, "trk_phi"], "trk_originalAlgo")
    assert longer.startswith("23 features, TrackLwtnnClassifier feeds 22: use the 22 inputs")


def test_lwtnn_wants_its_own_inputs_and_tf_its_algo_branch():
    reason = deploy_target_mismatch("lwtnn", TF, "trk_originalAlgo")
    assert reason.startswith(
        "features[1] is 'trk_inner_px' but TrackLwtnnClassifier feeds 'trk_eta'"
    )
    assert "LWTNN_INPUTS" in reason
    reason = deploy_target_mismatch("tf_graph", TF, "trk_algo")
    assert reason.startswith("algo_branch is 'trk_algo' but TrackTfClassifier feeds originalAlgo()")
    assert "choose one of 'tf_graph', 'lwtnn', 'custom'" in deploy_target_mismatch("onnx", TF, None)


def test_derived_inputs_are_what_cmssw_computes():
    columns = {"trk_dzClosestPV": np.array([-99999.0, -0.1, 0.5, np.nan]), "trk_nLost": [0, 3]}
    np.testing.assert_array_equal(
        derived_input("trk_dzClosestPVNorm", columns), np.float32([-0.2, -0.1, 0.2, np.nan])
    )
    np.testing.assert_array_equal(derived_input("trk_nInvalid", columns), [0, 3])
    with pytest.raises(KeyError, match="no derived input"):
        derived_input("trk_pt", columns)


def test_files_are_found_as_given_then_on_the_search_path(tmp_path, monkeypatch):
    release, local = tmp_path / "release" / "src", tmp_path / "local" / "src"
    relative = "RecoTracker/FinalTrackSelectors/data/TrackTfClassifier/CKF.pb"
    for root in (release, local):
        (root / relative).parent.mkdir(parents=True)
        (root / relative).write_bytes(root.parent.name.encode())
    search = f"{local}::{release}"  # an empty entry is ignored
    assert search_roots(search) == [local, release]
    assert resolve_file(relative, search).read_bytes() == b"local"  # the first root wins
    (local / relative).unlink()
    assert resolve_file(relative, search).read_bytes() == b"release"
    monkeypatch.setenv("CMSSW_SEARCH_PATH", str(release))
    assert find_file(relative) == (release / relative).resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.pb").write_bytes(b"cwd")
    assert find_file("here.pb").read_bytes() == b"cwd"  # a plain path first
    with pytest.raises(FileNotFoundError, match=f"under the CMSSW_SEARCH_PATH roots \\({release}"):
        find_file("RecoTracker/missing.pb")
    assert resolve_file(tmp_path / "absent.pb", search) is None
    monkeypatch.delenv("CMSSW_SEARCH_PATH")
    with pytest.raises(FileNotFoundError, match="CMSSW_SEARCH_PATH is empty"):
        find_file(relative)
