"""What the evaluation shows: metrics.json, the lines printed at the end, and report.html.

report.html is rendered from the Jinja2 template templates/report.html.j2 (autoescaped) with
every image embedded as a base64 data URI: one file that shows everything wherever it is
opened or mailed, no network and no plots/ folder needed. Nothing here decides anything: the
numbers come from metrics.py / comparison.py, the verdict from verdict.py. Files are written
atomically.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from evaluation.names import ALL, DEFINITIONS, LEVELS, NEW, REFERENCE, label
from evaluation.verdict import caveat
from pipeline.files import write_atomically

TEMPLATES = Path(__file__).resolve().parent / "templates"
CUSTOM_TARGET_WARNING = "CMSSW's TrackTfClassifier cannot load this model"


# ---------------------------------------------------------------------------------------------
# metrics.json
# ---------------------------------------------------------------------------------------------
def json_ready(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics_json(metrics: Mapping[str, Any], path: Path) -> Path:
    write_atomically(path, json.dumps(json_ready(metrics), indent=1, allow_nan=False) + "\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Numbers as text
# ---------------------------------------------------------------------------------------------
def percent(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}g}%"


def interval_text(interval: Sequence[float | None] | None, scale: float = 100.0) -> str:
    """'[a, b]' of an interval (times scale), or '' when undefined."""
    if not interval or None in interval:
        return ""
    low, high = (scale * v for v in interval)
    return f"[{low:.3g}, {high:.3g}]"


def change_text(change: Mapping[str, Any] | None) -> str:
    """'-3.1 pp [-4.0, -2.2] (-25%)': the fake-rate difference in percentage points."""
    if not change or change.get("difference") is None:
        return "n/a"
    text = f"{100 * change['difference']:+.2g} pp {interval_text(change['difference_interval'])}"
    if change.get("relative_change") is not None:
        text += f" ({change['relative_change']:+.0%})"
    return text


def change_class(change: Mapping[str, Any] | None) -> str:
    """CSS class: better / worse when significant, ns otherwise."""
    if not change or not change.get("significant"):
        return "ns"
    return "better" if change["difference"] < 0 else "worse"


# ---------------------------------------------------------------------------------------------
# The terminal summary
# ---------------------------------------------------------------------------------------------
def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The lines printed at the end: per sample the AUCs, then the verdict against every other
    classifier, one line each."""
    classifiers = metrics["classifiers"]
    lines = ["AUC [interval] of all iterations, per test sample:"]
    lines.append(f"  {'sample':<18}" + "".join(f"{label(c)[:22]:>24}" for c in classifiers))
    for sample, entries in metrics["samples"].items():
        entry = entries[ALL]
        if entry["status"] != "ok":
            lines.append(f"  {sample:<18}n/a: {entry['reason']}")
            continue
        cells = []
        for c in classifiers:
            info = entry["classifiers"][c]
            low, high = info["auc_interval"]
            bounds = "" if low is None else f" [{low:.3f},{high:.3f}]"
            cells.append(f"{info['auc']:.4f}{bounds}".rjust(24))
        lines.append(f"  {sample:<18}" + "".join(cells))
    flagged = [
        f"{step} ({info['note']})"
        for step, info in metrics.get("quality_cuts", {}).get("steps", {}).items()
        if not info["derived"]
    ]
    if flagged:
        lines.append("dnnQualityCuts.py keeps the release's cuts for: " + "; ".join(flagged))
    lines += ["", "Does the new DNN keep fewer fakes at equal efficiency?"]
    lines += [f"  {t['sentence']}" for t in metrics.get("verdicts", {}).values()]
    lines.append(f"  ({caveat(metrics)})")
    for name, reason in metrics.get("skipped_classifiers", {}).items():
        lines.append(f"(left out: {name}: {reason})")
    return lines


def print_summary(metrics: Mapping[str, Any]) -> None:
    print("\n".join(summary_lines(metrics)), flush=True)


