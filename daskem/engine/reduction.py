"""Map-reduce over the slabs of a Dask array: one task per slab, a tree of bounded fan-in, one compute.

Every pass over the data goes through :func:`map_reduce`: each slab (one Dask block of whole rows)
gets one task ``kernel(slab, row_start, payload)``, partial results are merged in a tree of bounded
fan-in, and only the root comes back to the client. Keys carry the run id and the pass name, so no
key is ever reused with other contents, and every task is a pure function of its inputs, so a task
recomputed after a lost worker gives the same bits. The payload (model parameters) is copied into
the tasks when all the copies together are small, which saves the pass a hop through the
scheduler (the payload's own task, then the workers fetching it from each other); else it is put
into the graph once under its own key.

When the rows are persisted on a distributed cluster and the per-slab results are small (k-means,
small mixtures), a pass is instead one task per worker thread over the slabs that worker holds;
the client gathers their per-slab results straight from the workers and merges them in the same
tree: a task per thread instead of one per slab and one merge hop fewer, and the same bits
wherever the slabs happen to live.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import uuid
from collections import Counter
from fractions import Fraction
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from typing import Any, Callable, Iterator, Sequence

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask._task_spec import DataNode, List, Task, TaskRef  # what dask's own collections build
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

DEFAULT_FAN_IN = 8
# At most this many bytes of per-slab results are gathered by the client (a pass over persisted rows).
GATHERED_RESULTS_BYTES = 64 * 2**20
# The payload is copied into every task that uses it while all the copies together take at most this.
INLINED_PAYLOAD_BYTES = 2**20
# Seconds to wait for the scheduler to say where persisted slabs live before building the per-slab graph.
SCHEDULER_ANSWER_SECONDS = 10

# Passes over the data (calls of ``map_reduce``) counted by step, while ``counting_passes`` is active.
_pass_counts: ContextVar[Counter | None] = ContextVar("daskem_pass_counts", default=None)
_current_step: ContextVar[str] = ContextVar("daskem_step", default="other")
# The row weights of one array (its name, the weights chunked like its rows), while ``row_weights`` is active.
_row_weights: ContextVar[tuple[str, da.Array] | None] = ContextVar("daskem_row_weights", default=None)
# What computes a pass: dask.compute unless ``passes_run_by`` says otherwise (a watched cluster).
_runner: ContextVar[Callable[[list], list] | None] = ContextVar("daskem_pass_runner", default=None)


def new_run_id(kind: str) -> str:
    """A fresh prefix for the task keys of one fit, so keys are never reused with other contents."""
    return f"daskem-{kind}-{uuid.uuid4().hex[:12]}"


def slab_row_starts(X: da.Array) -> list[int]:
    """Global index of the first row of each slab."""
    return [0, *accumulate(X.chunks[0])][:-1]


@dataclass(frozen=True)
class PassGraph:
    """One pass's graph: ``root`` is the key of the whole tree; a grouped pass (see
    :func:`resident_groups`) also names its group tasks, whose results ``merge`` turns into the root's."""

    graph: HighLevelGraph
    layer: str
    root: Any
    groups: tuple = ()
    merge: Callable[[list], Any] | None = None

    def delayed(self, key) -> Delayed:
        return Delayed(key, self.graph, layer=self.layer)


