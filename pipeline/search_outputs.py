"""What a hyperparameter search leaves in search/ of its run folder, for the whole study (the
trials of every process that shares it):

    trials.csv                one row per trial: number, state, value (best validation loss),
                              epochs, duration, run folder, host, the searched settings' values
    optimization_history.png  the value of each trial, and the best so far
    slice.png                 the value against each searched setting
    intermediate_values.png   the validation loss of each trial, epoch by epoch (what the
                              pruner compares)
    param_importances.png     how much each setting explains of the value (from 3 trials on)
    best_config.py            the settings of the best trial with the full `epochs`:
                              python main.py --config results/<run>/search/best_config.py
    summary.json              best trial, value, settings, the paths above: search_summary();
                              search_of_run() finds the search a final training came from

Every file is written atomically and rewritten when a later process or --resume adds trials.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.files import write_atomically
from pipeline.search_space import Dimension, decode
from pipeline.settings import settings_text

SEARCH_FOLDER = "search"
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.py"
SUMMARY = "summary.json"
VALUE = "best validation loss"
DPI = 80


@dataclass
class SearchSummary:
    """A search's result: what the evaluation's report links to."""

    folder: Path  # the search's run folder
    study: str
    storage: str  # without password
    trials: dict[str, int]  # state (COMPLETE, PRUNED, FAIL, ...) -> trials
    best_trial: int | None = None
    best_value: float | None = None  # its best validation loss
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run: str | None = None  # the best trial's run folder
    trials_csv: Path | None = None
    plots: list[Path] = field(default_factory=list)
    best_config: Path | None = None


def format_params(values: dict[str, Any]) -> str:
    """A trial's values on one line: floats to 3 significant digits."""
    return ", ".join(f"{name}={_short(value)}" for name, value in values.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else repr(value)


def trials_table(study: Any, dimensions: dict[str, Dimension]) -> pd.DataFrame:
    """One row per trial of the study, in trial order."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        values = decode(trial.params, dimensions)
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "epochs": len(trial.intermediate_values),
                "duration_s": None
                if trial.duration is None
                else round(trial.duration.total_seconds(), 1),
                "run_dir": trial.user_attrs.get("run_dir", ""),
                "host": trial.user_attrs.get("host", ""),
                "retry_of": trial.user_attrs.get("retry_of"),
                **{name: _cell(value) for name, value in values.items()},
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table["retry_of"] = table["retry_of"].astype("Int64")  # 3, not 3.0 beside empty cells
    return table


def _cell(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else repr(value)


def write_trials_csv(
    study: Any, dimensions: dict[str, Dimension], folder: Path, table: pd.DataFrame | None = None
) -> Path:
    """search/trials.csv of the study (table: its trials_table, when already made)."""
    path = Path(folder) / TRIALS_CSV
    table = trials_table(study, dimensions) if table is None else table
    write_atomically(path, table.to_csv(index=False))
    return path


def write_plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's matplotlib figures of the study, as PNGs; none before a trial completed."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return []
    figures = {
        "optimization_history.png": lambda: vis.plot_optimization_history(study, target_name=VALUE),
        "slice.png": lambda: vis.plot_slice(study, target_name=VALUE),
        "intermediate_values.png": lambda: vis.plot_intermediate_values(study),
    }
    if len(completed) >= 3:  # below that, importances are noise (and fANOVA may refuse)
        figures["param_importances.png"] = lambda: vis.plot_param_importances(study)
    paths = []
    for name, plot in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib backend
            axes = plot()
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        if name == "intermediate_values.png":
            figure.axes[0].set_xlabel("epoch")
            figure.axes[0].set_ylabel("validation loss")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        plt.close(figure)
        paths.append(write_atomically(Path(folder) / name, buffer.getvalue()))
    return paths


def write_best_config(
    study: Any, cfg: dict[str, Any], dimensions: dict[str, Dimension], path: Path, run: str
) -> Path | None:
    """The search's settings with the best trial's values and the full epochs; None before a
    trial completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    header = (
        f"Settings of the best trial ({best.number}, {VALUE} {best.value:.5f} after "
        f"{cfg['search_epochs']} epochs) of the search {run}, study {study.study_name!r}, with "
        f"the full epochs.\n\nTrain the final model: python main.py --config {shown(path)}"
    )
    write_atomically(path, settings_text({**cfg, **decode(best.params, dimensions)}, header))
    return path


def write_outputs(
    study: Any, cfg: dict[str, Any], run_dir: Path, dimensions: dict[str, Dimension], storage: str
) -> SearchSummary:
    """Every file of search/ (see the module docstring); returns the summary."""
    from optuna.trial import TrialState

    folder = Path(run_dir) / SEARCH_FOLDER
    table = trials_table(study, dimensions)
    summary = SearchSummary(
        folder=Path(run_dir),
        study=study.study_name,
        storage=storage,
        trials={str(k): int(v) for k, v in table["state"].value_counts().items()}
        if len(table)
        else {},
        trials_csv=write_trials_csv(study, dimensions, folder, table),
        plots=write_plots(study, folder),
        best_config=write_best_config(study, cfg, dimensions, folder / BEST_CONFIG, run_dir.name),
    )
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        summary.best_trial, summary.best_value = best.number, best.value
        summary.best_params = decode(best.params, dimensions)
        summary.best_run = best.user_attrs.get("run_dir")
    text = json.dumps(asdict(summary), indent=1, default=str)
    write_atomically(folder / SUMMARY, text)
    return summary


def search_summary(run_dir: Path) -> SearchSummary | None:
    """The summary a search wrote in its run folder, None if it has none (yet)."""
    path = Path(run_dir) / SEARCH_FOLDER / SUMMARY
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    for name in ("folder", "trials_csv", "best_config"):
        saved[name] = None if saved[name] is None else Path(saved[name])
    saved["plots"] = [Path(p) for p in saved["plots"]]
    return SearchSummary(**saved)


def search_of_config(path: Path) -> Path | None:
    """The search's run folder, when a settings file is a search's best_config.py (a final
    training made with --config results/<search>/search/best_config.py)."""
    path = Path(path).resolve()
    folder = path.parent
    if path.name == BEST_CONFIG and folder.name == SEARCH_FOLDER and (folder / SUMMARY).is_file():
        return folder.parent
    return None


def search_of_run(run_dir: Path) -> Path | None:
    """The search a run's settings came from: the run was made with --config <a search's
    best_config.py> (a relative path is taken from the working folder)."""
    from pipeline.runs import history

    created = next((e for e in history(Path(run_dir)) if e["event"] == "created"), {})
    command = [str(token) for token in created.get("command", [])]
    for i, token in enumerate(command):
        if token == "--config" and i + 1 < len(command):
            return search_of_config(Path(command[i + 1]))
        if token.startswith("--config="):
            return search_of_config(Path(token.split("=", 1)[1]))
    return None


def format_summary(summary: SearchSummary) -> str:
    """The search's result in a few lines for the terminal."""
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary.trials.items()))
    lines = [f"search: study {summary.study!r} in {summary.storage}: {counts}"]
    if summary.best_trial is not None:
        lines += [
            f"best trial: {summary.best_trial}, {VALUE} {summary.best_value:.5f}: "
            f"{format_params(summary.best_params)}",
            f"best trial's run folder: {shown(summary.best_run)}",
            f"train the final model: python main.py --config {shown(summary.best_config)}",
        ]
    else:
        lines.append("no trial completed yet: no best settings")
    lines.append(f"trials: {shown(summary.trials_csv)}; plots: {len(summary.plots)} PNGs beside it")
    return "\n".join(lines)


def shown(path: Path | str | None) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    if path is None:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
