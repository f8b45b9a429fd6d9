"""Training throughput: the project's training path against a bare tf.function loop.

    python benchmarks/bench_training.py                # 400k training tracks, 10 epochs
    python benchmarks/bench_training.py --tracks 1e5 --epochs 6 --repeats 1

Both train the default model (config.py: hidden layers, batch norm, dropout, Adam with the
cosine schedule, batch_size) on the same in-memory synthetic tracks (make_ntuples'
generator, QCD), shuffled anew every epoch:

- project: network.training.train_model with everything on, as config.py sets it: validation
  every epoch, the best model, the training state, CSV and TensorBoard logs, checkpoints and the
  monitor callback's plots every 10 epochs (so once, in the timed epochs, with the defaults);
- bare: a Python loop over the batches of a stateless index permutation calling one
  tf.function per batch that gathers the batch from the same in-memory tensors and takes one
  optimizer step; no validation, no callbacks, nothing saved.

Each measurement runs in a fresh Python process; the first epoch (tracing) is not timed:
tracks/s = training tracks x timed epochs / their wall time (from the start of the second
epoch to the return of the training, so the project's validation, saving, logging and final
validation scores count against it). The runs alternate, best of
--repeats. Peak memory is the process's maximum resident set; bytes per training track is
what the training path holds beyond the DataFrames (the one copy of the inputs on the
device, and the resident growth while training). Prints a table and writes
benchmarks/output/bench_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
sys.path.insert(0, str(REPO))


def tracks_frame(tracks: int, seed: int = 7):
    """About `tracks` synthetic QCD tracks of the classified iterations, with a sample column."""
    import numpy as np
    import pandas as pd

    import config
    from cmssw.ntuple import ALGORITHMS
    from make_ntuples import generate_events

    columns, total, chunk = [], 0, 0
    while total < tracks:
        counts, arrays = generate_events("qcd", 500, seed, file_index=chunk)
        keep = np.isin(arrays["trk_originalAlgo"], [ALGORITHMS[i] for i in config.iterations])
        frame = {f: arrays[f][keep].astype(np.float32) for f in config.features}
        frame["trk_originalAlgo"] = arrays["trk_originalAlgo"][keep].astype(np.uint8)
        frame["trk_isTrue"] = arrays["trk_isTrue"][keep].astype(np.int8)
        frame["trk_mva"] = arrays["trk_mva"][keep].astype(np.float32)
        events = np.repeat(np.arange(len(counts)), counts)[keep] + chunk * 500
        frame["event_index"] = events.astype(np.uint32)
        columns.append(pd.DataFrame(frame))
        total += int(keep.sum())
        chunk += 1
    df = pd.concat(columns, ignore_index=True).iloc[:tracks]
    df["sample"] = pd.Categorical(["bench"] * len(df))
    return df


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(kind: str, tracks: int, epochs: int) -> dict:
    """One measurement, in this (fresh) process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from pipeline.settings import default_config

    cfg = default_config()
    cfg.update(epochs=epochs, early_stopping_patience=0, monitor_samples=["bench"])
    frame = tracks_frame(int(tracks * 1.2))
    n_train = tracks
    train, validation = frame.iloc[:n_train].copy(), frame.iloc[n_train:].copy()
    monitor_tracks = validation.copy()
    del frame
    import tensorflow as tf

    device = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    before = rss()
    starts: list[float] = []
    if kind == "project":
        bytes_per_track = _project(train, validation, monitor_tracks, cfg, starts)
    else:
        bytes_per_track = _bare(train, cfg, starts)
    timed = starts[1:]  # from the start of epoch 2 to the end of the last
    seconds = timed[-1] - timed[0]
    return {
        "kind": kind,
        "tracks": n_train,
        "epochs_timed": len(timed) - 1,
        "seconds": seconds,
        "tracks_per_s": n_train * (len(timed) - 1) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "input_bytes_per_track": bytes_per_track,
        "rss_growth_bytes_per_track": (rss() - before) / n_train,
        "dataframe_bytes_per_track": float(train.memory_usage(deep=True).sum()) / n_train,
        "device": device[0].name,
        "batch_size": cfg["batch_size"],
        "threads": len(os.sched_getaffinity(0)),
        "seed": int(np.uint32(cfg["seed"])),
    }