# ---------------------------------------------------------------------------------------------
# report.html
# ---------------------------------------------------------------------------------------------
def data_uri(path: Path) -> str:
    """The PNG at path as a data: URI, so that the page carries its images."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=lambda v, digits=3: percent(v, digits).rstrip("%"),
        interval=interval_text,
        change=change_text,
        change_class=change_class,
        label=label,
    )
    return env


def _sample_view(sample: str, entries: Mapping[str, Any], present: Sequence[str]) -> dict:
    """The rows of one sample's tables: AUCs per iteration, and per (iteration, level) the
    efficiency, every classifier's fake rate and the new model's change against each."""
    shown = [ALL, *[k for k, e in entries.items() if k != ALL and e["n_true"] + e["n_fake"]]]
    view = {
        "title": "all test samples combined" if sample == ALL else f"sample {sample}",
        "empty": entries[ALL]["n_true"] + entries[ALL]["n_fake"] == 0,
        "iterations": [(("all iterations" if k == ALL else k), entries[k]) for k in shown],
        "absent": [k for k in present if entries[k]["n_true"] + entries[k]["n_fake"] == 0],
        "rates": [],
    }
    for name, entry in view["iterations"]:
        if entry["status"] != "ok" or not entry.get("fake_rate_change"):
            continue
        for i, level in enumerate(LEVELS):
            view["rates"].append(
                {
                    "iteration": name,
                    "level": level,
                    "efficiency": entry["target_efficiency"][i],
                    "classifiers": entry["classifiers"],
                    "changes": {o: c[level] for o, c in entry["fake_rate_change"].items()},
                }
            )
    return view


def _deployment_view(deployment: Mapping[str, Any] | None) -> dict | None:
    if not deployment:
        return None
    view = dict(deployment)
    target = view.get("deploy_target")
    warning = view.pop("warning", None)
    if target == "custom" and not warning:
        warning = CUSTOM_TARGET_WARNING
    view["warning"] = warning
    cost = view.get("inference_cost")
    if isinstance(cost, Mapping):  # {row name: {column: value}} -> rows
        view["inference_cost"] = [{"": name, **dict(row)} for name, row in cost.items()]
    return view


def report_html(
    metrics: Mapping[str, Any],
    plots: Sequence[Mapping[str, str]],
    images: Mapping[str, str],
    config_text: str = "",
    monitor_plots: Sequence[str] = (),
    quality_cuts_text: str = "",
    deployment: Mapping[str, Any] | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> str:
    """The report page. images: {plot file as in plots / monitor_plots: data URI}.

    deployment (optional): deploy_target, model_card {field: value}, inference_cost (rows, or
    {row: {column: value}}), warning; a "custom" target warns that TrackTfClassifier cannot
    load the model. run_info (optional): parent_run, resumed_from_epoch,
    stopped_early_at_epoch, hyperparameter_search (links: "href" or {"title", "href"}).
    Other keys of either are shown as they are."""
    present = [
        k for k, e in metrics["samples"][ALL].items() if k != ALL and e["n_true"] + e["n_fake"]
    ]
    sections: dict[str, list[dict[str, str]]] = {}
    for plot in plots:
        figure = {"title": plot["title"], "src": images[plot["file"]]}
        sections.setdefault(plot["section"], []).append(figure)
    training = sections.pop("training", [])
    monitor = [{"title": Path(p).stem, "src": images[p]} for p in monitor_plots]
    context = {
        "m": metrics,
        "others": [c for c in metrics["classifiers"] if c != NEW],
        "verdicts": list(metrics.get("verdicts", {}).values()),
        "caveat": caveat(metrics),
        "definitions": DEFINITIONS,
        "nowhere": [k for k in metrics["samples"][ALL] if k != ALL and k not in present],
        "samples": [_sample_view(s, e, present) for s, e in metrics["samples"].items()],
        "all_sample": metrics["samples"][ALL],
        "sections": sections,
        "training": training,
        "monitor": monitor,
        "config_text": config_text,
        "quality_cuts_text": quality_cuts_text,
        "deployment": _deployment_view(deployment),
        "run_info": dict(run_info) if run_info else None,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ALL": ALL,
        "NEW": NEW,
        "REFERENCE": REFERENCE,
        "LEVELS": LEVELS,
    }
    return _environment().get_template("report.html.j2").render(context)


def write_report(
    metrics: Mapping[str, Any],
    plots: Sequence[Mapping[str, str]],
    run_dir: Path,
    config_text: str | None = None,
    monitor_plots: Sequence[str | Path] | None = None,
    quality_cuts_text: str = "",
    deployment: Mapping[str, Any] | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """run_dir/report.html with every image embedded. config_text and monitor_plots (PNG
    paths) default to the run folder's config.py and monitor/epoch_*.png."""
    run_dir = Path(run_dir)
    if config_text is None:
        config = run_dir / "config.py"
        config_text = config.read_text() if config.is_file() else ""
    if monitor_plots is None:
        monitor_plots = sorted((run_dir / "monitor").glob("epoch_*.png"))
    monitor = [str(p) for p in monitor_plots]
    images = {p["file"]: data_uri(run_dir / p["file"]) for p in plots}
    images.update({p: data_uri(Path(p)) for p in monitor})  # paths as given (run_dir's own)
    page = report_html(
        metrics, plots, images, config_text, monitor, quality_cuts_text, deployment, run_info
    )
    path = run_dir / "report.html"
    write_atomically(path, page)
    return path
