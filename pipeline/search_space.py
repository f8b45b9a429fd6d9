"""The space of a hyperparameter search (the `search_space` setting): setting name -> values.

    search_space = {
        "hidden_layers": [[64, 32], [128, 64, 32]],  # a list: choices, any values the setting takes
        "learning_rate": (1e-4, 1e-2, "log"),        # (low, high, "log"): log-uniform
        "dropout": (0.0, 0.3),                       # (low, high): uniform
        "batch_size": (256, 2048, "log"),            # integers for an integer setting
    }

Only model and training settings can be searched: every trial of a process trains on the same
tracks, loaded and balanced once. parse_space checks the structure (pipeline.settings checks
each value against the setting's own type and range); suggest draws a trial's settings with
Optuna, decode turns a stored trial's parameters back into settings. Nothing here imports
Optuna: the settings are checked before any library is loaded.
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEARCHABLE_SECTIONS = ("Model", "Training")
# Training settings a trial does not draw: search_epochs sets its epochs; one seed and one
# determinism setting keep trials comparable; the others change no result.
# Not searched: what a trial must not change, and the weights (computed once, with the data).
FIXED = ("epochs", "seed", "deterministic", "checkpoint_every", "monitor_every", "monitor_samples",
         "sample_weights", "track_weight")  # fmt: skip
# What Optuna stores as a categorical choice as it is; other values (lists) go in as their repr.
_PLAIN = (bool, int, float, str, type(None))


class SpaceError(ValueError):
    """A bad search space: what is wrong, and an example of a good entry."""

    def __init__(self, problem: str, example: str) -> None:
        super().__init__(problem)
        self.problem, self.example = problem, example


@dataclass(frozen=True)
class Choices:
    """A list of values to choose from."""

    values: tuple[Any, ...]

    def labels(self) -> list[Any]:
        """The choices as Optuna stores them: plain values as they are, others as text."""
        return [_label(value) for value in self.values]

    def candidates(self) -> tuple[Any, ...]:
        return self.values

    def describe(self, value: Any) -> str:
        return f"the choice {value!r}"


@dataclass(frozen=True)
class Range:
    """Numbers between low and high, uniform or log-uniform, integers or floats."""

    low: float
    high: float
    log: bool
    integer: bool

    def candidates(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def describe(self, value: Any) -> str:
        return f"the {'low' if value == self.low else 'high'} end {value!r}"


Dimension = Choices | Range


def _label(value: Any) -> Any:
    return value if isinstance(value, _PLAIN) else repr(value)


def parse_space(
    space: dict[str, Any], sections: dict[str, str], defaults: dict[str, Any]
) -> dict[str, Dimension]:
    """The dimensions of a search space; raises SpaceError on the first bad entry.

    sections and defaults: every setting's config.py section and default value.
    """
    if not space:
        raise SpaceError(
            "should name at least one setting", "{'learning_rate': (1e-4, 1e-2, 'log')}"
        )
    dimensions: dict[str, Dimension] = {}
    for name, entry in space.items():
        _check_name(name, sections)
        if isinstance(entry, list):
            dimensions[name] = _choices(name, entry)
        else:
            dimensions[name] = _range(name, entry, defaults[name])
    return dimensions


def _check_name(name: str, sections: dict[str, str]) -> None:
    searchable = [n for n, s in sections.items() if s in SEARCHABLE_SECTIONS and n not in FIXED]
    if name not in sections:
        close = difflib.get_close_matches(str(name), list(sections), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpaceError(f"names {name!r}, which is no setting{hint}", f"one of {searchable}")
    if name not in searchable:
        why = (
            "search_epochs sets the epochs of a trial"
            if name == "epochs"
            else "trials share the data, the seed and the outputs of one search"
        )
        raise SpaceError(
            f"names {name!r}, which cannot be searched ({why})", f"one of {searchable}"
        )


def _choices(name: str, entry: list) -> Choices:
    example = f"{name!r}: [choice, choice, ...]"
    if not entry:
        raise SpaceError(f"gives {name!r} no choices", example)
    labels = [_label(value) for value in entry]
    if len(set(map(repr, labels))) != len(labels):
        raise SpaceError(f"lists a choice of {name!r} twice", example)
    return Choices(tuple(entry))


def _range(name: str, entry: Any, default: Any) -> Range:
    example = f"{name!r}: (low, high) or (low, high, 'log'), or a list of choices"
    if not isinstance(entry, tuple) or len(entry) not in (2, 3):
        raise SpaceError(f"gives {name!r} {entry!r}, neither a list nor a range", example)
    low, high, *scale = entry
    if scale and scale[0] != "log":
        raise SpaceError(f"gives {name!r} the scale {scale[0]!r}; the only one is 'log'", example)
    if isinstance(default, bool) or not isinstance(default, int | float):
        raise SpaceError(
            f"gives {name!r} a range, but it is not a number", f"{name!r}: [{default!r}, ...]"
        )
    integer = isinstance(default, int)
    for bound in (low, high):
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
        ):
            raise SpaceError(f"gives {name!r} the bound {bound!r}, not a finite number", example)
        if integer and not isinstance(bound, int):
            raise SpaceError(f"gives the integer setting {name!r} the bound {bound!r}",
                             f"{name!r}: ({int(low)}, {int(high)})")  # fmt: skip
    if not low < high:
        swapped = (high, low, *scale)
        raise SpaceError(f"gives {name!r} the range {entry!r}; low should be < high",
                         f"{name!r}: {swapped!r}")  # fmt: skip
    if scale and low <= 0:
        raise SpaceError(f"gives {name!r} the log range {entry!r}; low should be > 0",
                         f"{name!r}: ({default or 1e-6!r}, {high!r}, 'log')")  # fmt: skip
    if integer:
        return Range(low, high, bool(scale), integer=True)
    return Range(float(low), float(high), bool(scale), integer=False)


def check_search_settings(
    cfg: dict[str, Any],
    sections: dict[str, str],
    defaults: dict[str, Any],
    problem_of: Callable[[str, Any], str | None],
) -> tuple[str, str, str] | None:
    """The first problem of the search settings as (setting, what is wrong, an example), or
    None. problem_of(name, value): what the setting's own check says of a value, or None."""
    try:
        dimensions = parse_space(cfg["search_space"], sections, defaults)
    except SpaceError as error:
        return "search_space", error.problem, error.example
    for name, dimension in dimensions.items():
        for value in dimension.candidates():
            problem = problem_of(name, value)
            if problem is not None:
                good = defaults["search_space"].get(name, [defaults[name]])
                text = f"gives {name!r} {dimension.describe(value)}, which {problem}"
                return "search_space", text, f"{name!r}: {good!r}"
    if cfg["search_storage"]:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(cfg["search_storage"])
        except ArgumentError:
            return ("search_storage", "is no database URL ('' for search/study.db in the search "
                    "folder)", "sqlite:///searches/dnn.db")  # fmt: skip
    return None


