"""What main.py does to the loaded tracks before training, for scripts of your own: keep the
classified iterations, balance them, split by events, weight them, count them.

The code lives in the tracks package (tracks/balance.py, tracks/weights.py, tracks/tables.py);
this module is its front door.
"""

from tracks.balance import balance_iterations, finite_inputs, select_iterations, split_by_events
from tracks.tables import format_track_table, track_table
from tracks.weights import training_weights

__all__ = [
    "balance_iterations",
    "finite_inputs",
    "format_track_table",
    "select_iterations",
    "split_by_events",
    "track_table",
    "training_weights",
]
