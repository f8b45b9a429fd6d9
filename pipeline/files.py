"""Writing files so that nobody ever sees half of one: write a temporary file beside the target,
then rename it into place (atomic on POSIX filesystems)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _temporary_copy(path: Path, data: str | bytes) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
    with os.fdopen(handle, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
        file.flush()
        os.fsync(file.fileno())  # the data reach the disk before the name does
    return Path(name)


def write_atomically(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write data to path, replacing any older file whole."""
    path = Path(path)
    tmp = _temporary_copy(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_new_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write data to path, which must not exist yet: a record is never overwritten.

    Raises FileExistsError if it does (also when another process creates it meanwhile).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists already; it is a record and is not rewritten")
    tmp = _temporary_copy(path, data)
    try:
        os.link(tmp, path)  # unlike rename, fails if the name is taken
    finally:
        tmp.unlink(missing_ok=True)
    return path
