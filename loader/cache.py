"""The columnar cache: one entry per set of inputs, the columns as .npy files and a manifest
that records every file's size and modification time and a checksum of every column slice."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from loader.columns import STAGING, Columns, digest, map_columns, remove_orphans
from loader.errors import CacheWarning

CACHE_FORMAT = "trackloader-npy-1"


def _file_state(path: str) -> dict | None:
    """Size and modification time of a file or URL; None if it cannot be had (missing file)."""
    try:
        if "://" in path:
            import fsspec

            fs, inner = fsspec.core.url_to_fs(path)
            info = fs.info(inner)
            mtime = info.get("mtime", info.get("modified", info.get("LastModified")))
            return {"size": int(info["size"]), "mtime": str(mtime)}
        stat = os.stat(path)
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except (ImportError, OSError, ValueError, KeyError):
        return None


class CacheEntry:
    """The cache entry of one set of inputs: `<cache_dir>/tracks-<key>/`."""

    def __init__(self, root: Path, identity: dict, files: list[str]) -> None:
        self.root = root
        self.identity = identity
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        self.path = root / f"tracks-{key}"
        self.files = files
        if any("://" in path for path in files):  # one round trip per remote file: in parallel
            with ThreadPoolExecutor(max_workers=16) as threads:
                self.states = list(threads.map(_file_state, files))
        else:
            self.states = [_file_state(path) for path in files]

    def read(self, skip_bad_files: bool) -> tuple[dict[str, np.ndarray], dict] | None:
        """The verified, memory-mapped columns and the manifest; None if there is no entry, or
        (with a CacheWarning saying why) if it is stale, truncated or corrupt."""
        if not self.path.exists():
            return None
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except FileNotFoundError:
            problem = "its manifest.json is missing (an interrupted write?)"
        except (OSError, ValueError) as err:
            problem = f"its manifest.json is unreadable ({err})"
        else:
            try:
                problem = self._stale(manifest, skip_bad_files)
                if problem is None:
                    return self._verified_columns(manifest), manifest
            except (OSError, ValueError, KeyError, TypeError) as err:
                problem = f"it is damaged ({type(err).__name__}: {err})"
        warnings.warn(
            f"cache entry {self.path} is not used: {problem}. Rebuilding it from the ROOT files.",
            CacheWarning,
            stacklevel=3,
        )
        return None

    def _stale(self, manifest: dict, skip_bad_files: bool) -> str | None:
        if manifest.get("format") != CACHE_FORMAT or manifest.get("identity") != self.identity:
            return "it was written by another version of the loader"
        changes = []
        for path, old, new in zip(self.files, manifest["files"], self.states, strict=True):
            if old == new:
                continue
            if new is None:
                changes.append(f"{path} cannot be found any more")
            elif old is None:
                changes.append(f"{path} exists now")
            elif old["size"] != new["size"]:
                changes.append(f"{path} changed size ({old['size']:,} -> {new['size']:,} bytes)")
            else:
                changes.append(f"{path} was modified")
        if changes:
            more = f" and {len(changes) - 3} more files" if len(changes) > 3 else ""
            return f"it is stale: {'; '.join(changes[:3])}{more}, since it was written"
        if manifest["skipped_files"] and not skip_bad_files:
            return (
                f"it leaves out {len(manifest['skipped_files'])} bad files "
                "(written with skip_bad_files=True), which must now be read"
            )
        return None

    def _verified_columns(self, manifest: dict) -> dict[str, np.ndarray]:
        length = manifest["num_tracks"]
        columns = Columns(str(self.path), length, tuple(map(tuple, self.identity["columns"])))
        for name, _ in columns.dtypes:
            size, expected = os.path.getsize(columns.path(name)), manifest["column_bytes"][name]
            if size != expected:
                raise ValueError(
                    f"column file {name}.npy has {size:,} bytes instead of {expected:,} "
                    "(truncated?)"
                )
        arrays = map_columns(columns)
        for name, dtype in columns.dtypes:
            array = arrays[name]
            if array.dtype != np.dtype(dtype) or array.shape != (length,):
                raise ValueError(f"column file {name}.npy holds {array.dtype}{array.shape}")
            for (start, stop), expected in zip(
                manifest["row_splits"], manifest["xxh3_64"][name], strict=True
            ):
                if digest(array[start:stop]) != expected:
                    raise ValueError(
                        f"the checksum of column {name}, rows {start:,}-{stop:,}, does not "
                        "match (corrupted on disk?)"
                    )
        return arrays

    def staging_folder(self, nbytes: int) -> str | None:
        """A new folder next to the entry to fill; None (with a warning) if there is no room."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            remove_orphans(self.root)
            free = shutil.disk_usage(self.root).free
            if free < nbytes + 256_000_000:
                warnings.warn(
                    f"cache folder {self.root} has {free / 1e9:.1f} GB free, the cache of this "
                    f"load needs {nbytes / 1e9:.1f} GB: loading without writing it. Fix: free "
                    "space, or set `cache_dir` in config.py to a larger disk.",
                    CacheWarning,
                    stacklevel=4,
                )
                return None
            return tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=self.root)
        except OSError as err:
            warnings.warn(
                f"cannot write the cache in {self.root} ({err}): loading without it. Fix: set "
                "`cache_dir` in config.py to a writable folder, or `cache = False`.",
                CacheWarning,
                stacklevel=4,
            )
            return None

    def install(self, folder: str, manifest: dict) -> bool:
        """Write the manifest last, then rename the folder into place; False if that fails."""
        try:
            with open(os.path.join(folder, "manifest.json"), "w") as file:
                json.dump(manifest, file, indent=1)
            old = None
            if self.path.exists():
                old = self.root / f"{STAGING}{os.getpid()}-old-{secrets.token_hex(4)}"
                os.rename(self.path, old)
            try:
                os.rename(folder, self.path)
            finally:
                if old is not None:  # processes that still map it keep their data
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            # E.g. another process installed the same entry meanwhile: ours is dropped.
            with contextlib.suppress(OSError):
                if not self.path.exists():
                    warnings.warn(
                        f"cannot write the cache entry {self.path} ({err}).",
                        CacheWarning,
                        stacklevel=4,
                    )
            return False
        return True
