"""The files a sample names: paths, globs, folders and root:// URLs, expanded in order."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from loader.errors import NtupleError

# A path, glob, folder or URL, or a list of them.
Paths = str | os.PathLike | Sequence[str | os.PathLike]


def expand_paths(paths: Paths) -> list[str]:
    """Files named by a path, glob, folder or URL (or a list of them), in order, without repeats.

    Globs and folders are sorted. In URLs (root://...) they need fsspec's filesystem for the
    protocol (fsspec-xrootd for root://); a URL ending in .root is passed to uproot as it is.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[str] = []
    for item in map(os.fspath, items):
        is_pattern = any(char in item for char in "*?[")
        if "://" in item:
            if not is_pattern and item.endswith(".root"):
                files.append(item)
                continue
            found = _list_url(item, is_pattern)
        elif is_pattern:
            found = sorted(glob.glob(item, recursive=True))
        elif os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(glob.escape(item), "*.root")))
        else:
            files.append(item)  # a missing file is reported by the scan, as a bad file
            continue
        if not found:
            kind = "pattern" if is_pattern else "folder"
            raise NtupleError(
                f"{item}: no .root file matches this {kind}. Fix: check the path in `samples` "
                "(config.py); folders are searched for *.root (not recursively), patterns follow "
                "Python's glob (** for subfolders)."
            )
        files += found
    return list(dict.fromkeys(files))


def check_paths(paths: Paths, where: str) -> list[str]:
    """The files of a sample, each local one checked to exist: for a message naming the setting
    before anything is loaded. URLs are checked when they are read."""
    try:
        files = expand_paths(paths)
    except NtupleError as err:
        raise NtupleError(f"{where}: {err}") from None
    if not files:
        raise NtupleError(f"{where}: no path given. Fix: name the sample's files in `samples`.")
    for path in files:
        if "://" not in path and not os.path.isfile(path):
            raise NtupleError(
                f"{where}: {path}: no such file. Fix: check the path in `samples` (config.py)."
            )
    return files


def _list_url(url: str, is_pattern: bool) -> list[str]:
    """The .root files a URL pattern or folder names, listed with fsspec."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        found = fs.glob(path if is_pattern else path.rstrip("/") + "/*.root")
    except (ImportError, ValueError, OSError) as err:
        raise NtupleError(
            f"{url}: cannot list the files of this URL ({err}). Fix: install the fsspec "
            "filesystem for it (pip install fsspec-xrootd for root://), or list the files "
            "explicitly, each URL ending in .root."
        ) from None
    return sorted(fs.unstrip_protocol(p) for p in found)


def absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)