def reduction_graph(
    X: da.Array,
    kernel: Callable[[np.ndarray, int, Any], Any],
    payload: Any,
    *,
    name: str,
    combine: Callable[[list], Any],
    fan_in: int = DEFAULT_FAN_IN,
    slabs: Sequence[int] | None = None,
    gather_bytes: int | None = None,
) -> Delayed:
    """The lazy tree ``combine(... kernel(slab, row_start, payload) ...)`` over the slabs of ``X``
    (only the slabs numbered in ``slabs``, in that order, when given).

    ``payload`` is copied into the tasks when small (see ``INLINED_PAYLOAD_BYTES``), else it appears
    once in the graph (key ``{name}-payload``) and every task refers to it by key; ``combine``
    merges a list of at most ``fan_in`` partial results. Inside ``row_weights(X, w)`` each task also
    gets the slab's weights: ``kernel(slab, row_start, payload, weights)``.
    ``gather_bytes``, when given, bounds the bytes of all the per-slab results together; at most
    ``GATHERED_RESULTS_BYTES``, a pass over persisted rows runs as one task per worker thread (see
    :func:`resident_groups`).
    """
    built = pass_graph(X, kernel, payload, name=name, combine=combine, fan_in=fan_in, slabs=slabs,
                       gather_bytes=gather_bytes)
    return built.delayed(built.root)


def pass_graph(X: da.Array, kernel, payload, *, name: str, combine, fan_in: int = DEFAULT_FAN_IN,
               slabs: Sequence[int] | None = None, gather_bytes: int | None = None) -> PassGraph:
    """:func:`reduction_graph`'s tree with, for a grouped pass, its group tasks and their merge."""
    if fan_in < 2:  # not a user check (the estimators validate fan_in): with 1 the loop below never ends
        raise ValueError(f"fan_in must be at least 2 to reduce in a tree, got {fan_in}")
    layer: dict = {}
    weights = weights_of(X)
    dependencies = [X] if weights is None else [X, weights]
    weights_name = None if weights is None else weights.name
    starts = slab_row_starts(X)
    chosen = range(X.numblocks[0]) if slabs is None else [int(index) for index in slabs]

    def inputs(index: int) -> tuple:
        block = TaskRef((X.name, index, *(0,) * (X.ndim - 1)))
        return (block, starts[index]) if weights_name is None else (block, starts[index], TaskRef((weights_name, index)))

    groups = resident_groups(X, chosen) if gather_bytes is not None and gather_bytes <= GATHERED_RESULTS_BYTES else None
    given = _payload_argument(layer, f"{name}-payload", payload, len(chosen) if groups is None else len(groups))
    merge, group_keys = None, ()
    if groups is not None:  # one task per worker thread over its slabs; the root merges them (reduction_graph)
        group_keys = tuple((f"{name}-map", number) for number in range(len(groups)))
        for key, group in zip(group_keys, groups):
            layer[key] = Task(key, _slabs_of_one_worker, kernel, given, List(*(List(*inputs(index)) for index in group)))
        position = {index: at for at, index in enumerate(i for group in groups for i in group)}
        merge = partial(_tree_of_parts, combine, fan_in, [position[index] for index in chosen])
        root = (f"{name}-reduce0", 0)
        layer[root] = Task(root, merge, List(*map(TaskRef, group_keys)))
    else:
        level = []
        for index in chosen:  # one task per slab, built directly: no Delayed object or token per task
            key = (f"{name}-map", index)
            block, row_start, *weights = inputs(index)
            layer[key] = Task(key, kernel, block, row_start, given, *weights)
            level.append(key)
        for depth, ranges in enumerate(tree_levels(len(level), fan_in)):
            level = _reduce_level(layer, f"{name}-reduce{depth}", combine, level, ranges)
        root = level[0]
    graph = HighLevelGraph.from_collections(f"{name}-tree", layer, dependencies=dependencies)
    return PassGraph(graph, f"{name}-tree", root, group_keys, merge)


def _payload_argument(layer: dict, key: str, payload, n_tasks: int) -> DataNode | TaskRef:
    """What the ``n_tasks`` tasks of a pass are given for the payload: the payload itself when its
    copies together take at most ``INLINED_PAYLOAD_BYTES``, else a reference to the one task in
    ``layer`` (added here, under ``key``) that holds it."""
    nbytes = pickled_bytes(payload)
    if nbytes is not None and nbytes * n_tasks <= INLINED_PAYLOAD_BYTES:
        return DataNode(None, payload)
    layer[key] = DataNode(key, payload)
    return TaskRef(key)


