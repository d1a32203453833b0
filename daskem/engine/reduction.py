"""Map-reduce over the slabs of a Dask array: one task per slab, a tree of bounded fan-in, one compute."""

from __future__ import annotations

from itertools import accumulate
from typing import Any, Callable

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

DEFAULT_FAN_IN = 8



def block_row_starts(X: da.Array) -> list[int]:
    """Global index of the first row of each row block."""
    return [0, *accumulate(X.chunks[0])][:-1]



def reduction_graph(
    X: da.Array,
    kernel: Callable[[np.ndarray, int, Any], Any],
    payload: Any,
    *,
    name: str,
    combine: Callable[[list], Any],
    fan_in: int = DEFAULT_FAN_IN,
) -> Delayed:
    """The lazy tree ``combine(... kernel(block, row_start, payload) ...)`` over the row blocks of ``X``.

    ``payload`` appears once in the graph (key ``{name}-payload``) and every task refers to it by
    key; ``combine`` merges a list of at most ``fan_in`` partial results.
    """
    if fan_in < 2:  # not a user check (the estimators validate fan_in): with 1 the loop below never ends
        raise ValueError(f"fan_in must be at least 2 to reduce in a tree, got {fan_in}")
    payload_node = dask.delayed(payload, name=f"{name}-payload", traverse=False)
    apply_kernel = dask.delayed(kernel, pure=True)
    blocks = X.to_delayed(optimize_graph=False).ravel()
    level = [
        apply_kernel(block, row_start, payload_node, dask_key_name=(f"{name}-map", index))
        for index, (block, row_start) in enumerate(zip(blocks, block_row_starts(X)))
    ]
    merge = dask.delayed(combine, pure=True)
    depth = 0
    while len(level) > 1 or depth == 0:  # a single block still passes through combine once
        level = [
            merge(level[start : start + fan_in], dask_key_name=(f"{name}-reduce{depth}", start // fan_in))
            for start in range(0, len(level), fan_in)
        ]
        depth += 1
    return level[0]



def map_reduce(X: da.Array, kernel, payload, *, name: str, combine, fan_in: int = DEFAULT_FAN_IN) -> Any:
    """Compute :func:`reduction_graph` and return its root: one compute, on the active distributed
    client if there is one, else on Dask's local scheduler."""
    root = reduction_graph(X, kernel, payload, name=name, combine=combine, fan_in=fan_in)
    (result,) = dask.compute(root)
    return result

