"""The loader's own ROOT basket reading: a basket's bytes read with os.pread (or one vector
read of a remote file) and inflated here, ZLIB by libdeflate when the deflate package is
installed; the per-entry headers of std::vector branches cut out with one mask.

It exists for speed: benchmarks/bench_loader.py compares it with uproot configured for
speed (the same loader reading through uproot, ZLIB by ISA-L) and it is kept while it beats
that by 1.2x or more. A layout it does not know is left to uproot."""

from __future__ import annotations

import math
import os
import queue
import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import uproot
import xxhash
from uproot.models.TBasket import Model_TBasket
from uproot.source.cursor import Cursor

from loader.errors import NtupleError
from loader.ntuples import VECTOR_VECTOR_INT

try:  # libdeflate inflates ZLIB baskets about 1.8x faster than zlib; optional
    import deflate as libdeflate
except ImportError:
    libdeflate = None


_HEADER_BYTES = 1024  # read for a basket's key and TBasket header (the key holds three names)


def jagged_layout(interpretation) -> tuple[int, np.dtype] | None:
    """(header bytes per entry, element dtype) of a branch of numbers per entry, else None."""
    if interpretation == VECTOR_VECTOR_INT:
        return 10, np.dtype(">i4")  # the words of VECTOR_VECTOR_INT_WORDS
    if not isinstance(interpretation, uproot.AsJagged):
        return None
    content = interpretation.content
    if type(content) is not uproot.AsDtype:
        return None
    dtype = content.from_dtype
    if dtype.kind not in "biuf" or dtype.names is not None or dtype.subdtype is not None:
        return None
    return interpretation.header_bytes, dtype


def tracks_from_headers(branch, boundaries: np.ndarray) -> np.ndarray | None:
    """Tracks between the boundaries, from the branch's basket headers alone: a basket of E
    entries holds (data bytes - E x header) / itemsize values. None if that cannot be used."""
    layout = jagged_layout(branch.interpretation)
    if layout is None or branch.interpretation == VECTOR_VECTOR_INT:
        return None
    header, dtype = layout
    file = branch.file
    try:
        parts = branch.entries_to_ranges_or_baskets(0, branch.num_entries)
        ranges = [
            (int(start), int(min(stop, start + _HEADER_BYTES)))
            for _, part in parts
            if isinstance(part, tuple)
            for start, stop in [part]
        ]
        chunks = iter(file.source.chunks(ranges, notifications=queue.Queue()) if ranges else [])
        offsets = branch.entry_offsets
        per_basket = []
        for number, part in parts:
            if isinstance(part, tuple):
                context = {"basket_num": number, "read_basket": False}
                part = Model_TBasket.read(
                    next(chunks), Cursor(part[0]), context, file, file, branch
                )
            entries = part.num_entries
            values, rest = divmod(part.border - header * entries, dtype.itemsize)
            if entries != offsets[number + 1] - offsets[number] or values < 0 or rest:
                return None
            per_basket.append(values)
    except Exception:  # an unusual basket (long key, no header): the caller decompresses instead
        return None
    ends = np.concatenate([[0], np.cumsum(per_basket, dtype=np.int64)])
    where = np.searchsorted(offsets, boundaries)
    if not np.array_equal(np.asarray(offsets)[np.minimum(where, len(offsets) - 1)], boundaries):
        return None
    return ends[where[1:]] - ends[where[:-1]]


class Basket(NamedTuple):
    """A decompressed basket: its data (up to fLast), entry byte offsets (None for entries of
    fixed size) and entry range."""

    data: np.ndarray
    byte_offsets: np.ndarray | None
    entry_start: int
    entry_stop: int


class Baskets:
    """The baskets of some branches over an entry range, read with os.pread from a local file,
    or requested at once from a remote one (one vector read), and decompressed one at a time as
    they are used."""

    def __init__(
        self, branches: list, entry_start: int, entry_stop: int, descriptor: int | None
    ) -> None:
        self.descriptor = descriptor
        self.parts: dict[str, list] = {}
        ranges = []
        for branch in branches:
            parts = branch.entries_to_ranges_or_baskets(entry_start, entry_stop)
            self.parts[branch.name] = parts
            ranges += [
                (int(a), int(b)) for _, part in parts if isinstance(part, tuple) for a, b in [part]
            ]
        self.chunks = {}
        if ranges and descriptor is None:
            source = branches[0].file.source
            chunks = source.chunks(ranges, notifications=queue.Queue())
            self.chunks = dict(zip(ranges, chunks, strict=True))

    def __call__(self, branch) -> Iterator[Basket]:
        offsets = branch.entry_offsets
        for number, part in self.parts[branch.name]:
            if isinstance(part, tuple):
                start, stop = int(part[0]), int(part[1])
                if self.descriptor is not None:
                    raw = os.pread(self.descriptor, stop - start, start)
                else:
                    raw = self.chunks[start, stop].raw_data
                basket = read_basket(raw, offsets[number], offsets[number + 1])
                if basket is not None:
                    yield basket
                    continue
                # A layout read_basket leaves to uproot.
                chunk = self.chunks.get((start, stop)) or branch.file.source.chunk(start, stop)
                context = {"basket_num": number}
                file = branch.file
                part = Model_TBasket.read(chunk, Cursor(start), context, file, file, branch)
            # Embedded in the TBranch (already in memory), or read by uproot.
            yield Basket(part.data, part.byte_offsets, *part.entry_start_stop)

    def release(self, branch) -> None:
        for _, part in self.parts.pop(branch.name, []):
            if isinstance(part, tuple):
                self.chunks.pop((int(part[0]), int(part[1])), None)


