"""A fit on three hosts that share no network stack: the scheduler and two workers each in their own
Linux network namespace with its own address (``tests/netns.py``), the data in moto's S3 server on
the bridge's address, the CLI in the root namespace. One worker's cable is cut in the middle of the
fit; the scheduler drops it within seconds and the fit gives the same model, bit for bit, as an
uncut run on the same hosts (every task is pure, so recomputed statistics are the same numbers).

Requirements: root (CAP_NET_ADMIN) and iproute2's ``ip``; without them the test fails and says so.
Every worker has its own ``--local-directory``; the run writes no per-row outputs, only the model
and run.json on the client's disk, so no host reads another's files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from conftest import cli_env, write_config
from netns import Network, hosts
from s3 import s3_server

from daskem.data.synthetic import make_data
from daskem.outputs.model_files import load_model

# How fast the cluster notices a host that no longer answers. The kernel does it, whatever the load:
# distributed's TCP timeout (11 s, its floor) sets keepalive probes every second and a user timeout,
# so a connection to a silent host fails within about 11 s and the scheduler drops the worker.
# Missing heartbeats are the backstop (30 s, not less: a scheduler starved of CPU on a busy machine
# reads late heartbeats as missing ones and would drop healthy workers).
QUICK_FAILURE = {
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "11s",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "10s",
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "30s",
}
PORT = "8786"  # each host has its own ports


@contextmanager
def dask_hosts(network: Network, directory: Path) -> Iterator[str]:
    """``dask scheduler`` on host ``scheduler`` and a nanny-less ``dask worker`` on each worker host,
    each with its own local directory; the scheduler's address once both workers have joined."""
    from distributed import Client

    scheduler = network.hosts["scheduler"]
    address = f"tcp://{scheduler.address}:{PORT}"
    processes: list[subprocess.Popen] = []

    def start(host, *args: str) -> None:
        log = open(directory / f"{host.namespace}.log", "wb")
        processes.append(subprocess.Popen(host.command(sys.executable, "-m", "dask", *args), cwd=directory,
                                          env=cli_env(**QUICK_FAILURE), stdout=log, stderr=subprocess.STDOUT))
        log.close()

    try:
        start(scheduler, "scheduler", "--host", scheduler.address, "--port", PORT, "--no-dashboard",
              "--dashboard-address", "127.0.0.1:0")
        for name in ("worker-1", "worker-2"):
            host = network.hosts[name]
            (directory / name).mkdir()
            start(host, "worker", address, "--host", host.address, "--no-nanny", "--name", name, "--nthreads", "1",
                  "--memory-limit", "1GiB", "--no-dashboard", "--local-directory", str(directory / name))
        try:
            with Client(address, timeout="60s") as client:
                client.wait_for_workers(2, timeout=60)
        except (OSError, TimeoutError) as error:
            logs = "".join(f"--- {path.name}\n{path.read_text()[-1500:]}" for path in sorted(directory.glob("*.log")))
            pytest.fail(f"the workers did not join {address} across the bridge ({error!r}); is bridged traffic "
                        f"filtered (br_netfilter and an iptables FORWARD policy of DROP)?\n{logs}")
        yield address
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a worker cut off may wait for its scheduler
                process.kill()
                process.wait()


def cut_when(process: subprocess.Popen, line: str, cut) -> tuple[list[str], threading.Event]:
    """Collect the process's stderr lines; call ``cut()`` once the first line holding ``line`` appears."""
    lines, done = [], threading.Event()

    def read() -> None:
        for text in process.stderr:
            lines.append(text)
            if line in text and not done.is_set():
                cut()
                done.set()

    threading.Thread(target=read, daemon=True).start()
    return lines, done


@pytest.mark.cluster
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_fit_across_network_namespaces_survives_a_worker_cut_off_mid_fit(tmp_path):
    with ExitStack() as stack:
        network = stack.enter_context(hosts(["scheduler", "worker-1", "worker-2"]))
        server = stack.enter_context(s3_server(host=network.address))
        make_data(server.url("multihost/blobs.zarr"), n_samples=60_000, n_features=8, n_components=4, chunk_rows=6_000,
                  seed=4, storage_options=server.storage_options())
        address = stack.enter_context(dask_hosts(network, tmp_path))
        config = {
            "data": {"path": server.url("multihost/blobs.zarr"), "array": "X", "storage_options": server.config_options(),
                     "chunk_rows": 6_000},
            "model": {"kind": "gmm", "n_components": 4, "covariance_type": "full", "init": "random_from_data",
                      "max_iter": 6, "tol": 0.0, "random_state": 0},
            "cluster": {"address": address, "timeout": 60},
            "output": {"path": "uncut", "labels": False, "report": False},
        }
        env = cli_env(**server.env(tmp_path))
        command = [sys.executable, "-m", "daskem", "run", str(write_config(tmp_path / "c.yaml", config)),
                   "--no-progress"]
        uncut = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert uncut.returncode == 0, uncut.stderr

        cut_run = subprocess.Popen([*command, "--set", "output.path=cut"], cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lines, cut = cut_when(cut_run, "gmm iteration 2:", lambda: network.cut("worker-2"))
        try:
            returncode = cut_run.wait(timeout=120)
        finally:
            if cut_run.poll() is None:
                cut_run.kill()
                cut_run.wait()
        stderr = "".join(lines)
        assert returncode == 0, stderr
    assert cut.is_set(), stderr
    lost = next((i for i, text in enumerate(lines) if "left the cluster" in text), None)
    iterations = [i for i, text in enumerate(lines) if "gmm iteration " in text]
    assert lost is not None and lost < iterations[-1], f"the cut worker was not dropped mid-fit:\n{stderr}"

    here, there = load_model(tmp_path / "uncut"), load_model(tmp_path / "cut")
    assert here.n_iter_ == there.n_iter_ == 6
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(there, name), getattr(here, name))
    assert there.lower_bound_ == here.lower_bound_
    summary = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert summary["cluster"]["scheduler"] == address and summary["cluster"]["n_workers"] == 2
