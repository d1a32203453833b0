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

RowKernel = Callable[[np.ndarray, Sequence[str]], Mapping[str, np.ndarray]]


def apply_rows(X, kernel: RowKernel, name: str, *, n_features: int, columns: int | None, dtype):
    """The per-row output ``name`` of ``kernel`` for every row of ``X``.

    NumPy in, NumPy out. Dask in, a lazy Dask array out, chunked like the input rows, with the
    kernel (and the parameters it holds) in the graph once, under a key derived from its contents,
    rather than in each task. ``columns`` is the width of a 2-D result, or None for one value per row.
    """
    lazy = isinstance(X, da.Array)
    slabs = as_row_blocks(X)
    check_features(slabs, n_features)
    if not lazy:
        return one_output(slabs.compute(), kernel, name)
    kernel_node = dask.delayed(kernel, name=f"daskem-row-kernel-{tokenize(kernel)}", traverse=False)
    meta = np.empty((0,) if columns is None else (0, 0), dtype=dtype)  # not inferred by calling the kernel
    if columns is None:
        return slabs.map_blocks(one_output, kernel_node, name, drop_axis=1, dtype=dtype, meta=meta)
    return slabs.map_blocks(one_output, kernel_node, name, chunks=(slabs.chunks[0], (columns,)), dtype=dtype,
                            meta=meta)


def one_output(rows: np.ndarray, kernel: RowKernel, name: str) -> np.ndarray:
    """The output ``name`` alone of ``kernel`` on one slab."""
    return kernel(rows, (name,))[name]
