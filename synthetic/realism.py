"""Realism checks of the synthetic sample, shared by the tests and benchmarks/bench_realism.py.

A sample whose fakes a single input (or an obvious ratio of two) gave away would be a toy: a
classifier would learn that artefact and nothing about tracking. These helpers build the
classified tracks of a few events as CMSSW feeds them to TrackTfClassifier, and measure how well
each input alone separates true from fake tracks with a boosted-tree classifier (so that any
non-monotonic dependence counts too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from cmssw.classifiers import TF_GRAPH_FEATURES
from cmssw.ntuple import ALGORITHMS, DNN_ITERATIONS
from synthetic.physics import generate_events

MAX_SINGLE_AUC = 0.85  # no input or simple ratio may separate better than this alone


@dataclass
class TrackTable:
    x: np.ndarray  # float32 [N, 29], the inputs of TF_GRAPH_FEATURES in order
    algo: np.ndarray  # float32 [N, 1], trk_originalAlgo
    is_true: np.ndarray  # int [N]
    mva: np.ndarray  # trk_mva, the old classifier
    tracks: int  # generated tracks, classified or not

    def column(self, name: str) -> np.ndarray:
        return self.x[:, TF_GRAPH_FEATURES.index(name)].astype(np.float64)


def track_table(
    processes: tuple[str, ...], events: int, seed: int, iterations: list[str]
) -> TrackTable:
    """Every track of ``iterations`` in ``events`` events of each process."""
    parts = [generate_events(process, events, seed)[1] for process in processes]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k.startswith("trk_")}
    keep = np.isin(arrays["trk_originalAlgo"], [ALGORITHMS[name] for name in iterations])
    return TrackTable(
        x=np.stack([arrays[f][keep] for f in TF_GRAPH_FEATURES], axis=1).astype(np.float32),
        algo=arrays["trk_originalAlgo"][keep].astype(np.float32)[:, None],
        is_true=arrays["trk_isTrue"][keep].astype(np.int64),
        mva=arrays["trk_mva"][keep].astype(np.float64),
        tracks=len(arrays["trk_pt"]),
    )


def single_inputs(table: TrackTable) -> dict[str, np.ndarray]:
    """Every input alone, and the ratios a physicist would try first."""
    c = table.column
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {
            "inner_pt/pt": c("trk_inner_pt") / c("trk_pt"),
            "outer_pt/pt": c("trk_outer_pt") / c("trk_pt"),
            "outer_pt/inner_pt": c("trk_outer_pt") / c("trk_inner_pt"),
            "ptErr/pt": c("trk_ptErr") / c("trk_pt"),
            "dxy/dxyErr": c("trk_dxy") / c("trk_dxyErr"),
            "dz/dzErr": c("trk_dz") / c("trk_dzErr"),
            "dxyClosestPV/dxyErr": c("trk_dxyClosestPV") / c("trk_dxyErr"),
            "dzClosestPV/dzErr": c("trk_dzClosestPV") / c("trk_dzErr"),
            "nPixel+nStrip": c("trk_nPixel") + c("trk_nStrip"),
            "lost hits (inner+outer+layers)": c("trk_nInnerLost")
            + c("trk_nOuterLost")
            + c("trk_nLostLay"),
            "nChi2*ndof": c("trk_nChi2") * c("trk_ndof"),
            "ndof-(2nPixel+nStrip-5)": c("trk_ndof") - 2 * c("trk_nPixel") - c("trk_nStrip") + 5,
        }
    singles = {name.removeprefix("trk_"): c(name) for name in TF_GRAPH_FEATURES}
    return {
        name: np.nan_to_num(v, nan=-1e30, posinf=1e30, neginf=-1e30)
        for name, v in {**singles, **ratios}.items()
    }


def single_input_aucs(train: TrackTable, test: TrackTable) -> dict[str, float]:
    """AUC on ``test`` of a boosted-tree classifier of each single input, trained on ``train``."""
    train_inputs, test_inputs = single_inputs(train), single_inputs(test)
    aucs = {}
    # One thread: these fits are small, and threads only contend (10x slower on a busy CPU).
    with threadpool_limits(1):
        for name, values in train_inputs.items():
            # One input: ten boosting rounds already learn its likelihood ratio.
            model = HistGradientBoostingClassifier(
                max_iter=10, learning_rate=0.5, early_stopping=False
            )
            model.fit(values[:, None], train.is_true)
            score = model.predict_proba(test_inputs[name][:, None])[:, 1]
            aucs[name] = float(roc_auc_score(test.is_true, score))
    return aucs


def known_iterations(graph_def) -> list[str]:
    """The classified iterations a TrackTfClassifier graph's one-hot encoding of originalAlgo
    covers (the public graphs encode algorithms 0-24, so not displacedRegionalStep, 26)."""
    from tensorflow.python.framework import tensor_util  # only for callers that run graphs

    depths = [
        int(tensor_util.MakeNdarray(node.attr["value"].tensor))
        for node in graph_def.node
        if node.op == "Const" and node.name.endswith("one_hot/depth")
    ]
    depth = min(depths) if depths else ALGORITHMS["algoSize"]
    return [name for name in DNN_ITERATIONS if ALGORITHMS[name] < depth]


def aucs_by_iteration(
    is_true: np.ndarray, score: np.ndarray, algo: np.ndarray, iterations: list[str]
) -> dict[str, float]:
    """AUC of ``score`` over all tracks ("all") and per iteration (NaN with one class only)."""
    score = np.nan_to_num(score, nan=0.5)
    result = {"all": float(roc_auc_score(is_true, score))}
    for name in iterations:
        chosen = algo.ravel() == ALGORITHMS[name]
        both = chosen.any() and 0 < is_true[chosen].mean() < 1
        result[name] = float(roc_auc_score(is_true[chosen], score[chosen])) if both else np.nan
    return result
