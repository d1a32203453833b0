"""``cluster.scheduler_file``: the JSON file that ``dask scheduler --scheduler-file`` (and
dask-jobqueue, dask-mpi) write. A run and a prediction find a real scheduler and its workers through
it; a stale, missing or garbled file, or one given with ``cluster.address``, is one line, exit 2."""

from __future__ import annotations

import json
import time

import pytest
from conftest import write_config
from dask_processes import closed_port, dask_cluster

from daskem.data.synthetic import make_data
from daskem.pipeline.cluster import blas_kernels

FAST = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}  # how long a missing scheduler file is waited for


def run_config(**cluster) -> dict:
    return {"data": {"path": "blobs.zarr", "array": "X"},
            "model": {"kind": "kmeans", "n_components": 3, "init": "k-means++", "max_iter": 5, "random_state": 0},
            "cluster": cluster, "output": {"path": "out", "report": False}}


@pytest.mark.cluster
def test_run_and_predict_find_the_scheduler_through_its_file_and_log_its_dashboard(tmp_path, run_cli):
    make_data(str(tmp_path / "blobs.zarr"), n_samples=3000, n_features=2, n_components=3, chunk_rows=500, seed=5)
    (tmp_path / "cluster").mkdir()
    with dask_cluster(tmp_path / "cluster", scheduler_args=["--dashboard-address", "127.0.0.1:0"]) as info:
        scheduler_file = tmp_path / "cluster" / "scheduler.json"
        done = run_cli("run", write_config(tmp_path / "c.yaml", run_config(scheduler_file=str(scheduler_file))))
        assert done.returncode == 0, done.stderr
        predicted = run_cli("predict", "out", "blobs.zarr", "--array", "X", "-o", "pred",
                            "--scheduler-file", scheduler_file)
        assert predicted.returncode == 0, predicted.stderr
    address = info["address"]
    assert f"cluster: scheduler {address}, 2 worker(s)" in done.stderr
    # plain `dask worker`s start with distributed's malloc settings: the run says so, and where the fix is
    assert "2 of 2 worker(s) run without daskem's malloc settings" in done.stderr
    assert "docs/deployment.md" in done.stderr
    link = f"http://127.0.0.1:{info['services']['dashboard']}/status"
    assert f"dashboard: {link}" in done.stderr
    for directory in ("out", "pred"):
        summary = json.loads((tmp_path / directory / "run.json").read_text())
        assert summary["cluster"]["scheduler"] == address and summary["cluster"]["embedded"] is False
        assert summary["cluster"]["dashboard"] == link
        assert summary["cluster"]["blas_kernels"] == sorted(set(blas_kernels()))  # the workers share this environment


def test_a_stale_scheduler_file_is_one_line_at_once(tmp_path, in_process):
    make_data(str(tmp_path / "blobs.zarr"), n_samples=100, n_features=2, chunk_rows=50)
    address = f"tcp://127.0.0.1:{closed_port()}"
    (tmp_path / "scheduler.json").write_text(json.dumps({"type": "Scheduler", "address": address}))
    started = time.monotonic()
    done = in_process("run", write_config(tmp_path / "c.yaml", run_config(scheduler_file="scheduler.json")),
                      env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "60s"}, cwd=tmp_path)
    assert time.monotonic() - started < 20, "waited for the connect timeout"
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: cluster.scheduler_file: cannot connect to {address} (Connection refused)"), done.stderr


@pytest.mark.parametrize("content, words", [
    (None, "no such file after 1 s; start the scheduler with 'dask scheduler --scheduler-file"),
    ("{not json", "not a scheduler file (JSONDecodeError"),
    ('{"type": "Scheduler"}', "not a scheduler file (KeyError: 'address')"),
])
def test_a_missing_or_garbled_scheduler_file_is_one_line(tmp_path, in_process, content, words):
    make_data(str(tmp_path / "blobs.zarr"), n_samples=100, n_features=2, chunk_rows=50)
    if content is not None:
        (tmp_path / "scheduler.json").write_text(content)
    done = in_process("run", write_config(tmp_path / "c.yaml", run_config(scheduler_file="scheduler.json")), env=FAST,
                      cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: cluster.scheduler_file: {tmp_path / 'scheduler.json'}: ")
    assert words in errors[0]


def test_scheduler_file_and_address_together_are_a_config_error(tmp_path, in_process):
    config = run_config(scheduler_file="scheduler.json", address="tcp://127.0.0.1:8786")
    done = in_process("validate", write_config(tmp_path / "c.yaml", config), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path / 'c.yaml'}: cluster: address and scheduler_file both "
                                   "name a scheduler; keep one")
