"""The columns of a load: one .npy file each, sized once, filled in place by the workers with
pwrite, then memory-mapped (copy-on-write) into the DataFrame without copying."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from loader.errors import ColumnWriteError

STAGING = "trackloader-"  # prefix of the folders columns are filled in


SHM = "/dev/shm"


@dataclass(frozen=True)
class Columns:
    """The .npy files of the columns: their folder, length, (name, dtype)s and the byte offset
    of the data in each file (after the .npy header)."""

    directory: str
    length: int
    dtypes: tuple[tuple[str, str], ...]
    offsets: tuple[int, ...] = ()

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name + ".npy")


_COLUMN_FILES: dict[str, dict[str, int]] = {}


_BUFFERS: dict[np.dtype, np.ndarray] = {}


class Rows:
    """Writes one task's rows of every column in order, with pwrite (cheaper than filling fresh
    pages of a shared mapping), and hashes them on the way for the cache manifest."""

    def __init__(self, columns: Columns, row_start: int) -> None:
        descriptors = _COLUMN_FILES.get(columns.directory)
        if descriptors is None:
            forget_column_files()
            descriptors = {
                name: os.open(columns.path(name), os.O_WRONLY) for name, _ in columns.dtypes
            }
            _COLUMN_FILES[columns.directory] = descriptors
        self.columns = columns
        self.descriptors = descriptors
        self.dtypes = {name: np.dtype(dtype) for name, dtype in columns.dtypes}
        self.offsets = dict(zip(self.dtypes, columns.offsets, strict=True))
        self.start = row_start
        self.rows = dict.fromkeys(self.dtypes, row_start)
        self.hashes = {name: xxhash.xxh3_64() for name in self.dtypes}

    def __len__(self) -> int:
        return max(self.rows.values()) - self.start

    def write(self, name: str, values: np.ndarray) -> None:
        if values.dtype != self.dtypes[name] or not values.flags.c_contiguous:
            raise TypeError(
                f"column {name} takes contiguous {self.dtypes[name]}, not {values.dtype}"
            )
        data = memoryview(values).cast("B")
        position = self.offsets[name] + self.rows[name] * values.itemsize
        while data:
            try:
                written = os.pwrite(self.descriptors[name], data, position)
            except OSError as err:  # not a problem of the ROOT file: never skipped
                raise ColumnWriteError(
                    f"cannot write the column {name} in {self.columns.directory} ({err}). Fix: "
                    "free space there, or set `cache_dir` in config.py to a disk with room "
                    "(without a cache, the columns are written to /dev/shm, i.e. memory)."
                ) from None
            self.hashes[name].update(data[:written])
            data, position = data[written:], position + written
        self.rows[name] += len(values)

    def writer(self, name: str) -> Callable[[np.ndarray], None]:
        return lambda values: self.write(name, values)

    def rows_written(self) -> set[int]:
        """The numbers of rows the columns got: one number when they all got the same."""
        return {row - self.start for row in self.rows.values()}

    def digests(self) -> dict[str, str]:
        return {name: hashed.hexdigest() for name, hashed in self.hashes.items()}


def forget_column_files() -> None:
    """Close the column files this process writes and drop its conversion buffers."""
    for descriptors in _COLUMN_FILES.values():
        for descriptor in descriptors.values():
            os.close(descriptor)
    _COLUMN_FILES.clear()
    _BUFFERS.clear()


def buffer(dtype: np.dtype | type, size: int) -> np.ndarray:
    """A reused array of `size` elements: no fresh pages to fault in for every basket."""
    dtype = np.dtype(dtype)
    array = _BUFFERS.get(dtype)
    if array is None or len(array) < size:
        array = _BUFFERS[dtype] = np.empty(max(size, 1 << 16), dtype=dtype)
    return array[:size]


def digest(array: np.ndarray) -> str:
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(array).view(np.uint8))


def scratch_folder(nbytes: int) -> str:
    """A new folder for columns not kept in a cache: /dev/shm (memory) if it has room."""
    base = tempfile.gettempdir()
    if os.path.isdir(SHM) and shutil.disk_usage(SHM).free > nbytes + 256_000_000:
        base = SHM
    remove_orphans(Path(base))
    return tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=base)


def remove_orphans(base: Path) -> None:
    """Remove the column folders of loads whose process died (killed before cleaning up)."""
    for folder in base.glob(f"{STAGING}*"):
        try:
            pid = int(folder.name[len(STAGING) :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def create_columns(directory: str, length: int, dtypes: tuple[tuple[str, str], ...]) -> Columns:
    """Every column at its final size, as a sparse .npy file the workers fill."""
    offsets = []
    for name, dtype in dtypes:
        path = os.path.join(directory, name + ".npy")
        if length:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))
            offsets.append(array.offset)
            del array  # unmapped: the workers write with pwrite
        else:
            np.save(path, np.empty(0, dtype))
            offsets.append(0)
    return Columns(directory, length, dtypes, tuple(offsets))


def map_columns(columns: Columns) -> dict[str, np.ndarray]:
    """The columns, memory-mapped copy-on-write (writes to them never reach the files); read
    into memory instead from a network filesystem, where a mapped file that another machine
    deletes or rewrites can crash this process (SIGBUS)."""
    mode = "c" if columns.length and not network_filesystem(columns.directory) else None
    # Plain ndarray views (the memmap stays their base): results of operations on them should
    # not pretend to be memory-mapped.
    return {
        name: np.load(columns.path(name), mmap_mode=mode).view(np.ndarray)
        for name, _ in columns.dtypes
    }


_NETWORK_FILESYSTEMS = (
    "nfs",
    "afs",
    "cifs",
    "smb",
    "fuse",
    "ceph",
    "lustre",
    "gpfs",
    "gluster",
    "9p",
)


def network_filesystem(path: str) -> bool:
    """Whether the folder is on NFS, AFS, EOS/FUSE and the like: the type of the innermost
    mount that holds it."""
    import psutil

    path = os.path.realpath(path)
    best, kind = "", ""
    for partition in psutil.disk_partitions(all=True):
        mount = partition.mountpoint
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, partition.fstype
    return kind.startswith(_NETWORK_FILESYSTEMS)


def drop_rows(columns: Columns, ranges: list[tuple[int, int]]) -> Columns:
    """Remove row ranges from every column file, in place."""
    keep, position = [], 0
    for start, stop in sorted(ranges):
        keep.append((position, start))
        position = stop
    keep.append((position, columns.length))
    length = sum(stop - start for start, stop in keep)
    step = 1 << 22
    for name, dtype in columns.dtypes:
        path = columns.path(name)
        if columns.length:
            array = np.load(path, mmap_mode="r+")
            write = 0
            for start, stop in keep:
                for first in range(start, stop, step):
                    end = min(first + step, stop)
                    # numpy copies through a buffer where source and target overlap.
                    array[write : write + end - first] = array[first:end]
                    write += end - first
            array.flush()
            header = array.offset
            del array
            _set_npy_length(path, header, np.dtype(dtype), length)
    return dataclasses.replace(columns, length=length)


def _set_npy_length(path: str, header_size: int, dtype: np.dtype, length: int) -> None:
    """Rewrite a 1-d .npy file's shape in its header (same header size) and cut the file."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (length,),
    }
    with open(path, "r+b") as file:
        magic = file.read(8)
        prefix = 10 if magic[6] == 1 else 12  # magic, version, header length (2 or 4 bytes)
        text = repr(header).ljust(header_size - prefix - 1) + "\n"
        if len(text) != header_size - prefix:
            raise RuntimeError(f"{path}: the new .npy header does not fit")
        file.seek(prefix)
        file.write(text.encode("latin1"))
        file.truncate(header_size + length * dtype.itemsize)


def digest_columns(columns: Columns) -> tuple[list[list[int]], dict[str, list[str]]]:
    """Checksums of every column in fixed row slices (after rows were dropped)."""
    step = 1 << 24
    splits = [
        [start, min(start + step, columns.length)] for start in range(0, columns.length, step)
    ]
    arrays = map_columns(columns)
    return splits, {
        name: [digest(arrays[name][start:stop]) for start, stop in splits]
        for name, _ in columns.dtypes
    }
