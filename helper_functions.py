"""Small pieces main.py needs: the iteration enum, the configuration, balancing and splitting."""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import os
import pprint
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmssw.ntuple import ALGORITHM_NAMES, ALGORITHMS

STAGES = ["all", "load", "balance", "train", "freeze", "evaluate"]


# ---------------------------------------------------------------------------------------------
# Configuration: config.py, then an optional --config file, then command-line overrides
# ---------------------------------------------------------------------------------------------
def default_config() -> dict[str, Any]:
    """The settings of config.py as a plain dict."""
    import config

    return _settings_of(vars(config))


def load_config(argv: list[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Parse the command line into (settings, pipeline arguments).

    Every setting of config.py is a ``--name VALUE`` option; VALUE is read as a Python literal
    (``--hidden_layers "[64, 32]"``, ``--batch_norm False``) and falls back to a plain string.
    With ``--run`` and no ``--config``, the run's own saved config.py is the base.
    """
    defaults = default_config()
    parser = argparse.ArgumentParser(
        description="Train the CMSSW track classifier DNN: load -> balance -> train -> freeze.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", type=Path, help="a Python file of settings overriding config.py"
    )
    parser.add_argument("--stage", default="all", choices=STAGES, help="run only this stage")
    parser.add_argument("--run", type=Path, help="an existing run folder to work in")
    settings = parser.add_argument_group("settings (config.py)")
    for name, value in defaults.items():
        settings.add_argument(
            f"--{name}", type=_literal, default=None, metavar=type(value).__name__
        )
    args = parser.parse_args(argv)

    cfg = dict(defaults)
    base = args.config
    if base is None and args.run is not None and (args.run / "config.py").exists():
        base = args.run / "config.py"
    if base is not None:
        cfg.update(_read_config_file(base, defaults))
    for name in defaults:
        value = getattr(args, name)
        if value is not None:
            cfg[name] = _checked(name, value, defaults, "the command line")
    return cfg, args


def write_config(cfg: dict[str, Any], path: Path) -> None:
    """Write the settings as a config file that ``--config`` reads back."""
    lines = ['"""Effective settings of this run: python main.py --config <this file>."""', ""]
    lines += [
        f"{name} = {pprint.pformat(value, width=100, sort_dicts=False)}"
        for name, value in cfg.items()
    ]
    write_atomically(path, "\n".join(lines) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write text to a temporary name beside path, then rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _settings_of(namespace: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and not callable(value)
        and not isinstance(value, types.ModuleType)
    }


def _read_config_file(path: Path, defaults: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"--config {path}: no such file. Give the path of a Python settings file.")
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # a config file is trusted code
    namespace.pop("__builtins__", None)
    settings = _settings_of(namespace)
    return {name: _checked(name, value, defaults, str(path)) for name, value in settings.items()}


def _checked(name: str, value: Any, defaults: dict[str, Any], origin: str) -> Any:
    """Reject unknown settings and values of the wrong kind, naming where they came from."""
    if name not in defaults:
        close = difflib.get_close_matches(name, defaults, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SystemExit(
            f"{origin}: unknown setting '{name}'.{hint} Settings are those of config.py."
        )
    default = defaults[name]
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) == isinstance(default, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float))
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise SystemExit(
            f"{origin}: setting '{name}' = {value!r} should be of type {type(default).__name__}, "
            f"like the default {default!r}."
        )
    return value


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as --run_name test or --lr_schedule plateau


# ---------------------------------------------------------------------------------------------
# Balancing and splitting
# ---------------------------------------------------------------------------------------------
def balance_iterations(
    df: pd.DataFrame,
    iterations: list[str],
    seed: int = 0,
    balance_true_fake: bool = False,
    max_per_iteration: int = 0,
    algo_column: str = "trk_originalAlgo",
    label_column: str = "trk_isTrue",
) -> pd.DataFrame:
    """Keep the tracks of the classified iterations, each downsampled to the size of the smallest.

    With balance_true_fake, every iteration contributes the same number of true and of fake
    tracks (the smallest such count over iterations). Iterations with no track are left out of
    the minimum, with a warning. The rows are picked by index and copied once, in file order.
    """
    rng = np.random.default_rng(seed)
    algo = df[algo_column].to_numpy()
    groups: dict[str, list[np.ndarray]] = {}
    for name in iterations:
        rows = np.flatnonzero(algo == ALGORITHMS[name])
        if balance_true_fake:
            is_true = df[label_column].to_numpy()[rows] == 1
            groups[name] = [rows[is_true], rows[~is_true]]
        else:
            groups[name] = [rows]
    present = {name: parts for name, parts in groups.items() if all(len(p) for p in parts)}
    for name in groups.keys() - present.keys():
        what = "true or fake tracks" if balance_true_fake else "tracks"
        message = f"balance_iterations: no {what} of {name}; it is left out of the balancing"
        warnings.warn(message, stacklevel=2)
    if not present:
        raise ValueError(
            f"balance_iterations: none of the iterations {iterations} has tracks in the training "
            f"samples; check the 'iterations' setting and the samples' {algo_column}."
        )
    size = min(len(p) for parts in present.values() for p in parts)
    if max_per_iteration:
        size = min(size, max_per_iteration // (2 if balance_true_fake else 1))
    keep = [rng.choice(p, size, replace=False) for parts in present.values() for p in parts]
    return df.take(np.sort(np.concatenate(keep))).reset_index(drop=True)


def select_iterations(
    df: pd.DataFrame, iterations: list[str], algo_column: str = "trk_originalAlgo"
) -> pd.DataFrame:
    """The tracks of the classified iterations, all of them (no balancing), index reset."""
    algos = [ALGORITHMS[name] for name in iterations]
    return df[df[algo_column].isin(algos)].reset_index(drop=True)


def split_by_events(
    df: pd.DataFrame, fractions: list[float], seed: int = 0, event_column: str = "event_index"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split into train / validation / test by whole events: an event's tracks stay together."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions = {fractions}: give three fractions >= 0 summing to 1.")
    events = df[event_column].to_numpy()
    unique = np.unique(events)
    np.random.default_rng(seed).shuffle(unique)
    bounds = np.round(np.cumsum(fractions)[:2] * len(unique)).astype(int)
    split_of_event = np.zeros(int(unique.max(initial=0)) + 1, dtype=np.int8)
    split_of_event[unique[bounds[0] : bounds[1]]] = 1
    split_of_event[unique[bounds[1] :]] = 2
    split = split_of_event[events]
    return tuple(df[split == k].reset_index(drop=True) for k in range(3))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# What the user sees: stage timings and track tables
# ---------------------------------------------------------------------------------------------
class StageTimer:
    """Times the stages of a run and prints each one as it starts and ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"--- {name} done in {self.seconds[name]:.1f} s", flush=True)


def track_table(
    df: pd.DataFrame, algo_column: str = "trk_originalAlgo", label_column: str = "trk_isTrue"
) -> pd.DataFrame:
    """Tracks and true fraction per sample and iteration, with per-sample totals ("all")."""
    iteration = df[algo_column].map(ALGORITHM_NAMES).fillna("unknown").rename("iteration")
    sample = df["sample"].astype(str).rename("sample")
    per_iteration = df.groupby([sample, iteration])[label_column].agg(["size", "mean"])
    totals = df.groupby(sample)[label_column].agg(["size", "mean"])
    totals.index = pd.MultiIndex.from_product(
        [totals.index, ["all"]], names=["sample", "iteration"]
    )
    table = pd.concat([per_iteration, totals]).sort_index()
    table.columns = ["tracks", "true fraction"]
    return table


def format_track_table(table: pd.DataFrame) -> str:
    """One row per iteration, one column per sample: "tracks (true %)"."""
    cells = table["tracks"].map("{:,}".format) + table["true fraction"].map(" ({:.0%})".format)
    wide = cells.unstack("sample").fillna("-")
    order = [name for name in ALGORITHMS if name in wide.index] + ["all"]
    return wide.reindex(order).to_string()
