"""The physics of the synthetic trackingNtuple sample (make_ntuples.py writes it to files).

``generate_events`` (physics.py) runs the stages: events and vertices, truth and fakes, track
kinematics, hit pattern, fit quality, impact parameters, simulation matches and the old
classifier; each stage is a module of this package.
"""

from synthetic.physics import generate_events

__all__ = ["generate_events"]
