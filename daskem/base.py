"""What both estimators share: parameter rules, run ids, and applying a row kernel to NumPy or,
lazily, to Dask input."""

from __future__ import annotations

import uuid
from numbers import Integral, Real
from typing import Any, Callable

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from sklearn.utils._param_validation import Interval

from daskem.validation import as_row_blocks, check_features


# The parameter rules both estimators share: iterations, restarts, seeds and the engine's settings.
SHARED_PARAMETER_CONSTRAINTS = {
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    "random_state": ["random_state"],
    "fan_in": [Interval(Integral, 2, None, closed="left")],
    "init_sample_size": [Interval(Integral, 1, None, closed="left")],
    "oversampling_factor": [Interval(Real, 0.0, None, closed="neither")],
    "init_rounds": [Interval(Integral, 1, None, closed="left")],
}


def new_run_id(kind: str) -> str:
    """A fresh prefix for the task keys of one fit, so keys are never reused with other contents."""
    return f"daskem-{kind}-{uuid.uuid4().hex[:12]}"


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
