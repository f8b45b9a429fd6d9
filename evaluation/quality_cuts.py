"""The working points in CMSSW's own file: RecoTracker/IterativeTracking/python/dnnQualityCuts.py.

That file is a CMSSW python configuration fragment. It defines ``qualityCutDictionary``, a
``cms.PSet`` with one ``cms.vdouble(loose, tight, highPurity)`` per iteration (step names as
CMSSW spells them: InitialStep, ...), then changes them for the CKF-only training through the
``trackdnn_CKF`` process modifier (``trackdnn_CKF.toModify(qualityCutDictionary, Step=[...])``).
The iteration configs read ``qualityCutDictionary.<Step>.value()``; a track gets a quality bit
when its mva = 2p - 1 is above the cut.

The run writes the same form, all steps included, so that it replaces the release's file (or,
with ``working_points_block = "trackdnn_CKF"``, the release's toModify block).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmssw.classifiers import QUALITY_LEVELS, quality_cut_steps, step_name
from cmssw.ntuple import DNN_ITERATIONS
from evaluation.names import ALL, NEW, REFERENCE
from pipeline.files import write_atomically

FILE_NAME = "dnnQualityCuts.py"
DEFAULT_BLOCK, MODIFIER = "default", "trackdnn_CKF"
# working_points_block -> the setting holding the release's cuts of that block.
BLOCK_SETTINGS = {DEFAULT_BLOCK: "reference_cuts", MODIFIER: "reference_cuts_trackdnn_CKF"}


def chosen_block(cfg: Mapping[str, Any]) -> str:
    block = cfg.get("working_points_block", DEFAULT_BLOCK)
    if block not in BLOCK_SETTINGS:
        raise ValueError(
            f"working_points_block = {block!r} (config.py): give one of {list(BLOCK_SETTINGS)}"
        )
    return block


def checked_cuts(cuts: Any, what: str) -> list[float]:
    """Three ascending numbers in [-1, 1] (loose <= tight <= highPurity), or a clear error."""
    try:
        values = [float(c) for c in cuts]
    except (TypeError, ValueError):
        values = []
    if len(values) != len(QUALITY_LEVELS):
        raise ValueError(f"{what} = {cuts!r}: give three cuts [loose, tight, highPurity]")
    if values != sorted(values) or not all(-1.0 <= v <= 1.0 for v in values):
        raise ValueError(f"{what} = {cuts!r}: the cuts must be ascending and within [-1, 1]")
    return values


def steps(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(iteration, CMSSW step) of every step of the file: the DNN's, then any other iteration
    the run evaluates; in the order of the release's file (that of reference_cuts)."""
    iterations = list(dict.fromkeys([*DNN_ITERATIONS, *cfg.get("iterations", [])]))
    order = list(cfg.get(BLOCK_SETTINGS[DEFAULT_BLOCK]) or [])
    iterations.sort(
        key=lambda i: order.index(step_name(i)) if step_name(i) in order else len(order)
    )
    return [(iteration, step_name(iteration)) for iteration in iterations]


def release_cuts(cfg: Mapping[str, Any], block: str | None = None) -> dict[str, list[float]]:
    """{CMSSW step: [loose, tight, highPurity]} of a block of the release's file, from its
    setting (reference_cuts or reference_cuts_trackdnn_CKF), checked."""
    block = block or chosen_block(cfg)
    setting = BLOCK_SETTINGS[block]
    table = cfg.get(setting)
    if not isinstance(table, Mapping):
        raise ValueError(f"{setting} (config.py) must be a dict: CMSSW step -> [c0, c1, c2]")
    known = quality_cut_steps(DNN_ITERATIONS, cfg.get("iterations", []))
    for key in table:
        if key not in known:
            hint = f"; write {step_name(key)!r}" if step_name(key) in known else ""
            raise ValueError(
                f"{setting} (config.py): {key!r} is not a CMSSW step name{hint}. "
                f"Steps: {', '.join(sorted(known))}"
            )
    missing = [step_name(i) for i in DNN_ITERATIONS if step_name(i) not in table]
    if missing:
        raise ValueError(
            f"{setting} (config.py) lacks {missing}: give all {len(DNN_ITERATIONS)} steps "
            "(the release's values are the defaults in config.py)"
        )
    return {step: checked_cuts(cuts, f"{setting}[{step!r}]") for step, cuts in table.items()}