# ROOT's TKey header (fNbytes, fVersion, fObjlen, fDatime, fKeylen, fCycle) and the TBasket
# fields that end the key (fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast, then one byte).
_KEY_HEADER = struct.Struct(">ihiIhh")


_BASKET_HEADER = struct.Struct(">hiiii")


def read_basket(raw, entry_start: int, entry_stop: int) -> Basket | None:
    """Decompress one basket from its bytes in the file; None for a layout or compression
    algorithm to leave to uproot (checked against uproot's reading in the tests).

    Our own reading because uproot's costs ~0.1 ms of Python per basket and by default
    inflates ZLIB with the zlib module, where libdeflate (pip install deflate) is about 1.8x
    faster (benchmarks/bench_loader.py also measures uproot with ISA-L).
    """
    raw = memoryview(raw).cast("B")
    if len(raw) < _KEY_HEADER.size:
        return None
    nbytes, _, objlen, _, keylen, _ = _KEY_HEADER.unpack_from(raw)
    if nbytes != len(raw) or not _BASKET_HEADER.size < keylen <= nbytes:
        return None
    _, _, _, entries, last = _BASKET_HEADER.unpack_from(raw, keylen - _BASKET_HEADER.size - 1)
    border = last - keylen
    if entries != entry_stop - entry_start or not 0 <= border <= objlen:
        return None
    payload = raw[keylen:]
    data = payload if len(payload) == objlen else _decompress(payload, objlen)
    if data is None:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8)
    offsets = None
    if border != objlen:  # entries of variable size: their offsets follow the data
        # [count, the entries' start offsets (from the key's start)..., a spare slot]
        tail = buffer[border : border + 4 * (entries + 1)].view(">i4")
        if len(tail) != entries + 1 or tail[0] not in (entries, entries + 1):
            return None
        offsets = np.empty(entries + 1, dtype=np.int64)
        offsets[:-1] = tail[1:]
        offsets[:-1] -= keylen
        offsets[-1] = border
        if entries and offsets[0] != 0:  # (entry sizes are checked where they are used)
            return None
    return Basket(buffer[:border], offsets, entry_start, entry_stop)


def _decompress(payload: memoryview, size: int) -> bytes | None:
    """ROOT's compressed blocks, each a 9-byte header (algorithm, method, compressed and
    uncompressed sizes as 3-byte little-endian numbers) and the data; None for an unknown
    algorithm (uproot then reports it)."""
    blocks, position = [], 0
    while position < len(payload):
        header = payload[position : position + 9]
        if len(header) < 9:
            return None
        algorithm = bytes(header[:2])
        compressed = header[3] | header[4] << 8 | header[5] << 16
        uncompressed = header[6] | header[7] << 8 | header[8] << 16
        block = payload[position + 9 : position + 9 + compressed]
        position += 9 + compressed
        if algorithm == b"ZL":
            if libdeflate is not None:
                data = libdeflate.zlib_decompress(block, uncompressed)
            else:
                data = zlib.decompress(block, bufsize=uncompressed)
        elif algorithm == b"L4":  # an xxhash64 of the compressed block comes first
            if xxhash.xxh64_intdigest(block[8:]) != int.from_bytes(block[:8], "big"):
                raise ValueError("LZ4 block checksum mismatch")
            data = uproot.LZ4(1).decompress(block[8:], uncompressed)
        elif algorithm == b"ZS":
            data = uproot.ZSTD(1).decompress(block, uncompressed)
        elif algorithm == b"XZ":
            data = uproot.LZMA(1).decompress(block, uncompressed)
        else:
            return None
        if len(data) != uncompressed:
            raise ValueError(
                f"a {algorithm.decode()} block gave {len(data)} bytes, not {uncompressed}"
            )
        blocks.append(data)
    data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
    if len(data) != size:
        raise ValueError(f"a basket gave {len(data)} bytes, not {size}")
    return data


class NoOffsets(Exception):
    """A basket without entry offsets: the generic reading handles it."""


def jagged_values(
    branch, baskets: Baskets, start: int, stop: int, header: int, dtype: np.dtype, path: str
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(first entry, end entry, values, values per entry) of each basket's part in [start, stop).

    The values stay in the file's (big-endian) dtype: the caller converts them once, straight
    into the output. Per-entry headers (ROOT's 10 bytes before each std::vector) are cut out with
    one boolean mask over units of gcd(header, itemsize) bytes.
    """
    size = dtype.itemsize
    for basket in baskets(branch):
        basket_start, basket_stop = basket.entry_start, basket.entry_stop
        first, end = max(start, basket_start), min(stop, basket_stop)
        if first >= end:
            continue
        offsets = basket.byte_offsets
        if offsets is None:
            raise NoOffsets
        offsets = offsets[first - basket_start : end - basket_start + 1].astype(np.int64)
        data = basket.data[offsets[0] : offsets[-1]]
        offsets -= offsets[0]
        counts, rest = np.divmod(np.diff(offsets) - header, size)
        if rest.any() or (counts < 0).any():
            raise NtupleError(
                f"{path}: branch '{branch.name}' has entries of an unexpected size for "
                f"{branch.interpretation}. Fix: produce the ntuple with CMSSW's TrackingNtuple, "
                "or remove the branch from config.py."
            )
        if header:
            unit = math.gcd(header, size)
            if (offsets % unit).any():
                unit = 1
            keep = np.ones(len(data) // unit, dtype=np.bool_)
            heads = (offsets[:-1, None] // unit + np.arange(header // unit)).ravel()
            keep[heads] = False
            values = data.view(f"u{unit}")[keep].view(dtype)
        else:
            values = data.view(dtype)
        yield first, end, values, counts
