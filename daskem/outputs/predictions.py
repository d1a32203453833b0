"""Per-row outputs (labels, responsibilities, log-density) written to Zarr by the workers."""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np
import zarr


def write_predictions(
    model,
    X,
    path: str | os.PathLike,
    *,
    labels: bool = True,
    responsibilities: bool = False,
    log_density: bool = False,
) -> dict[str, dict[str, Any]]:
    """Write the requested per-row outputs of ``model`` on ``X`` to the Zarr group ``path``.

    ``labels`` (int32, N), ``responsibilities`` (float32, N x K), ``log_density`` (float64, N),
    chunked like the rows of ``X``. For a Dask ``X`` the workers compute and write each chunk;
    nothing is gathered. Returns a description of each array written.
    """
    wanted = []
    if labels:
        wanted.append(("labels", model.predict, np.int32))
    if responsibilities:
        wanted.append(("responsibilities", model.predict_proba, np.float32))
    if log_density:
        wanted.append(("log_density", model.score_samples, np.float64))
    if not wanted:
        return {}
    n_rows = X.shape[0]
    chunk = max(X.chunks[0]) if isinstance(X, da.Array) else n_rows
    if isinstance(X, da.Array) and any(size != chunk for size in X.chunks[0][:-1]):
        X = X.rechunk({0: chunk})  # zarr chunks are regular: each block must be one chunk
    group = zarr.open_group(str(path), mode="w-")
    sources, targets, written = [], [], {}
    for name, method, dtype in wanted:
        values = method(X)
        values = values.astype(dtype)
        shape = (n_rows,) + tuple(values.shape[1:])
        target = group.create_array(name, shape=shape, chunks=(chunk,) + shape[1:], dtype=dtype)
        if isinstance(values, da.Array):
            sources.append(values)
            targets.append(target)
        else:
            target[...] = values
        written[name] = {"dtype": np.dtype(dtype).name, "shape": list(shape), "chunk_rows": chunk}
    if sources:
        da.store(sources, targets, lock=False)
    return written

