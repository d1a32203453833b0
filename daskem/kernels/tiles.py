"""Tiles: the pieces of ``TILE_ROWS`` rows a kernel cuts its slab into, centred at a common reference.

The E-step and the statistics of one tile need the same products of the rows (squares, packed
outer products); they are computed once, on first use. Centring every row at one reference (the
mean of the current means) removes a large common offset before any product, so float32 data far
from the origin loses nothing, and every product is a BLAS-3 call over the whole tile. A slab is
what one Dask task reads; a tile is the piece of it that one kernel step holds in cache.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Iterator

import numpy as np

from daskem.errors import DataError
from daskem.kernels.compiled import compiled

# Rows per tile at most: no temporary grows with the slab, and per-tile Python costs stay small.
TILE_ROWS = 2048
# Floats in a tile's widest (rows x columns) temporary: with many columns (many centres, or the
# D(D+1)/2 packed outer products of full covariances) a tile has fewer rows, so that temporary
# stays near 2 MiB, in cache between the products that read it.
TILE_ELEMENTS = 2**18
# Rows per tile at least when the width of a covariance type's temporaries sets them (see tile_rows).
FEWEST_TILE_ROWS = 512
# OpenBLAS, the BLAS of NumPy's wheels, multiplies matrices whose M N K is at most 100^3 by kernels
# that skip packing them (on AVX-512 x86): a tile's skinny products then run 1.7-2.2x faster, measured
# at D = 32 and 64, K = 16 and 64. A tile is cut to keep its widest product under that bound, unless
# that would leave it fewer than FEWEST_SMALL_PRODUCT_ROWS rows, where per-tile costs eat the gain.
SMALL_PRODUCT = 100**3
FEWEST_SMALL_PRODUCT_ROWS = 256


def packed_indices(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle, in the order of ``CentredRows.packed_outer``."""
    return np.triu_indices(n_features)


