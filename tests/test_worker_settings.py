"""The worker processes of daskem's embedded cluster start with its allocator settings
(``daskem/pipeline/dask_config/workers.yaml``): a decoded chunk's buffers then come from the heap,
reused from one read to the next, instead of each being a fresh mapping that the kernel zeroes and
takes back. Checked in a real worker's task with glibc's own accounting (``mallinfo2``), not by time."""

from __future__ import annotations

import ctypes
import os

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

from daskem.pipeline.cluster import connect, worker_environment, worker_settings
from daskem.pipeline.config import ClusterConfig

TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
CHUNK_BYTES = 16 * 2**20  # one decoded chunk of the benchmark's store
SLAB_BYTES = 48 * 2**20  # above glibc's largest mmap threshold: always mapped


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def mapped_bytes(n_bytes: int) -> int:
    """Bytes that glibc maps for a new ``n_bytes`` array (0 when it comes from the heap)."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    before = mallinfo2().hblkhd
    buffer = np.ones(n_bytes // 8)
    grown = mallinfo2().hblkhd - before
    del buffer
    return grown


def worker_state() -> dict:
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
    return {"environ": {name: os.environ.get(name) for name in names},
            "chunk": mapped_bytes(CHUNK_BYTES), "slab": mapped_bytes(SLAB_BYTES)}


def embedded_worker_state() -> dict:
    """``worker_state`` in a task (on a worker's executor thread, where reads run) of an embedded cluster."""
    with connect(ClusterConfig(n_workers=1, dashboard=False, memory_limit="1GiB")) as client:
        return client.submit(worker_state, pure=False).result()


@pytest.fixture
def clean_environment(monkeypatch):
    """No malloc variable in this process's environment: a nanny gives its worker the environment's
    value over the dask config's, and every nanny leaves the variables it set there, so an earlier
    cluster in this process would decide what the next one's workers get."""
    for name in worker_environment():
        monkeypatch.delenv(name, raising=False)


needs_glibc = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc's mallinfo2 (2.33+)")


@pytest.mark.cluster
@needs_glibc
def test_embedded_workers_take_a_chunks_buffers_from_the_heap(clean_environment, monkeypatch):
    expected = worker_environment()
    state = embedded_worker_state()
    assert state["environ"] == {**{name: str(value) for name, value in expected.items()}, "OMP_NUM_THREADS": "1"}
    assert state["chunk"] == 0 and state["slab"] >= SLAB_BYTES

    # a LocalCluster with distributed's own settings maps every such buffer afresh (the embedded
    # cluster's nanny left its variables in this process's environment: cleared again first)
    for name in worker_environment():
        monkeypatch.delenv(name, raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="1GiB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        plain = client.submit(worker_state, pure=False).result()
    assert plain["environ"]["MALLOC_MMAP_THRESHOLD_"] is None
    assert plain["chunk"] >= CHUNK_BYTES


def test_a_value_the_user_set_in_dask_config_is_kept():
    ours = worker_settings()
    assert set(ours) == {TRIM, "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_"}
    with dask.config.set({TRIM: 0}):
        assert worker_settings() == {key: value for key, value in ours.items() if key != TRIM}


@pytest.mark.cluster
def test_a_variable_in_the_environment_wins_and_the_run_says_so(clean_environment, monkeypatch, caplog):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as an earlier LocalCluster here leaves it
    with caplog.at_level("INFO", logger="daskem"):
        state = embedded_worker_state()
    assert state["environ"]["MALLOC_TRIM_THRESHOLD_"] == "65536"
    assert state["environ"]["MALLOC_MMAP_THRESHOLD_"] == str(worker_environment()["MALLOC_MMAP_THRESHOLD_"])
    assert "MALLOC_TRIM_THRESHOLD_=65536 in this process's environment take precedence" in caplog.text
