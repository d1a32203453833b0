"""A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, as users start them.

``dask_cluster(directory, ...)`` starts a scheduler that writes ``directory/scheduler.json``, then
workers that find it through that file, waits until they have joined, yields the file's contents
(its ``"address"``, ``"services"``, ...) and stops every process by its own handle.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from conftest import cli_env


# The scheduler's HTTP server runs even without the dashboard: on a free port, not on 8787.
NO_DASHBOARD = ("--no-dashboard", "--dashboard-address", "127.0.0.1:0")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dask_process(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m dask ARGS`` in ``cwd``, its output discarded."""
    return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def dask_cluster(directory: Path, *, scheduler_args: Sequence[str] = NO_DASHBOARD,
                 worker_args: Sequence[str] = (), n_workers: int = 2, security=None) -> Iterator[dict]:
    """A scheduler on 127.0.0.1 (a free port) and ``n_workers`` one-thread workers of 1 GiB joined
    through ``directory/scheduler.json``; ``security`` lets the test's own client in to wait for them."""
    from distributed import Client

    info = directory / "scheduler.json"
    processes = [dask_process("scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(info),
                              *scheduler_args, cwd=directory)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info.exists(), "the scheduler did not start"
        for index in range(n_workers):
            processes.append(dask_process(
                "worker", "--scheduler-file", str(info), "--nworkers", "1", "--nthreads", "1", "--memory-limit",
                "1GiB", "--no-dashboard", "--name", f"w{index + 1}", *worker_args, cwd=directory))
        with Client(scheduler_file=str(info), security=security, timeout="20s") as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield json.loads(info.read_text())
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
