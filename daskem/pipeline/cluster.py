"""The Dask cluster of a run: an embedded LocalCluster or a running scheduler, its summary, slabs fitted to it."""

from __future__ import annotations

import importlib.util
import logging
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from daskem.data.slabs import slab_bytes_for_cluster
from daskem.data.stores import DataSource, open_data
from daskem.errors import DaskemUserError
from daskem.pipeline.config import ClusterConfig

logger = logging.getLogger("daskem")



@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with SIGINT ignored: a Ctrl-C on the terminal reaches the whole process
    group, and the workers would die printing tracebacks; the client stops them itself instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def connect(cluster: ClusterConfig) -> Iterator[Any]:
    """A ``distributed.Client`` on an embedded LocalCluster or the scheduler at ``cluster.address``;
    closed (and the embedded cluster shut down) on the way out, also on error."""
    from distributed import Client, LocalCluster

    local = None
    if cluster.address is None:
        # Task errors reach the client, which reports them; the workers' own copies (with their
        # tracebacks) are shown with -v only.
        verbose = logger.isEnabledFor(logging.DEBUG)
        with _workers_ignore_ctrl_c():
            local = LocalCluster(
                n_workers=cluster.n_workers, threads_per_worker=cluster.threads_per_worker,
                memory_limit=cluster.memory_limit, processes=True, dashboard_address=":0",
                scheduler_kwargs={"dashboard": cluster.dashboard},
                silence_logs=logging.WARNING if verbose else logging.CRITICAL,
            )
        try:
            client = Client(local)
        except BaseException:
            local.close()
            raise
        logger.info("cluster: embedded, %d worker(s) x %d thread(s), %s each", cluster.n_workers,
                    cluster.threads_per_worker, cluster.memory_limit)
    else:
        try:  # waits up to dask's distributed.comm.timeouts.connect (30 s by default)
            client = Client(cluster.address)
        except (OSError, TimeoutError) as exc:
            raise DaskemUserError(
                f"cluster.address: cannot connect to {cluster.address} ({exc}); check that a scheduler "
                "runs there, or set cluster.address: null for an embedded cluster"
            ) from None
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            client.close()
            raise DaskemUserError(
                f"cluster.address: the scheduler at {cluster.address} has no workers; start some"
            ) from None
        logger.info("cluster: scheduler %s, %d worker(s)", cluster.address, len(client.scheduler_info()["workers"]))
    try:
        if cluster.address is not None or cluster.dashboard:
            log_dashboard(client, embedded=local is not None)
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()



def log_dashboard(client, *, embedded: bool) -> None:
    """Log the dashboard's address (an embedded cluster serves it only when bokeh is installed)."""
    link = client.dashboard_link
    if embedded and importlib.util.find_spec("bokeh") is None:
        logger.info("dashboard: not served, bokeh is not installed (pip install 'bokeh>=3.1')")
    elif link:
        logger.info("dashboard: %s", link)



def cluster_summary(client, embedded: bool) -> dict[str, Any]:
    workers = client.scheduler_info().get("workers", {})
    return {
        "embedded": embedded,
        "scheduler": client.scheduler.address,
        "n_workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory_bytes": sum(w.get("memory_limit") or 0 for w in workers.values()),
        "smallest_memory_bytes": min((w.get("memory_limit") or 0 for w in workers.values()), default=0),
        "dashboard": client.dashboard_link,
    }



def fit_slabs_to_workers(data_config, X, source: DataSource, cluster: dict[str, Any]):
    """Re-plan the slabs for this cluster (see ``io.slab_bytes_for_cluster``): small enough for the
    workers' memory and numerous enough to keep every thread busy. ``data.chunk_rows`` set by hand
    is kept, with a warning when a worker could not hold it."""
    smallest = cluster.get("smallest_memory_bytes") or 0
    row_bytes = X.shape[1] * X.dtype.itemsize
    if data_config.chunk_rows:
        if smallest and data_config.chunk_rows * row_bytes > smallest / 8:
            logger.warning("data.chunk_rows=%d makes %.0f MiB tasks, more than 1/8 of a worker's %.0f MiB: "
                           "workers may pause; lower it or raise cluster.memory_limit", data_config.chunk_rows,
                           data_config.chunk_rows * row_bytes / 2**20, smallest / 2**20)
        return X
    slab_bytes = slab_bytes_for_cluster(X.shape[0] * row_bytes, data_config.slab_mib * 2**20,
                                        n_threads=cluster.get("threads") or 1, smallest_memory=smallest)
    _, planned = open_data(data_config, slab_bytes=slab_bytes)
    if planned.chunks != X.chunks:
        logger.info("slabs of up to %d rows (%.1f MiB) for %d worker thread(s)", max(planned.chunks[0]),
                    max(planned.chunks[0]) * row_bytes / 2**20, cluster.get("threads") or 1)
    return planned



def maybe_cache(X, mode: str, client):
    """Persist ``X`` on the workers for ``cache: memory``, or for ``auto`` when it fits in half their memory."""
    if mode == "none":
        return X
    if mode == "auto":
        memory = cluster_summary(client, True)["memory_bytes"]
        if not memory or X.nbytes > memory / 2:
            logger.info("cache: auto: %.1f MiB of rows do not fit in half of %.1f MiB of worker memory; "
                        "streaming from the store", X.nbytes / 2**20, memory / 2**20)
            return X
    from distributed import wait

    started = time.perf_counter()
    X = X.persist()
    wait(X)
    logger.info("cache: %.1f MiB of rows kept in worker memory (%.2f s)",
                X.nbytes / 2**20, time.perf_counter() - started)
    return X

