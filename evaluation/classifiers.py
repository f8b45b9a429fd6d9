"""Every classifier's score, mva = 2p - 1, on the same test tracks.

The new model is scored the way it will be deployed (deploy_target: its frozen graph for
CMSSW's TrackTfClassifier by default), trk_mva is read from the ntuple, the production frozen
graphs of compare_graphs get exactly what TrackTfClassifier feeds them (its 29 inputs in order
and originalAlgo, whatever features the new model uses), and a gradient-boosted-tree baseline
is trained here on the training tracks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from cmssw.classifiers import TF_GRAPH_ALGO_INPUT, TF_GRAPH_FEATURES
from cmssw.file_in_path import resolve_file
from cmssw.ntuple import LABEL
from evaluation.metrics import to_mva
from evaluation.names import BDT, NEW, REFERENCE
from model_freeze import check_contract, load_graph_def, run_graph_def
from pipeline.console import progress as progress_bar

REPO = Path(__file__).resolve().parents[1]
GRAPH_CHUNK = 500_000  # tracks per session run: bounds the memory of a large test set
FLOAT32_MAX = float(np.finfo(np.float32).max)


def resolve_path(path: str | Path) -> Path | None:
    """An existing file at path: as given, from the repo root, or CMSSW-relative through
    CMSSW_SEARCH_PATH (RecoTracker/FinalTrackSelectors/data/...), as FileInPath finds it."""
    found = resolve_file(path)
    if found is None and not Path(path).is_absolute() and (REPO / path).is_file():
        found = (REPO / path).resolve()
    return found


def graph_inputs(
    df: pd.DataFrame, features: Sequence[str], algo_column: str
) -> dict[str, np.ndarray]:
    """A frozen graph's two inputs: x = the raw features in order, y = originalAlgo as a float.

    Raises KeyError naming the columns the tracks lack."""
    missing = [c for c in [*features, algo_column] if c not in df.columns]
    if missing:
        raise KeyError(f"the test tracks lack the columns {missing}")
    return {
        "x": df[list(features)].to_numpy(np.float32),
        "y": df[algo_column].to_numpy(np.float32).reshape(-1, 1),
    }


def production_graph_inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """What CMSSW's TrackTfClassifier feeds every production graph."""
    return graph_inputs(df, TF_GRAPH_FEATURES, TF_GRAPH_ALGO_INPUT)


def graph_scores(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """mva of a frozen graph with CMSSW's contract, run in chunks as CMSSW would see it."""
    graph_def = load_graph_def(path)
    check_contract(graph_def, inputs["x"].shape[1])
    n = len(inputs["x"])
    if n == 0:
        return np.zeros(0)
    parts = [
        run_graph_def(graph_def, {k: v[start : start + GRAPH_CHUNK] for k, v in inputs.items()})
        for start in range(0, n, GRAPH_CHUNK)
    ]
    return to_mva(np.concatenate(parts))


def bdt_matrix(df: pd.DataFrame, cfg: dict[str, Any]) -> np.ndarray:
    """cfg["features"] and originalAlgo (last column, categorical); NaN stays (handled as
    missing), infinities become the float32 extremes."""
    x = df[list(cfg["features"]) + [cfg["algo_branch"]]].to_numpy(np.float64)
    return np.nan_to_num(x, nan=np.nan, posinf=FLOAT32_MAX, neginf=-FLOAT32_MAX)


def train_bdt(
    train: pd.DataFrame, cfg: dict[str, Any], max_tracks: int = 300_000
) -> HistGradientBoostingClassifier:
    """A seeded histogram BDT on (up to max_tracks of) the training tracks.

    Sized for a baseline, not a contest: 200 trees of 31 leaves with early stopping train in
    seconds on 100k tracks on 2 cores; beyond max_tracks more tracks add time, not insight.
    """
    if len(train) > max_tracks:
        train = train.sample(max_tracks, random_state=cfg.get("seed", 0))
        print(f"BDT: trained on a random {max_tracks} of the training tracks")
    labels = train[LABEL].to_numpy().astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("the training tracks need both true and fake tracks")
    n_features = len(cfg["features"])
    model = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        max_leaf_nodes=31,
        min_samples_leaf=40,
        early_stopping=len(train) >= 2000,  # too few tracks for a useful validation split
        validation_fraction=0.1,
        n_iter_no_change=10,
        categorical_features=[n_features],  # originalAlgo: an iteration, not a magnitude
        random_state=cfg.get("seed", 0),
    )
    # One OpenMP thread: on 2 shared cores (TensorFlow's pools, other jobs) OpenMP's
    # busy-waiting made 2 threads 4x slower than 1 in our measurements.
    with threadpool_limits(1):
        return model.fit(bdt_matrix(train, cfg), labels)


