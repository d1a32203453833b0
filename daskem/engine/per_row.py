"""Per-row outputs of a fitted model: a row kernel applied to NumPy, or lazily to every slab of a Dask array."""

from __future__ import annotations

from typing import Any, Callable

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from daskem.data.checks import as_row_blocks, check_features


def apply_rows(
    X,
    kernel: Callable[[np.ndarray, Any], np.ndarray],
    params: Any,
    *,
    n_features: int,
    columns: int | None,
    dtype,
):
    """Apply ``kernel(rows, params)`` to every row of ``X``.

    NumPy in, NumPy out. Dask in, a lazy Dask array out, chunked like the input rows, with
    ``params`` in the graph once (under a key derived from its contents) rather than in each task.
    ``columns`` is the width of a 2-D result, or None for one value per row.
    """
    lazy = isinstance(X, da.Array)
    blocks = as_row_blocks(X)
    check_features(blocks, n_features)
    if not lazy:
        return kernel(blocks.compute(), params)
    params_node = dask.delayed(params, name=f"daskem-params-{tokenize(params)}", traverse=False)
    if columns is None:
        return blocks.map_blocks(kernel, params_node, drop_axis=1, dtype=dtype)
    return blocks.map_blocks(kernel, params_node, chunks=(blocks.chunks[0], (columns,)), dtype=dtype)

