"""Slabs decoded straight into the result: one copy of every chunk fewer than zarr's own reads.

zarr decodes each chunk into a buffer of its own, then copies it into the array it returns, and
decodes a call's chunks on a thread pool of its own, which on a worker competes with the worker's
threads. For the common layout (chunks exactly as wide as the array, stored as the dtype's own
bytes plus at most one compressor that numcodecs decodes) ``DirectDecoder`` fetches a slab's chunks
through the array's own store (so any store zarr opens, object stores too, their fetches
concurrent), then decodes each one into its rows of the slab. Every other layout (sharding, filters,
transposes, checksum codecs, column chunks, bytes of the other endianness) reads through zarr.
"""

from __future__ import annotations

import asyncio
import sys

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync


def _numcodecs_v3(codec):
    """The numcodecs codec that decodes what zarr v3's compressor ``codec`` wrote, or None."""
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
    if isinstance(codec, BloscCodec):
        return numcodecs.Blosc()  # the frame's header says how it was shuffled and compressed
    if isinstance(codec, GzipCodec):
        return numcodecs.GZip(level=codec.level)
    return None


def _compressor(node):
    """``(True, codec)`` when the stored chunks are the array's native bytes, compressed by ``codec``
    (None: not compressed) and nothing else; ``(False, None)`` for any other layout."""
    metadata = node.metadata
    if metadata.zarr_format == 2:
        if metadata.filters or metadata.order != "C" or not isinstance(metadata.compressor, (numcodecs.abc.Codec, type(None))):
            return False, None
        return True, metadata.compressor
    codecs = metadata.codecs
    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return False, None
    endian = codecs[0].endian
    if endian is not None and endian.value != sys.byteorder:
        return False, None
    if len(codecs) == 1:
        return True, None
    codec = _numcodecs_v3(codecs[1])
    return codec is not None, codec


_ZSTD_MAGIC = 0xFD2FB528


def decoded_size(codec, data: np.ndarray) -> int | None:
    """The bytes ``data`` decodes to as its frame header states (zstd, blosc), or None when unknown."""
    if isinstance(codec, numcodecs.Zstd) and data.size >= 6 and int.from_bytes(data[:4], "little") == _ZSTD_MAGIC:
        descriptor = int(data[4])
        single_segment = (descriptor >> 5) & 1
        offset = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
        width = (single_segment, 2, 4, 8)[descriptor >> 6]
        if width == 0 or data.size < offset + width:
            return None  # the frame does not say
        return int.from_bytes(data[offset : offset + width], "little") + (256 if width == 2 else 0)
    if isinstance(codec, numcodecs.Blosc) and data.size >= 16:
        return int.from_bytes(data[4:8], "little")  # blosc's header: version, flags, type size, then nbytes
    return None


class DirectDecoder:
    """Reads whole-row slabs of a 2-D array by decoding its chunks into the slab (see the module)."""

    def __init__(self, node, codec):
        self.node, self.codec = node, codec
        self.rows = int(node.chunks[0])
        self.dtype = np.dtype(node.dtype)

    @classmethod
    def of(cls, node) -> "DirectDecoder | None":
        """A decoder for ``node``, or None when its layout is not the one decoded here."""
        dtype = np.dtype(node.dtype)
        if node.ndim != 2 or node.shards or node.chunks[1] != node.shape[1] or not dtype.isnative or dtype.hasobject:
            return None
        direct, codec = _compressor(node)
        return cls(node, codec) if direct else None

    def read(self, region) -> np.ndarray | None:
        """The rows of ``region`` (row and column slices, as ``da.from_array`` asks) in a new array,
        or None when the region does not start and end on chunk boundaries or cuts the columns."""
        if not (isinstance(region, tuple) and len(region) == 2 and all(isinstance(s, slice) for s in region)):
            return None
        rows, columns = region
        n_rows, n_features = self.node.shape
        start, stop, step = rows.indices(n_rows)
        if step != 1 or columns.indices(n_features) != (0, n_features, 1):
            return None
        if start % self.rows or (stop % self.rows and stop != n_rows) or stop <= start:
            return None
        chunks = range(start // self.rows, -(-stop // self.rows))
        stored = sync(self._fetch([self.node.metadata.encode_chunk_key((chunk, 0)) for chunk in chunks]))
        out = np.empty((stop - start, n_features), dtype=self.dtype)
        for chunk, raw in zip(chunks, stored):
            first = chunk * self.rows - start
            self._decode(raw, out[first : first + self.rows])
        return out

    def _decode(self, raw, rows: np.ndarray) -> None:
        """Decode one chunk's bytes ``raw`` (None: not in the store, the fill value) into ``rows``, its
        rows of the slab; the last chunk of an array is stored whole, and the rows past the end dropped."""
        if raw is None:
            fill = self.node.fill_value
            rows[...] = 0 if fill is None else fill  # zarr v2's null fill value reads as zeros
            return
        whole = rows if rows.shape[0] == self.rows else np.empty((self.rows, rows.shape[1]), dtype=self.dtype)
        target = whole.reshape(-1).view(np.uint8)
        data = raw.as_numpy_array()
        if self.codec is not None and decoded_size(self.codec, data) == target.size:
            self.codec.decode(data, out=target)  # the size checked first: a shorter result would leave rows unset
        else:
            decoded = data if self.codec is None else np.frombuffer(self.codec.decode(data), dtype=np.uint8)
            if decoded.size != target.size:
                raise ValueError(f"the chunk decodes to {decoded.size} bytes where {target.size} were expected")
            target[...] = decoded
        if whole is not rows:
            rows[...] = whole[: rows.shape[0]]

    async def _fetch(self, keys: list[str]) -> list:
        """The stored bytes of ``keys`` (None for a key not stored), fetched at once, as many at a time as
        zarr's ``async.concurrency`` allows."""
        limit = asyncio.Semaphore(max(1, int(zarr.config.get("async.concurrency") or 1)))
        prototype = default_buffer_prototype()

        async def one(key):
            async with limit:
                return await (self.node.store_path / key).get(prototype=prototype)

        return await asyncio.gather(*(one(key) for key in keys))
