"""DatasetLoader against direct uproot reads of the same files, in every layout and compression."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot

import config
import dataset_loader
from dataset_loader import DatasetLoader, NtupleError, expand_paths, read_entries

DATA_DIR = Path(__file__).parent / "data"
IS_TRUE = DATA_DIR / "trackingNtuple_isTrue.root"
SIM_TRK_IDX = DATA_DIR / "trackingNtuple_simTrkIdx.root"
FEATURES = list(config.features)
COLUMNS = [*FEATURES, "trk_originalAlgo", "trk_isTrue", "trk_mva", "event_index", "sample"]
UINT_FEATURES = {
    "trk_nPixel",
    "trk_nStrip",
    "trk_nInnerLost",
    "trk_nOuterLost",
    "trk_nInnerInactive",
    "trk_nOuterInactive",
    "trk_nLostLay",
}
UPROOT_COMPRESSIONS = {
    "ZLIB": uproot.ZLIB(1),
    "LZMA": uproot.LZMA(1),
    "LZ4": uproot.LZ4(1),
    "ZSTD": uproot.ZSTD(1),
}


def loader(**settings) -> DatasetLoader:
    return DatasetLoader(**{"max_workers": 1, "features": FEATURES, **settings})


def direct_read(path: Path) -> dict[str, np.ndarray]:
    """The expected columns of one file, read with plain uproot + awkward."""
    tree = uproot.open(path)["trackingNtuple/tree"]
    arrays = tree.arrays([*FEATURES, "trk_originalAlgo", "trk_mva"], library="ak")
    expected = {name: ak.to_numpy(ak.flatten(arrays[name])) for name in arrays.fields}
    if "trk_isTrue" in tree:
        expected["trk_isTrue"] = ak.to_numpy(ak.flatten(tree["trk_isTrue"].array()))
    else:
        matches = ak.num(tree["trk_simTrkIdx"].array(library="ak"), axis=2)
        expected["trk_isTrue"] = ak.to_numpy(ak.flatten(matches)) > 0
    counts = ak.to_numpy(ak.num(arrays["trk_originalAlgo"]))
    expected["event_index"] = np.repeat(np.arange(tree.num_entries), counts)
    return expected


def assert_same_as_direct_read(df: pd.DataFrame, path: Path, event_offset: int = 0) -> None:
    expected = direct_read(path)
    assert len(df) == len(expected["trk_pt"])
    for name in [*FEATURES, "trk_mva"]:
        # Every source value is exact in float32 (float32 branches, small unsigned counts).
        np.testing.assert_array_equal(df[name].to_numpy(), expected[name].astype(np.float32), name)
    np.testing.assert_array_equal(df["trk_originalAlgo"].to_numpy(), expected["trk_originalAlgo"])
    np.testing.assert_array_equal(df["trk_isTrue"].to_numpy(), expected["trk_isTrue"].astype(int))
    np.testing.assert_array_equal(
        df["event_index"].to_numpy(), expected["event_index"] + event_offset
    )


def assert_dtypes(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    for name in [*FEATURES, "trk_mva"]:
        assert df[name].dtype == np.float32, name
    assert df["trk_originalAlgo"].dtype == np.uint8
    assert df["trk_isTrue"].dtype == np.int8
    assert set(np.unique(df["trk_isTrue"])) <= {0, 1}
    assert df["event_index"].dtype == np.uint32
    assert isinstance(df["sample"].dtype, pd.CategoricalDtype)
    assert not any(pd.api.types.is_object_dtype(dtype) for dtype in df.dtypes)


def write_counter_ntuple(
    path: Path,
    compression=None,
    seed: int = 0,
    drop: tuple[str, ...] = (),
    tree_path: str = "trackingNtuple/tree",
) -> Path:
    """A trackingNtuple as uproot writes it: counter `ntrk` plus `trk_*` branches as T[]."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, size=25)
    counts[[0, 7, 24]] = 0  # empty events, also at the end
    n = int(counts.sum())
    branches = {}
    for name in [*FEATURES, "trk_mva"]:
        if name in UINT_FEATURES:
            branches[name] = rng.integers(0, 30, n).astype(np.uint32)
        else:
            branches[name] = rng.normal(0, 10, n).astype(np.float32)
    branches["trk_pt"][:3] = [4e6, np.nan, 0.0]  # extremes and NaN pass through untouched
    branches["trk_originalAlgo"] = rng.choice([4, 5, 7, 22, 23, 24], n).astype(np.uint32)
    branches["trk_isTrue"] = rng.integers(0, 2, n).astype(np.int16)
    trk = ak.zip(
        {
            name.removeprefix("trk_"): ak.unflatten(values, counts)
            for name, values in branches.items()
            if name not in drop
        }
    )
    with uproot.recreate(path, compression=compression or uproot.ZLIB(1)) as file:
        file.mktree(tree_path, {"trk": trk.type.content, "event": np.uint64})
        for part in (slice(0, 10), slice(10, None)):  # two baskets per branch
            events = np.arange(len(counts), dtype=np.uint64)[part]
            file[tree_path].extend({"trk": trk[part], "event": events})
    return path


