"""Per-row outputs of a fitted model: a row kernel applied to NumPy, or lazily to every slab of a Dask array.

A row kernel is a picklable callable ``kernel(rows, names) -> {name: array}`` that computes several
per-row outputs of one slab from one E-step (see ``daskem.kernels.mixture.row_outputs``). Here it
serves one output at a time, lazily; ``daskem.outputs.predictions`` serves all of them at once.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from daskem.data.checks import as_row_blocks, check_features
from daskem.data.labelled import labelled_like, unlabelled
from daskem.kernels.tiles import check_finite_block

RowKernel = Callable[[np.ndarray, Sequence[str]], Mapping[str, np.ndarray]]


def apply_rows(X, kernel: RowKernel, name: str, *, n_features: int, columns: int | None, dtype,
               model: str = "the model", column_dim: str | None = None):
    """The per-row output ``name`` of ``kernel`` for every row of ``X``, rows holding NaN or infinity
    refused as in ``fit`` (for Dask input when the result is computed).

    NumPy in, NumPy out. Dask in, a lazy Dask array out, chunked like the input rows, with the
    kernel (and the parameters it holds) in the graph once, under a key derived from its contents,
    rather than in each task. ``columns`` is the width of a 2-D result, or None for one value per row.
    An xarray ``DataArray`` in, one out on its row coordinate (``column_dim`` names the columns);
    ``model`` names the estimator in the message on a wrong number of features.
    """
    lazy = isinstance(unlabelled(X), da.Array)
    slabs = as_row_blocks(X)
    check_features(slabs, n_features, model)
    if not lazy:
        return labelled_like(X, one_output(slabs.compute(), kernel, name), column_dim)
    kernel_node = dask.delayed(kernel, name=f"daskem-row-kernel-{tokenize(kernel)}", traverse=False)
    meta = np.empty((0,) if columns is None else (0, 0), dtype=dtype)  # not inferred by calling the kernel
    if columns is None:
        values = slabs.map_blocks(one_output, kernel_node, name, drop_axis=1, dtype=dtype, meta=meta)
    else:
        values = slabs.map_blocks(one_output, kernel_node, name, chunks=(slabs.chunks[0], (columns,)), dtype=dtype,
                                  meta=meta)
    return labelled_like(X, values, column_dim)


def one_output(rows: np.ndarray, kernel: RowKernel, name: str, block_info=None) -> np.ndarray:
    """The output ``name`` alone of ``kernel`` on one slab, after the same finite check as ``fit``."""
    check_finite_block(rows, block_info[0]["array-location"][0][0] if block_info else 0)
    return kernel(rows, (name,))[name]
