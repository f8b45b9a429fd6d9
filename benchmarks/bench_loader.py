"""Benchmark of DatasetLoader against the floor (a bare uproot read) and the older pattern.

    python benchmarks/bench_loader.py                  # 4M tracks in 8 files, generated once
    python benchmarks/bench_loader.py --tracks 1e6     # smaller and faster

The sample is generated once by make_ntuples.py with real ROOT (CMSSW's std::vector layout):
half ttbar with the trk_simTrkIdx label, half QCD with trk_isTrue, in
benchmarks/output/ntuples-<tracks>-<files>-<compression>/. Every measurement runs in a fresh
Python process, on files already in the page cache; this process samples the memory of that
process and of all its descendants (workers, forkserver) every 50 ms. Measured, in one run:

- bare uproot read, one process: tree.arrays(the same branches, library="np" and "ak"), plus
  trk_simTrkIdx read as int32 words (what the loader reads of it): the floor;
- the older pattern: uproot to awkward to a pandas frame per file (ak.to_dataframe), label and
  sample columns added, pd.concat at the end;
- DatasetLoader with 1 and 2 workers: cold (writing the cache), from the cache, and cold
  without a cache;
- "uproot configured for speed": the same loader, workers and column writes, every basket
  read by uproot itself (tree branch arrays over each entry range, ZLIB inflated by ISA-L):
  the loader's own basket reading is kept only if it beats this by 1.2x.

"Peak memory" is the largest sum over those processes of PSS (shared pages counted once) plus
the loader's column files in /dev/shm (memory that no process maps while it is written). The
load of the machine by other processes during each run is reported next to it.

Prints a table and writes benchmarks/output/bench_loader.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
sys.path.insert(0, str(REPO))

# process, label convention, seed: half the tracks of each kind.
SAMPLES = {"ttbar": ("ttbar", "trk_simTrkIdx", 101), "qcd": ("qcd", "trk_isTrue", 202)}
TREE = "trackingNtuple/tree"


# --- the sample ---------------------------------------------------------------------------------


def _generate(name: str, folder: str, events: int, per_file: int, compression: str) -> None:
    import make_ntuples

    process, label, seed = SAMPLES[name]
    make_ntuples.generate_sample(
        folder,
        process,
        events,
        seed,
        label=label,
        events_per_file=per_file,
        compression=compression,
        writer="root",
        progress=False,
    )


def make_sample(tracks: int, files: int, compression: str) -> dict[str, list[str]]:
    """The benchmark's files, generated on first use: {"ttbar": [...], "qcd": [...]}."""
    import numpy as np

    import make_ntuples

    folder = OUTPUT / f"ntuples-{tracks}-{files}-{compression}"
    done = folder / "complete.json"
    if not done.exists():
        print(f"generating about {tracks:,} tracks in {files} files into {folder} (once) ...")
        shutil.rmtree(folder, ignore_errors=True)
        jobs = []
        for name, (process, _, seed) in SAMPLES.items():
            counts, _ = make_ntuples.generate_events(process, 200, seed + 1000)
            per_event = float(np.mean(counts))
            per_file = max(1, round(tracks / files / per_event))
            jobs.append((name, str(folder / name), per_file * (files // 2), per_file))
        start = time.perf_counter()
        with ProcessPoolExecutor(len(jobs)) as pool:
            for future in [pool.submit(_generate, *job, compression) for job in jobs]:
                future.result()
        print(f"  generated in {time.perf_counter() - start:.0f} s")
        done.write_text(json.dumps({"tracks": tracks, "files": files}))
    return {name: sorted(str(p) for p in (folder / name).glob("*.root")) for name in SAMPLES}


# --- the measured runs (each in its own process) ----------------------------------------------


def _branches() -> list[str]:
    import config

    return [*config.features, "trk_originalAlgo", *config.extra_branches]


def _digests(columns: dict) -> dict[str, str]:
    import numpy as np
    import xxhash

    return {
        name: xxhash.xxh3_64_hexdigest(np.ascontiguousarray(values).view(np.uint8))
        for name, values in columns.items()
    }


def run_loader(spec: dict) -> dict:
    import pandas  # noqa: F401  (imported by any caller of the loader: not part of the load)

    import config
    from dataset_loader import DatasetLoader
    from loader import baskets

    if spec.get("zlib"):  # inflate ZLIB with the zlib module, as uproot does by default
        baskets.libdeflate = None
    loader = DatasetLoader(
        max_workers=spec["workers"],
        features=config.features,
        extra_branches=config.extra_branches,
        cache_dir=spec["cache_dir"],
        progress=False,
        reader=spec.get("reader", "own"),
    )
    start = time.perf_counter()
    df = loader.load_samples(spec["samples"])
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    # Reading every value (as training does) also makes the mapped pages resident.
    digests = _digests({name: df[name].to_numpy() for name in df.columns.drop("sample")})
    digests["sample"] = _digests({"s": df["sample"].cat.codes.to_numpy()})["s"]
    touch = time.perf_counter() - start
    return {
        "tracks": len(df),
        "seconds": seconds,
        "touch_seconds": touch,
        "phases": loader.last_load.get("phases"),
        "processes": loader.last_load.get("processes"),
        "source": loader.last_load["source"],
        "df_bytes": int(df.memory_usage(index=True, deep=True).sum()),
        "columns": len(df.columns),
        "digests": digests,
    }


def run_bare(spec: dict) -> dict:
    """uproot alone, one process: the same branches, nothing else done with them."""
    import awkward as ak
    import numpy as np
    import uproot

    from loader.decode import inner_sizes
    from loader.ntuples import VECTOR_VECTOR_INT_WORDS

    branches = _branches()
    kept = []
    start = time.perf_counter()
    for _, path in spec["files"]:
        tree = uproot.open(path, array_cache=None)[TREE]
        arrays = tree.arrays(branches, library=spec["library"], how=dict)
        if "trk_isTrue" in tree:
            label = tree["trk_isTrue"].array(library=spec["library"])
        else:  # the raw words: what the loader reads of this branch
            interpretation = VECTOR_VECTOR_INT_WORDS
            label = tree["trk_simTrkIdx"].array(interpretation, library=spec["library"])
        kept.append((tree, arrays, label))
    seconds = time.perf_counter() - start
    if spec["library"] != "ak":
        tracks = sum(sum(len(x) for x in arrays["trk_originalAlgo"]) for _, arrays, _ in kept)
        return {"tracks": tracks, "seconds": seconds}
    # Untimed: the same columns as the loader's, for the identity check.
    columns: dict[str, list] = {}
    offset = 0
    for code, (tree, arrays, label) in zip(spec["codes"], kept, strict=True):
        counts = ak.to_numpy(ak.num(arrays["trk_originalAlgo"]))
        for name in branches:
            dtype = np.uint8 if name == "trk_originalAlgo" else np.float32
            columns.setdefault(name, []).append(ak.to_numpy(ak.flatten(arrays[name])).astype(dtype))
        if "trk_isTrue" in tree:
            flags = ak.to_numpy(ak.flatten(label)) != 0
        else:
            words = ak.to_numpy(ak.flatten(label)).astype(np.int32)
            sizes = inner_sizes(words, ak.to_numpy(ak.num(label)), counts)
            flags = sizes > 0
        columns.setdefault("trk_isTrue", []).append(flags.astype(np.int8))
        entries = np.arange(offset, offset + tree.num_entries, dtype=np.uint32)
        columns.setdefault("event_index", []).append(np.repeat(entries, counts))
        columns.setdefault("sample", []).append(np.full(int(counts.sum()), code, np.int8))
        offset += tree.num_entries
    joined = {name: np.concatenate(parts) for name, parts in columns.items()}
    return {"tracks": len(joined["event_index"]), "seconds": seconds, "digests": _digests(joined)}


def run_old(spec: dict) -> dict:
    """The older pattern: a pandas frame per file, concatenated at the end."""
    import awkward as ak
    import pandas as pd
    import uproot

    branches = _branches()
    start = time.perf_counter()
    frames = []
    for sample, path in spec["files"]:
        tree = uproot.open(path, array_cache=None)[TREE]
        frame = ak.to_dataframe(tree.arrays(branches, library="ak"))
        if "trk_isTrue" in tree:
            frame["trk_isTrue"] = ak.to_numpy(ak.flatten(tree["trk_isTrue"].array()))
        else:
            matches = ak.num(tree["trk_simTrkIdx"].array(library="ak"), axis=2)
            frame["trk_isTrue"] = (ak.to_numpy(ak.flatten(matches)) > 0).astype(int)
        frame["sample"] = sample
        frames.append(frame)
    df = pd.concat(frames)
    seconds = time.perf_counter() - start
    return {
        "tracks": len(df),
        "seconds": seconds,
        "df_bytes": int(df.memory_usage(index=True, deep=True).sum()),
        "columns": len(df.columns),
    }


def child_main(spec: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = {"loader": run_loader, "bare": run_bare, "old": run_old}[spec["kind"]](spec)
    result["max_rss_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


# --- measuring a run from outside -------------------------------------------------------------


def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _pss(process) -> int:
    """PSS in bytes (shared pages divided among the processes sharing them)."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return process.memory_info().rss
    except Exception:
        return 0


def _staging_bytes(pid: int) -> int:
    """Bytes in the loader's column folders of this process in /dev/shm (allocated blocks)."""
    total = 0
    for folder in Path("/dev/shm").glob(f"trackloader-{pid}-*"):
        for file in folder.glob("*"):
            with contextlib.suppress(OSError):
                total += file.stat().st_blocks * 512
    return total


def measure(spec: dict) -> dict:
    import psutil

    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    busy_before, own_before = _busy_seconds(), _own_seconds()
    wall = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = {"pss": 0, "rss": 0}
    cpu: dict[int, float] = {}

    def sample() -> None:
        while child.poll() is None:
            processes = _tree(child.pid)
            pss = sum(_pss(p) for p in processes) + _staging_bytes(child.pid)
            rss = 0
            for process in processes:
                try:
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    cpu[process.pid] = times.user + times.system
                except psutil.Error:
                    pass
            peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
            time.sleep(0.05)  # reading smaps costs CPU too: not too often on 2 cores

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = child.communicate()
    sampler.join()
    wall = time.perf_counter() - wall
    if child.returncode != 0:
        raise SystemExit(f"run {spec['kind']} failed:\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    # Busy CPU time not spent by the measured processes nor by this one (the sampling).
    others = _busy_seconds() - busy_before - sum(cpu.values()) - (_own_seconds() - own_before)
    others = max(0.0, others)
    result.update(
        peak_memory=peak["pss"],
        peak_rss_sum=peak["rss"],
        cpu_seconds=sum(cpu.values()),
        others_load=others / max(wall, 1e-9),  # cores used by other processes meanwhile
        loadavg=os.getloadavg()[0],
    )
    return result


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _busy_seconds() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


# --- the benchmark ------------------------------------------------------------------------------


def plan_runs(cache_root: Path) -> dict[str, dict]:
    """What is measured: the bare reads, the older pattern, the loader in every mode."""
    runs: dict[str, dict] = {
        "bare uproot, np": {"kind": "bare", "library": "np"},
        "bare uproot, ak": {"kind": "bare", "library": "ak"},
        "older pattern": {"kind": "old"},
    }
    for workers in (1, 2):
        cache = str(cache_root / f"workers{workers}")
        for mode, cache_dir in (("cold", cache), ("cached", cache), ("no cache", None)):
            runs[f"loader {workers}w, {mode}"] = {
                "kind": "loader",
                "workers": workers,
                "cache_dir": cache_dir,
            }
        # The thin layer: uproot reads every basket (ZLIB by ISA-L), the same workers and
        # column writes.
        runs[f"uproot for speed {workers}w, cold"] = {
            "kind": "loader",
            "workers": workers,
            "cache_dir": str(cache_root / f"uproot{workers}"),
            "reader": "uproot",
        }
    runs["loader 1w, no cache, zlib"] = {
        "kind": "loader",
        "workers": 1,
        "cache_dir": None,
        "zlib": 1,
    }
    return runs


def run_all(runs: dict[str, dict], repeat: int, sample: dict) -> dict[str, dict]:
    """Every run `repeat` times, interleaved; the fastest of each is kept (with all times)."""
    results: dict[str, dict] = {}
    for turn in range(repeat):
        for name, run in runs.items():
            if name.endswith("cold"):  # a cold load starts without a cache
                shutil.rmtree(run["cache_dir"], ignore_errors=True)
            result = measure({**run, **sample})
            if name.endswith("cached") and result["source"] != "cache":
                raise SystemExit(f"{name}: the cache was not used")
            best = results.get(name)
            result["all_seconds"] = [*(best or {}).get("all_seconds", []), result["seconds"]]
            if best is None or result["seconds"] < best["seconds"]:
                results[name] = result
            else:
                best["all_seconds"] = result["all_seconds"]
            print(
                f"  [{turn + 1}/{repeat}] {name:24s} {result['seconds']:7.2f} s  "
                f"(others used {result['others_load']:.2f} cores)",
                flush=True,
            )
    return results


def table_rows(results: dict[str, dict], floor_rate: float) -> list[dict]:
    rows = []
    for name, r in results.items():
        rate = r["tracks"] / r["seconds"]
        phases = r.get("phases") or {}
        rows.append(
            {
                "run": name,
                "seconds": r["seconds"],
                "all_seconds": r["all_seconds"],
                "tracks_per_s": rate,
                "decode_tracks_per_s": (
                    r["tracks"] / phases["decode"] if phases.get("decode") else None
                ),
                "x_bare": rate / floor_rate,
                "bytes_per_track": r["df_bytes"] / r["tracks"] if "df_bytes" in r else None,
                "df_bytes": r.get("df_bytes"),
                "columns": r.get("columns"),
                "peak_memory": r["peak_memory"],
                "peak_rss_sum": r["peak_rss_sum"],
                "touch_seconds": r.get("touch_seconds"),
                "phases": r.get("phases"),
                "processes": r.get("processes"),
                "cpu_seconds": r["cpu_seconds"],
                "others_load": r["others_load"],
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'run':24s} {'time s':>7s} {'Mtrk/s':>7s} {'x bare':>6s} {'decode':>7s} "
        f"{'B/track':>7s} {'peak MB':>8s} {'others':>6s}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        decode = f"{row['decode_tracks_per_s'] / 1e6:7.2f}" if row["decode_tracks_per_s"] else ""
        per_track = f"{row['bytes_per_track']:7.1f}" if row["bytes_per_track"] else ""
        print(
            f"{row['run']:24s} {row['seconds']:7.2f} {row['tracks_per_s'] / 1e6:7.2f} "
            f"{row['x_bare']:6.2f} {decode:>7s} {per_track:>7s} "
            f"{row['peak_memory'] / 1e6:8.0f} {row['others_load']:6.2f}"
        )
    print(
        "(decode: Mtracks/s of the decode phase alone; peak: PSS of all processes + column "
        "files in /dev/shm; others: cores busy with other processes during the run)"
    )


def memory_checks(results: dict[str, dict], workers: int) -> list[tuple[str, bool]]:
    cold, cached = results[f"loader {workers}w, cold"], results[f"loader {workers}w, cached"]
    limit = 4 * cold["columns"] + 2
    per_track = cold["df_bytes"] / cold["tracks"]
    checks = [
        (
            f"{workers}w: DataFrame bytes/track {per_track:.1f} "
            f"<= 4 x {cold['columns']} columns + 2 = {limit}",
            per_track <= limit,
        )
    ]
    for kind in ("cold", "cached", "no cache"):
        r = results[f"loader {workers}w, {kind}"]
        allowed = 1.5 * r["df_bytes"] + 1e9
        checks.append(
            (
                f"{workers}w {kind}: peak memory {r['peak_memory'] / 1e6:.0f} MB < "
                f"1.5 x DataFrame + 1 GB = {allowed / 1e6:.0f} MB",
                r["peak_memory"] < allowed,
            )
        )
    speedup = cold["seconds"] / cached["seconds"]
    checks.append(
        (
            f"{workers}w: cached load {speedup:.1f} x faster than the cold load (>= 10)",
            speedup >= 10,
        )
    )
    return checks


def speed_checks(results: dict[str, dict], floor_rate: float) -> list[tuple[str, bool]]:
    checks = []
    for workers in (1, 2):
        own = results[f"loader {workers}w, cold"]
        thin = results[f"uproot for speed {workers}w, cold"]
        margin = thin["seconds"] / own["seconds"]
        checks.append(
            (
                f"{workers}w cold: the own basket reading {margin:.2f} x as fast as uproot "
                "configured for speed (keep it only if >= 1.2)",
                margin >= 1.2,
            )
        )
    two = results["loader 2w, cold"]
    ratio = two["tracks"] / two["seconds"] / floor_rate
    checks.append(
        (
            f"2 workers, cold, whole load: {ratio:.2f} x the bare single-process rate (>= 1.6)",
            ratio >= 1.6,
        )
    )
    decode_ratio = two["tracks"] / two["phases"]["decode"] / floor_rate
    checks.append(
        (
            f"2 workers, decode phase alone: {decode_ratio:.2f} x the bare rate (>= 1.6)",
            decode_ratio >= 1.6,
        )
    )
    return checks


def identity_check(results: dict) -> tuple[str, bool]:
    """Every load kind gave the bare uproot read's columns (xxh3 of each)."""
    reference = results["bare uproot, ak"]["digests"]
    loads = [name for name in results if results[name].get("source")]
    same = all(results[name]["digests"] == reference for name in loads)
    return (
        f"the same data: every load ({len(loads)} kinds: workers, cache, reader) "
        "== the bare uproot read, column by column (xxh3)",
        same,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=float, default=4e6, help="tracks to generate (total)")
    parser.add_argument("--files", type=int, default=8, help="files (even: half per sample)")
    parser.add_argument("--compression", default="ZLIB", choices=("ZLIB", "LZMA", "LZ4", "ZSTD"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--json", default=str(OUTPUT / "bench_loader.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    OUTPUT.mkdir(parents=True, exist_ok=True)
    samples = make_sample(int(args.tracks), max(2, args.files // 2 * 2), args.compression)
    files = [(name, path) for name, paths in samples.items() for path in paths]
    codes = [list(samples).index(name) for name, _ in files]
    nbytes = sum(os.path.getsize(path) for _, path in files)
    for _, path in files:  # into the page cache: every run reads from memory
        Path(path).read_bytes()
    cache_root = OUTPUT / "bench_cache"
    print(
        f"{len(files)} files, {nbytes / 1e9:.2f} GB, {os.cpu_count()} cores; load average "
        f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    sample = {"files": files, "codes": codes, "samples": samples}
    results = run_all(plan_runs(cache_root), args.repeat, sample)
    shutil.rmtree(cache_root, ignore_errors=True)

    floor = min(results["bare uproot, np"]["seconds"], results["bare uproot, ak"]["seconds"])
    tracks = results["bare uproot, ak"]["tracks"]
    floor_rate = tracks / floor
    rows = table_rows(results, floor_rate)
    print()
    print(
        f"{tracks:,} tracks, {len(files)} files ({nbytes / 1e9:.2f} GB, {args.compression}); "
        f"floor = bare uproot, one process: {floor_rate / 1e6:.2f} M tracks/s"
    )
    print_table(rows)

    # The issues' "done when" points, from this run.
    checks = [*memory_checks(results, 1), *memory_checks(results, 2)]
    checks += [*speed_checks(results, floor_rate), identity_check(results)]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    busiest = max(row["others_load"] for row in rows)
    if busiest > 0.25:
        print(
            f"\nWARNING: other processes kept up to {busiest:.1f} of the {os.cpu_count()} cores "
            "busy during these runs: the speed figures are not reliable; rerun on a quiet machine."
        )

    report = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_after": os.getloadavg(),
        },
        "sample": {
            "tracks": tracks,
            "files": len(files),
            "bytes": nbytes,
            "compression": args.compression,
        },
        "floor_tracks_per_s": floor_rate,
        "runs": rows,
        "checks": [{"check": text, "ok": ok} for text, ok in checks],
    }
    Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