# ---------------------------------------------------------------------------------------------
# With Optuna
# ---------------------------------------------------------------------------------------------
def suggest(trial: Any, dimensions: dict[str, Dimension]) -> dict[str, Any]:
    """A trial's settings, drawn by Optuna's trial (its sampler decides)."""
    values: dict[str, Any] = {}
    for name, dimension in dimensions.items():
        if isinstance(dimension, Choices):
            label = trial.suggest_categorical(name, dimension.labels())
            values[name] = dimension.values[dimension.labels().index(label)]
        elif dimension.integer:
            values[name] = trial.suggest_int(name, dimension.low, dimension.high, log=dimension.log)
        else:
            values[name] = trial.suggest_float(
                name, dimension.low, dimension.high, log=dimension.log
            )
    return values


def decode(params: dict[str, Any], dimensions: dict[str, Dimension]) -> dict[str, Any]:
    """Settings from the parameters Optuna stored for a trial."""
    values: dict[str, Any] = {}
    for name, label in params.items():
        dimension = dimensions.get(name)
        if isinstance(dimension, Choices) and label in dimension.labels():
            values[name] = dimension.values[dimension.labels().index(label)]
        elif isinstance(label, str) and label[:1] in "[(":
            values[name] = ast.literal_eval(label)  # a list choice of another space's version
        else:
            values[name] = label
    return values


def describe(space: dict[str, Any]) -> str:
    """The space as text, a fingerprint that tells whether two processes search the same."""
    return repr(sorted((name, repr(entry)) for name, entry in space.items()))