class Workspace:
    """Buffers reused from one tile to the next within a slab.

    Dask workers run with a malloc trim threshold of 64 KiB by default, so every fresh temporary
    larger than that is a new mapping and page faults: a kernel that allocates per tile runs
    2-3x slower on a worker than in a notebook. daskem's own workers start with other settings
    (``pipeline/dask_config/workers.yaml``), but a user's cluster may not; taking the large arrays
    from here keeps the allocations to one per buffer and slab on any worker.
    """

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}
        self._views: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialized C-contiguous float64 array of ``shape``, reusing the buffer ``name``.

        Every tile but a slab's last asks for the same shapes, so the last view of each buffer is kept:
        a tile then pays a dictionary lookup per buffer, not a reshape (a few microseconds each)."""
        shape = tuple(shape)
        last = self._views.get(name)
        if last is not None and last[0] == shape:
            return last[1]
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[name] = np.empty(size)
        view = buffer[:size].reshape(shape)
        self._views[name] = (shape, view)
        return view

    def ones(self, n: int) -> np.ndarray:
        """(n,) ones, made once per slab: row sums as matrix-vector products allocate nothing per tile."""
        ones = self._buffers.get("ones")
        if ones is None or ones.size < n:
            ones = self._buffers["ones"] = np.ones(n)
        return ones[:n]


class CentredRows:
    """Rows ``y_i = x_i - reference`` of one tile, in float64, with buffers from ``workspace``."""

    def __init__(self, values: np.ndarray, workspace: Workspace | None = None):
        self.values = values
        self.workspace = workspace if workspace is not None else Workspace()

    @classmethod
    def of(cls, X: np.ndarray, reference: np.ndarray, workspace: Workspace | None = None) -> "CentredRows":
        """The rows of ``X`` (any float dtype) less ``reference``, with their squared norms, in one
        compiled sweep: NumPy's broadcast subtraction runs its inner loop once per row of D values,
        and the norms would take a second pass."""
        workspace = workspace if workspace is not None else Workspace()
        values = workspace.take("values", X.shape)
        if X.ndim == 2 and X.dtype in CENTRED_DTYPES:
            norms = workspace.take("norms", X.shape[:1])
            _centre(X, np.asarray(reference, dtype=np.float64), values, norms)
            rows = cls(values, workspace)
            rows.norms = norms  # fills the cached property
            return rows
        np.subtract(X, reference, out=values)
        return cls(values, workspace)

    @property
    def n_rows(self) -> int:
        return self.values.shape[0]

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A work buffer for this tile (see ``Workspace``)."""
        return self.workspace.take(name, shape)

    def ones(self, n: int) -> np.ndarray:
        """(n,) ones (see ``Workspace.ones``)."""
        return self.workspace.ones(n)

    @cached_property
    def squares(self) -> np.ndarray:
        """(n, D) elementwise squares."""
        return np.multiply(self.values, self.values, out=self.take("squares", self.values.shape))

    @cached_property
    def norms(self) -> np.ndarray:
        """(n,) squared Euclidean norms."""
        return np.einsum("nd,nd->n", self.values, self.values)

    @cached_property
    def packed_outer(self) -> np.ndarray:
        """(D(D+1)/2, n) upper triangles of the outer products y_i y_i^T, one column per row.

        Stored transposed, each feature pair one contiguous row (one compiled sweep builds them all);
        then both ``sum_i r_ik y_i y_i^T`` (M-step) and ``y_i^T A_k y_i`` (E-step) are single GEMMs
        whose inner or outer dimension is the number of pairs, not K small products per component.
        """
        n_rows, n_features = self.values.shape
        transposed = self.take("transposed", (n_features, n_rows))
        np.copyto(transposed, self.values.T)
        packed = self.take("packed", (n_features * (n_features + 1) // 2, n_rows))
        _pair_products(transposed, packed)
        return packed


# Slab dtypes centred by the compiled sweep (every store is read as one of them); others by NumPy.
CENTRED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@compiled
def _centre(X, reference, values, norms) -> None:
    """``values = X - reference`` in float64 and ``norms`` their squared norms, row by row."""
    n_rows, n_features = X.shape
    for i in range(n_rows):
        for d in range(n_features):
            values[i, d] = np.float64(X[i, d]) - reference[d]
        total = 0.0
        for d in range(n_features):  # a sum in a loop of its own, with no store (see kernels.compiled)
            total += values[i, d] * values[i, d]
        norms[i] = total


@compiled
def _pair_products(transposed, packed) -> None:
    """``packed[p] = transposed[a] * transposed[b]`` for the pairs a <= b in ``packed_indices``
    order: one compiled sweep, 3x faster than NumPy's D broadcast products (measured at D = 32)."""
    n_features, n_rows = transposed.shape
    pair = 0
    for a in range(n_features):
        for b in range(a, n_features):
            for i in range(n_rows):
                packed[pair, i] = transposed[a, i] * transposed[b, i]
            pair += 1


def tile_rows(n_columns: int, row_floats: int = 0, product_width: int = 0) -> int:
    """Rows per tile when each row meets ``n_columns`` centres or components, the tile holds a
    temporary of ``row_floats`` floats per row (a covariance type's ``tile_columns``) and its widest
    GEMM is (rows x ``product_width``) in M N K (a type's ``widest_product``). The second shrinks the
    tile no further than ``FEWEST_TILE_ROWS``: full covariances at D = 32 run fastest at about 512 rows
    (their packed products then stay in cache), and at D = 128 slower below that. The third keeps the
    products under ``SMALL_PRODUCT`` where that leaves at least ``FEWEST_SMALL_PRODUCT_ROWS`` rows."""
    rows = max(1, min(TILE_ROWS, TILE_ELEMENTS // max(1, n_columns)))
    if row_floats:
        rows = min(rows, max(FEWEST_TILE_ROWS, TILE_ELEMENTS // row_floats))
    if product_width and SMALL_PRODUCT // product_width >= FEWEST_SMALL_PRODUCT_ROWS:
        rows = min(rows, SMALL_PRODUCT // product_width)
    return rows


def tiles(X: np.ndarray, reference: np.ndarray, n_rows: int = TILE_ROWS) -> Iterator[tuple[int, CentredRows]]:
    """``(offset, rows)`` over the slab in tiles of ``n_rows`` rows centred at ``reference``, in float64,
    sharing one ``Workspace``; one empty tile for an empty slab, so every kernel still returns its
    (empty) result. A tile's arrays live in buffers that the next tile reuses: copy what must outlive it."""
    workspace = Workspace()
    for start in range(0, max(X.shape[0], 1), n_rows):
        yield start, CentredRows.of(X[start : start + n_rows], reference, workspace)


def pack_symmetric(matrices: np.ndarray) -> np.ndarray:
    """(P, K) coefficients c with ``packed_outer.T @ c == y^T A_k y`` for symmetric (K, D, D) ``A``."""
    rows, columns = packed_indices(matrices.shape[-1])
    doubled = np.where(rows == columns, 1.0, 2.0)
    return (matrices[:, rows, columns] * doubled).T


def unpack_symmetric(packed: np.ndarray, n_features: int) -> np.ndarray:
    """(K, D, D) symmetric matrices from (P, K) packed upper triangles."""
    rows, columns = packed_indices(n_features)
    matrices = np.empty((packed.shape[1], n_features, n_features))
    matrices[:, rows, columns] = packed.T
    matrices[:, columns, rows] = packed.T
    return matrices


def check_finite_block(block: np.ndarray, row_start: int) -> None:
    """Raise a ``DataError`` naming the first row holding NaN or infinity, and the fix (raised in a
    worker's task, it reaches the client with its class). Clean slabs are checked tile by tile, so no
    temporary grows with the slab."""
    step = tile_rows(block.shape[1] if block.ndim == 2 else 1)
    if all(np.isfinite(block[start : start + step]).all() for start in range(0, block.shape[0], step)):
        return
    finite_rows = np.isfinite(block).all(axis=1)
    if not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)
        row_end = row_start + block.shape[0]
        raise DataError(
            f"X has NaN or infinite values in {bad.size} row(s) of the chunk holding rows "
            f"{row_start}-{row_end - 1}, first at row {row_start + bad[0]}: "
            "drop or impute those rows before fitting"
        )
