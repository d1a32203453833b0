"""Per-row outputs (labels, responsibilities, log-density) written to Zarr by the workers.

On a distributed cluster a failed write pass stops cleanly: when one slab's task fails (a corrupt
chunk, a full disk) or the client is interrupted, the writes that may be running are waited for and
the others are made to do nothing before the error reaches the caller, so no worker writes into
the staging directory that the caller removes next.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

# Tokens of stopped write passes, in each worker process: their remaining write tasks do nothing.
_STOPPED: set[str] = set()


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
        store_slabs(sources, targets)
    return written


def store_slabs(sources: list[da.Array], targets: list) -> None:
    """Write row block i of every source into the same rows of its target, in one task per block
    (like ``da.store``); on a distributed client, a failure stops the pass cleanly (see the module doc)."""
    sources = dask.optimize(*sources)  # one graph: each slab is read once for all outputs
    token = uuid.uuid4().hex
    bounds = np.cumsum((0, *sources[0].chunks[0])).tolist()
    blocks = zip(*(source.to_delayed(optimize_graph=False).ravel() for source in sources))
    targets = dask.delayed(targets, name=f"write-targets-{token}", traverse=False)  # in the graph once
    tasks = [
        dask.delayed(_write_slab, pure=False)(token, targets, bounds[i], bounds[i + 1], *parts,
                                               dask_key_name=(f"write-slab-{token}", i))
        for i, parts in enumerate(blocks)
    ]
    client = _distributed_client()
    if client is None:
        dask.compute(*tasks)
        return
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        for future in as_completed(futures):
            if future.status != "finished":
                future.result()  # raises the task's error
    except BaseException:
        _stop(client, token, futures)
        raise


def _write_slab(token: str, targets: list, start: int, stop: int, *blocks) -> int:
    """The task that writes rows ``start:stop`` of each output, unless its pass was stopped."""
    if token in _STOPPED:
        return 0
    for target, block in zip(targets, blocks):
        target[start:stop] = block
    return stop - start


def _mark_stopped(token: str) -> None:
    _STOPPED.add(token)


def _stop(client, token: str, futures: list) -> None:
    """Make the write tasks of ``token`` that have not started do nothing, cancel those not yet sent to
    a worker, and wait for those on a worker, which may be writing."""
    from distributed import wait

    try:
        client.run(_mark_stopped, token)
        on_workers = {key for keys in client.processing().values() for key in keys}
    except Exception:  # the cluster is gone, and its writes with it
        return
    client.cancel([future for future in futures if future.key not in on_workers])
    wait([future for future in futures if future.key in on_workers])


def _distributed_client():
    """The distributed client that ``compute`` would use, or None (a local scheduler)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None

