"""The loader's columnar cache: the second load, stale and damaged entries, settings in the key,
atomic writes, skipped files, remote files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import config
import dataset_loader
import loader.columns
from dataset_loader import CacheWarning, DatasetLoader, NtupleError

DATA_DIR = Path(__file__).parent / "data"
IS_TRUE = DATA_DIR / "trackingNtuple_isTrue.root"
SIM_TRK_IDX = DATA_DIR / "trackingNtuple_simTrkIdx.root"
FEATURES = list(config.features)


def make_loader(cache_dir: Path | None, **settings) -> DatasetLoader:
    settings = {"max_workers": 1, "features": FEATURES, "progress": False, **settings}
    return DatasetLoader(cache_dir=cache_dir, **settings)


@pytest.fixture
def samples(tmp_path) -> dict[str, list[Path]]:
    """Copies of the fixtures, free to modify: {"qcd": [isTrue], "ttbar": [simTrkIdx]}."""
    (tmp_path / "in").mkdir()
    copies = [shutil.copy(path, tmp_path / "in" / path.name) for path in (IS_TRUE, SIM_TRK_IDX)]
    return {"qcd": [Path(copies[0])], "ttbar": [Path(copies[1])]}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("tracks-*"))


def no_decoding(monkeypatch) -> None:
    """Make any reading of a ROOT file fail: what is loaded now comes from the cache."""

    def fail(*args):
        raise AssertionError("a ROOT file was read")

    monkeypatch.setattr(dataset_loader, "scan_file", fail)
    monkeypatch.setattr(dataset_loader, "decode_task", fail)


def test_second_load_comes_from_the_cache(samples, cache, monkeypatch):
    uncached = make_loader(None).load_samples(samples)
    first = make_loader(cache)
    cold = first.load_samples(samples)
    assert first.last_load["source"] == "ntuples"
    pd.testing.assert_frame_equal(cold, uncached)
    [entry] = entries(cache)
    assert first.last_load["cache_entry"] == str(entry)
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # no staging folder left

    no_decoding(monkeypatch)
    second = make_loader(cache)
    cached = second.load_samples(samples)
    assert second.last_load["source"] == "cache"
    pd.testing.assert_frame_equal(cached, uncached)
    assert not cached["trk_pt"].to_numpy().flags.writeable  # pandas' copy-on-write view


def test_workers_and_cache_give_the_same(samples, cache, clustered_ntuples, monkeypatch):
    """1 or 2 workers, cold or cached: the same frame."""
    samples = {**samples, "clustered": [clustered_ntuples[SIM_TRK_IDX.name]]}
    monkeypatch.setattr(dataset_loader, "TASK_BYTES", 1)  # many entry ranges
    reference = make_loader(None).load_samples(samples)
    for workers in (1, 2):
        folder = cache / f"workers{workers}"
        cold = make_loader(folder, max_workers=workers).load_samples(samples)
        cached = make_loader(folder, max_workers=workers)
        pd.testing.assert_frame_equal(cold, reference)
        pd.testing.assert_frame_equal(cached.load_samples(samples), reference)
        assert cached.last_load["source"] == "cache"
    # The checksums were written per entry range by the workers.
    manifest = json.loads((entries(cache / "workers2")[0] / "manifest.json").read_text())
    assert len(manifest["row_splits"]) > 10


def test_entry_holds_plain_npy_columns_and_a_manifest(samples, cache):
    df = make_loader(cache).load_samples(samples)
    [entry] = entries(cache)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["num_tracks"] == len(df) == 5908 + 4606
    assert manifest["num_events"] == 60
    assert manifest["identity"]["label"] == "auto"
    assert [name for name, _ in manifest["identity"]["columns"]] == [*df.columns]
    for path, state in zip([*samples["qcd"], *samples["ttbar"]], manifest["files"], strict=True):
        assert state == {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
    for name in ["trk_pt", "trk_originalAlgo", "trk_isTrue", "event_index"]:
        np.testing.assert_array_equal(np.load(entry / f"{name}.npy"), df[name].to_numpy())
    codes = np.load(entry / "sample.npy")
    np.testing.assert_array_equal(codes, df["sample"].cat.codes.to_numpy())


def test_modified_input_file_rebuilds_the_entry(samples, cache, monkeypatch):
    make_loader(cache).load_samples(samples)
    path = samples["ttbar"][0]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(CacheWarning, match=f"stale: {path} was modified"):
        make_loader(cache).load_samples(samples)
    again = make_loader(cache)
    again.load_samples(samples)  # the rebuilt entry is used, without a warning
    assert again.last_load["source"] == "cache"

    shutil.copy(IS_TRUE, path)  # other content: another size
    with pytest.warns(CacheWarning, match=r"changed size \(764,239 -> 932,157 bytes\)"):
        rebuilt = make_loader(cache).load_samples(samples)
    assert len(rebuilt) == 2 * 5908
    assert len(entries(cache)) == 1


def test_missing_input_file_rebuilds_and_reports(samples, cache):
    make_loader(cache).load_samples(samples)
    samples["ttbar"][0].unlink()
    with (
        pytest.warns(CacheWarning, match="cannot be found any more"),
        pytest.raises(NtupleError, match="no such file"),
    ):
        make_loader(cache).load_samples(samples)


def damage_truncate(entry: Path) -> None:
    column = entry / "trk_dz.npy"
    column.write_bytes(column.read_bytes()[:-100])


def damage_flip(entry: Path) -> None:
    column = entry / "trk_dz.npy"
    data = bytearray(column.read_bytes())
    data[-5] ^= 0xFF  # same size, one value changed
    column.write_bytes(bytes(data))


def damage_manifest(entry: Path) -> None:
    (entry / "manifest.json").unlink()


def damage_garble(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"format": ')


def damage_column_file(entry: Path) -> None:
    (entry / "trk_isTrue.npy").unlink()


DAMAGE = {
    "truncated column": (damage_truncate, "trk_dz.npy has .* bytes instead of .* \\(truncated"),
    "flipped byte": (damage_flip, "checksum of column trk_dz, rows .* does not match"),
    "no manifest": (damage_manifest, "manifest.json is missing"),
    "garbled manifest": (damage_garble, "manifest.json is unreadable"),
    "missing column": (damage_column_file, "it is damaged .*No such file.*trk_isTrue.npy"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_entry_is_rebuilt(samples, cache, case):
    damage, message = DAMAGE[case]
    # A copy: the frame maps the entry's files, which the damage rewrites in place (the loader
    # itself never does: it replaces entries by renaming).
    original = make_loader(cache).load_samples(samples).copy(deep=True)
    [entry] = entries(cache)
    damage(entry)
    rebuilding = make_loader(cache)
    with pytest.warns(CacheWarning, match=message) as records:
        rebuilt = rebuilding.load_samples(samples)
    assert "Rebuilding it from the ROOT files" in str(records[0].message)
    assert rebuilding.last_load["source"] == "ntuples"
    pd.testing.assert_frame_equal(rebuilt, original)
    again = make_loader(cache)
    pd.testing.assert_frame_equal(again.load_samples(samples), original)
    assert again.last_load["source"] == "cache"
    assert entries(cache) == [entry]


def test_settings_are_part_of_the_key(samples, cache):
    full = make_loader(cache).load_samples(samples)
    fewer = make_loader(cache, features=FEATURES[:5], extra_branches=()).load_samples(samples)
    assert list(fewer.columns) == [*FEATURES[:5], "trk_originalAlgo", "trk_isTrue"] + [
        "event_index",
        "sample",
    ]
    forced = make_loader(cache, label="trk_isTrue").load_samples({"qcd": samples["qcd"]})
    renamed = make_loader(cache).load_samples({"other": samples["qcd"], "ttbar": samples["ttbar"]})
    assert len(entries(cache)) == 4
    pd.testing.assert_frame_equal(
        fewer, full[fewer.columns.drop("sample")].assign(sample=fewer["sample"])
    )
    assert len(forced) == 5908
    assert list(renamed["sample"].cat.categories) == ["other", "ttbar"]


def test_changing_the_frame_never_changes_the_cache(samples, cache):
    df = make_loader(cache).load_samples(samples)
    expected = df["trk_pt"].to_numpy().copy()
    df.loc[:10, "trk_pt"] = -1.0
    df["trk_dz"] = 0.0
    cached = make_loader(cache)
    np.testing.assert_array_equal(cached.load_samples(samples)["trk_pt"].to_numpy(), expected)
    assert cached.last_load["source"] == "cache"


def make_not_root(folder: Path) -> Path:
    path = folder / "notes.root"
    path.write_text("not a ROOT file\n" * 50)
    return path


def test_skipped_files_are_remembered(samples, cache, tmp_path):
    bad = make_not_root(tmp_path)
    samples = {"qcd": [samples["qcd"][0], bad]}
    with pytest.warns(UserWarning) as records:
        first = make_loader(cache, skip_bad_files=True).load_samples(samples)
    assert any("skipped 1 of 2 files" in str(record.message) for record in records)
    again = make_loader(cache, skip_bad_files=True)
    with pytest.warns(UserWarning, match="skipped 1 of 2 files"):
        pd.testing.assert_frame_equal(again.load_samples(samples), first)
    assert again.last_load["source"] == "cache"
    assert list(again.skipped_files) == [str(bad)]
    with (
        pytest.warns(CacheWarning, match="leaves out 1 bad files"),
        pytest.raises(NtupleError, match="not a ROOT file"),
    ):
        make_loader(cache).load_samples(samples)


def test_failed_load_writes_no_entry(samples, cache, tmp_path):
    bad = make_not_root(tmp_path)
    with pytest.raises(NtupleError, match="not a ROOT file"):
        make_loader(cache).load_samples({"qcd": [*samples["qcd"], bad]})
    assert not cache.exists() or list(cache.iterdir()) == []


def test_orphaned_staging_folders_are_removed(samples, cache):
    cache.mkdir()
    orphan = cache / f"{loader.columns.STAGING}999999999-abcd"  # no such process
    orphan.mkdir()
    (orphan / "trk_pt.npy").write_bytes(b"half written")
    make_loader(cache).load_samples(samples)
    assert not orphan.exists()


def test_without_room_or_rights_the_load_goes_on_uncached(samples, cache, monkeypatch, tmp_path):
    expected = make_loader(None).load_samples(samples)
    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil,
        "disk_usage",
        lambda path: real(path)._replace(free=0) if Path(path) == cache else real(path),
    )
    with pytest.warns(CacheWarning, match="0.0 GB free"):
        df = make_loader(cache).load_samples(samples)
    pd.testing.assert_frame_equal(df, expected)
    assert entries(cache) == []

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.warns(CacheWarning, match="cannot write the cache"):
        df = make_loader(not_a_folder).load_samples(samples)
    pd.testing.assert_frame_equal(df, expected)


def test_full_disk_is_not_blamed_on_the_files(samples, cache, monkeypatch):
    def full(descriptor, data, position):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(dataset_loader.ColumnWriteError, match="No space left.*Fix: free space"):
        make_loader(cache, skip_bad_files=True).load_samples(samples)
    assert entries(cache) == []


def test_file_without_tracks_is_cached(cache, tmp_path):
    from test_dataset_loader import write_counter_ntuple

    path = write_counter_ntuple(tmp_path / "no_tracks.root", counts=np.zeros(5, int))
    cold = make_loader(cache).load_into_dataframe(path)
    cached = make_loader(cache)
    pd.testing.assert_frame_equal(cached.load_into_dataframe(path), cold)
    assert cached.last_load["source"] == "cache" and len(cold) == 0


def test_remote_files_are_cached(xrootd_server, cache, monkeypatch):
    url, export = xrootd_server
    export = Path(tempfile.mkdtemp(dir=export))  # this test's own folder on the server
    export.chmod(0o755)
    path = export / "cached.root"
    shutil.copy(SIM_TRK_IDX, path)
    remote = f"{url}{export}/cached.root"
    cold = make_loader(cache, max_workers=2).load_into_dataframe(remote)
    pd.testing.assert_frame_equal(cold, make_loader(None).load_into_dataframe(SIM_TRK_IDX))
    cached = make_loader(cache)
    pd.testing.assert_frame_equal(cached.load_into_dataframe(remote), cold)
    assert cached.last_load["source"] == "cache"
    os.utime(path, (path.stat().st_atime + 5, path.stat().st_mtime + 5))
    with pytest.warns(CacheWarning, match=f"stale: {remote} was modified"):
        make_loader(cache).load_into_dataframe(remote)


def test_entry_on_a_network_filesystem_is_read_not_mapped(samples, cache, monkeypatch):
    mapped = make_loader(cache).load_samples(samples)
    monkeypatch.setattr(loader.columns, "network_filesystem", lambda path: True)
    read = make_loader(cache)
    df = read.load_samples(samples)
    assert read.last_load["source"] == "cache"
    pd.testing.assert_frame_equal(df, mapped)
    base = df["trk_pt"].to_numpy()
    while base.base is not None:
        base = base.base
    assert not isinstance(base, np.memmap)


def test_network_filesystem_is_the_type_of_the_innermost_mount(tmp_path, monkeypatch):
    import psutil

    def mount(point: Path | str, fstype: str) -> SimpleNamespace:
        return SimpleNamespace(device="dev", mountpoint=str(point), fstype=fstype, opts="rw")

    inner = tmp_path / "eos"
    (inner / "user").mkdir(parents=True)
    (inner / "scratch").mkdir()
    mounts = [
        mount("/", "ext4"),
        mount(inner / "scratch", "ext4"),  # a local disk mounted inside the network one
        mount(inner, "fuse.eosxd"),
        mount(tmp_path / "eos2", "nfs4"),
    ]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: mounts)
    assert loader.columns.network_filesystem(str(inner / "user"))
    assert loader.columns.network_filesystem(str(inner))
    assert not loader.columns.network_filesystem(str(tmp_path))  # eos2 is not a parent of it
    assert not loader.columns.network_filesystem(str(tmp_path / "eos2x"))
    assert not loader.columns.network_filesystem(str(inner / "scratch"))  # the innermost decides
