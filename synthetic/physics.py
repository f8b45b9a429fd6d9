"""generate_events: the synthetic sample, stage by stage.

1. events and vertices (events.py): multiplicities of hard scatter and pileup, beam spot;
2. truth and fakes (truth.py): iteration, true or fake, and the kind of fake;
3. track kinematics and origin (kinematics.py);
4. hit pattern (hits.py);
5. fit quality and momentum states (fit.py), and real data's pathologies (artefacts.py);
6. impact parameters and reconstructed vertices (impact.py, events.py);
7. simulation matches, the old classifier and the bookkeeping (classifier.py).
"""

from __future__ import annotations

import numpy as np

from synthetic import events as ev_stage
from synthetic.artefacts import add_nan, pathological_tracks
from synthetic.classifier import bookkeeping, old_classifier, sim_matches
from synthetic.fit import fit_quality, momentum_states
from synthetic.hits import hit_pattern
from synthetic.impact import impact_parameters
from synthetic.kinematics import track_kinematics, track_origin
from synthetic.layout import BEAMSPOT_BRANCHES, TRACK_BRANCHES, VERTEX_BRANCHES
from synthetic.tables import PROCESS_NAMES, PROCESSES
from synthetic.truth import assign_truth


def generate_events(
    process: str, events: int, seed: int, *, file_index: int = 0, first_event: int = 1
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generate ``events`` events of ``process``; returns (tracks per event, flat arrays).

    - ``counts``: int64 [events], tracks per event;
    - ``arrays["trk_*"]``: one flat array per branch of ``TRACK_BRANCHES`` (all tracks of all
      events concatenated, the ntuple's element types), plus ``trk_isTrue`` (int16, the truth);
    - ``arrays["simTrkIdx_counts"]``: int64 [tracks], matched simulated particles per track (0
      for fakes, 1 or 2 for true tracks); ``simTrkIdx_flat`` (int32) and
      ``simTrkShareFrac_flat`` (float32): the matches of all tracks concatenated;
    - per event: ``event`` (uint64), ``lumi``, ``run`` (uint32), ``bsp_x/y/z`` (float32),
      ``vtx_counts`` (int64, vertices per event); ``vtx_*``: the vertices concatenated.

    The same (seed, file_index) gives bitwise-identical arrays; ``first_event`` numbers the
    events.
    """
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r} (--process): choose one of {PROCESS_NAMES}")
    if events < 0:
        raise ValueError(f"--events must be >= 0, got {events}")
    proc = PROCESSES[process]
    rng = np.random.default_rng([seed, file_index])

    ev = ev_stage.generate_layout(rng, proc, events)
    raw_vertex = ev_stage.assign_vertices(rng, ev)
    truth = assign_truth(rng, process, proc, ev)
    kin = track_kinematics(rng, proc, ev, truth)
    origin = track_origin(rng, proc, ev, truth, kin, raw_vertex)
    hp = hit_pattern(rng, truth, kin, origin)
    fit = fit_quality(rng, truth, kin, hp)
    no_vertex = pathological_tracks(rng, kin, hp, fit)
    states = momentum_states(rng, truth, kin, hp, fit)
    vertices = ev_stage.reconstruct_vertices(rng, ev, raw_vertex, origin.prompt)
    ip = impact_parameters(rng, ev, vertices, raw_vertex, truth, kin, origin, fit, no_vertex)

    tracks = _track_columns(kin, hp, fit, states, ip, truth)
    n_valid = hp.n_pixel + hp.n_strip
    sim = sim_matches(rng, ev.evt, events, truth.is_true, n_valid)
    tracks.update(
        {
            "trk_nValid": n_valid,
            "trk_nCluster": n_valid,
            "trk_bestSimTrkIdx": sim.best_idx,
            "trk_bestSimTrkShareFrac": sim.best_share,
            "trk_bestSimTrkNChi2": sim.best_nchi2,
        }
    )
    tracks["trk_mva"] = old_classifier(rng, tracks)
    tracks.update(bookkeeping(rng, truth.it, truth.algo, tracks["trk_mva"], hp.stopped, kin.pt))

    arrays = {name: np.asarray(tracks[name]).astype(t) for name, t in TRACK_BRANCHES.items()}
    arrays["trk_isTrue"] = truth.is_true.astype(np.int16)
    add_nan(rng, arrays)
    arrays["simTrkIdx_counts"] = sim.counts
    arrays["simTrkIdx_flat"] = sim.idx
    arrays["simTrkShareFrac_flat"] = sim.frac
    arrays["event"] = np.arange(first_event, first_event + events, dtype=np.uint64)
    arrays["lumi"] = (1 + (arrays["event"] - 1) // 500).astype(np.uint32)
    arrays["run"] = np.ones(events, dtype=np.uint32)
    for name, values in zip(BEAMSPOT_BRANCHES, ev.bsp, strict=True):
        arrays[name] = values.astype(np.float32)
    arrays["vtx_counts"] = vertices.counts
    for name in VERTEX_BRANCHES:
        arrays[name] = vertices.arrays[name].astype(np.float32)
    return ev.counts, arrays


def _track_columns(kin, hp, fit, states, ip, truth) -> dict[str, np.ndarray]:
    """The track branches that are a stage's result as they are."""
    pt, eta = kin.pt, kin.eta
    inner, outer = states.inner, states.outer
    return {
        "trk_px": pt * np.cos(kin.phi),
        "trk_py": pt * np.sin(kin.phi),
        "trk_pz": pt * np.sinh(eta),
        "trk_pt": pt,
        "trk_inner_px": inner[0],
        "trk_inner_py": inner[1],
        "trk_inner_pz": inner[2],
        "trk_inner_pt": np.hypot(inner[0], inner[1]),
        "trk_outer_px": outer[0],
        "trk_outer_py": outer[1],
        "trk_outer_pz": outer[2],
        "trk_outer_pt": np.hypot(outer[0], outer[1]),
        "trk_eta": eta,
        "trk_lambda": np.arctan(np.sinh(eta)),
        "trk_cotTheta": np.sinh(eta),
        "trk_phi": kin.phi,
        "trk_dxy": ip.dxy,
        "trk_dz": ip.dz,
        "trk_dxyPV": ip.dxy_pv,
        "trk_dzPV": ip.dz_pv,
        "trk_dxyClosestPV": ip.dxy_closest,
        "trk_dzClosestPV": ip.dz_closest,
        "trk_ptErr": fit.pt_err,
        "trk_etaErr": fit.eta_err,
        "trk_lambdaErr": fit.lambda_err,
        "trk_phiErr": fit.phi_err,
        "trk_dxyErr": fit.dxy_err,
        "trk_dzErr": fit.dz_err,
        "trk_refpoint_x": ip.refpoint[0],
        "trk_refpoint_y": ip.refpoint[1],
        "trk_refpoint_z": ip.refpoint[2],
        "trk_nChi2": fit.nchi2,
        "trk_nChi2_1Dmod": fit.nchi2_1d,
        "trk_ndof": hp.ndof,
        "trk_nLost": hp.n_lost,
        "trk_nInactive": hp.n_inactive,
        "trk_nPixel": hp.n_pixel,
        "trk_nStrip": hp.n_strip,
        "trk_nOuterLost": hp.n_outer_lost,
        "trk_nInnerLost": hp.n_inner_lost,
        "trk_nOuterInactive": hp.n_outer_inactive,
        "trk_nInnerInactive": hp.n_inner_inactive,
        "trk_nPixelLay": hp.n_pixel_lay,
        "trk_nStripLay": hp.n_strip_lay,
        "trk_n3DLay": hp.n_3d_lay,
        "trk_nLostLay": hp.n_lost_lay,
        "trk_originalAlgo": truth.algo,
        "trk_q": kin.q,
        "trk_vtxIdx": ip.vtx_idx,
    }
