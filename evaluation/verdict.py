"""The verdict: at the same true-track efficiency, does the new model keep fewer fakes than each
other classifier?

A comparison is one (test sample, iteration, level) where both have a fake rate at equal
efficiency. It counts as "fewer" or "more" only when the interval of the paired fake-rate
change excludes no change; otherwise it is "not significant".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.names import ALL, LEVELS, NEW, REFERENCE, label


def comparisons(metrics: Mapping[str, Any], other: str = REFERENCE) -> list[dict[str, Any]]:
    """Every (sample, iteration, level), single samples and iterations only, where the new
    model's fake rate at equal efficiency was compared with `other`'s."""
    found = []
    for sample, entries in metrics["samples"].items():
        if sample == ALL:
            continue
        for iteration, entry in entries.items():
            change = entry.get("fake_rate_change", {}).get(other)
            if iteration == ALL or not change:
                continue
            for level in LEVELS:
                if change[level]["difference"] is not None:
                    found.append({"sample": sample, "iteration": iteration, "level": level})
                    found[-1].update(change[level])
    return found


def outcome(change: Mapping[str, Any]) -> str:
    """'fewer', 'more' or 'not significant' for one comparison."""
    if not change.get("significant"):
        return "not significant"
    return "fewer" if change["difference"] < 0 else "more"


def tally(metrics: Mapping[str, Any], other: str = REFERENCE) -> dict[str, Any]:
    """Counts of the comparisons with `other` by outcome, the sentence, and the cases where
    the new model keeps significantly more fakes."""
    found = comparisons(metrics, other)
    counts = {"fewer": 0, "more": 0, "not significant": 0}
    for change in found:
        counts[outcome(change)] += 1
    total = len(found)
    cl = metrics.get("statistics", {}).get("confidence_level", 0.95)
    return {
        "other": other,
        "comparisons": total,
        "fewer": counts["fewer"],
        "more": counts["more"],
        "not_significant": counts["not significant"],
        "sentence": sentence(other, counts, total, cl),
        "more_cases": [
            {k: c[k] for k in ("sample", "iteration", "level", "new", "other", "difference")}
            | {"difference_interval": c["difference_interval"]}
            for c in found
            if outcome(c) == "more"
        ],
    }


def sentence(other: str, counts: Mapping[str, int], total: int, cl: float) -> str:
    """One line: the answer against `other`, with every count."""
    name = label(other)
    if total == 0:
        return f"vs {name}: no comparison was possible."
    fewer, more, unclear = counts["fewer"], counts["more"], counts["not significant"]
    detail = (
        f"significantly fewer fakes in {fewer}, more in {more}, no significant difference in "
        f"{unclear} of {total} comparisons ({cl:.0%} CL)"
    )
    if more == 0 and fewer > 0:
        answer = "Yes"
    elif more == 0:
        answer = "Undecided"
    elif more > fewer:
        answer = "No"
    else:
        answer = "Mixed"
    return f"vs {name}: {answer}: {detail}."


def verdicts(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{other classifier: tally} for every classifier the new model was compared with."""
    return {other: tally(metrics, other) for other in metrics["classifiers"] if other != NEW}


def caveat(metrics: Mapping[str, Any]) -> str:
    """The multiple-comparison caveat, with the numbers of this run."""
    cl = metrics.get("statistics", {}).get("confidence_level", 0.95)
    return (
        f"Each comparison is tested on its own at {cl:.0%} CL: among comparisons with no real "
        f"change, about {1 - cl:.0%} show as significant by chance."
    )