def basket_compressions(path: Path) -> set[bytes]:
    """The compression magic ("ZL", "XZ", "L4", "ZS") of every compressed basket in the tree."""
    tree = uproot.open(path)["trackingNtuple/tree"]
    found = set()
    with open(path, "rb") as raw:
        for branch in tree.branches:
            for seek in branch.member("fBasketSeek")[: branch.num_baskets]:
                raw.seek(seek)
                nbytes, _, objlen, _, keylen = struct.unpack(">ihiIh", raw.read(16))
                if nbytes - keylen != objlen:  # a basket stored uncompressed has no magic
                    raw.seek(seek + keylen)
                    found.add(raw.read(2))
    return found


# --- the CMSSW std::vector layout ------------------------------------------------------------


@pytest.mark.parametrize("path", [IS_TRUE, SIM_TRK_IDX], ids=["isTrue", "simTrkIdx"])
def test_fixture_equals_direct_read(path):
    df = loader().load_into_dataframe(path, sample="qcd")
    assert_dtypes(df)
    assert_same_as_direct_read(df, path)
    assert list(df["sample"].cat.categories) == ["qcd"]
    # Empty events give no rows; every other event keeps all its tracks under one event_index.
    counts = ak.num(uproot.open(path)["trackingNtuple/tree"]["trk_pt"].array())
    assert 0 < ak.sum(counts == 0) < len(counts)
    assert df["event_index"].nunique() == ak.sum(counts > 0)
    assert df["event_index"].is_monotonic_increasing


def test_sim_trk_idx_label_counts_multiple_matches_as_true():
    tree = uproot.open(SIM_TRK_IDX)["trackingNtuple/tree"]
    matches = ak.to_numpy(ak.flatten(ak.num(tree["trk_simTrkIdx"].array(library="ak"), axis=2)))
    assert {0, 1, 2} <= set(matches)  # the fixture has unmatched, single and double matches
    df = loader().load_into_dataframe(SIM_TRK_IDX)
    np.testing.assert_array_equal(df["trk_isTrue"].to_numpy(), (matches > 0).astype(np.int8))

    # The fast path (raw int32 words) does the work here, not the generic fallback.
    words = tree["trk_simTrkIdx"].array(dataset_loader._VECTOR_VECTOR_INT_WORDS, library="ak")
    tracks_per_event = ak.to_numpy(ak.num(tree["trk_pt"].array()))
    sizes = dataset_loader._inner_sizes(
        ak.to_numpy(ak.flatten(words)), ak.to_numpy(ak.num(words)), tracks_per_event
    )
    np.testing.assert_array_equal(sizes, matches)


