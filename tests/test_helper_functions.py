"""Configuration overrides, iteration balancing and event splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmssw.ntuple import ALGORITHMS
from helper_functions import (
    balance_iterations,
    finite_inputs,
    select_iterations,
    split_by_events,
    track_table,
)
from pipeline.settings import default_config, load_config, write_config


def tracks(counts: dict[str, tuple[int, int]], seed: int = 0) -> pd.DataFrame:
    """A toy track table: per iteration name, (true, fake) counts; 10 tracks per event."""
    algo, label = [], []
    for name, (n_true, n_fake) in counts.items():
        algo += [ALGORITHMS[name]] * (n_true + n_fake)
        label += [1] * n_true + [0] * n_fake
    order = np.random.default_rng(seed).permutation(len(algo))
    n = len(algo)
    return pd.DataFrame(
        {
            "trk_originalAlgo": np.array(algo, dtype=np.uint8)[order],
            "trk_isTrue": np.array(label, dtype=np.int8)[order],
            "trk_pt": np.arange(n, dtype=np.float32),
            "event_index": (np.arange(n) // 10).astype(np.uint32),
            "sample": pd.Categorical(["qcd"] * n),
        }
    )


ITERATIONS = ["initialStep", "lowPtTripletStep", "jetCoreRegionalStep"]


def test_cli_overrides_config_file_overrides_defaults(tmp_path):
    config_file = tmp_path / "my_config.py"
    config_file.write_text("epochs = 7\nbatch_size = 64\nrun_name = 'from_file'\n")
    cfg, args = load_config(["--config", str(config_file), "--batch_size", "4096"])
    assert cfg["epochs"] == 7  # from the file
    assert cfg["batch_size"] == 4096  # the command line wins over the file
    assert cfg["run_name"] == "from_file"
    assert cfg["learning_rate"] == default_config()["learning_rate"]
    assert args.stage == "all"


def test_cli_reads_literals_and_bare_words():
    cfg, _ = load_config(["--hidden_layers", "[64, 32]", "--batch_norm", "False", "--lr_schedule",
                          "plateau"])  # fmt: skip
    assert cfg["hidden_layers"] == [64, 32]
    assert cfg["batch_norm"] is False
    assert cfg["lr_schedule"] == "plateau"


def test_unknown_or_mistyped_settings_are_named(tmp_path):
    config_file = tmp_path / "bad.py"
    config_file.write_text("epoch = 3\n")
    with pytest.raises(SystemExit, match=r"bad.py: unknown setting 'epoch'.*Did you mean 'epochs'"):
        load_config(["--config", str(config_file)])
    with pytest.raises(SystemExit, match="'batch_norm' = 3 should be of type bool"):
        load_config(["--batch_norm", "3"])
    with pytest.raises(SystemExit):  # argparse: unknown option, no silent abbreviation
        load_config(["--epoch", "3"])


def test_written_config_reads_back(tmp_path):
    cfg, _ = load_config(
        ["--epochs", "3", "--samples", "{'a': ['x.root', 'root://h//y.root'], 'b': 'z.root'}",
         "--train_samples", "['a']", "--test_samples", "['b']", "--monitor_samples", "['b']",
         "--synthetic_samples", "{}"]
    )  # fmt: skip
    write_config(cfg, tmp_path / "config.py")
    again, _ = load_config(["--config", str(tmp_path / "config.py")])
    assert again == cfg
    assert not list(tmp_path.glob(".*tmp"))


def test_balancing_equalises_iterations_and_drops_others():
    df = tracks(
        {
            "initialStep": (900, 100),
            "lowPtTripletStep": (150, 50),
            "jetCoreRegionalStep": (40, 20),
            "muonSeededStepInOut": (30, 0),
        }  # fmt: skip
    )
    balanced = balance_iterations(df, ITERATIONS, seed=1)
    counts = balanced["trk_originalAlgo"].value_counts()
    assert set(counts.index) == {ALGORITHMS[name] for name in ITERATIONS}
    assert (counts == 60).all()  # the smallest classified iteration: jetCore, 40 + 20
    assert balanced["trk_pt"].is_monotonic_increasing  # file order kept
    assert balanced["trk_pt"].is_unique
    # The chosen rows are real rows of the input, unchanged.
    merged = balanced.merge(df, on="trk_pt", suffixes=("", "_in"))
    assert (merged["trk_isTrue"] == merged["trk_isTrue_in"]).all()


def test_balancing_is_seeded():
    df = tracks({"initialStep": (500, 50), "lowPtTripletStep": (80, 20)})
    a = balance_iterations(df, ITERATIONS[:2], seed=3)
    b = balance_iterations(df, ITERATIONS[:2], seed=3)
    c = balance_iterations(df, ITERATIONS[:2], seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["trk_pt"].equals(c["trk_pt"])


def test_balancing_true_fake_and_cap():
    df = tracks({"initialStep": (900, 100), "lowPtTripletStep": (150, 50)})
    balanced = balance_iterations(df, ITERATIONS[:2], balance_true_fake=True)
    per = balanced.groupby(["trk_originalAlgo", "trk_isTrue"]).size()
    assert (per == 50).all() and len(per) == 4
    capped = balance_iterations(df, ITERATIONS[:2], max_per_iteration=30)
    assert (capped["trk_originalAlgo"].value_counts() == 30).all()


def test_balancing_warns_about_absent_iteration_and_fails_without_any():
    df = tracks({"initialStep": (90, 10)})
    with pytest.warns(UserWarning, match="jetCoreRegionalStep"):
        balanced = balance_iterations(df, ["initialStep", "jetCoreRegionalStep"])
    assert len(balanced) == 100
    with (
        pytest.warns(UserWarning, match="tobTecStep"),
        pytest.raises(ValueError, match="iterations"),
    ):
        balance_iterations(df, ["tobTecStep"])


def test_split_keeps_events_whole_and_follows_fractions():
    df = tracks({"initialStep": (4000, 1000)})
    train, val, test = split_by_events(df, [0.8, 0.1, 0.1], seed=0)
    assert len(train) + len(val) + len(test) == len(df)
    events = [set(part["event_index"]) for part in (train, val, test)]
    assert not (events[0] & events[1] or events[0] & events[2] or events[1] & events[2])
    assert len(events[0]) == 400 and len(events[1]) == 50 and len(events[2]) == 50
    again = split_by_events(df, [0.8, 0.1, 0.1], seed=0)
    pd.testing.assert_frame_equal(train, again[0])
    with pytest.raises(ValueError, match="split_fractions"):
        split_by_events(df, [0.8, 0.3, 0.1])


def test_finite_inputs_leaves_out_tracks_with_a_nan_or_infinite_input():
    df = tracks({"initialStep": (60, 40)})
    df["trk_eta"] = np.linspace(-2, 2, len(df), dtype=np.float32)
    df.loc[[3, 50], "trk_pt"] = np.nan
    df.loc[7, "trk_eta"] = -np.inf
    kept = finite_inputs(df, ["trk_pt", "trk_eta"])
    assert len(kept) == 97 and list(kept.index) == list(range(97))
    assert np.isfinite(kept[["trk_pt", "trk_eta"]].to_numpy()).all()
    pd.testing.assert_frame_equal(kept, df.drop(index=[3, 7, 50]).reset_index(drop=True))
    assert finite_inputs(df, ["event_index"]) is df  # nothing to leave out: no copy


def test_track_table_counts_and_true_fractions():
    df = tracks({"initialStep": (90, 10), "lowPtTripletStep": (30, 70)})
    table = track_table(df)
    assert table.loc[("qcd", "initialStep"), "tracks"] == 100
    assert table.loc[("qcd", "lowPtTripletStep"), "true fraction"] == pytest.approx(0.3)
    assert table.loc[("qcd", "all"), "tracks"] == 200
    assert table.loc[("qcd", "all"), "true fraction"] == pytest.approx(0.6)


def test_select_iterations_keeps_every_track_of_the_classified_ones():
    df = tracks(
        {"initialStep": (90, 10), "jetCoreRegionalStep": (5, 5), "muonSeededStepInOut": (7, 0)}
    )
    selected = select_iterations(df, ["initialStep", "jetCoreRegionalStep"])
    assert len(selected) == 110
    assert ALGORITHMS["muonSeededStepInOut"] not in set(selected["trk_originalAlgo"])
