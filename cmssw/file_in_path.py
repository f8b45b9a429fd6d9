"""Find a data file the way CMSSW's FileInPath does.

CMSSW names data files by a path relative to a package area, e.g.
``RecoTracker/FinalTrackSelectors/data/TrackTfClassifier/CKF_2021Run3.pb``, and looks for it
under each root listed in the CMSSW_SEARCH_PATH environment variable (colon-separated; in a
CMSSW environment: the local area's src/, the release's src/ and their external data areas),
taking the first root where it exists. Here a path that exists as given (absolute, or relative
to the working directory) is taken first, so plain file paths keep working outside CMSSW.
"""

from __future__ import annotations

import os
from pathlib import Path

SEARCH_PATH_VARIABLE = "CMSSW_SEARCH_PATH"


def search_roots(search_path: str | None = None) -> list[Path]:
    """The roots of CMSSW_SEARCH_PATH (or of `search_path`), in order, empty entries dropped."""
    if search_path is None:
        search_path = os.environ.get(SEARCH_PATH_VARIABLE, "")
    return [Path(root).expanduser() for root in search_path.split(os.pathsep) if root.strip()]


def resolve_file(path: str | Path, search_path: str | None = None) -> Path | None:
    """The existing file `path` names: as given, else under the first search root that has it;
    None when there is none."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_absolute():
        return None
    for root in search_roots(search_path):
        candidate = root / path
        if candidate.is_file():
            return candidate.resolve()
    return None


def find_file(path: str | Path, search_path: str | None = None) -> Path:
    """resolve_file, or FileNotFoundError saying where it looked and how to make it found."""
    found = resolve_file(path, search_path)
    if found is not None:
        return found
    roots = search_roots(search_path)
    where = ", ".join(str(root) for root in roots) if roots else f"{SEARCH_PATH_VARIABLE} is empty"
    raise FileNotFoundError(
        f"{path}: no such file, as given or under the {SEARCH_PATH_VARIABLE} roots ({where}). "
        f"Give an existing path, or a CMSSW-relative one (e.g. RecoTracker/FinalTrackSelectors/"
        f"data/...) with {SEARCH_PATH_VARIABLE} listing the folders that hold it (cmsenv sets it)."
    )
