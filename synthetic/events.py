"""Events and vertices: multiplicities, beam spot, generated and reconstructed vertices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.detector import BEAMSPOT, BEAMSPOT_SIGMA_Z
from synthetic.tables import Process

EMPTY_EVENT_FRACTION = 0.02  # events with no reconstructed track at all
FAILED_VERTEX_FRACTION = 0.001  # events whose vertex reconstruction found no good vertex


@dataclass
class Events:
    counts: np.ndarray  # reconstructed tracks per event
    n_hard: np.ndarray  # of which from the hard scatter (before emptying events)
    n_pu_vtx: np.ndarray  # generated pileup vertices per event
    evt: np.ndarray  # event of each track
    rank: np.ndarray  # position of each track in its event
    occupancy: np.ndarray  # per track: how busy its event is (1 at 100 tracks)
    bsp: list[np.ndarray]  # beam spot x, y, z per event
    raw_evt: np.ndarray  # event of each generated vertex (the hard scatter first)
    raw_off: np.ndarray  # first generated vertex of each event, and the total at the end
    raw_xyz: list[np.ndarray]  # generated vertex positions


def rank_in_group(group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Position of each element inside its (contiguous) group: 0, 1, ... per group."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(group)) - starts[group]


def generate_layout(rng: np.random.Generator, proc: Process, events: int) -> Events:
    """Track multiplicities (hard scatter + pileup), beam spot and generated vertices."""
    n_pu_vtx = rng.poisson(proc.pileup, events)
    # Negative binomial hard-scatter multiplicity: QCD-like long tail.
    n_hard = rng.poisson(rng.gamma(3.0, proc.hard_tracks / 3.0, events))
    n_pu = rng.poisson(proc.tracks_per_pileup * n_pu_vtx)
    counts = (n_hard + n_pu).astype(np.int64)
    counts[rng.random(events) < EMPTY_EVENT_FRACTION] = 0
    evt = np.repeat(np.arange(events), counts)
    bsp = [
        np.full(events, c, dtype=np.float64) + rng.normal(0, s, events)
        for c, s in zip(BEAMSPOT, (2e-4, 2e-4, 0.05), strict=True)
    ]
    n_raw_vtx = 1 + n_pu_vtx
    raw_evt = np.repeat(np.arange(events), n_raw_vtx)
    raw_xyz = [
        bsp[k][raw_evt] + rng.normal(0, s, len(raw_evt))
        for k, s in enumerate((0.0012, 0.0012, BEAMSPOT_SIGMA_Z))
    ]
    return Events(
        counts=counts,
        n_hard=n_hard,
        n_pu_vtx=n_pu_vtx,
        evt=evt,
        rank=rank_in_group(evt, counts),
        occupancy=(counts[evt] / 100.0) ** 0.25,  # busier events have more fakes
        bsp=bsp,
        raw_evt=raw_evt,
        raw_off=np.concatenate([[0], np.cumsum(n_raw_vtx)]),
        raw_xyz=raw_xyz,
    )


def assign_vertices(rng: np.random.Generator, ev: Events) -> np.ndarray:
    """The generated vertex each track comes from (fakes: the one their seed was built near)."""
    n = len(ev.evt)
    from_hard = rng.random(n) < ev.n_hard[ev.evt] / np.maximum(ev.counts[ev.evt], 1)
    pu_pick = (rng.random(n) * ev.n_pu_vtx[ev.evt]).astype(np.int64)
    no_pileup = ev.n_pu_vtx[ev.evt] == 0
    return ev.raw_off[ev.evt] + np.where(from_hard | no_pileup, 0, 1 + pu_pick)


@dataclass
class Vertices:
    arrays: dict[str, np.ndarray]  # vtx_x/y/z/ndof/chi2 of all events concatenated
    counts: np.ndarray  # per event
    keep: np.ndarray  # per generated vertex: reconstructed as a good vertex
    local_index: np.ndarray  # per generated vertex: its index among its event's vertices
    offsets: np.ndarray  # first vertex of each event in ``arrays``


def reconstruct_vertices(
    rng: np.random.Generator, ev: Events, raw_vertex: np.ndarray, prompt: np.ndarray
) -> Vertices:
    """Good vertices: generated vertices with >= 2 prompt true tracks, in an event whose vertex
    reconstruction worked. An event without any keeps the fake vertex at the beam spot
    (ndof 0), as offlinePrimaryVertices does."""
    events = len(ev.counts)
    n_assoc = np.bincount(raw_vertex[prompt], minlength=len(ev.raw_evt))
    failed_event = rng.random(events) < FAILED_VERTEX_FRACTION
    keep = (n_assoc >= 2) & ~failed_event[ev.raw_evt]
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    local_index = kept_before[:-1] - kept_before[ev.raw_off[:-1]][ev.raw_evt]
    n_kept = np.bincount(ev.raw_evt[keep], minlength=events)
    fake_vertex = n_kept == 0
    counts = np.where(fake_vertex, 1, n_kept).astype(np.int64)
    order = np.argsort(
        np.concatenate([ev.raw_evt[keep], np.flatnonzero(fake_vertex)]), kind="stable"
    )
    ndof = 2 * (0.85 * n_assoc[keep] + rng.normal(0, 0.3, keep.sum())) - 3
    arrays = {
        f"vtx_{c}": np.concatenate([ev.raw_xyz[k][keep], ev.bsp[k][fake_vertex]])[order]
        for k, c in enumerate("xyz")
    }
    arrays["vtx_ndof"] = np.concatenate([np.maximum(ndof, 0.5), np.zeros(fake_vertex.sum())])[order]
    arrays["vtx_chi2"] = arrays["vtx_ndof"] * rng.gamma(20, 1 / 20, len(arrays["vtx_ndof"]))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Vertices(arrays, counts, keep, local_index, offsets)


def closest_vertex(
    evt: np.ndarray, z: np.ndarray, vtx_evt: np.ndarray, vtx_z: np.ndarray, vtx_index: np.ndarray
) -> np.ndarray:
    """For each track (event, z), ``vtx_index`` of the vertex of its event closest in z, or -1.

    One binary search over (event, z) keys: the nearest vertex is a neighbour of the insertion
    point, below or above it.
    """
    key = vtx_evt * 1e4 + vtx_z  # |z| stays far below 5e3 cm, so events never overlap
    order = np.argsort(key)
    key, vtx_evt, vtx_index = key[order], vtx_evt[order], vtx_index[order]
    track_key = evt * 1e4 + z
    pos = np.searchsorted(key, track_key)
    best, best_dist = np.full(len(evt), -1), np.full(len(evt), np.inf)
    for candidate in (pos - 1, pos) if len(key) else ():
        c = np.clip(candidate, 0, len(key) - 1)
        same_event = (candidate >= 0) & (candidate < len(key)) & (vtx_evt[c] == evt)
        dist = np.where(same_event, np.abs(key[c] - track_key), np.inf)
        better = dist < best_dist
        best, best_dist = np.where(better, vtx_index[c], best), np.where(better, dist, best_dist)
    return best
