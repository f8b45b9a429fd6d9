"""Writing files so that nobody ever sees half of one: write a temporary file beside the target,
then rename it into place (atomic on POSIX filesystems). Every writer of the project goes
through these.

    write_atomically(path, text_or_bytes)       # replaces an older file whole
    write_new_file(path, text_or_bytes)         # a record: refuses to overwrite
    with atomic_path(path) as tmp:              # a library writes tmp itself (ROOT, Keras, h5)
        library.save(tmp)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
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


def temporary_name(path: str | os.PathLike, suffix: str = "") -> Path:
    """A unique hidden name beside path (same disk: the final rename is atomic); not created,
    so that whoever writes it makes it with the usual permissions. suffix: the extension a
    library insists on (".keras", ".weights.h5")."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write; renamed to path when the block ends without an error, deleted
    when it raises."""
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
