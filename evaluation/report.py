"""What the evaluation leaves in the run folder: report.html, metrics.json, working_points.py,
and the short tables printed at the end. Every file is written atomically."""

from __future__ import annotations

import html
import json
import math
import runpy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import ALL, LEVELS, NEW, REFERENCE
from evaluation.plots import label
from helper_functions import write_atomically

DEFINITIONS = {
    "mva": "2p - 1 of the sigmoid output p; trk_mva as stored in the ntuple",
    "pass": "a track passes a level when mva > threshold (CMSSW's TrackMVAClassifierBase)",
    "efficiency": "fraction of true tracks that pass",
    "fake_rate": "fraction of fake tracks that pass (the x axis of the ROC curves)",
    "fake_fraction": "fraction of fake tracks among the tracks that pass",
    "working_points": "each classifier's own per-iteration thresholds, derived on all test "
    "samples combined so that its efficiency equals the reference's, applied to these tracks",
    "equal_efficiency": "thresholds set on these very tracks (per iteration) to the reference's "
    "efficiency on them: the like-for-like fake-rate comparison",
    "all": "'all' iteration: the classified iterations together, each with its own thresholds "
    "(the AUC uses one global cut); 'all' sample: the test samples combined",
}


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
# working_points.py, in the form of CMSSW's dnnQualityCuts.py
# ---------------------------------------------------------------------------------------------
def working_points_text(metrics: Mapping[str, Any]) -> str:
    """A Python file defining qualityCutDictionary = {'InitialStep': [c0, c1, c2], ...}."""
    wps = metrics["working_points"]
    source = next((e["source"] for e in wps.values() if e["status"] == "ok"), "n/a")
    if source.startswith("trk_mva"):
        source = "trk_mva at the reference cuts (reference_cuts / default_reference_cuts)"
    lines = [
        f'"""Working points of the new track DNN: run {metrics.get("run", "")}, '
        f"{metrics.get('created', '')}.",
        "",
        "Thresholds [loose, tight, highPurity] on mva = 2p - 1 (a level is passed when",
        "mva > cut), derived on the test samples combined",
        f"({', '.join(metrics.get('test_samples', []))}) so that each iteration keeps the",
        f"true-track efficiency of {source}.",
        "Paste into RecoTracker/IterativeTracking/python/dnnQualityCuts.py.",
        '"""',
        "",
        "qualityCutDictionary = {",
    ]
    width = max((len(e["cmssw_name"]) for e in wps.values()), default=10) + 4
    for entry in wps.values():
        key = f"'{entry['cmssw_name']}':"
        if entry["status"] != "ok":
            lines.append(f"    # {key} n/a: {entry['reason']}")
            continue
        cuts = ", ".join(repr(float(c)) for c in entry["thresholds"][NEW])
        eff = " / ".join(f"{e:.4f}" for e in entry["target_efficiency"])
        reduction = entry.get("fake_rate_reduction")
        fakes = ""
        if reduction:
            changes = ("n/a" if r is None else f"{0.0 - r:+.1%}" for r in reduction)
            fakes = "; fakes " + " / ".join(changes)
        lines.append(f"    {key:<{width}}[{cuts}],  # efficiency {eff}{fakes}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_working_points(metrics: Mapping[str, Any], path: Path) -> Path:
    text = working_points_text(metrics)
    compile(text, str(path), "exec")  # never leave a file that does not load
    write_atomically(path, text)
    return Path(path)


def load_working_points(path: Path) -> dict[str, list[float]]:
    """qualityCutDictionary of a working_points.py (or of a dnnQualityCuts.py)."""
    return dict(runpy.run_path(str(path))["qualityCutDictionary"])


# ---------------------------------------------------------------------------------------------
# Numbers as text
# ---------------------------------------------------------------------------------------------
def percent(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}g}%"


def reduction_text(new: float | None, ref: float | None) -> str:
    if new is None or ref is None or ref == 0:
        return "n/a"
    return f"{new / ref - 1:+.1%}"