def _project(train, validation, monitor_tracks, cfg: dict, starts: list[float]) -> float:
    import keras
    import tensorflow as tf

    from evaluation import monitor_callback
    from network.training import train_model

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as run_dir:
        monitor = monitor_callback(monitor_tracks, cfg, Path(run_dir))
        result = train_model(
            train,
            validation,
            cfg,
            tf.distribute.get_strategy(),
            Path(run_dir),
            callbacks=[monitor, Clock()],
        )
        starts.append(time.perf_counter())
    return result.input_bytes_per_track


def _bare(train, cfg: dict, starts: list[float]) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from network.inputs import feature_matrix
    from network.training import build_network, learning_rate_schedule

    keras.utils.set_random_seed(cfg["seed"])
    features = feature_matrix([train], cfg["features"])
    build = build_network(features, cfg)  # the same preprocessing fit as the project's
    x = tf.experimental.dlpack.from_dlpack(features.__dlpack__())
    y = tf.constant(train[cfg["algo_branch"]].to_numpy(np.float32).reshape(-1, 1))
    labels = tf.constant(train["trk_isTrue"].to_numpy(np.float32).reshape(-1, 1))
    n, size = len(train), cfg["batch_size"]
    steps = -(-n // size)
    model = build()
    optimizer = keras.optimizers.Adam(learning_rate_schedule(cfg, steps))
    loss_function = keras.losses.BinaryCrossentropy()

    @tf.function
    def step(rows):
        with tf.GradientTape() as tape:
            predicted = model({"x": tf.gather(x, rows), "y": tf.gather(y, rows)}, training=True)
            loss = loss_function(tf.gather(labels, rows), predicted) + sum(model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    for epoch in range(cfg["epochs"]):
        starts.append(time.perf_counter())
        order = tf.random.experimental.index_shuffle(
            tf.range(n, dtype=tf.int64), tf.constant([cfg["seed"], epoch], tf.int64), n - 1
        )
        for batch in range(steps):
            step(order[batch * size : (batch + 1) * size])
    starts.append(time.perf_counter())
    return features.nbytes / n + 8  # the matrix, algo and labels


def run_child(kind: str, tracks: int, epochs: int) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--tracks",
            str(tracks),
            "--epochs",
            str(epochs),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"the {kind} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=float, default=4e5, help="training tracks")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["project", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tracks = int(args.tracks)
    if args.child:
        print(json.dumps(measure(args.child, tracks, args.epochs)))
        return 0
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (the first is not timed)")
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for kind in ("bare", "project"):
            result = run_child(kind, tracks, args.epochs)
            print(f"  run {repeat + 1} {kind:>7}: {result['tracks_per_s']:,.0f} tracks/s")
            if kind not in best or result["tracks_per_s"] > best[kind]["tracks_per_s"]:
                best[kind] = result
    project, bare = best["project"], best["bare"]
    ratio = project["tracks_per_s"] / bare["tracks_per_s"]
    print(
        f"\n{tracks:,} training tracks, batch {project['batch_size']}, {args.epochs} epochs "
        f"({project['epochs_timed']} timed), on {project['device']}, best of {args.repeats}:"
    )
    print(f"{'':>9} {'tracks/s':>10} {'peak MB':>9} {'input B/track':>14} {'RSS B/track':>12}")
    for name, result in (("bare", bare), ("project", project)):
        print(
            f"{name:>9} {result['tracks_per_s']:>10,.0f} {result['peak_rss_mb']:>9.0f} "
            f"{result['input_bytes_per_track']:>14.0f} "
            f"{result['rss_growth_bytes_per_track']:>12.0f}"
        )
    print(f"ratio project / bare: {ratio:.2f} (DataFrame: "
          f"{project['dataframe_bytes_per_track']:.0f} B/track)")  # fmt: skip
    OUTPUT.mkdir(parents=True, exist_ok=True)
    summary = {
        "project_tracks_per_s": project["tracks_per_s"],
        "bare_tracks_per_s": bare["tracks_per_s"],
        "ratio": ratio,
        "tracks": tracks,
        "batch_size": project["batch_size"],
        "epochs": args.epochs,
        "device": project["device"],
        "project": project,
        "bare": bare,
    }
    (OUTPUT / "bench_training.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {OUTPUT / 'bench_training.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
