"""Per-row outputs (labels, responsibilities, log-density, outlier flags) written to Zarr by the workers.

On a distributed cluster a failed write pass stops cleanly: when one slab's task fails (a corrupt
chunk, a full disk) or the client is interrupted, the writes that may be running are waited for and
the others are made to do nothing before the error reaches the caller, so no worker writes into
the staging directory (or object-store prefix) that the caller removes next.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

import dask.array as da
import numpy as np
import zarr

from daskem.engine.reduction import DEFAULT_FAN_IN, map_reduce
from daskem.kernels.tiles import check_finite_block

# Tokens of stopped write passes, in each worker process: their remaining write tasks do nothing.
_STOPPED: set[str] = set()
# Seconds to wait, after a failure, for the write tasks already running on workers to finish.
STOP_WAIT_SECONDS = 120

# The per-row outputs a run can write, with the dtype they are stored in and whether they have one
# column per component. All come from one E-step per slab.
PREDICTIONS = {
    "labels": (np.int32, False),
    "responsibilities": (np.float32, True),
    "log_density": (np.float64, False),
    "outlier": (np.bool_, False),
}


def prediction_bytes(n_rows: int, n_components: int | None, outputs) -> int:
    """About how many bytes the per-row outputs that ``outputs`` (an ``OutputConfig``) asks for take."""
    total = 0
    flagging = getattr(outputs, "outliers", None) is not None  # writes outlier and log_density
    for name, (dtype, per_component) in PREDICTIONS.items():
        if getattr(outputs, name, False) or (flagging and name in ("outlier", "log_density")):
            total += n_rows * np.dtype(dtype).itemsize * ((n_components or 1) if per_component else 1)
    return total


def write_predictions(
    model,
    X,
    path: str | os.PathLike,
    *,
    labels: bool = True,
    responsibilities: bool = False,
    log_density: bool = False,
    outlier: bool = False,
    fan_in: int = DEFAULT_FAN_IN,
    storage_options: Mapping[str, Any] | None = None,
    alongside=None,
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Write the requested per-row outputs of ``model`` on ``X`` to the Zarr group ``path`` (a local
    path, or an fsspec URL opened with ``storage_options`` on the client and on every worker).

    ``labels`` (int32, N), ``responsibilities`` (float32, N x K), ``log_density`` (float64, N),
    ``outlier`` (bool, N: log-density below the model's ``offset_``), chunked like the rows of ``X``.
    Each slab's task computes every requested output from one E-step (``model.row_kernel()``) and
    writes its own region of each array; nothing is gathered but counts: the rows, checked against
    N, and the ``true`` values of each bool array. Returns a description of each array written and
    the result of ``alongside`` (None without it, or when nothing is written and so nothing read):
    an object with ``apply(slab, row_start)`` and ``combine(parts)``, such as the report's
    ``RowSample``, run in the same tasks on the slabs already read, so it costs no pass of its own.
    """
    wanted = [name for name, on in (("labels", labels), ("responsibilities", responsibilities),
                                    ("log_density", log_density), ("outlier", outlier)) if on]
    if not wanted:
        return {}, None
    X = X if isinstance(X, da.Array) else da.from_array(np.asarray(X), chunks=(X.shape[0], -1))
    chunk = max(X.chunks[0])
    if any(size != chunk for size in X.chunks[0][:-1]):
        X = X.rechunk({0: chunk})  # zarr chunks are regular: each slab must be one whole chunk
    n_rows = X.shape[0]
    url = str(path)
    group = zarr.open_group(url, mode="w-", **({"storage_options": dict(storage_options or {})} if "://" in url else {}))
    targets, written = {}, {}
    for name in wanted:
        dtype, per_component = PREDICTIONS[name]
        shape = (n_rows, model.n_components) if per_component else (n_rows,)
        targets[name] = group.create_array(name, shape=shape, chunks=(chunk,) + shape[1:], dtype=dtype)
        written[name] = {"dtype": np.dtype(dtype).name, "shape": list(shape), "chunk_rows": chunk}
    counts, extra = store_rows_alongside(X, model.row_kernel(), targets, alongside, fan_in=fan_in)
    if counts["rows"] != n_rows:  # every slab writes its rows exactly once
        raise RuntimeError(f"predictions: {counts['rows']} rows written for {n_rows} rows of input")
    for name in wanted:
        if PREDICTIONS[name][0] is np.bool_:
            written[name]["true"] = counts[name]
    return written, extra


