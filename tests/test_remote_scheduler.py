"""A run against a real ``dask scheduler`` with two ``dask worker`` processes on 127.0.0.1 gives
the same model as the same config on the embedded cluster; a scheduler that is not there, or an
address that is not one, is one line and exit 2 at once."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zarr
from conftest import write_config
from dask_processes import closed_port, dask_cluster

from daskem.data.synthetic import make_data
from daskem.outputs.model_files import load_model
from daskem.pipeline.cluster import blas_kernels


@pytest.fixture
def scheduler_address(tmp_path):
    """``dask scheduler`` (no dashboard) and two ``dask worker`` processes, stopped after the test."""
    with dask_cluster(tmp_path) as info:
        yield info["address"]


def small_config(**cluster) -> dict:
    return {"data": {"path": "blobs.zarr", "array": "X"}, "model": {"kind": "kmeans", "n_components": 2},
            "cluster": cluster, "output": {"path": "out", "report": False}}


@pytest.mark.cluster
@pytest.mark.slow  # runs on running schedulers are in every run through the scheduler-file and TLS tests
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
    assert "dashboard:" not in remote.stderr  # the scheduler runs with --no-dashboard

    summary = json.loads((tmp_path / "remote" / "run.json").read_text())
    assert summary["cluster"]["embedded"] is False and summary["cluster"]["n_workers"] == 2
    assert summary["cluster"]["scheduler"] == scheduler_address and summary["cluster"]["dashboard"] is None
    # the record names the OpenBLAS kernels the workers ran (they start with this environment)
    embedded_summary = json.loads((tmp_path / "embedded" / "run.json").read_text())
    assert summary["cluster"]["blas_kernels"] == embedded_summary["cluster"]["blas_kernels"] == sorted(set(blas_kernels()))
    here, there = load_model(tmp_path / "embedded"), load_model(tmp_path / "remote")
    assert here.n_iter_ == there.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(there, name), getattr(here, name), rtol=1e-12, atol=0)
    labels = [zarr.open_array(str(tmp_path / d / "predictions.zarr"), path="labels")[:] for d in ("embedded", "remote")]
    np.testing.assert_array_equal(*labels)


def test_a_refused_scheduler_port_is_one_line_without_waiting_for_the_connect_timeout(tmp_path, in_process):
    make_data(str(tmp_path / "blobs.zarr"), n_samples=100, n_features=2, chunk_rows=50)
    address = f"tcp://127.0.0.1:{closed_port()}"
    # dask itself would retry for the whole connect timeout, set here far beyond the test's patience
    started = time.monotonic()
    done = in_process("run", write_config(tmp_path / "c.yaml", small_config(address=address)),
                      env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "60s"}, cwd=tmp_path)
    assert time.monotonic() - started < 20, "waited for the connect timeout"
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()  # the data's log line, then the error
    assert [line for line in lines if "error" in line] == lines[-1:], done.stderr
    assert lines[-1].startswith(f"error: cluster.address: cannot connect to {address} (Connection refused)")
    assert "check that a scheduler runs there" in lines[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address, words", [
    ("tcp://127.0.0.1", "is not a scheduler address; write tcp://host:port"),
    ("127.0.0.1:http", "is not a scheduler address"),
    ("udp://127.0.0.1:8786", "unknown scheme 'udp'"),
])
def test_a_malformed_scheduler_address_is_a_config_error(tmp_path, in_process, address, words):
    done = in_process("validate", write_config(tmp_path / "c.yaml", small_config(address=address)), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'c.yaml'}: cluster.address: {address!r}")
    assert words in lines[0]
