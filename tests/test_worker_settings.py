"""The worker processes of daskem's embedded cluster start with its allocator settings
(``daskem/pipeline/dask_config/workers.yaml``): a decoded chunk's buffers then come from the heap,
reused from one read to the next, instead of each being a fresh mapping that the kernel zeroes and
takes back. Checked in a real worker's task with glibc's own accounting (``mallinfo2``), not by time.
The two thresholds only help together: a value the user chose for either one means neither is set."""

from __future__ import annotations

import ctypes
import os

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

from daskem.pipeline import worker_settings
from daskem.pipeline.cluster import connect
from daskem.pipeline.config import ClusterConfig
from daskem.pipeline.worker_settings import PRE_SPAWN, worker_environment

CHUNK_BYTES = 16 * 2**20  # one decoded chunk of the benchmark's store
SLAB_BYTES = 96 * 2**20  # larger than a thread arena's heap: always mapped
NAMES = tuple(worker_environment())


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
    return {"environ": {name: os.environ.get(name) for name in NAMES},
            "chunk": mapped_bytes(CHUNK_BYTES), "slab": mapped_bytes(SLAB_BYTES)}


def embedded_worker_state() -> dict:
    """``worker_state`` in a task (on a worker's executor thread, where reads run) of an embedded cluster."""
    with connect(ClusterConfig(n_workers=1, dashboard=False, memory_limit="1GiB")) as client:
        return client.submit(worker_state, pure=False).result()


@pytest.fixture
def clean(monkeypatch):
    """No malloc variable in this process's environment (earlier clusters in this process leave
    theirs, and a nanny gives its worker the environment's value), distributed's own config."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    with dask.config.set({PRE_SPAWN: dict(worker_settings._distributed_defaults())}):
        yield


needs_glibc = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc's mallinfo2 (2.33+)")


@pytest.mark.cluster
@needs_glibc
def test_embedded_workers_take_a_chunks_buffers_from_the_heap(clean, monkeypatch):
    state = embedded_worker_state()
    assert state["environ"] == {name: str(value) for name, value in worker_environment().items()}
    assert state["chunk"] == 0 and state["slab"] >= SLAB_BYTES
    assert all(name not in os.environ for name in NAMES)  # the embedded cluster's start left nothing behind

    # a LocalCluster with distributed's own settings maps every such buffer afresh
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="1GiB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        plain = client.submit(worker_state, pure=False).result()
    assert plain["environ"] == {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": "65536"}
    assert plain["chunk"] >= CHUNK_BYTES

    # what that LocalCluster left in this process's environment does not stop the next embedded one
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
    assert embedded_worker_state()["environ"] == {name: str(value) for name, value in worker_environment().items()}
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # and is put back


@pytest.mark.cluster
def test_a_value_the_user_chose_for_either_variable_means_neither_is_set(clean, monkeypatch, caplog):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")  # exported by the user
    with caplog.at_level("INFO", logger="daskem"):
        state = embedded_worker_state()
    assert state["environ"] == {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": "0"}
    assert "keep the malloc settings chosen here (MALLOC_TRIM_THRESHOLD_=0)" in caplog.text


@pytest.mark.parametrize("choice", [{"MALLOC_TRIM_THRESHOLD_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": 0},
                                    {"MALLOC_MMAP_THRESHOLD_": None}, {"MALLOC_MMAP_THRESHOLD_": 1048576}])
def test_what_counts_as_the_users_choice_in_dask_config(clean, choice):
    with dask.config.set({f"{PRE_SPAWN}.{name}": value for name, value in choice.items()}):
        chosen = worker_settings.user_choices()
    neutral = str(choice.get("MALLOC_TRIM_THRESHOLD_")) == "65536"  # distributed's default, as int or str
    assert chosen == ({} if neutral else choice)
    with dask.config.set({f"{PRE_SPAWN}.MALLOC_TRIM_THRESHOLD_": 67108864}):  # daskem's own value
        assert worker_settings.user_choices() == {}
