"""DatasetLoader against direct uproot reads of the same files: layouts, compressions, entry
ranges, workers, bad input, remote files. The cache is tested in test_loader_cache.py."""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot

import config
import dataset_loader
import loader.baskets
import loader.columns
import loader.decode
import loader.ntuples
import loader.scan
from dataset_loader import DatasetLoader, NtupleError, expand_paths
from loader.workers import Call, Worker, WorkerPool, pick_call

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


def make_loader(**settings) -> DatasetLoader:
    return DatasetLoader(**{"max_workers": 1, "features": FEATURES, "progress": False, **settings})


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
    counts: np.ndarray | None = None,
) -> Path:
    """A trackingNtuple as uproot writes it: counter `ntrk` plus `trk_*` branches as T[]."""
    rng = np.random.default_rng(seed)
    if counts is None:
        counts = rng.integers(0, 40, size=25)
        counts[[0, 7, 24]] = 0  # empty events, also at the end
    n = int(counts.sum())
    branches = {}
    for name in [*FEATURES, "trk_mva"]:
        if name in UINT_FEATURES:
            branches[name] = rng.integers(0, 30, n).astype(np.uint32)
        else:
            branches[name] = rng.normal(0, 10, n).astype(np.float32)
    branches["trk_pt"][:3] = [4e6, np.nan, 0.0][:n]  # extremes and NaN pass through untouched
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
        for part in (slice(0, 10), slice(10, None)):  # two baskets (clusters) per branch
            events = np.arange(len(counts), dtype=np.uint64)[part]
            file[tree_path].extend({"trk": trk[part], "event": events})
    return path


def assert_baskets_read_like_uproot(path: Path) -> None:
    """Our own basket reading (loader.baskets.read_basket) gives uproot's data and offsets,
    without leaving any basket to uproot."""
    tree = uproot.open(path)["trackingNtuple/tree"]
    names = ["trk_pt", "trk_nPixel", "trk_originalAlgo", "trk_isTrue", "trk_simTrkIdx"]
    with open(path, "rb") as raw:
        for branch in [tree[name] for name in names if name in tree]:
            offsets = branch.entry_offsets
            for number in range(branch.num_baskets):
                raw.seek(branch.member("fBasketSeek")[number])
                data = raw.read(branch.basket_compressed_bytes(number))
                ours = loader.baskets.read_basket(data, offsets[number], offsets[number + 1])
                theirs = branch.basket(number)
                assert ours is not None, (branch.name, number)
                np.testing.assert_array_equal(ours.data, theirs.data)
                np.testing.assert_array_equal(ours.byte_offsets, theirs.byte_offsets)


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
    df = make_loader().load_into_dataframe(path, sample="qcd")
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
    df = make_loader().load_into_dataframe(SIM_TRK_IDX)
    np.testing.assert_array_equal(df["trk_isTrue"].to_numpy(), (matches > 0).astype(np.int8))

    # The fast path (raw int32 words) does the work here, not the generic fallback.
    words = tree["trk_simTrkIdx"].array(loader.ntuples.VECTOR_VECTOR_INT_WORDS, library="ak")
    tracks_per_event = ak.to_numpy(ak.num(tree["trk_pt"].array()))
    sizes = loader.decode.inner_sizes(
        ak.to_numpy(ak.flatten(words)), ak.to_numpy(ak.num(words)), tracks_per_event
    )
    np.testing.assert_array_equal(sizes, matches)


def test_sim_trk_idx_generic_reading_gives_the_same(monkeypatch):
    """The fallback for a layout the fast path does not know gives the same labels."""
    fast = make_loader().load_into_dataframe(SIM_TRK_IDX)
    monkeypatch.setattr(loader.decode, "inner_sizes", lambda *args: None)
    pd.testing.assert_frame_equal(make_loader().load_into_dataframe(SIM_TRK_IDX), fast)


def test_inner_sizes_rejects_other_layouts():
    # Two events: [] and two tracks with sizes 1 and 0 -> words [1, 7, 0].
    words, words_per_event = np.array([1, 7, 0], np.int32), np.array([0, 3])
    sizes = loader.decode.inner_sizes(words, words_per_event, np.array([0, 2]))
    np.testing.assert_array_equal(sizes, [1, 0])
    assert loader.decode.inner_sizes(words, words_per_event, np.array([0, 1])) is None
    assert loader.decode.inner_sizes(words, words_per_event, np.array([0, 3])) is None


def count_tasks(monkeypatch) -> list:
    """The decode tasks run in this process (max_workers=1), recorded as they run."""
    tasks = []
    decode = dataset_loader.decode_task
    monkeypatch.setattr(
        dataset_loader, "decode_task", lambda task, *args: tasks.append(task) or decode(task, *args)
    )
    return tasks