def store_rows(X: da.Array, kernel, targets: dict[str, Any], *, fan_in: int = DEFAULT_FAN_IN) -> Counter:
    """Write ``kernel(slab, names)[name]`` of every slab into the same rows of ``targets[name]``, one
    task per slab (one E-step for all names); return the counts of the rows written (``rows``) and
    of the true values of each bool output. On a distributed cluster a failure stops the pass
    cleanly (see the module doc)."""
    return store_rows_alongside(X, kernel, targets, None, fan_in=fan_in)[0]


def store_rows_alongside(X: da.Array, kernel, targets: dict[str, Any], alongside, *,
                         fan_in: int = DEFAULT_FAN_IN) -> tuple[Counter, Any]:
    """``store_rows``, with ``alongside.apply`` run on each slab in the same task and its parts
    combined by ``alongside.combine`` (None without it): ``(counts, alongside's result)``."""
    token = uuid.uuid4().hex[:12]
    name = f"daskem-predictions-{token}"
    payload = SlabWrite(kernel, tuple(targets.items()), token, alongside)
    try:
        return map_reduce(X, write_slab, payload, name=name, combine=partial(_add_written, alongside),
                          fan_in=fan_in)
    except BaseException:
        _stop(token, name)
        raise


@dataclass(frozen=True)
class SlabWrite:
    """What each writing task needs: the model's row kernel and the Zarr arrays, by output name."""

    kernel: Any
    targets: tuple
    token: str
    alongside: Any = None


def write_slab(slab: np.ndarray, row_start: int, payload: SlabWrite) -> tuple[Counter, Any]:
    """Compute every requested output of one slab from one E-step and write it in place; its
    counts (none when its pass was stopped) and what ``payload.alongside`` makes of the slab."""
    if payload.token in _STOPPED:
        return Counter(), None
    _quiet_unclosed_sessions()
    check_finite_block(slab, row_start)  # new data to predict on is checked as data to fit
    values = payload.kernel(slab, tuple(name for name, _ in payload.targets))
    stop = row_start + slab.shape[0]
    counts = Counter(rows=slab.shape[0])
    for name, target in payload.targets:
        target[row_start:stop] = values[name].astype(target.dtype, copy=False)
        if target.dtype == np.bool_:
            counts[name] = int(np.count_nonzero(values[name]))
    return counts, None if payload.alongside is None else payload.alongside.apply(slab, row_start)


def _add_written(alongside, parts: list[tuple[Counter, Any]]) -> tuple[Counter, Any]:
    extras = [part[1] for part in parts if part[1] is not None]  # none from the tasks of a stopped pass
    return sum((part[0] for part in parts), Counter()), alongside.combine(extras) if extras else None


class _UnclosedSessions(logging.Filter):
    """Drops asyncio's "Unclosed client session" lines: the aiohttp sessions of the asynchronous
    filesystems (s3fs, ...) that Zarr opens to write an object store are never closed by them, and a
    worker process would print one such line when it exits."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Unclosed client session", "Unclosed connector"))


def _quiet_unclosed_sessions() -> None:
    """Install ``_UnclosedSessions`` on this process's asyncio logger, once."""
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, _UnclosedSessions) for f in log.filters):
        log.addFilter(_UnclosedSessions())


def _mark_stopped(token: str) -> None:
    _STOPPED.add(token)


def _executing(name: str, dask_worker=None) -> int:
    """How many tasks of the pass ``name`` this worker is running now."""
    return sum(name in str(task.key) for task in dask_worker.state.executing)


def _stop(token: str, name: str) -> None:
    """Make the write tasks of pass ``token`` that have not started do nothing, and wait for those
    running on a worker, which may be writing (on a local scheduler, nothing runs any more)."""
    client = _distributed_client()
    if client is None:
        return
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    try:
        client.run(_mark_stopped, token)
        # Ask the workers themselves: a task released by the failed compute is no longer the
        # scheduler's, but its thread may still be writing.
        while time.monotonic() < deadline and any(client.run(_executing, name).values()):
            time.sleep(0.1)
    except Exception:  # the cluster is gone, and its writes with it
        return


def _distributed_client():
    """The distributed client that a pass would use, or None (a local scheduler)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None