def test_sim_trk_idx_generic_reading_gives_the_same(monkeypatch):
    """The fallback for a layout the fast path does not know gives the same labels."""
    fast = loader().load_into_dataframe(SIM_TRK_IDX)
    monkeypatch.setattr(dataset_loader, "_inner_sizes", lambda *args: None)
    pd.testing.assert_frame_equal(loader().load_into_dataframe(SIM_TRK_IDX), fast)


def test_inner_sizes_rejects_other_layouts():
    # Two events: [] and two tracks with sizes 1 and 0 -> words [1, 7, 0].
    words, words_per_event = np.array([1, 7, 0], np.int32), np.array([0, 3])
    sizes = dataset_loader._inner_sizes(words, words_per_event, np.array([0, 2]))
    np.testing.assert_array_equal(sizes, [1, 0])
    assert dataset_loader._inner_sizes(words, words_per_event, np.array([0, 1])) is None
    assert dataset_loader._inner_sizes(words, words_per_event, np.array([0, 3])) is None


def test_small_chunks_and_entry_ranges(monkeypatch):
    whole = loader().load_samples({"a": IS_TRUE, "b": SIM_TRK_IDX})
    chunks = []
    read_chunk = dataset_loader._read_chunk
    monkeypatch.setattr(dataset_loader, "STEP_BYTES", 100_000)
    monkeypatch.setattr(
        dataset_loader, "_read_chunk", lambda *args: chunks.append(args[2]) or read_chunk(*args)
    )
    pd.testing.assert_frame_equal(loader().load_samples({"a": IS_TRUE, "b": SIM_TRK_IDX}), whole)
    assert len(chunks) > 4  # several chunks per file

    options = loader()._read_options()
    part = read_entries(str(SIM_TRK_IDX), 5, 20, **options)
    expected = whole[(whole["sample"] == "b")].copy()
    expected["event_index"] -= 30  # the first file's 30 events
    expected = expected[expected["event_index"].between(5, 19)]
    got = {name: np.concatenate([chunk[name] for chunk in part.chunks]) for name in part.chunks[0]}
    np.testing.assert_array_equal(got.pop("entry"), expected["event_index"])
    assert set(got) == set(COLUMNS[:-2])
    for name, values in got.items():
        np.testing.assert_array_equal(values, expected[name], name)
    assert part.num_entries == 30


def test_load_samples_sample_column_and_event_index():
    df = loader().load_samples({"ttbar": SIM_TRK_IDX, "qcd": [IS_TRUE, SIM_TRK_IDX]})
    assert_dtypes(df)
    assert list(df["sample"].cat.categories) == ["ttbar", "qcd"]
    sizes = df.groupby("sample", observed=True).size()
    assert sizes["ttbar"] == 4606 and sizes["qcd"] == 5908 + 4606
    assert_same_as_direct_read(df.iloc[:4606], SIM_TRK_IDX)
    assert_same_as_direct_read(df.iloc[4606 : 4606 + 5908], IS_TRUE, event_offset=30)
    assert_same_as_direct_read(df.iloc[4606 + 5908 :], SIM_TRK_IDX, event_offset=60)
    # An event belongs to one sample only.
    assert (df.groupby("event_index")["sample"].nunique() == 1).all()


def test_forced_label():
    df = loader(label="trk_isTrue").load_into_dataframe(IS_TRUE)
    assert_same_as_direct_read(df, IS_TRUE)
    with pytest.raises(
        NtupleError, match="'trk_simTrkIdx' \\(the label, `label` = 'trk_simTrkIdx'"
    ):
        loader(label="trk_simTrkIdx").load_into_dataframe(IS_TRUE)
    with pytest.raises(ValueError, match="label"):
        loader(label="isTrue")


def test_sample_without_paths():
    with pytest.raises(ValueError, match="'qcd': no path given"):
        loader().load_samples({"ttbar": IS_TRUE, "qcd": []})