def pickled_bytes(value) -> int | None:
    """The bytes of ``value`` pickled, its arrays' buffers counted without being copied (pickle
    protocol 5 hands them out of band): a fraction of a millisecond for a payload of 30 MB, where
    pickling it whole takes 50 ms. None when only distributed's pickler can take it (a local function)."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        head = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:
        return None
    return len(head) + sum(buffer.raw().nbytes for buffer in buffers)


def tree_levels(n_parts: int, fan_in: int) -> list[list[range]]:
    """The merge tree over ``n_parts`` partial results: per level, the ranges of the level below that
    each merge takes (at most ``fan_in`` consecutive ones). A single part still passes through one
    merge, so every pass returns what ``combine`` returns."""
    levels, width = [], n_parts
    while width > 1 or not levels:
        levels.append([range(start, min(start + fan_in, width)) for start in range(0, width, fan_in)])
        width = len(levels[-1])
    return levels


def _reduce_level(layer: dict, prefix: str, combine, level: list, ranges: list[range]) -> list:
    """Add the merge tasks of one tree level to ``layer``; returns their keys."""
    merged = []
    for number, members in enumerate(ranges):
        key = (prefix, number)
        layer[key] = Task(key, combine, List(*(TaskRef(level[i]) for i in members)))
        merged.append(key)
    return merged


def resident_groups(X: da.Array, chosen: Sequence[int]) -> list[list[int]] | None:
    """The ``chosen`` slabs grouped by the worker that holds them in memory, each worker's split into
    one group per thread, in slab order; None unless every chosen slab of ``X`` is a finished
    distributed future held by some worker, and grouping saves tasks."""
    if "distributed" not in sys.modules or len(set(chosen)) != len(chosen):
        return None
    from distributed import Future

    # A persisted array is one materialized layer of futures; asking any other graph for its keys
    # would build its tasks (0.1 s at 2,000 slabs of a Zarr store), so it is not asked.
    layer = getattr(X.__dask_graph__(), "layers", {}).get(X.name)
    if not isinstance(layer, MaterializedLayer):
        return None
    keys = [(X.name, index, *(0,) * (X.ndim - 1)) for index in chosen]
    futures = [layer.get(key) for key in keys]
    if not futures or not all(isinstance(future, Future) for future in futures):
        return None
    client = futures[0].client

    async def ask():  # both questions at once: one round trip to the scheduler, not two
        return await asyncio.gather(client.scheduler.who_has(keys=keys), client.scheduler.ncores())

    try:  # bounded: a scheduler that does not answer is the watchdog's to report, during the compute
        holders, threads = client.sync(ask, callback_timeout=SCHEDULER_ANSWER_SECONDS)
    except (OSError, TimeoutError):  # the plain graph still works
        return None
    by_worker: dict[str, list[int]] = {}
    for index, key in zip(chosen, keys):
        workers = holders.get(key) or ()
        if not workers:
            return None  # a slab being recomputed: let the scheduler place it as usual
        by_worker.setdefault(min(workers), []).append(index)
    groups = []
    for worker, indices in sorted(by_worker.items()):
        pieces = max(1, min(threads.get(worker, 1), len(indices)))
        bounds = [round(len(indices) * piece / pieces) for piece in range(pieces + 1)]
        groups.extend(indices[bounds[piece] : bounds[piece + 1]] for piece in range(pieces))
    return groups if len(groups) < len(chosen) else None


def _slabs_of_one_worker(kernel, payload, slabs: list) -> list:
    """The kernel's result for each slab of one worker's group, in the group's order."""
    return [kernel(block, row_start, payload, *weights) for block, row_start, *weights in slabs]


def _tree_of_parts(combine, fan_in: int, order: list[int], parts: list[list]) -> Any:
    """The per-slab results of every group put back in slab order and merged in the same tree the
    per-slab graph builds, so the bits do not depend on which worker held which slab."""
    flat = [result for part in parts for result in part]
    level = [flat[position] for position in order]
    for ranges in tree_levels(len(level), fan_in):
        level = [combine([level[i] for i in members]) for members in ranges]
    return level[0]


