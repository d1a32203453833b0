"""Counted reads and gathers: a real Zarr store whose chunk reads are counted (passes), and a
recorder of what a distributed client asks for, with the size of each result (what it gathers)."""

from __future__ import annotations

import collections
import contextlib
import threading

import dask.array as da
import numpy as np
import zarr
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin
from distributed.protocol import pickle
from zarr.storage import LocalStore, WrapperStore


class CountingStore(WrapperStore):
    """A real on-disk store that counts the reads of each chunk key."""

    def __init__(self, store):
        super().__init__(store)
        self.reads = collections.Counter()
        self._lock = threading.Lock()

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in key or key.startswith("c/"):
            with self._lock:
                self.reads[key] += 1
        return await self._store.get(key, prototype, byte_range)


def counted_array(path, data: np.ndarray, chunk_rows: int) -> tuple[CountingStore, da.Array]:
    """``data`` written to a Zarr store at ``path`` in chunks of ``chunk_rows`` rows, read back as a
    Dask array with one block per chunk through a ``CountingStore``."""
    chunks = (chunk_rows, data.shape[1])
    zarr.create_array(LocalStore(path), shape=data.shape, chunks=chunks, dtype=data.dtype)[:] = data
    store = CountingStore(LocalStore(path, read_only=True))
    return store, da.from_zarr(zarr.open_array(store, mode="r"), chunks=chunks)


class WantedKeys(SchedulerPlugin):
    """On the scheduler: the keys clients ask to be computed for them, and every key submitted."""

    name = "test-wanted-keys"

    def __init__(self):
        self.wanted, self.submitted = [], set()

    def update_graph(self, scheduler, *, client, keys, tasks, **kwargs):
        self.wanted.extend(keys)
        self.submitted.update(tasks)


class ResultSizes(WorkerPlugin):
    """On each worker: the pickled size of every result it computes. (The scheduler's ``nbytes`` is
    ``sizeof``, which for a dataclass of arrays is a constant that ignores the arrays.)"""

    name = "test-result-sizes"

    def setup(self, worker):
        self.worker, self.sizes = worker, {}

    def transition(self, key, start, finish, **kwargs):
        if finish == "memory":
            self.sizes[key] = len(pickle.dumps(self.worker.data[key]))


@contextlib.contextmanager
def recorded_gathers(client):
    """Yields a dict filled on exit: ``wanted`` (the keys the client asked for, in order) with
    ``sizes`` (key -> pickled bytes of its result) and ``submitted`` (every key of the graphs)."""
    record = {}
    client.register_plugin(WantedKeys())
    client.register_plugin(ResultSizes())
    try:
        yield record
        plugin = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[WantedKeys.name].__dict__)
        record.update(wanted=plugin["wanted"], submitted=plugin["submitted"], sizes={})
        for sizes in client.run(lambda dask_worker: dask_worker.plugins[ResultSizes.name].sizes).values():
            record["sizes"].update(sizes)
    finally:
        client.unregister_worker_plugin(ResultSizes.name)
        client.unregister_scheduler_plugin(WantedKeys.name)


def loaded_modules(names: list[str]) -> list[str]:
    """Which of ``names`` this process has imported (run on workers; this module imports no scikit-learn)."""
    import sys

    return sorted(name for name in names if name in sys.modules)