def test_entry_ranges_of_clustered_files(clustered_ntuples, monkeypatch):
    """Files with many clusters split into many entry ranges give the same rows."""
    paths = [clustered_ntuples[IS_TRUE.name], clustered_ntuples[SIM_TRK_IDX.name]]
    whole = make_loader().load_samples({"a": IS_TRUE, "b": SIM_TRK_IDX})
    tasks = count_tasks(monkeypatch)
    monkeypatch.setattr(dataset_loader, "TASK_BYTES", 1)  # one task per cluster
    split = make_loader().load_samples({"a": paths[0], "b": paths[1]})
    pd.testing.assert_frame_equal(split, whole)
    assert len({task.path for task in tasks}) == 2 and len(tasks) > 20
    # The ranges tile each file's entries and the rows, in order.
    for path in paths:
        ranges = [(t.entry_start, t.entry_stop) for t in tasks if t.path == str(path)]
        assert ranges[0][0] == 0 and ranges[-1][1] == 30
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert [t.row_start for t in tasks[1:]] == [t.row_stop for t in tasks[:-1]]
    assert tasks[-1].row_stop == len(whole)


def test_tasks_follow_the_work_size(clustered_ntuples, monkeypatch):
    """Task size: at most TASK_BYTES, and small enough for TASKS_PER_WORKER per worker."""
    path = clustered_ntuples[IS_TRUE.name]
    tasks = count_tasks(monkeypatch)
    make_loader().load_into_dataframe(path)
    assert len(tasks) >= 8  # 16 per worker wanted, on 15 clusters
    tasks.clear()
    monkeypatch.setattr(dataset_loader, "TASKS_PER_WORKER", 1)
    make_loader().load_into_dataframe(path)
    assert len(tasks) == 1


def test_one_file_two_workers_gives_the_same(clustered_ntuples):
    path = clustered_ntuples[SIM_TRK_IDX.name]
    one = make_loader(max_workers=1).load_into_dataframe(path)
    two = make_loader(max_workers=2).load_into_dataframe(path)
    pd.testing.assert_frame_equal(one, two)
    assert_same_as_direct_read(two, SIM_TRK_IDX)


def test_zlib_without_libdeflate_gives_the_same(clustered_ntuples, monkeypatch):
    path = clustered_ntuples[IS_TRUE.name]
    fast = make_loader().load_into_dataframe(path)
    monkeypatch.setattr(loader.baskets, "libdeflate", None)
    pd.testing.assert_frame_equal(make_loader().load_into_dataframe(path), fast)


def test_generic_reading_gives_the_same(clustered_ntuples, monkeypatch):
    """Layouts the fast paths do not know (basket headers, raw basket decoding) fall back to
    uproot's generic reading, with the same result."""
    paths = {"a": clustered_ntuples[IS_TRUE.name], "b": clustered_ntuples[SIM_TRK_IDX.name]}
    fast = make_loader().load_samples(paths)
    monkeypatch.setattr(loader.baskets, "read_basket", lambda *args: None)  # uproot's baskets
    pd.testing.assert_frame_equal(make_loader().load_samples(paths), fast)
    monkeypatch.setattr(loader.scan, "tracks_from_headers", lambda *args: None)
    pd.testing.assert_frame_equal(make_loader().load_samples(paths), fast)
    monkeypatch.setattr(loader.decode, "jagged_layout", lambda *args: None)
    pd.testing.assert_frame_equal(make_loader().load_samples(paths), fast)


def test_file_without_tracks(tmp_path):
    path = write_counter_ntuple(tmp_path / "empty_events.root", counts=np.zeros(12, int))
    df = make_loader().load_into_dataframe(path, sample="qcd")
    assert len(df) == 0
    assert_dtypes(df)
    both = make_loader().load_samples({"qcd": [path, IS_TRUE]})
    assert_same_as_direct_read(both, IS_TRUE, event_offset=12)


def test_bytes_per_track_and_no_copies():
    """4 bytes per float column, 7 more per track; the columns are views of the mapped files."""
    df = make_loader().load_into_dataframe(IS_TRUE)
    floats = len(FEATURES) + 1  # + trk_mva
    per_column = df.memory_usage(index=False, deep=True)
    assert per_column.drop("sample").sum() == len(df) * (4 * floats + 6)
    assert len(df) <= per_column["sample"] <= len(df) + 100  # int8 codes + the category names
    for name in ["trk_pt", "event_index"]:
        base = df[name].to_numpy()
        while base.base is not None and not isinstance(base, np.memmap):
            base = base.base
        assert isinstance(base, np.memmap), name
    # Copy-on-write: changing the frame in place is allowed and stays private.
    df.loc[0, "trk_pt"] = -1.0
    assert df["trk_pt"].iloc[0] == -1.0


