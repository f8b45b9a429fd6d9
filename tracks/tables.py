"""What the user sees of the loaded tracks: counts and true fractions per sample and iteration."""

from __future__ import annotations

import pandas as pd

from cmssw.ntuple import ALGORITHM_NAMES, ALGORITHMS, LABEL


def track_table(
    df: pd.DataFrame, algo_column: str = "trk_originalAlgo", label_column: str = LABEL
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
