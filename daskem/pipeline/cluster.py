"""The Dask cluster of a run: an embedded LocalCluster or a running scheduler, its summary, slabs fitted to it."""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from daskem.data.slabs import slab_bytes_for_cluster
from daskem.data.stores import DataSource, open_data
from daskem.engine.reduction import DEFAULT_FAN_IN, SCHEDULER_ANSWER_SECONDS, reduction_graph
from daskem.errors import DaskemUserError
from daskem.pipeline import worker_settings
from daskem.pipeline.config import (
    ClusterConfig,
    TLSConfig,
    check_scheduler_address,
    tls_mismatch,
)

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
    """A ``distributed.Client`` on an embedded LocalCluster, or on the scheduler that
    ``cluster.address`` or ``cluster.scheduler_file`` names; closed (and the embedded cluster shut
    down) on the way out, also on error."""
    local = None
    if cluster.embedded:
        local, client = _embedded_client(cluster)
    else:
        client = _scheduler_client(cluster)
    try:
        log_dashboard(client, cluster)
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


def _embedded_client(cluster: ClusterConfig):
    """A LocalCluster of worker processes as ``cluster`` describes it, and a client on it."""
    from distributed import Client, LocalCluster

    # Task errors reach the client, which reports them; the workers' own copies (with their
    # tracebacks) are shown with -v only.
    verbose = logger.isEnabledFor(logging.DEBUG)
    with _workers_ignore_ctrl_c(), worker_settings.applied():
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
    return local, client


def _scheduler_client(cluster: ClusterConfig):
    """A client on a running scheduler that has at least one worker. A malformed or refused address
    and rejected certificates are reported at once, not after dask's connect retries."""
    from distributed import Client

    timeout = connect_timeout()
    key, address = scheduler_address(cluster, timeout)
    security = tls_security(cluster.tls)
    probe_scheduler(key, address, security, timeout)
    try:
        client = Client(address, security=security, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise DaskemUserError(
            f"{key}: cannot connect to {address} ({exc}); check that a scheduler runs there, or remove "
            f"{key} for an embedded cluster"
        ) from None
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        client.close()
        raise DaskemUserError(f"{key}: the scheduler at {address} has no workers; start some") from None
    logger.info("cluster: scheduler %s, %d worker(s)", address, len(client.scheduler_info()["workers"]))
    worker_settings.log_missing(client)
    return client


def connect_timeout() -> float:
    """Seconds to wait for a scheduler (or its scheduler file): dask's ``distributed.comm.timeouts.connect``."""
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds"))


def scheduler_address(cluster: ClusterConfig, timeout: float) -> tuple[str, str]:
    """The config key that names the scheduler (for messages) and its address, read from
    ``cluster.scheduler_file`` when given; the file is waited for up to ``timeout`` seconds, since a
    batch job may start the scheduler and this client at the same time."""
    if cluster.address is not None:
        return "cluster.address", cluster.address
    path = Path(cluster.scheduler_file)
    key = "cluster.scheduler_file"
    deadline = time.monotonic() + timeout
    if not path.exists():
        logger.info("waiting up to %.0f s for the scheduler file %s", timeout, path)
    while True:
        try:
            address = json.loads(path.read_text())["address"]
            check_scheduler_address(address)
            break
        except FileNotFoundError:
            problem = (f"no such file after {timeout:.0f} s; start the scheduler with 'dask scheduler "
                       f"--scheduler-file {path}', or fix the path")
        except (OSError, ValueError, KeyError, TypeError) as exc:  # also a file half written
            problem = (f"not a scheduler file ({type(exc).__name__}: {exc}); point it at the JSON file that "
                       "'dask scheduler --scheduler-file' writes")
        if time.monotonic() > deadline:
            raise DaskemUserError(f"{key}: {path}: {problem}")
        time.sleep(0.2)
    problem = tls_mismatch(address, cluster.tls)
    if problem:
        raise DaskemUserError(f"{key}: {path} names {problem}")
    return key, address


def tls_security(tls: TLSConfig | None):
    """A ``distributed.security.Security`` that requires encryption with ``tls``'s certificates, or None."""
    if tls is None:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert_file, tls_client_key=tls.key_file,
                    require_encryption=True)


def probe_scheduler(key: str, address: str, security, timeout: float) -> None:
    """One TCP connection to ``address`` (with a TLS handshake and the scheduler's first bytes when
    ``security`` is given): an unknown host, a closed port or refused certificates raise a
    ``DaskemUserError`` at once, where dask would retry until its connect timeout."""
    location = address.rpartition("://")[2]
    host, _, port = location.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            if security is not None:
                context = security.get_connection_args("client")["ssl_context"]
                with context.wrap_socket(sock, server_hostname=host) as tls:
                    tls.settimeout(min(timeout, 5.0))
                    try:  # with TLS 1.3 the scheduler judges our certificate after the handshake
                        tls.recv(1)
                    except TimeoutError:
                        pass
    except ssl.SSLError as exc:
        raise DaskemUserError(
            f"{key}: the TLS handshake with {address} failed ({exc.reason or exc}); check cluster.tls: ca_file "
            "must have signed the scheduler's certificate, and the scheduler must trust the CA of cert_file"
        ) from None
    except OSError as exc:
        raise DaskemUserError(
            f"{key}: cannot connect to {address} ({exc.strerror or exc}); check that a scheduler runs there "
            f"and the host and port, or remove {key} for an embedded cluster"
        ) from None