def test_load_samples_sample_column_and_event_index():
    df = make_loader().load_samples({"ttbar": SIM_TRK_IDX, "qcd": [IS_TRUE, SIM_TRK_IDX]})
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
    df = make_loader(label="trk_isTrue").load_into_dataframe(IS_TRUE)
    assert_same_as_direct_read(df, IS_TRUE)
    with pytest.raises(
        NtupleError, match="'trk_simTrkIdx' \\(the label, `label` = 'trk_simTrkIdx'"
    ):
        make_loader(label="trk_simTrkIdx").load_into_dataframe(IS_TRUE)
    with pytest.raises(ValueError, match="label"):
        make_loader(label="isTrue")


def test_sample_without_paths():
    with pytest.raises(ValueError, match="'qcd': no path given"):
        make_loader().load_samples({"ttbar": IS_TRUE, "qcd": []})


@pytest.mark.parametrize("algorithm", ["ZLIB", "LZMA", "LZ4", "ZSTD"])
def test_root_written_compressions(root_compressed_ntuples, algorithm):
    magic = {"ZLIB": b"ZL", "LZMA": b"XZ", "LZ4": b"L4", "ZSTD": b"ZS"}[algorithm]
    for name in (IS_TRUE.name, SIM_TRK_IDX.name):
        path = root_compressed_ntuples[algorithm, name]
        assert type(uproot.open(path).file.compression).__name__ == algorithm
        assert basket_compressions(path) == {magic}  # the baskets really were recompressed
        assert_baskets_read_like_uproot(path)
        df = make_loader().load_into_dataframe(path)
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
    assert_baskets_read_like_uproot(path)
    df = make_loader().load_into_dataframe(path)
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

    df = make_loader().load_into_dataframe(f"file://{tmp_path}/")
    assert len(df) == 2 * 5908 and df["event_index"].max() == 59


def test_root_url_wildcards_need_fsspec_xrootd(monkeypatch):
    fsspec = pytest.importorskip("fsspec")

    def without_fsspec_xrootd(url, **kwargs):  # what fsspec raises when it is not installed
        raise ImportError("Install fsspec-xrootd to access XRootD storage")

    monkeypatch.setattr(fsspec.core, "url_to_fs", without_fsspec_xrootd)
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
        make_loader(**settings).load_into_dataframe(path)
    message = str(error.value)
    assert str(path) in message
    for text in expected:
        assert text in message
    assert "Fix:" in message


def test_worker_errors_reach_the_parent_as_ntuple_error(tmp_path):
    bad = make_truncated(tmp_path)
    with pytest.raises(NtupleError, match="truncated") as error:
        make_loader(max_workers=2).load_into_dataframe([IS_TRUE, bad])
    assert str(bad) in str(error.value)


def test_skip_bad_files_warns_counts_and_goes_on(tmp_path):
    bad = [make_not_root(tmp_path), make_truncated(tmp_path), write_empty_tree(tmp_path / "e.root")]
    skipping = make_loader(skip_bad_files=True, max_workers=2)
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
    one = make_loader(max_workers=1).load_samples(samples)
    two = make_loader(max_workers=2).load_samples(samples)
    pd.testing.assert_frame_equal(one, two)
    assert_dtypes(two)


def staging_folders() -> list[Path]:
    """Column folders of this process left in /dev/shm or the temporary folder."""
    prefix = f"{loader.columns.STAGING}{os.getpid()}-"
    bases = {Path(tempfile.gettempdir()), Path(loader.columns.SHM)}
    return [folder for base in bases if base.is_dir() for folder in base.glob(prefix + "*")]


