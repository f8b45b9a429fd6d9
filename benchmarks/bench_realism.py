"""Do classifiers trained on real tracks recognise the synthetic sample? And is it no toy?

    python benchmarks/bench_realism.py                        # 300 QCD + 300 TTbar events, seed 7
    python benchmarks/bench_realism.py --events 1000 --seed 3 --models ../shared/cmssw-models

Generates QCD and TTbar events with ``synthetic.generate_events`` (arrays only, no file) and
feeds every track of the iterations a production graph knows to it exactly as CMSSW's
TrackTfClassifier does (x = the 29 inputs as float32 [N, 29], y = originalAlgo as float32
[N, 1], fetch Identity). A graph knows the iterations its one-hot encoding covers: both public
graphs encode algorithms 0-24, so displacedRegionalStep (26) is left out of their figures.

Prints, overall and per iteration:

- the AUC of the 2020 production graph (QCDFlatPU_QCDHighPt_ZEE_DisplacedSUSY_2020, trained on
  real tracks) and, for information, of the Run-3 CKF graph (CKF_Run3_12_5_0_pre5);
- the AUC of trk_mva, the emulated old classifier;
- the best AUC of a boosted-tree classifier of a single input or a simple ratio of two, trained
  on a second sample (seed + 1000), and the AUC of one of all 29 inputs and the iteration (what
  a retrained model can reach);
- the generation rate in tracks/s, against the floor of drawing the same number of random
  values (one per output value) in the same run.

Writes benchmarks/output/bench_realism.json. Without the production models (default folder
../shared/cmssw-models next to the repository) it says so and stops.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402

from cmssw.ntuple import ALGORITHMS  # noqa: E402
from pipeline.files import write_atomically  # noqa: E402
from synthetic import generate_events  # noqa: E402
from synthetic.realism import (  # noqa: E402
    MAX_SINGLE_AUC,
    TrackTable,
    aucs_by_iteration,
    known_iterations,
    single_input_aucs,
    track_table,
)

GRAPHS = {
    "2020": "QCDFlatPU_QCDHighPt_ZEE_DisplacedSUSY_2020.pb",
    "CKF_Run3": "CKF_Run3_12_5_0_pre5.pb",
}
PROCESSES = ("qcd", "ttbar")
GRAPH_TARGET = {"all": 0.85, "iteration": 0.80}  # what the 2020 graph must reach


def generation_rate(events: int, seed: int, repeat: int = 3) -> dict[str, float]:
    """Tracks per second of generate_events (best of ``repeat``) and of the random-draw floor."""
    best, tracks = math.inf, 0
    for _ in range(repeat):
        start = time.perf_counter()
        parts = [generate_events(process, events, seed) for process in PROCESSES]
        best = min(best, time.perf_counter() - start)
        tracks = sum(int(counts.sum()) for counts, _ in parts)
        values = sum(len(a) for _, arrays in parts for k, a in arrays.items() if k[:4] == "trk_")
    rng = np.random.default_rng(seed)
    floor = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        rng.random(values)
        floor = min(floor, time.perf_counter() - start)
    return {
        "tracks": tracks,
        "seconds": best,
        "tracks_per_second": tracks / best,
        "floor_tracks_per_second": tracks / floor,
    }


def retrained_reach(train: TrackTable, test: TrackTable) -> float:
    """AUC of a boosted-tree classifier of all 29 inputs and the iteration."""
    model = HistGradientBoostingClassifier(max_iter=200, categorical_features=[29])
    model.fit(np.concatenate([train.x, train.algo], axis=1), train.is_true)
    score = model.predict_proba(np.concatenate([test.x, test.algo], axis=1))[:, 1]
    return aucs_by_iteration(test.is_true, score, test.algo, [])["all"]


def per_iteration_single_maxima(
    train: TrackTable, test: TrackTable, iterations: list[str]
) -> dict[str, tuple[str, float]]:
    """Per iteration: the single input or ratio that separates best within it, and its AUC."""
    result = {}
    for name in iterations:
        pick = [t.algo.ravel() == ALGORITHMS[name] for t in (train, test)]
        sub = [
            TrackTable(t.x[k], t.algo[k], t.is_true[k], t.mva[k], int(k.sum()))
            for t, k in zip((train, test), pick, strict=True)
        ]
        if min(len(s.is_true) for s in sub) < 50 or any(
            s.is_true.min() == s.is_true.max() for s in sub
        ):
            result[name] = ("n/a", float("nan"))
            continue
        aucs = single_input_aucs(*sub)
        best = max(aucs, key=aucs.get)
        result[name] = (best, aucs[best])
    return result


def print_table(iterations, graph_aucs, mva_aucs, single_max, counts) -> None:
    names = list(graph_aucs)
    header = f"{'iteration':22s} {'tracks':>7s} {'fake':>6s} " + " ".join(f"{n:>9s}" for n in names)
    print(header + f" {'trk_mva':>8s}  best single input or ratio (BDT of it alone)")
    for it in ["all", *iterations]:
        n, fake = counts[it]
        row = f"{it:22s} {n:7d} {fake:6.3f} "
        row += " ".join(f"{graph_aucs[g][it]:9.3f}" for g in names)
        best, auc = single_max[it]
        print(row + f" {mva_aucs[it]:8.3f}  {auc:.3f} ({best})")


def graph_aucs_of(graph_defs: dict, test: TrackTable, iterations: list[str]) -> dict:
    """AUC of each graph on the tracks of the iterations it knows, overall and per iteration."""
    from model_freeze import run_graph_def

    result = {}
    for label, graph_def in graph_defs.items():
        known = np.isin(test.algo.ravel(), [ALGORITHMS[n] for n in known_iterations(graph_def)])
        score = run_graph_def(graph_def, {"x": test.x[known], "y": test.algo[known]})[:, 0]
        aucs = aucs_by_iteration(test.is_true[known], score, test.algo[known], iterations)
        result[label] = aucs
    return result


def measure(args: argparse.Namespace, graph_defs: dict) -> dict:
    """Every figure of the benchmark, printed as it comes."""
    iterations = known_iterations(graph_defs["2020"])
    start = time.perf_counter()
    test = track_table(PROCESSES, args.events, args.seed, iterations)
    train = track_table(PROCESSES, args.events, args.seed + 1000, iterations)
    print(
        f"{test.tracks:,} tracks in {args.events} QCD + {args.events} TTbar events (seed "
        f"{args.seed}), {len(test.is_true):,} of them in the {len(iterations)} iterations the "
        f"2020 graph knows; a second sample (seed {args.seed + 1000}) trains the BDTs "
        f"({time.perf_counter() - start:.1f} s for both)\n"
    )
    graph_aucs = graph_aucs_of(graph_defs, test, iterations)
    mva_aucs = aucs_by_iteration(test.is_true, test.mva, test.algo, iterations)
    singles = single_input_aucs(train, test)
    best = max(singles, key=singles.get)
    single_max = {"all": (best, singles[best])}
    single_max.update(per_iteration_single_maxima(train, test, iterations))
    counts = {"all": (len(test.is_true), float(1 - test.is_true.mean()))}
    for it in iterations:
        chosen = test.algo.ravel() == ALGORITHMS[it]
        counts[it] = (int(chosen.sum()), float(1 - test.is_true[chosen].mean()))
    print_table(iterations, graph_aucs, mva_aucs, single_max, counts)
    ranked = sorted(singles.items(), key=lambda kv: -kv[1])
    print("\nover all iterations, AUC of a BDT of a single input or ratio alone (best 8):")
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in ranked[:8]))
    return {
        "events_per_process": args.events,
        "seed": args.seed,
        "iterations": iterations,
        "tracks_and_fake_fraction": counts,
        "graph_auc": graph_aucs,
        "trk_mva_auc": mva_aucs,
        "single_input_auc": singles,
        "single_input_max": {k: {"input": v[0], "auc": v[1]} for k, v in single_max.items()},
        "all_inputs_bdt_auc": retrained_reach(train, test),
        "generation": generation_rate(args.events, args.seed),
    }


def print_verdict(report: dict) -> None:
    g2020, iterations = report["graph_auc"]["2020"], report["iterations"]
    worst = min(iterations, key=lambda it: g2020[it])
    best = report["single_input_max"]["all"]
    rate = report["generation"]
    print(f"BDT of all 29 inputs and the iteration: AUC {report['all_inputs_bdt_auc']:.3f}")
    print(
        f"2020 graph: AUC {g2020['all']:.3f} overall (target >= {GRAPH_TARGET['all']}), lowest "
        f"iteration {worst} {g2020[worst]:.3f} (target >= {GRAPH_TARGET['iteration']}); best "
        f"single input {best['input']} {best['auc']:.3f} (limit {MAX_SINGLE_AUC}); trk_mva "
        f"{report['trk_mva_auc']['all']:.3f}"
    )
    print(
        f"generation: {rate['tracks_per_second']:,.0f} tracks/s ({rate['tracks']:,} tracks in "
        f"{rate['seconds']:.2f} s, best of 3); the floor, one random draw per output value: "
        f"{rate['floor_tracks_per_second']:,.0f} tracks/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="events per process")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--models",
        type=Path,
        default=REPO.parent / "shared" / "cmssw-models",
        help="folder of the production graphs (default: ../shared/cmssw-models)",
    )
    parser.add_argument("--json", type=Path, default=OUTPUT / "bench_realism.json")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error(f"--events must be >= 1, got {args.events}")
    missing = [name for name in GRAPHS.values() if not (args.models / name).is_file()]
    if missing:
        print(
            f"bench_realism: skipped: {', '.join(missing)} not found in {args.models} "
            "(give the folder of the public production models with --models)"
        )
        return 0

    from evaluation.report import json_ready
    from model_freeze import load_graph_def  # TensorFlow, only once there is work for it

    report = measure(args, {k: load_graph_def(args.models / v) for k, v in GRAPHS.items()})
    print_verdict(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(args.json, json.dumps(json_ready(report), indent=1, allow_nan=False))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    from pipeline.console import quiet_console

    with quiet_console():  # TensorFlow's start-up lines stay off the table
        status = main()
    sys.exit(status)