@pytest.mark.parametrize("algorithm", ["ZLIB", "LZMA", "LZ4", "ZSTD"])
def test_root_written_compressions(root_compressed_ntuples, algorithm):
    magic = {"ZLIB": b"ZL", "LZMA": b"XZ", "LZ4": b"L4", "ZSTD": b"ZS"}[algorithm]
    for name in (IS_TRUE.name, SIM_TRK_IDX.name):
        path = root_compressed_ntuples[algorithm, name]
        assert type(uproot.open(path).file.compression).__name__ == algorithm
        assert basket_compressions(path) == {magic}  # the baskets really were recompressed
        df = loader().load_into_dataframe(path)
        assert_dtypes(df)
        assert_same_as_direct_read(df, path)
        assert_same_as_direct_read(df, DATA_DIR / name)  # and hold the fixture's values


# --- the counter-based layout uproot writes ----------------------------------------------------


@pytest.mark.parametrize("algorithm", UPROOT_COMPRESSIONS)
def test_uproot_written_counter_layout(tmp_path, algorithm):
    path = write_counter_ntuple(tmp_path / "counter.root", UPROOT_COMPRESSIONS[algorithm])
    file = uproot.open(path)
    assert type(file.file.compression).__name__ == algorithm
    assert "ntrk" in file["trackingNtuple/tree"]
    assert file["trackingNtuple/tree"]["trk_pt"].typename == "float[]"
    df = loader().load_into_dataframe(path)
    assert_dtypes(df)
    assert_same_as_direct_read(df, path)
    assert df["trk_pt"].iloc[0] == np.float32(4e6) and np.isnan(df["trk_pt"].iloc[1])


# --- paths -----------------------------------------------------------------------------------


def test_paths_folder_glob_list_and_url(tmp_path):
    for name in ("b.root", "a.root", "c.txt"):
        shutil.copy(IS_TRUE, tmp_path / name)
    (tmp_path / "sub").mkdir()
    shutil.copy(IS_TRUE, tmp_path / "sub" / "d.root")
    a, b, d = str(tmp_path / "a.root"), str(tmp_path / "b.root"), str(tmp_path / "sub" / "d.root")
    assert expand_paths(tmp_path) == [a, b]  # sorted, not recursive, .root only
    assert expand_paths(str(tmp_path / "*.root")) == [a, b]
    assert expand_paths(str(tmp_path / "**" / "*.root")) == [a, b, d]
    assert expand_paths([b, str(tmp_path)]) == [b, a]  # order kept, no repeats
    assert expand_paths(f"file://{tmp_path}/*.root") == [f"file://{a}", f"file://{b}"]
    url = "root://eosuser.cern.ch//eos/user/j/jdoe/qcd/file_1.root"
    assert expand_paths(url) == [url]  # a file URL goes to uproot untouched

    df = loader().load_into_dataframe(f"file://{tmp_path}/")
    assert len(df) == 2 * 5908 and df["event_index"].max() == 59


def test_root_url_wildcards_need_fsspec_xrootd():
    pytest.importorskip("fsspec")
    try:
        import fsspec_xrootd  # noqa: F401

        pytest.skip("fsspec-xrootd is installed: listing would need a server")
    except ImportError:
        pass
    url = "root://eosuser.cern.ch//eos/user/j/jdoe/qcd/*.root"
    with pytest.raises(NtupleError, match="fsspec-xrootd") as error:
        expand_paths(url)
    assert url in str(error.value) and "explicitly" in str(error.value)


# --- bad input ---------------------------------------------------------------------------------


def make_not_root(tmp_path: Path) -> Path:
    path = tmp_path / "notes.root"
    path.write_text("these are my notes, not a ROOT file\n" * 20)
    return path


def make_truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.root"
    path.write_bytes(IS_TRUE.read_bytes()[:400_000])
    return path


