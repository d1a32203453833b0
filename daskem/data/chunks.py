"""The stored chunks of an array: check that every one exists, and read slabs with errors that name them.

Zarr reads a chunk that is missing from the store as the fill value, so a gap (a failed upload, a
deleted file) would be fitted as rows of zeros. ``missing_chunks`` compares the array's chunk grid
(its shard grid when sharded: shards are the stored objects) with one recursive listing of the
array's prefix, which is one paginated listing on an object store. ``SlabReader`` is what
``da.from_array`` reads, one slab per task (decoded straight into the slab where the layout allows,
``direct_reads``): on a worker, a chunk whose bytes cannot be read or
decoded becomes a ``DataError`` naming the array, the chunk and its rows, not a codec traceback.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from dask.base import tokenize

from daskem.data.credentials import mask_text
from daskem.data.direct_reads import DirectDecoder
from daskem.errors import DataError


def stored_chunk_shape(node) -> tuple[int, ...]:
    """The shape of one stored object of ``node``: its shard when sharded, else its chunk."""
    return tuple(node.shards or node.chunks)


def missing_chunks(node, listed: list[str], prefix: str) -> list[tuple[int, ...]]:
    """Grid indices of the stored chunks (or shards) of ``node`` that are not among ``listed``, the
    paths found under the array's ``prefix``. Zarr v2 (``0.0`` or ``0/0``) and v3 (``c/0/0``, or
    v2-style) keys come from the array's own chunk key encoding."""
    prefix = prefix.rstrip("/") + "/"
    present = {path[len(prefix):] for path in listed if path.startswith(prefix)}
    grid = [range(math.ceil(size / chunk)) for size, chunk in zip(node.shape, stored_chunk_shape(node))]
    encode = node.metadata.encode_chunk_key
    return [index for index in itertools.product(*grid) if encode(index) not in present]


def describe_chunk(node, index: tuple[int, ...]) -> str:
    """``chunk c/3/0 (index (3, 0), rows 3000-3999)``: the stored key (a shard's when sharded), the grid
    index and the rows."""
    rows = stored_chunk_shape(node)[0]
    first, last = index[0] * rows, min(node.shape[0], (index[0] + 1) * rows) - 1
    kind = "shard" if node.shards else "chunk"
    return f"{kind} {node.metadata.encode_chunk_key(index)} (index {tuple(index)}, rows {first}-{last})"


def missing_chunks_message(node, where: str, missing: list[tuple[int, ...]]) -> str:
    """The one line that names the first missing chunk, how many there are, and the fix."""
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (
        f"{where}: {describe_chunk(node, missing[0])}{more} is missing from the store, and Zarr would read "
        f"it as the fill value {node.fill_value}; rewrite the missing chunks, or set "
        "data.allow_missing_chunks: true if the store has gaps on purpose (Zarr leaves out chunks that hold "
        "only the fill value unless written with write_empty_chunks)"
    )


class SlabReader:
    """The stored array as ``da.from_array`` slices it, a slab per task: a read or decode error
    becomes a ``DataError`` that names the failing chunk, its rows and the fix. The message is made on
    a worker, whose log keeps it, so it shows no URL password of ``where`` or of the store's error."""

    def __init__(self, node, where: str):
        self.node, self.where = node, mask_text(where)
        self.shape, self.dtype, self.ndim = tuple(node.shape), np.dtype(node.dtype), node.ndim
        self.decoder = DirectDecoder.of(node)

    def __getitem__(self, region):
        try:
            slab = None if self.decoder is None else self.decoder.read(region)
            return self.node[region] if slab is None else slab
        except Exception as exc:  # any codec or store error: find the chunk it came from
            raise self._error(region, exc) from None

    def __dask_tokenize__(self):
        return "daskem-slab-reader", tokenize(self.node), self.where

    def _error(self, region, exc: Exception) -> DataError:
        """Read the region's chunks one at a time to name the first one that fails."""
        shape = stored_chunk_shape(self.node)
        if not (isinstance(region, tuple) and all(isinstance(s, slice) for s in region)):
            region = tuple(slice(0, n) for n in self.shape)  # another kind of index: look at every chunk
        region = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region, self.shape))
        spans = [range(s.start // c, math.ceil(s.stop / c)) for s, c in zip(region, shape)]
        for index in itertools.product(*spans):
            window = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, shape, self.shape))
            try:
                self.node[window]
            except Exception as chunk_exc:
                return DataError(
                    f"{self.where}: {describe_chunk(self.node, index)} cannot be read or decoded "
                    f"({_one_line(chunk_exc)}); it is corrupt: rewrite it from the source data"
                )
        rows = region[0]
        return DataError(
            f"{self.where}: rows {rows.start}-{rows.stop - 1} cannot be read ({_one_line(exc)}); check the "
            "store's permissions and connection, then run again"
        )


def _one_line(exc: Exception, limit: int = 200) -> str:
    text = " ".join(mask_text(f"{type(exc).__name__}: {exc}").split())  # masked before it is cut
    return text if len(text) <= limit else text[: limit - 3] + "..."
