"""What goes wrong when loading: exceptions and warnings whose messages name the file, the
problem and the fix."""

from __future__ import annotations


class NtupleError(Exception):
    """A file or path that cannot be loaded; the message names it, the problem and the fix."""


class ColumnWriteError(RuntimeError):
    """The decoded columns cannot be written (a full disk or /dev/shm); says where."""


class CacheWarning(UserWarning):
    """A cache entry that cannot be used (stale, truncated, corrupt) or written; says why."""


BAD_FILE_FIX = (
    "Fix: re-create or re-copy the file, remove it from the sample, "
    "or set skip_bad_files = True in config.py to go on without it."
)