BAD_INPUTS = {
    "pattern": (lambda d: d / "nothing_*.root", {}, ["no .root file matches this pattern"]),
    "folder": (
        lambda d: (d / "empty_folder").mkdir() or d / "empty_folder",
        {},
        ["no .root file matches this folder"],
    ),
    "missing file": (lambda d: d / "missing.root", {}, ["no such file"]),
    "not ROOT": (make_not_root, {}, ["not a ROOT file"]),
    "truncated": (make_truncated, {}, ["truncated", "400,000 bytes", "932,157"]),
    "no tree": (
        lambda d: write_counter_ntuple(d / "other.root", tree_path="other/tree"),
        {},
        ["no TTree 'trackingNtuple/tree'", "`tree_path`", "other"],
    ),
    "wrong tree_path": (
        lambda d: IS_TRUE,
        {"tree_path": "ntuple/tree"},
        ["no TTree 'ntuple/tree'", "`tree_path`"],
    ),
    "missing feature": (
        lambda d: write_counter_ntuple(d / "f.root", drop=("trk_nPixel", "trk_dz")),
        {},
        ["missing branches 'trk_dz' (a feature, in `features`)", "'trk_nPixel' (a feature"],
    ),
    "missing algo": (
        lambda d: write_counter_ntuple(d / "a.root", drop=("trk_originalAlgo",)),
        {},
        ["'trk_originalAlgo' (the algo branch, `algo_branch`)"],
    ),
    "missing label": (
        lambda d: write_counter_ntuple(d / "l.root", drop=("trk_isTrue",)),
        {},
        ["missing branch for the label", "trk_isTrue", "trk_simTrkIdx", "`label`"],
    ),
    "missing extra": (
        lambda d: write_counter_ntuple(d / "e.root", drop=("trk_mva",)),
        {},
        ["'trk_mva' (an extra branch, in `extra_branches`)"],
    ),
    "empty tree": (
        lambda d: write_empty_tree(d / "empty.root"),
        {},
        ["has 0 entries"],
    ),
}


def write_empty_tree(path: Path) -> Path:
    with uproot.recreate(path) as file:
        file.mktree("trackingNtuple/tree", {"trk_pt": "var * float32"})
    return path


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_problem_and_fix(tmp_path, case):
    make, settings, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(NtupleError) as error:
        loader(**settings).load_into_dataframe(path)
    message = str(error.value)
    assert str(path) in message
    for text in expected:
        assert text in message
    assert "Fix:" in message


def test_worker_errors_reach_the_parent_as_ntuple_error(tmp_path):
    bad = make_truncated(tmp_path)
    with pytest.raises(NtupleError, match="truncated") as error:
        loader(max_workers=2).load_into_dataframe([IS_TRUE, bad])
    assert str(bad) in str(error.value)


def test_skip_bad_files_warns_counts_and_goes_on(tmp_path):
    bad = [make_not_root(tmp_path), make_truncated(tmp_path), write_empty_tree(tmp_path / "e.root")]
    skipping = loader(skip_bad_files=True, max_workers=2)
    with pytest.warns(UserWarning) as records:
        df = skipping.load_into_dataframe([bad[0], IS_TRUE, *bad[1:]])
    messages = [str(record.message) for record in records]
    for path in bad:
        assert any(str(path) in message and "skipping" in message for message in messages)
    assert any("skipped 3 of 4 files" in message for message in messages)
    assert set(skipping.skipped_files) == {str(path) for path in bad}
    assert skipping.num_files == 4
    assert_same_as_direct_read(df, IS_TRUE)

    with pytest.warns(UserWarning), pytest.raises(NtupleError, match="all 3 files are bad"):
        skipping.load_into_dataframe(bad)


def test_two_workers_give_exactly_the_same_dataframe(tmp_path):
    counter = write_counter_ntuple(tmp_path / "counter.root")
    samples = {"a": [IS_TRUE, SIM_TRK_IDX], "b": counter, "c": [SIM_TRK_IDX, IS_TRUE]}
    one = loader(max_workers=1).load_samples(samples)
    two = loader(max_workers=2).load_samples(samples)
    pd.testing.assert_frame_equal(one, two)
    assert_dtypes(two)