def dashboard_link(client) -> str | None:
    """The dashboard's address, or None when the scheduler serves none. ``client.dashboard_link``
    and the scheduler's ``services`` name its HTTP server, which runs without the dashboard too
    (``--no-dashboard``), so the page itself is asked for: 404 means no dashboard."""
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return None
    link = client.dashboard_link
    try:  # HEAD, so no dashboard session is started (a served page answers 405 or 200)
        _filter_probe_lines()
        with urllib.request.urlopen(urllib.request.Request(link, method="HEAD"), timeout=2):
            pass
    except urllib.error.HTTPError as exc:
        return None if exc.code == 404 else link
    except (OSError, ValueError):  # not reachable from this client: no link worth logging
        return None
    return link


class _DashboardProbes(logging.Filter):
    """Drops tornado's access line for daskem's probe of the dashboard page (``HEAD /status``, which
    browsers never send): an embedded scheduler serves it from the run's process, and logs the 404 of
    a scheduler without a dashboard as a warning, after the answer has reached daskem."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 2 and str(args[1]).startswith("HEAD ") and "/status " in str(args[1]))


def _filter_probe_lines() -> None:
    """Install ``_DashboardProbes`` on tornado's access log, once per process."""
    access = logging.getLogger("tornado.access")
    if not any(isinstance(f, _DashboardProbes) for f in access.filters):
        access.addFilter(_DashboardProbes())


def log_dashboard(client, cluster: ClusterConfig) -> None:
    """Log the dashboard's address when the scheduler serves one, and why not when asked for."""
    link = dashboard_link(client)
    if link:
        logger.info("dashboard: %s", link)
    elif cluster.embedded and cluster.dashboard:
        missing = importlib.util.find_spec("bokeh") is None
        logger.info("dashboard: not served%s", ", bokeh is not installed (pip install 'bokeh>=3.1')" if missing else "")
    else:
        logger.debug("dashboard: the scheduler serves none")


def cluster_summary(client, embedded: bool) -> dict[str, Any]:
    """The cluster as the run record describes it; ``blas_kernels``: the OpenBLAS kernel sets the
    workers run, since they decide the last bits of every sum."""
    workers = client.scheduler_info().get("workers", {})
    return {
        "embedded": embedded,
        "scheduler": client.scheduler.address,
        "n_workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory_bytes": workers_memory_bytes(workers),
        "smallest_memory_bytes": min((w.get("memory_limit") or 0 for w in workers.values()), default=0),
        "dashboard": dashboard_link(client),
        "blas_kernels": _workers_blas_kernels(client),
    }



def workers_memory_bytes(workers: dict[str, Any]) -> int:
    """The memory limits of the workers (as ``scheduler_info`` lists them) added up."""
    return sum(w.get("memory_limit") or 0 for w in workers.values())


def _workers_blas_kernels(client) -> list[str]:
    """The kernel sets of ``blas_kernels`` on the workers, for the record only: a worker that is gone
    or does not answer within ``SCHEDULER_ANSWER_SECONDS`` is left out, and the run goes on."""
    try:
        found = client.run(blas_kernels, on_error="ignore", callback_timeout=SCHEDULER_ANSWER_SECONDS)
    except (OSError, TimeoutError) as exc:  # the scheduler itself gone or silent: the passes will report it
        logger.debug("cluster: could not ask the workers for their BLAS kernels: %s", exc)
        return []
    return sorted({kernels for answer in found.values() for kernels in answer})


def blas_kernels() -> list[str]:
    """The kernel sets ("Haswell", "SkylakeX", ...) of the OpenBLAS libraries this process runs
    (numpy's, scipy's): chosen by OpenBLAS from the CPU, or by ``OPENBLAS_CORETYPE``."""
    import numpy  # noqa: F401  (loads numpy's OpenBLAS)
    from threadpoolctl import threadpool_info

    return [info.get("architecture") or "" for info in threadpool_info() if info.get("internal_api") == "openblas"]


def tasks_per_pass(X, fan_in: int = DEFAULT_FAN_IN) -> int:
    """The tasks one pass over the slabs of ``X`` gives the scheduler, as every pass builds it
    (``engine.reduction``): the reads, one task per slab, the merge tree. It grows with the slabs
    (whole shards), never with a sharded store's inner chunks."""
    import dask

    root = reduction_graph(X, _rows_of_slab, None, name="daskem-tasks-per-pass", combine=sum, fan_in=fan_in)
    (optimized,) = dask.optimize(root)
    return len(optimized.__dask_graph__())


def _rows_of_slab(slab, row_start: int, payload) -> int:
    return len(slab)


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
        memory = workers_memory_bytes(client.scheduler_info().get("workers", {}))  # not the whole summary's round trips
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