def file_steps(metrics: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{CMSSW step: {cuts, derived, note}}: the new model's cuts where they were derived, the
    release's (of the chosen block) elsewhere, with the reason."""
    release = release_cuts(cfg)
    working_points = metrics["working_points"]
    out: dict[str, dict[str, Any]] = {}
    for iteration, step in steps(cfg):
        entry = working_points.get(iteration)
        if entry is not None and entry["status"] == "ok":
            out[step] = {"cuts": list(entry["thresholds"][NEW]), "derived": True, "note": ""}
            continue
        reason = entry["reason"] if entry else "not among the iterations evaluated (iterations)"
        if step not in release:
            continue  # an extra iteration without cuts: nothing to keep
        out[step] = {"cuts": release[step], "derived": False, "note": f"release cuts: {reason}"}
    return out


def header_lines(metrics: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    block = chosen_block(cfg)
    where = (
        "replaces the release's qualityCutDictionary"
        if block == DEFAULT_BLOCK
        else "replaces the release's trackdnn_CKF.toModify block; the PSet keeps the release's "
        "default cuts"
    )
    lines = [
        f"Working points of the track DNN of run {metrics.get('run', '')}",
        f"({metrics.get('created', '')}), deploy target {cfg.get('deploy_target', 'tf_graph')}.",
        "Cuts [loose, tight, highPurity] on mva = 2p - 1; a quality bit is set when mva > cut.",
        "Derived on the test samples combined: " + ", ".join(metrics.get("test_samples", [])),
        f"so that each step keeps the true-track efficiency of {metrics.get('reference', '')}.",
        f"Block {block}: {where}.",
        "A step marked 'release cuts' could not be derived and keeps the release's values.",
    ]
    return [f"# {line}" for line in lines]


def _comment(metrics: Mapping[str, Any], iteration: str, info: Mapping[str, Any]) -> str:
    """How a step's cuts were set: the efficiencies kept and the fake-rate change vs trk_mva
    (all test samples), or why the release's cuts stay."""
    if not info["derived"]:
        return info["note"]
    entry = metrics["working_points"][iteration]
    text = "efficiency " + " / ".join(f"{e:.4f}" for e in entry["target_efficiency"])
    combined = metrics.get("samples", {}).get(ALL, {}).get(iteration, {})
    change = combined.get("fake_rate_change", {}).get(REFERENCE)
    if change:
        relative = [change[level]["relative_change"] for level in QUALITY_LEVELS]
        text += "; fake rate vs trk_mva " + " / ".join(
            "n/a" if r is None else f"{r:+.0%}" for r in relative
        )
    return text


def quality_cuts_text(metrics: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    """The whole dnnQualityCuts.py: header, the PSet, and in the trackdnn_CKF form the
    toModify block carrying the new cuts. Each new step says how its cuts were set."""
    block = chosen_block(cfg)
    new_steps = file_steps(metrics, cfg)
    iteration_of = {step: iteration for iteration, step in steps(cfg)}
    new_cuts = {step: info["cuts"] for step, info in new_steps.items()}
    comments = {
        step: _comment(metrics, iteration_of[step], info) for step, info in new_steps.items()
    }
    width = max(len(step) for step in new_steps) + 1
    lines = [*header_lines(metrics, cfg), "import FWCore.ParameterSet.Config as cms", ""]
    lines.append("qualityCutDictionary = cms.PSet(")
    if block == DEFAULT_BLOCK:
        lines += _step_lines(new_cuts, width, "cms.vdouble({})", comments)
    else:  # the PSet keeps the release's default block, unchanged (in the same order)
        default = release_cuts(cfg, DEFAULT_BLOCK)
        kept = {step: default[step] for step in new_cuts if step in default}
        lines += _step_lines(kept, width, "cms.vdouble({})", {})
    lines.append(")")
    if block == MODIFIER:
        lines += [
            "",
            "from Configuration.ProcessModifiers.trackdnn_CKF_cff import trackdnn_CKF",
            "",
            "trackdnn_CKF.toModify(qualityCutDictionary,",
            *_step_lines(new_cuts, width, "[{}]", comments),
            ")",
        ]
    return "\n".join(lines) + "\n"


def _step_lines(
    cuts: Mapping[str, Sequence[float]], width: int, form: str, comments: Mapping[str, str]
) -> list[str]:
    lines = []
    for step, values in cuts.items():
        line = f"    {step:<{width}}= " + form.format(", ".join(repr(float(c)) for c in values))
        lines.append(line + "," + (f"  # {comments[step]}" if comments.get(step) else ""))
    return lines


def write_quality_cuts(metrics: Mapping[str, Any], cfg: Mapping[str, Any], path: Path) -> Path:
    """Write dnnQualityCuts.py atomically, after checking that it is valid Python and that
    every cut is ascending and within [-1, 1]."""
    for step, info in file_steps(metrics, cfg).items():
        checked_cuts(info["cuts"], f"the cuts of {step}")
    text = quality_cuts_text(metrics, cfg)
    compile(text, str(path), "exec")
    write_atomically(path, text)
    return Path(path)


def summary(metrics: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What metrics.json records about the file: block, and per step its cuts and origin."""
    return {
        "file": FILE_NAME,
        "block": chosen_block(cfg),
        "steps": file_steps(metrics, cfg),
    }