def bdt_scores(model: HistGradientBoostingClassifier, df: pd.DataFrame, cfg: dict) -> np.ndarray:
    with threadpool_limits(1):
        return to_mva(model.predict_proba(bdt_matrix(df, cfg))[:, 1])


# ---------------------------------------------------------------------------------------------
# The new model, scored as it will be deployed
# ---------------------------------------------------------------------------------------------
def tf_graph_scores(test: pd.DataFrame, cfg: dict[str, Any], run_dir: Path) -> np.ndarray:
    """run_dir/frozen_graph.pb fed cfg["features"] and originalAlgo, as TrackTfClassifier does
    (deploy_target "tf_graph"; also a "custom" graph with other inputs)."""
    frozen = Path(run_dir) / "frozen_graph.pb"
    if not frozen.is_file():
        raise FileNotFoundError(
            f"{frozen} is missing: evaluate a run that has been frozen "
            "(python main.py --stage freeze --run <run>)."
        )
    return graph_scores(frozen, graph_inputs(test, cfg["features"], cfg["algo_branch"]))


def lwtnn_scores(test: pd.DataFrame, cfg: dict[str, Any], run_dir: Path) -> np.ndarray:
    """deploy_target "lwtnn": lwtnn's forward pass on run_dir/lwtnn_network.json, its inputs
    filled by name as TrackLwtnnClassifier fills them. A track with a non-finite input gets NaN,
    which passes no cut (as in CMSSW)."""
    from deploy.lwtnn import LWTNN_FILE
    from deploy.lwtnn import lwtnn_scores as lwtnn_forward

    network = Path(run_dir) / LWTNN_FILE
    if not network.is_file():
        raise FileNotFoundError(
            f"{network} is missing: evaluate a run that has been frozen "
            "(python main.py --stage freeze --run <run>)."
        )
    return to_mva(lwtnn_forward(network, test))


# deploy_target -> the function giving the new model's mva on the test tracks.
SCORERS: dict[str, Callable[[pd.DataFrame, dict[str, Any], Path], np.ndarray]] = {
    "tf_graph": tf_graph_scores,
    "custom": tf_graph_scores,
    "lwtnn": lwtnn_scores,
}


def new_model_scores(test: pd.DataFrame, cfg: dict[str, Any], run_dir: Path) -> np.ndarray:
    """The new model's mva on the test tracks, by the scorer of cfg["deploy_target"]."""
    target = cfg.get("deploy_target", "tf_graph")
    if target not in SCORERS:
        raise ValueError(f"deploy_target = {target!r} (config.py): give one of {list(SCORERS)}")
    return SCORERS[target](test, cfg, Path(run_dir))


# ---------------------------------------------------------------------------------------------
# Every classifier
# ---------------------------------------------------------------------------------------------
def classifier_scores(
    train: pd.DataFrame | None,
    test: pd.DataFrame,
    cfg: dict[str, Any],
    run_dir: Path,
    bdt_max_tracks: int = 300_000,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """{classifier: mva per test track} in a fixed order (new_dnn, trk_mva, compare_graphs...,
    bdt) and {classifier: why it was left out}. Only the new model is required."""
    scores: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    jobs: list[tuple[str, Any]] = [(NEW, None), (REFERENCE, None)]
    jobs += list(cfg.get("compare_graphs", {}).items())
    if cfg.get("train_bdt", True):
        jobs.append((BDT, None))
    bar = progress_bar(jobs, desc="classifier scores", unit="classifier")
    for name, path in bar:
        start = time.perf_counter()
        try:
            if name in scores:
                raise ValueError(f"the name {name!r} is taken: rename it in compare_graphs")
            scores[name] = _scores_of(name, path, train, test, cfg, run_dir, bdt_max_tracks)
            if name != REFERENCE:
                bar.write(f"  {name}: {len(test)} tracks in {time.perf_counter() - start:.1f} s")
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            if name == NEW:
                raise
            skipped[name] = str(error)
            bar.write(f"  note: {name} is left out of the comparison: {error}")
    return scores, skipped


def _scores_of(
    name: str,
    path: str | None,
    train: pd.DataFrame | None,
    test: pd.DataFrame,
    cfg: dict[str, Any],
    run_dir: Path,
    bdt_max_tracks: int,
) -> np.ndarray:
    if name == NEW:
        return new_model_scores(test, cfg, run_dir)
    if name == REFERENCE:
        if REFERENCE not in test.columns:
            raise KeyError("the test tracks have no trk_mva column")
        return test[REFERENCE].to_numpy(np.float64)
    if name == BDT and path is None:
        if train is None or len(train) == 0:
            raise ValueError("no training tracks were given")
        return bdt_scores(train_bdt(train, cfg, bdt_max_tracks), test, cfg)
    resolved = resolve_path(path)
    if resolved is None:
        raise FileNotFoundError(f"no such file: {path}")
    return graph_scores(resolved, production_graph_inputs(test))
