"""Inference cost per track of our frozen graph next to the production graphs, as CMSSW runs them.

    python benchmarks/bench_inference.py                     # the default model, trained here
    python benchmarks/bench_inference.py --graph results/latest/frozen_graph.pb
    python benchmarks/bench_inference.py \
        --compare 2021=RecoTracker/FinalTrackSelectors/data/TrackTfClassifier/CKF_2021Run3.pb

One session per graph with one intra-op and one inter-op thread (CMSSW's setting), batches of
16 tracks (TrackTfClassifier's default) and of 1024, the graphs measured in turn in a rotating
order, over 30 rounds (deploy.cost). A "floor" graph with the same interface
that computes almost nothing is measured too: what it costs (feeding, fetching, the Python
call) is the harness's, not the model's, and CMSSW's C++ call costs less, so the table also
shows every graph's cost above the floor (best round), and its ratio to CKF_Run3_12_5_0_pre5's
(the median of the per-round ratios: each round's pair measured back to back, under the same
load, the figure to trust on a busy machine). Without --graph the default model of
config.py (its architecture and 29 inputs with the sanitizer) is trained for one epoch on
synthetic tracks (make_ntuples.generate_events) and frozen twice: as model_freeze.py freezes it
(batch norm folded, grappler run) and layer by layer (the reference that shows what the
freeze-time optimisation gains). The tracks fed are synthetic ttbar tracks.

Graph paths are files, or CMSSW-relative paths found through CMSSW_SEARCH_PATH like CMSSW's
FileInPath (cmssw.file_in_path). The production graphs default to ../shared/cmssw-models/,
else RecoTracker/FinalTrackSelectors/data/TrackTfClassifier/<name>.pb on the search path.

Prints a table and writes benchmarks/output/bench_inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from cmssw.classifiers import TF_GRAPH_ALGO_INPUT, TF_GRAPH_FEATURES  # noqa: E402
from cmssw.file_in_path import resolve_file  # noqa: E402

PRODUCTION = ("CKF_Run3_12_5_0_pre5", "QCDFlatPU_QCDHighPt_ZEE_DisplacedSUSY_2020")
CMSSW_FOLDER = "RecoTracker/FinalTrackSelectors/data/TrackTfClassifier"
REFERENCE = "CKF_Run3_12_5_0_pre5"


def synthetic_tracks(process: str, events: int, seed: int) -> dict[str, np.ndarray]:
    """x (the 29 inputs), y (originalAlgo) and the label of synthetic tracks."""
    from make_ntuples import generate_events

    _, arrays = generate_events(process, events, seed)
    return {
        "x": np.column_stack([arrays[name] for name in TF_GRAPH_FEATURES]).astype(np.float32),
        "y": arrays[TF_GRAPH_ALGO_INPUT].astype(np.float32).reshape(-1, 1),
        "label": arrays["trk_isTrue"].astype(np.float32),
    }


def default_model_graphs(folder: Path) -> dict[str, Path]:
    """The default model of config.py, trained one epoch, frozen optimised and layer by layer."""
    import keras

    from model_freeze import freeze_model
    from network.training import build_network
    from pipeline.settings import default_config

    cfg = default_config()
    keras.utils.set_random_seed(cfg["seed"])
    train = synthetic_tracks("qcd", 400, 7)
    model = build_network(train["x"], cfg)()  # the sanitizer fitted as the training does
    model.compile(optimizer="adam", loss="binary_crossentropy")
    inputs = {"x": train["x"], "y": train["y"]}
    start = time.perf_counter()
    model.fit(inputs, train["label"], batch_size=cfg["batch_size"], epochs=1, verbose=0)
    print(f"default model: {model.count_params():,} parameters, {len(train['x'])} training "
          f"tracks, trained in {time.perf_counter() - start:.0f} s")  # fmt: skip
    check = {"x": train["x"][:5000], "y": train["y"][:5000]}
    graphs = {}
    for name, optimize in (("new (as frozen)", True), ("new (layer by layer)", False)):
        path = folder / f"{'optimised' if optimize else 'plain'}.pb"
        report = freeze_model(model, path, check, optimize=optimize)
        print(
            f"  {name}: {report.nodes} nodes, |frozen - Keras| <= {report.max_abs_difference:.1e}"
        )
        graphs[name] = path
    return graphs


def production_graphs(extra: list[str]) -> dict[str, Path]:
    graphs = {}
    for name in PRODUCTION:
        for candidate in (REPO.parent / "shared" / "cmssw-models" / f"{name}.pb",
                          f"{CMSSW_FOLDER}/{name}.pb"):  # fmt: skip
            found = resolve_file(candidate)
            if found:
                graphs[name] = found
                break
        else:
            print(f"{name}: not found (../shared/cmssw-models or CMSSW_SEARCH_PATH), left out")
    for entry in extra:
        name, _, path = entry.rpartition("=")
        found = resolve_file(path)
        if found is None:
            raise SystemExit(f"--compare {entry}: no such file, as given or on CMSSW_SEARCH_PATH")
        graphs[name or Path(path).stem] = found
    return graphs


def print_table(
    results: dict[str, dict[int, float]],
    net: dict[str, dict[int, float]],
    ratios: dict[str, dict[int, float]] | None,
    batch_sizes: list[int],
) -> None:
    header = f"{'graph':<42}" + "".join(f"{f'µs/track @{b}':>15}" for b in batch_sizes)
    header += "".join(f"{f'above floor @{b}':>18}" for b in batch_sizes)
    if ratios:
        header += "".join(f"{f'÷ CKF @{b}':>12}" for b in batch_sizes) + "  (paired)"
    print(header)
    for name, per_batch in results.items():
        row = f"{name:<42}" + "".join(f"{per_batch[b]:>15.2f}" for b in batch_sizes)
        if name in net:
            row += "".join(f"{net[name][b]:>18.2f}" for b in batch_sizes)
            if ratios:
                row += "".join(f"{ratios[name][b]:>12.2f}" for b in batch_sizes)
        print(row)


def main() -> None:
    from deploy.cost import (
        DEFAULT_BATCH_SIZES,
        best_of,
        measure_rounds,
        net_of_floor,
        paired_ratios,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", help="our frozen graph (default: train the default model)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=0.1, help="per measurement")
    parser.add_argument("--json", default=str(OUTPUT / "bench_inference.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        if args.graph:
            found = resolve_file(args.graph)
            if found is None:
                raise SystemExit(f"--graph {args.graph}: no such file (nor on CMSSW_SEARCH_PATH)")
            graphs = {"new": found}
        else:
            graphs = default_model_graphs(Path(folder))
        graphs.update(production_graphs(args.compare))
        tracks = synthetic_tracks("ttbar", 300, 11)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        samples = measure_rounds(graphs, tracks, args.batch_sizes, args.rounds, args.seconds)
        seconds = time.perf_counter() - start
    after = os.getloadavg()[0]
    print(f"\n{len(tracks['x'])} synthetic ttbar tracks; 1 thread; {args.rounds} rounds; load "
          f"average {load:.2f} before, {after:.2f} after ({seconds:.0f} s)\n")  # fmt: skip
    results = best_of(samples)
    net = net_of_floor(results)
    ratios = paired_ratios(samples, REFERENCE) if REFERENCE in samples else None
    print_table(results, net, ratios, args.batch_sizes)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    record = {
        "microseconds_per_track": {
            n: {str(b): v for b, v in r.items()} for n, r in results.items()
        },
        "graphs": {name: str(path) for name, path in graphs.items()},
        "rounds": args.rounds,
        "threads": 1,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load,
        },  # fmt: skip
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    from pipeline.console import quiet_console

    with quiet_console():  # TensorFlow's start-up lines stay off the table
        main()