def test_file_failing_while_decoding(tmp_path, monkeypatch):
    """A file that passes the scan but breaks while decoding: an error naming it, or with
    skip_bad_files its rows are cut out of the columns."""
    bad = tmp_path / "bad.root"
    shutil.copy(SIM_TRK_IDX, bad)
    values = loader.decode.jagged_values

    def failing(branch, baskets, start, stop, header, dtype, path):
        if path == str(bad) and branch.name == "trk_dz":
            raise NtupleError(f"{path}: broken basket (test)")
        return values(branch, baskets, start, stop, header, dtype, path)

    monkeypatch.setattr(loader.decode, "jagged_values", failing)
    with pytest.raises(NtupleError, match="bad.root: broken basket"):
        make_loader().load_into_dataframe([IS_TRUE, bad, SIM_TRK_IDX])
    assert staging_folders() == []

    skipping = make_loader(skip_bad_files=True)
    with pytest.warns(UserWarning) as records:
        df = skipping.load_samples({"a": [IS_TRUE, bad], "b": SIM_TRK_IDX})
    messages = [str(record.message) for record in records]
    assert any("skipping bad file" in m and "broken basket" in m for m in messages)
    assert any("skipped 1 of 3 files" in message for message in messages)
    assert set(skipping.skipped_files) == {str(bad)}
    assert len(df) == 5908 + 4606
    assert_dtypes(df)
    assert_same_as_direct_read(df.iloc[:5908], IS_TRUE)
    # The skipped file's events keep their numbers: event_index stays unique, with a gap.
    assert_same_as_direct_read(df.iloc[5908:], SIM_TRK_IDX, event_offset=60)
    assert list(df["sample"].iloc[[0, -1]]) == ["a", "b"]
    assert staging_folders() == []


def sleep_and_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def started_pool(size: int) -> WorkerPool:
    pool = WorkerPool(size)
    deadline = time.monotonic() + 60
    while len(pool.ready) < size:  # so that the workers, not this process, run the calls
        assert time.monotonic() < deadline, "the worker processes did not start"
        time.sleep(0.01)
    return pool


def test_pool_spreads_one_file_over_every_worker():
    """Entry ranges of one file go to every worker."""
    pool = started_pool(2)
    try:
        calls = [Call(sleep_and_pid, (0.05,), "one.root") for _ in range(20)]
        pids = [result() for _, result in pool.run(calls)]
    finally:
        pool.close(wait=True)
    assert len(pids) == 20
    assert set(pids) == {worker.pid for worker in pool.ready}


def test_this_process_works_until_the_workers_are_up(monkeypatch):
    monkeypatch.setattr(WorkerPool, "_start", lambda self: None)  # never up
    pool = WorkerPool(2)
    calls = [Call(sleep_and_pid, (0.0,), "one.root") for _ in range(5)]
    assert [result() for _, result in pool.run(calls)] == [os.getpid()] * 5
    pool.close(wait=True)


def test_pick_prefers_open_files_then_new_files_then_steals():
    worker, pick = Worker, pick_call
    calls = [Call(abs, (i,), file) for i, file in enumerate("aaabbc")]
    has_a, has_b, fresh = worker(None, None, ["a"]), worker(None, None, ["b"]), worker(None, None)
    workers = [has_a, has_b, fresh]
    assert pick(has_a, [0, 1, 2, 3, 4, 5], calls, workers) == 0  # a file it has open
    assert pick(fresh, [1, 2, 3, 4, 5], calls, workers) == 5  # a file nobody has open
    assert pick(fresh, [1, 2, 3], calls, workers) == 2  # the end of the file with most left


def test_worker_errors_in_worker_processes(tmp_path):
    """Errors raised in a worker process come back as NtupleError, with the file named."""
    bad = make_truncated(tmp_path)
    options = make_loader()._read_options()
    pool = started_pool(2)
    try:
        calls = [Call(dataset_loader.scan_file, (str(bad), options), str(bad))]
        [(_, result)] = list(pool.run(calls))
        with pytest.raises(NtupleError, match="truncated") as error:
            result()
        assert str(bad) in str(error.value)
    finally:
        pool.close(wait=True)


# --- remote files --------------------------------------------------------------------------


def test_xrootd_urls_read_like_local_files(xrootd_server, clustered_ntuples):
    """root:// URLs through fsspec-xrootd, against a real XRootD server on loopback."""
    url, export = xrootd_server
    export = Path(tempfile.mkdtemp(dir=export))  # this test's own folder on the server
    export.chmod(0o755)
    shutil.copy(clustered_ntuples[SIM_TRK_IDX.name], export / "sim.root")
    shutil.copy(IS_TRUE, export / "true.root")
    remote = [f"{url}{export}/sim.root", f"{url}{export}/true.root"]
    assert remote[0].startswith("root://127.0.0.1:") and "//" in remote[0][7:]
    local = make_loader().load_samples({"a": [SIM_TRK_IDX, IS_TRUE]})
    pd.testing.assert_frame_equal(make_loader(max_workers=2).load_samples({"a": remote}), local)
    pd.testing.assert_frame_equal(make_loader().load_samples({"a": remote}), local)
    # A folder or pattern URL is listed through fsspec-xrootd.
    assert expand_paths(f"{url}{export}/") == sorted(remote)
    assert expand_paths(f"{url}{export}/s*.root") == [remote[0]]
