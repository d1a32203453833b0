"""Runs end, never hang: Ctrl-C and SIGTERM stop a run in one line, a cluster that cannot finish ends it.

Each test starts the real CLI in its own session (as a terminal would), so that the signal reaches
the whole process group, and checks that nothing of the run is left running afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import cli_env, write_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupt")
    done = subprocess.run([sys.executable, "-m", "daskem", "make-data", "s.zarr", "--rows", "200000", "--features",
                           "8", "--components", "5", "--chunk-rows", "20000"],
                          cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder / "s.zarr"


def config(store, output, *, cluster=None, **model):
    return {"data": {"path": str(store), "array": "X"},
            "model": {"kind": "gmm", "n_components": 5, "max_iter": 200, "tol": 0, "random_state": 0,
                      "init": "k-means++", **model},
            "cluster": {"n_workers": 2, "memory_limit": "1GiB", "dashboard": False, **(cluster or {})},
            "output": {"path": str(output), "report": False}}


def start(config_path, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daskem", "run", str(config_path), "--no-progress"], cwd=cwd,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(process: subprocess.Popen, marker: str, timeout: float = 180) -> list[str]:
    """Read stderr until a line holds ``marker``; the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            return lines
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError("".join(lines))


def left_in_session(session: int) -> list[str]:
    """Processes still alive in the run's session (its workers, nannies, ...)."""
    out = subprocess.run(["ps", "-s", str(session), "-o", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip() and "Z" not in line.split()[1]]  # zombies have ended


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    assert "Traceback" not in stderr and "Task exception was never retrieved" not in stderr, stderr
    for fragment in fragments:
        assert fragment in errors[0], stderr


@pytest.mark.cluster
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_in_one_line_leaving_no_process_and_keeping_the_checkpoint(
        tmp_path, store, signum, status):
    process = start(write_config(tmp_path / "c.yaml", config(store, tmp_path / "out")), tmp_path)
    wait_for(process, "gmm iteration 2:")
    os.killpg(process.pid, signum) if signum == signal.SIGINT else process.send_signal(signum)  # Ctrl-C: the group
    try:
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == status, stderr
    assert_one_error_line(stderr, "run the same command again to resume")
    time.sleep(1)
    assert left_in_session(process.pid) == []
    assert (tmp_path / "out.checkpoint.npz").is_file() and not (tmp_path / "out").exists()


@pytest.mark.cluster
def test_a_worker_memory_too_small_for_one_task_ends_the_run_with_the_fix(tmp_path, store):
    tiny = config(store, tmp_path / "out", cluster={"n_workers": 1, "memory_limit": "200MiB", "timeout": 10})
    tiny["data"]["slab_mib"] = 512
    done = subprocess.run([sys.executable, "-m", "daskem", "run", str(write_config(tmp_path / "c.yaml", tiny)),
                           "--no-progress"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, "raise cluster.memory_limit (now 200MiB)", "lower data.slab_mib (now 512)")
    assert not (tmp_path / "out").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.cluster
def test_all_workers_killed_mid_fit_with_none_coming_back_ends_within_the_timeout(tmp_path, store):
    port = free_port()
    scheduler = subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    worker = subprocess.Popen(["dask", "worker", f"tcp://127.0.0.1:{port}", "--nworkers", "1", "--nthreads", "2",
                               "--no-nanny", "--no-dashboard", "--memory-limit", "1GiB"], cwd=tmp_path,
                              env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        remote = config(store, tmp_path / "out", cluster={"address": f"tcp://127.0.0.1:{port}", "timeout": 5})
        process = start(write_config(tmp_path / "c.yaml", remote), tmp_path)
        wait_for(process, "gmm iteration 1:")
        os.killpg(worker.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, stderr
        assert_one_error_line(stderr, "every worker is gone", "cluster.timeout: 5 s")
        assert time.monotonic() - killed_at < 60
        assert not (tmp_path / "out").exists() and (tmp_path / "out.checkpoint.npz").is_file()
    finally:
        for child in (worker, scheduler):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
