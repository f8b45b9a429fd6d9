"""Synthetic trackingNtuple files: the embedded sample of the project and a CLI tool.

    python make_ntuples.py --out data/synthetic/qcd --events 300 --process qcd --seed 1

The files have the layout that CMSSW's TrackingNtuple module (Validation/RecoTrack) writes:
TDirectory ``trackingNtuple``, TTree ``tree``, one entry per event, every ``trk_*`` branch with
its element type there, plus ``event``/``lumi``/``run``, ``vtx_*`` and ``bsp_*``. Two writers
(synthetic/write_uproot.py, synthetic/write_root.py): ``uproot``, fast, counter-based jagged
branches, label trk_isTrue only; ``root``, real ROOT in a child process, CMSSW's exact
``std::vector`` layout, either label convention.

The tracks come from ``generate_events`` of the ``synthetic`` package (its physics, stage by
stage, is described there and in README.md); this module writes them. ``generate_events``
returns ``(counts, arrays)``: tracks per event, and flat arrays of every branch of
``TRACK_BRANCHES`` plus ``trk_isTrue``, the simulation matches (``simTrkIdx_counts``,
``simTrkIdx_flat``, ``simTrkShareFrac_flat``), the event, beam-spot and vertex branches.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import uproot

from cmssw.ntuple import LABEL_BRANCHES
from pipeline.console import progress as progress_bar
from pipeline.files import atomic_path, temporary_name
from synthetic import generate_events
from synthetic.layout import (
    BEAMSPOT_BRANCHES,
    COMPRESSION_LEVELS,
    EVENT_BRANCHES,
    TRACK_BRANCHES,
    VERTEX_BRANCHES,
)
from synthetic.tables import PROCESS_NAMES
from synthetic.write_root import RootWriterProcess, save_npz
from synthetic.write_uproot import write_uproot

__all__ = [
    "BEAMSPOT_BRANCHES",
    "EVENT_BRANCHES",
    "PROCESS_NAMES",
    "TRACK_BRANCHES",
    "VERTEX_BRANCHES",
    "generate_events",
    "generate_sample",
    "main",
    "write_ntuple",
]

LABELS = LABEL_BRANCHES  # the two label conventions, either one written
WRITERS = ("auto", "uproot", "root")


def _check_options(label: str, compression: str, writer: str) -> str:
    """Validate the options; returns the concrete writer ("uproot" or "root")."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} (--label): choose one of {LABELS}")
    if compression not in COMPRESSION_LEVELS:
        raise ValueError(
            f"unknown compression {compression!r} (--compression): "
            f"choose one of {tuple(COMPRESSION_LEVELS)}"
        )
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r} (--writer): choose one of {WRITERS}")
    if writer == "auto":
        return "uproot" if label == "trk_isTrue" else "root"
    if writer == "uproot" and label == "trk_simTrkIdx":
        raise ValueError(
            "uproot cannot write the std::vector<std::vector<int>> branch trk_simTrkIdx: "
            "use --writer root (or auto) with --label trk_simTrkIdx, or --label trk_isTrue"
        )
    return writer


def write_ntuple(
    path: str | os.PathLike,
    counts: np.ndarray,
    arrays: dict[str, np.ndarray],
    *,
    label: str = "trk_isTrue",
    compression: str = "ZLIB",
    writer: str = "auto",
) -> Path:
    """Write one trackingNtuple file from ``generate_events`` output; returns its path.

    The file is written under a temporary name in the same folder and renamed at the end, so
    a half-written file never exists under ``path`` (also on errors and Ctrl-C).
    """
    writer = _check_options(label, compression, writer)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist (--out)")
    with atomic_path(path) as tmp:
        if writer == "uproot":
            codec = getattr(uproot, compression)(COMPRESSION_LEVELS[compression])
            write_uproot(tmp, counts, arrays, codec)
        else:
            npz = save_npz(path, counts, arrays)
            try:
                with RootWriterProcess() as child:
                    child.submit(npz, tmp, label, compression)
                    child.wait()
            finally:
                npz.unlink(missing_ok=True)
    return path


def generate_sample(
    out_dir: str | os.PathLike,
    process: str,
    events: int,
    seed: int,
    label: str = "trk_isTrue",
    events_per_file: int = 100,
    compression: str = "ZLIB",
    writer: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Generate a sample as files ``<process>_<seed>_<k>.root`` in ``out_dir``; returns them.

    File k is generated from (seed, k): deterministic, and different from the other files.
    With the ROOT writer one child process writes file k while this one generates file k+1.
    """
    writer = _check_options(label, compression, writer)
    if events < 1:
        raise ValueError(f"--events must be >= 1, got {events}")
    if events_per_file < 1:
        raise ValueError(f"--events-per-file must be >= 1, got {events_per_file}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, events, events_per_file))
    paths = [out_dir / f"{process}_{seed}_{k}.root" for k in range(len(starts))]
    start_time, tracks = time.perf_counter(), 0
    bar = progress_bar(
        total=events, unit="evt", desc=f"{process} -> {out_dir}", disable=not progress
    )
    pending: list[tuple[Path, Path, Path]] = []  # (final, temporary, npz) submitted to ROOT
    child = RootWriterProcess() if writer == "root" else None
    try:
        for k, (start, path) in enumerate(zip(starts, paths, strict=True)):
            n_events = min(events_per_file, events - start)
            counts, arrays = generate_events(
                process, n_events, seed, file_index=k, first_event=start + 1
            )
            tracks += int(counts.sum())
            if child is None:
                write_ntuple(
                    path, counts, arrays, label=label, compression=compression, writer=writer
                )
            else:
                tmp, npz = temporary_name(path), save_npz(path, counts, arrays)
                pending.append((path, tmp, npz))
                child.submit(npz, tmp, label, compression)
                if len(pending) > 1:  # keep one file in flight while generating the next
                    _finish(child, pending.pop(0))
            bar.update(n_events)
        while pending:
            _finish(child, pending.pop(0))
    finally:
        bar.close()
        if child is not None:
            if pending:
                child.process.kill()
            child.close()
        for _, tmp, npz in pending:
            tmp.unlink(missing_ok=True)
            npz.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start_time
    if progress:
        print(
            f"{process}: {events} events, {tracks} tracks in {len(paths)} files in {out_dir} "
            f"({tracks / max(elapsed, 1e-9):,.0f} tracks/s, {writer} writer, {compression})"
        )
    return paths


def _finish(child: RootWriterProcess, job: tuple[Path, Path, Path]) -> None:
    """Wait for one file of the ROOT child and move it to its final name."""
    path, tmp, npz = job
    try:
        child.wait()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        npz.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--process", required=True, choices=PROCESS_NAMES)
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    parser.add_argument(
        "--label",
        default="trk_isTrue",
        choices=LABELS,
        help="label convention: trk_isTrue branch, or trk_simTrkIdx (needs ROOT)",
    )
    parser.add_argument("--compression", default="ZLIB", choices=tuple(COMPRESSION_LEVELS))
    parser.add_argument("--events-per-file", type=int, default=100)
    parser.add_argument(
        "--writer",
        default="auto",
        choices=WRITERS,
        help="auto: uproot for trk_isTrue, root for trk_simTrkIdx",
    )
    args = parser.parse_args(argv)
    try:
        generate_sample(
            args.out,
            args.process,
            args.events,
            args.seed,
            label=args.label,
            events_per_file=args.events_per_file,
            compression=args.compression,
            writer=args.writer,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.exit(2, f"make_ntuples.py: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "make_ntuples.py: interrupted (no partial file was left)\n")


if __name__ == "__main__":
    main()
