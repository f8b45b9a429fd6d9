"""Truth and fakes: which iteration built each track, whether it is true, and how a fake arose.

Fakes come in two kinds, as in CMS tracking in pileup:

- combinatorial: a seed of unrelated hits, continued with whatever hits fit. Such candidates
  mostly stop after a few layers, leave holes, fit badly and point anywhere inside the seeding
  region;
- ghost: assembled from pieces of real particles (a seed of one particle continued on another's
  hits, mostly in dense jets). Long like true tracks, but with a kink, holes and a poor fit.

The fake fraction of an iteration grows with the occupancy of the event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.events import Events
from synthetic.tables import ITERATION_CODES, ITERATIONS, NAMES, Process, column

TRUE, COMBINATORIAL, GHOST = 0, 1, 2  # values of Truth.kind


def by_kind(table: dict[int, float], kind: np.ndarray) -> np.ndarray:
    """table[TRUE | COMBINATORIAL | GHOST] for each track's kind."""
    return np.array([table[TRUE], table[COMBINATORIAL], table[GHOST]])[kind]


MAX_FAKE_FRACTION = 0.85


@dataclass
class Truth:
    it: np.ndarray  # index of the iteration in tables.NAMES
    algo: np.ndarray  # its reco::TrackBase::TrackAlgorithm value
    is_true: np.ndarray  # matched to a simulated particle
    kind: np.ndarray  # TRUE, COMBINATORIAL or GHOST
    is_electron: np.ndarray  # the electrons of Z -> ee


def assign_truth(rng: np.random.Generator, process: str, proc: Process, ev: Events) -> Truth:
    """Iteration by the process's populations, truth by the iteration's fake fraction."""
    n = len(ev.evt)
    weights = np.array([proc.weights.get(k, ITERATIONS[k].weight) for k in NAMES])
    it = rng.choice(len(NAMES), size=n, p=weights / weights.sum())
    fake_prob = np.minimum(column("fake")[it] * ev.occupancy, MAX_FAKE_FRACTION)
    is_true = rng.random(n) >= fake_prob

    # Z -> ee: the two leading tracks of each event are the electrons, true and prompt.
    is_electron = (process == "zee") & (ev.rank < 2) & (ev.counts[ev.evt] >= 2)
    it[is_electron] = NAMES.index("initialStep")
    is_true |= is_electron

    ghost = rng.random(n) < column("ghost")[it]
    kind = np.where(is_true, TRUE, np.where(ghost, GHOST, COMBINATORIAL)).astype(np.int8)
    algo = ITERATION_CODES[it]
    return Truth(it=it, algo=algo, is_true=is_true, kind=kind, is_electron=is_electron)