def map_reduce(X: da.Array, kernel, payload, *, name: str, combine, fan_in: int = DEFAULT_FAN_IN,
               slabs: Sequence[int] | None = None, result_bytes: int | None = None) -> Any:
    """Compute :func:`reduction_graph` and return its root: one compute (one pass over the data, or
    the fraction ``len(slabs) / n_slabs`` of one), on the active distributed client if there is one,
    else on Dask's local scheduler. ``result_bytes``: the size of one slab's result, when bounded."""
    n_slabs = X.numblocks[0] if slabs is None else len(slabs)
    gather_bytes = None if result_bytes is None else result_bytes * n_slabs
    built = pass_graph(X, kernel, payload, name=name, combine=combine, fan_in=fan_in, slabs=slabs,
                       gather_bytes=gather_bytes)
    if built.groups:  # the groups' results come straight to the client: one hop fewer than a root task
        result = built.merge(list(compute(*map(built.delayed, built.groups))))
    else:
        (result,) = compute(built.delayed(built.root))
    counts = _pass_counts.get()
    if counts is not None:
        counts[_current_step.get()] += 1 if slabs is None else Fraction(len(slabs), X.numblocks[0])
    return result


def pass_count(value) -> int | float:
    """A number of passes for a person or a JSON file: an int when whole, else a float (stepwise EM
    and ``partial_fit`` read fractions of the data)."""
    value = Fraction(value)
    return int(value) if value.denominator == 1 else float(value)


def compute(*collections) -> tuple:
    """``dask.compute(*collections)``, or the runner of ``passes_run_by`` when one is set: every graph
    daskem computes goes through here, so a watched cluster watches all of them."""
    runner = _runner.get()
    return dask.compute(*collections) if runner is None else tuple(runner(list(collections)))


@contextmanager
def counting_passes() -> Iterator[Counter]:
    """Count the passes over the data made inside the block, by step (see :func:`step`); nested
    counters each see the passes made inside them."""
    outer = _pass_counts.get()
    counts: Counter = Counter()
    token = _pass_counts.set(counts)
    try:
        yield counts
    finally:
        _pass_counts.reset(token)
        if outer is not None:
            outer.update(counts)


@contextmanager
def passes_run_by(runner: Callable[[list], list]) -> Iterator[None]:
    """Compute every graph made inside the block with ``runner(collections) -> results`` (see
    ``daskem.pipeline.watchdog``), instead of ``dask.compute``."""
    token = _runner.set(runner)
    try:
        yield
    finally:
        _runner.reset(token)


@contextmanager
def row_weights(X: da.Array, weights: da.Array | None) -> Iterator[None]:
    """Every pass over ``X`` made inside the block gives its kernels the weights of the slab's rows
    too (``weights`` is chunked like the rows of ``X``; None: no weights, every row counts once).
    The fit skeleton sets it once, so every pass of a weighted fit (initialization, EM, scoring) is
    weighted without each step passing the weights along."""
    if weights is not None and weights.chunks[0] != X.chunks[0]:
        raise ValueError("the row weights must be chunked like the rows of X")  # not a user check: rechunked before
    token = _row_weights.set(None if weights is None else (X.name, weights))
    try:
        yield
    finally:
        _row_weights.reset(token)


def weights_of(X: da.Array) -> da.Array | None:
    """The row weights set for ``X`` by :func:`row_weights`, or None (every row counts once)."""
    weighted = _row_weights.get()
    return weighted[1] if weighted is not None and weighted[0] == X.name else None


@contextmanager
def step(name: str) -> Iterator[None]:
    """Count the passes made inside the block as step ``name`` (init, em, scoring, outputs, ...)."""
    token = _current_step.set(name)
    try:
        yield
    finally:
        _current_step.reset(token)