def comparisons(metrics: Mapping[str, Any], other: str = REFERENCE) -> list[dict[str, Any]]:
    """Every (sample, iteration, level) where the new model and `other` have a fake rate at
    equal efficiency, with both numbers."""
    found = []
    for sample, entries in metrics["samples"].items():
        for iteration, entry in entries.items():
            new = entry.get("classifiers", {}).get(NEW, {})
            ref = entry.get("classifiers", {}).get(other, {})
            if new.get("status") != "ok" or ref.get("status") != "ok":
                continue
            for level in LEVELS:
                a = new["equal_efficiency"][level]["fake_rate"]
                b = ref["equal_efficiency"][level]["fake_rate"]
                if a is not None and b is not None:
                    found.append(
                        {
                            "sample": sample,
                            "iteration": iteration,
                            "level": level,
                            "new": a,
                            "other": b,
                        }
                    )
    return found


def verdict(metrics: Mapping[str, Any], other: str = REFERENCE) -> tuple[str, list[str]]:
    """One sentence answering the question, and the cases where the new model keeps more."""
    found = comparisons(metrics, other)
    if not found:
        return f"No comparison with {label(other)} was possible.", []
    per_iteration = [c for c in found if c["sample"] != ALL and c["iteration"] != ALL]
    worse_per_iteration = [c for c in per_iteration if c["new"] > c["other"]]
    if not worse_per_iteration:
        text = (
            f"Yes: at equal true-track efficiency the new DNN keeps no more fakes than "
            f"{label(other)} in all {len(per_iteration)} (sample, iteration, working point) "
            f"comparisons."
        )
    else:
        text = (
            f"Not everywhere: the new DNN keeps more fakes than {label(other)} at equal "
            f"efficiency in {len(worse_per_iteration)} of {len(per_iteration)} "
            "(sample, iteration, working point) comparisons."
        )
    cases = [
        f"{c['sample']} / {c['iteration']} / {c['level']}: {percent(c['new'])} vs "
        f"{percent(c['other'])}"
        for c in worse_per_iteration
    ]
    return text, cases


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The short tables printed at the end: working points, then per sample the AUCs and the
    fake rates at equal efficiency of all iterations."""
    classifiers = metrics["classifiers"]
    lines = ["Working points (new DNN, mva > cut), at the reference's true-track efficiency:"]
    lines.append(f"  {'step':<24}{'thresholds':<30}{'efficiency':<26}fakes vs trk_mva")
    for entry in metrics["working_points"].values():
        if entry["status"] != "ok":
            lines.append(f"  {entry['cmssw_name']:<24}n/a: {entry['reason']}")
            continue
        cuts = ", ".join(f"{c:.4g}" for c in entry["thresholds"][NEW])
        eff = " / ".join(f"{e:.3f}" for e in entry["target_efficiency"])
        red = entry.get("fake_rate_reduction") or [None] * 3
        fakes = " / ".join("n/a" if r is None else f"{0.0 - r:+.1%}" for r in red)
        lines.append(f"  {entry['cmssw_name']:<24}{'[' + cuts + ']':<30}{eff:<26}{fakes}")
    lines.append("")
    header = f"  {'sample':<18}" + "".join(f"{label(c)[:14]:>16}" for c in classifiers)
    lines.append(
        "AUC and fake rate at equal efficiency (loose / tight / highPurity), all iterations:"
    )
    lines.append(header)
    for sample, entries in metrics["samples"].items():
        entry = entries[ALL]
        if entry["status"] != "ok":
            lines.append(f"  {sample:<18}n/a: {entry['reason']}")
            continue
        aucs = "".join(f"{entry['classifiers'][c]['auc']:>16.4f}" for c in classifiers)
        lines.append(f"  {sample:<18}{aucs}")
        fakes = "".join(
            f"{'/'.join(percent(entry['classifiers'][c]['equal_efficiency'][lv]['fake_rate'], 2) for lv in LEVELS):>16}"  # noqa: E501
            for c in classifiers
        )
        lines.append(f"  {'':<18}{fakes}")
    text, _ = verdict(metrics)
    lines += ["", text]
    for name, reason in metrics.get("skipped_classifiers", {}).items():
        lines.append(f"(left out: {name}: {reason})")
    return lines


def print_summary(metrics: Mapping[str, Any]) -> None:
    print("\n".join(summary_lines(metrics)), flush=True)


# ---------------------------------------------------------------------------------------------
# report.html
# ---------------------------------------------------------------------------------------------
CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; max-width: 1500px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #ccc; padding-top: 12px; }
table { border-collapse: collapse; margin: 8px 0 18px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eef1f6; } td.name, th.name { text-align: left; }
td.na, p.na { color: #888; text-align: center; } .better { background: #d8f0d4; }
.worse { background: #f8d2d2; } .verdict { font-size: 18px; padding: 10px; background: #f4f6fa;
border-left: 5px solid #5790fc; } .note { color: #666; font-size: 13px; }
figure { margin: 10px 0 24px; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 14px; color: #444; } pre { background: #f6f6f6; padding: 10px;
font-size: 12px; overflow-x: auto; } nav a { margin-right: 12px; }
.scroll { overflow-x: auto; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _na(reason: str | None, colspan: int = 1) -> str:
    return f'<td class="na" colspan="{colspan}" title="{_esc(reason)}">n/a ({_esc(reason)})</td>'


def _working_points_table(metrics: Mapping[str, Any]) -> str:
    """One row per iteration: the new thresholds (as in working_points.py), trk_mva's cuts,
    the efficiencies, and the fake rates of both at those efficiencies (all test samples)."""
    others = [c for c in metrics["classifiers"] if c != NEW]
    trios = "<br>loose / tight / HP"
    rows = [
        "<div class='scroll'><table><tr><th class='name'>iteration</th>"
        f"<th class='name'>CMSSW step</th><th>new DNN cuts{trios}</th>"
        f"<th>{_esc(label(REFERENCE))} cuts{trios}</th><th>efficiency %{trios}</th>"
        f"<th>fake rate % new{trios}</th><th>fake rate % {_esc(label(REFERENCE))}{trios}</th>"
        f"<th>fakes, new vs {_esc(label(REFERENCE))}{trios}</th><th>true / fake</th></tr>"
    ]
    for iteration, entry in metrics["working_points"].items():
        cells = (
            f"<tr><td class='name'>{_esc(iteration)}</td>"
            f"<td class='name'>{_esc(entry['cmssw_name'])}</td>"
        )
        counts = f"<td>{entry['n_true']} / {entry['n_fake']}</td></tr>"
        if entry["status"] != "ok":
            rows.append(cells + _na(entry["reason"], 6) + counts)
            continue
        reference = entry["thresholds"].get(REFERENCE)
        new = entry["fake_rate"].get(NEW) or [None] * 3
        ref = entry["fake_rate"].get(REFERENCE) or [None] * 3
        changes = []
        for a, b in zip(new, ref, strict=True):
            css = "" if a is None or b is None or b == 0 else ("better" if a <= b else "worse")
            changes.append(f"<span class='{css}'>{reduction_text(a, b)}</span>")
        cells += (
            f"<td><b>{_esc(entry['thresholds'][NEW])}</b></td>"
            f"<td>{_esc(reference) if reference else 'n/a'}</td>"
            f"<td>{' / '.join(f'{100 * e:.2f}' for e in entry['target_efficiency'])}</td>"
            f"<td>{' / '.join(_pct(v) for v in new)}</td>"
            f"<td>{' / '.join(_pct(v) for v in ref)}</td>"
            f"<td>{' / '.join(changes)}</td>"
        )
        rows.append(cells + counts)
    rows.append("</table></div>")
    note = (
        "<p class='note'>Efficiency: the reference's, per iteration, on all test samples "
        f"combined ({_esc(metrics.get('reference', ''))}). The other classifiers' thresholds "
        f"at the same efficiencies are in metrics.json ({_esc(', '.join(others))}).</p>"
    )
    return "\n".join(rows) + note


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.3g}"


def _sample_table(
    entries: Mapping[str, Any], classifiers: Sequence[str], present: Sequence[str]
) -> str:
    """Rows: all iterations, then each iteration with tracks; per classifier its AUC and its
    fake rates (%) at the three equal efficiencies, the new DNN's coloured against trk_mva."""
    if entries[ALL]["n_true"] + entries[ALL]["n_fake"] == 0:
        return "<p class='na'>n/a (no tracks in this sample)</p>"
    head = (
        "<table><tr><th class='name' rowspan='2'>iteration</th><th rowspan='2'>true</th>"
        "<th rowspan='2'>fake</th><th rowspan='2'>efficiency %<br>loose / tight / HP</th>"
        + "".join(f"<th colspan='2'>{_esc(label(c))}</th>" for c in classifiers)
        + "</tr><tr>"
        + "<th>AUC</th><th>fake rate %<br>loose / tight / HP</th>" * len(classifiers)
        + "</tr>"
    )
    rows = ["<div class='scroll'>", head]
    shown = [ALL, *[k for k, e in entries.items() if k != ALL and e["n_true"] + e["n_fake"]]]
    for iteration in shown:
        entry = entries[iteration]
        name = "all iterations" if iteration == ALL else iteration
        cells = (
            f"<tr><td class='name'>{_esc(name)}</td><td>{entry['n_true']}</td>"
            f"<td>{entry['n_fake']}</td>"
        )
        if entry["status"] != "ok":
            rows.append(cells + _na(entry["reason"], 1 + 2 * len(classifiers)) + "</tr>")
            continue
        cells += "<td>" + " / ".join(_pct(e) for e in entry["target_efficiency"]) + "</td>"
        ref = entry["classifiers"].get(REFERENCE, {})
        best_auc = max(c["auc"] for c in entry["classifiers"].values() if c["status"] == "ok")
        for classifier in classifiers:
            info = entry["classifiers"][classifier]
            if info["status"] != "ok":
                cells += _na(info["reason"], 2)
                continue
            bold = " style='font-weight:bold'" if info["auc"] == best_auc else ""
            cells += f"<td{bold}>{info['auc']:.4f}</td>"
            parts = []
            for level in LEVELS:
                value = info["equal_efficiency"][level]["fake_rate"]
                css = ""
                if classifier == NEW and ref.get("status") == "ok":
                    other = ref["equal_efficiency"][level]["fake_rate"]
                    if value is not None and other is not None:
                        css = "better" if value <= other else "worse"
                parts.append(f"<span class='{css}'>{_pct(value)}</span>")
            cells += "<td>" + " / ".join(parts) + "</td>"
        rows.append(cells + "</tr>")
    rows.append("</table></div>")
    # Iterations found in other test samples only; those in none are listed once, above.
    absent = [k for k in present if entries[k]["n_true"] + entries[k]["n_fake"] == 0]
    if absent:
        rows.append(
            f"<p class='note'>n/a (no tracks in this sample): {_esc(', '.join(absent))}</p>"
        )
    return "\n".join(rows)


