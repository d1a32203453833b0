"""A full disk while writing the outputs is one line naming the output and the space it needs, and
leaves neither an output nor a staging directory behind, only the checkpoint to resume from."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import cli_env, write_config


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs mounted for the test (the test runs as root, as CI does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs to fill up ({done.stderr.strip()}): this test needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.cluster
def test_a_full_disk_is_named_with_the_space_the_outputs_need(tmp_path, small_disk):
    store = tmp_path / "s.zarr"
    done = subprocess.run([sys.executable, "-m", "daskem", "make-data", str(store), "--rows", "400000",
                           "--features", "4", "--components", "3"], env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    output = small_disk / "out"
    config = {"data": {"path": str(store), "array": "X"},
              "model": {"kind": "gmm", "n_components": 3, "max_iter": 3, "init": "k-means++"},
              "cluster": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB", "dashboard": False},
              "output": {"path": str(output), "responsibilities": True, "log_density": True}}
    done = subprocess.run([sys.executable, "-m", "daskem", "run", str(write_config(tmp_path / "c.yaml", config)),
                           "--no-progress"], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(output) in errors[0] and "no space left" in errors[0] and "MiB" in errors[0], errors[0]
    # no output and no staging directory; the checkpoint stays, so a run after freeing space does not refit
    assert sorted(p.name for p in small_disk.iterdir()) == ["out.checkpoint.npz"]
