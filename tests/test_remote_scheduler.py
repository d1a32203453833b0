"""A run against a real ``dask scheduler`` with two ``dask worker`` processes on 127.0.0.1 gives
the same model as the same config on the embedded cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from conftest import cli_env, write_config

from daskem.data.synthetic import make_data
from daskem.outputs.model_files import load_model

pytestmark = pytest.mark.cluster


def _dask(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args], cwd=cwd, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def scheduler_address(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes; stopped (by their own handles) after the test."""
    from distributed import Client

    info = tmp_path / "scheduler.json"
    processes = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                       "--scheduler-file", str(info), cwd=tmp_path)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info.exists(), "the scheduler did not start"
        for name in ("w1", "w2"):
            processes.append(_dask("worker", "--scheduler-file", str(info), "--nworkers", "1", "--nthreads", "1",
                                   "--memory-limit", "1GiB", "--no-dashboard", "--name", name, cwd=tmp_path))
        with Client(scheduler_file=str(info), timeout="20s") as client:
            client.wait_for_workers(2, timeout=60)
        yield json.loads(info.read_text())["address"]
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_remote_cluster_gives_the_same_model_as_the_embedded_one(tmp_path, run_cli, scheduler_address):
    make_data(str(tmp_path / "blobs.zarr"), n_samples=4000, n_features=2, n_components=3, chunk_rows=500, seed=2)
    config = {
        "data": {"path": "blobs.zarr", "array": "X"},
        "model": {"kind": "gmm", "n_components": 3, "covariance_type": "full", "max_iter": 10, "random_state": 0},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False},
        "output": {"path": "embedded"},
    }
    path = write_config(tmp_path / "c.yaml", config)
    embedded = run_cli("run", path)
    assert embedded.returncode == 0, embedded.stderr
    remote = run_cli("run", path, "--set", f"cluster.address={scheduler_address}", "--set", "output.path=remote")
    assert remote.returncode == 0, remote.stderr
    assert f"cluster: scheduler {scheduler_address}, 2 worker(s)" in remote.stderr

    summary = json.loads((tmp_path / "remote" / "run.json").read_text())
    assert summary["cluster"]["embedded"] is False and summary["cluster"]["n_workers"] == 2
    assert summary["cluster"]["scheduler"] == scheduler_address
    here, there = load_model(tmp_path / "embedded"), load_model(tmp_path / "remote")
    assert here.n_iter_ == there.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(there, name), getattr(here, name), rtol=1e-12, atol=0)
    labels = [zarr.open_array(str(tmp_path / d / "predictions.zarr"), path="labels")[:] for d in ("embedded", "remote")]
    np.testing.assert_array_equal(*labels)


def test_unreachable_scheduler_is_a_user_error(tmp_path, run_cli):
    make_data(str(tmp_path / "blobs.zarr"), n_samples=100, n_features=2, chunk_rows=50)
    config = {"data": {"path": "blobs.zarr", "array": "X"}, "model": {"kind": "kmeans", "n_components": 2},
              "cluster": {"address": "tcp://127.0.0.1:9"}, "output": {"path": "out"}}
    fast = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    done = run_cli("run", write_config(tmp_path / "c.yaml", config), env=fast)
    assert done.returncode == 2 and "error: cluster.address: cannot connect to tcp://127.0.0.1:9" in done.stderr
    assert not (tmp_path / "out").exists()