def _figure(plot: Mapping[str, str]) -> str:
    return (
        f"<figure><figcaption>{_esc(plot['title'])}</figcaption>"
        f'<img src="{_esc(plot["file"])}" alt="{_esc(plot["title"])}"></figure>'
    )


def report_html(
    metrics: Mapping[str, Any],
    plots: Sequence[Mapping[str, str]],
    config_text: str = "",
    monitor_plots: Sequence[str] = (),
) -> str:
    """The report page: verdict, tables, every plot (relative paths), the config."""
    classifiers = metrics["classifiers"]
    text, worse = verdict(metrics)
    other_verdicts = [verdict(metrics, c)[0] for c in classifiers if c not in (NEW, REFERENCE)]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Track DNN evaluation: {_esc(metrics.get('run', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Track DNN evaluation</h1><p class='note'>run {_esc(metrics.get('run', ''))} - "
        f"{_esc(metrics.get('created', ''))} - test samples "
        f"{_esc(', '.join(metrics.get('test_samples', [])))} - classifiers "
        f"{_esc(', '.join(label(c) for c in classifiers))}</p>",
        "<nav><a href='#summary'>summary</a><a href='#working-points'>working points</a>"
        "<a href='#plots'>plots</a><a href='#training'>training</a>"
        "<a href='#config'>config</a></nav>",
        f"<h2 id='summary'>Does the new model keep fewer fakes at the same efficiency?</h2>"
        f"<p class='verdict'>{_esc(text)}</p>",
    ]
    if worse:
        parts.append(
            "<details><summary>Where it keeps more fakes than trk_mva "
            f"({len(worse)})</summary><ul>"
            + "".join(f"<li>{_esc(w)}</li>" for w in worse)
            + "</ul></details>"
        )
    parts += [f"<p>{_esc(v)}</p>" for v in other_verdicts]
    for note in metrics.get("notes", []):
        parts.append(f"<p class='note'>Note: {_esc(note)}</p>")
    for name, reason in metrics.get("skipped_classifiers", {}).items():
        parts.append(
            f"<p class='note'>Left out of the comparison: {_esc(name)}: {_esc(reason)}</p>"
        )
    parts.append(
        "<p class='note'>"
        + "<br>".join(f"<b>{_esc(k)}</b>: {_esc(v)}" for k, v in DEFINITIONS.items())
        + "</p>"
    )
    present = [
        k for k, e in metrics["samples"][ALL].items() if k != ALL and e["n_true"] + e["n_fake"]
    ]
    nowhere = ", ".join(k for k in metrics["samples"][ALL] if k != ALL and k not in present)
    if nowhere:
        parts.append(f"<p class='note'>No track in any test sample: {_esc(nowhere)} (n/a).</p>")
    for sample, entries in metrics["samples"].items():
        title = "all test samples combined" if sample == ALL else f"sample {sample}"
        parts += [f"<h3>{_esc(title)}</h3>", _sample_table(entries, classifiers, present)]
    parts += [
        "<h2 id='working-points'>Working points (new DNN)</h2>",
        _working_points_table(metrics),
        "<p>working_points.py, ready to paste into dnnQualityCuts.py:</p>",
        f"<pre>{_esc(working_points_text(metrics))}</pre>",
    ]
    parts.append("<h2 id='plots'>Plots</h2>")
    sections: dict[str, list[Mapping[str, str]]] = {}
    for plot in plots:
        sections.setdefault(plot["section"], []).append(plot)
    for section, items in sections.items():
        if section == "training":
            continue
        parts.append(f"<h3>{_esc(section)}</h3>")
        parts += [_figure(p) for p in items]
    parts.append("<h2 id='training'>Training</h2>")
    parts += [_figure(p) for p in sections.get("training", [])] or [
        "<p class='note'>n/a: no training_log.csv in the run folder</p>"
    ]
    if monitor_plots:
        parts.append("<h3>Monitoring during training</h3>")
        parts += [_figure({"title": Path(p).stem, "file": p}) for p in monitor_plots]
    parts += [
        "<h2 id='config'>Config</h2>",
        f"<pre>{_esc(config_text or 'n/a: no config.py in the run folder')}</pre>",
        f"<p class='note'>written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    metrics: Mapping[str, Any], plots: Sequence[Mapping[str, str]], run_dir: Path
) -> Path:
    """report.html in run_dir, with the run's config.py and any monitor/ plots."""
    run_dir = Path(run_dir)
    config = run_dir / "config.py"
    config_text = config.read_text() if config.is_file() else ""
    monitor = sorted(f"monitor/{p.name}" for p in (run_dir / "monitor").glob("epoch_*.png"))
    path = run_dir / "report.html"
    write_atomically(path, report_html(metrics, plots, config_text, monitor))
    return path
