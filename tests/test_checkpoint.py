"""Checkpoint and resume: a fit killed at any pass resumes from its checkpoint and ends with the same bits.

In-process tests interrupt the fit at a chosen pass (the pass raises, as a lost client would stop
there); the CLI tests SIGKILL a real ``python -m daskem run`` (and its embedded cluster) while it
fits, then run the same config again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dask.array as da
import numpy as np
import pytest
from conftest import cli_env, write_config

import daskem
from daskem.engine import checkpoint as checkpoint_module
from daskem.engine import reduction
from daskem.engine.checkpoint import Checkpoint, CheckpointMismatch
from daskem.kernels.covariance import COVARIANCE_TYPES

FITTED = {"GaussianMixture": ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bound_",
                              "history_", "n_iter_", "converged_"),
          "KMeans": ("cluster_centers_", "inertia_", "history_", "n_iter_", "converged_")}


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    rows = np.vstack([rng.normal(size=(2000, 4)) * s + m for s, m in ((1.0, 0.0), (0.5, 5.0), (2.0, -6.0))])
    return da.from_array(rows[rng.permutation(len(rows))], chunks=(700, -1))


class Interrupted(Exception):
    """Stands for the client's death at a given pass."""


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(n)``: the n-th pass over the data from now on raises ``Interrupted`` instead of running."""

    def arm(n):
        calls = [0]
        original = reduction.dask.compute

        def compute(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise Interrupted(f"pass {n}")
            return original(*args, **kwargs)

        monkeypatch.setattr(reduction.dask, "compute", compute)
        return lambda: monkeypatch.setattr(reduction.dask, "compute", original)

    return arm


def assert_same_fit(fitted, reference):
    for name in FITTED[type(reference).__name__]:
        np.testing.assert_array_equal(getattr(fitted, name), getattr(reference, name), err_msg=name)


ESTIMATORS = [
    *[pytest.param(lambda cov=cov: daskem.GaussianMixture(3, covariance_type=cov, n_init=2, random_state=0,
                                                          max_iter=6, tol=0), id=f"gmm-{cov}")
      for cov in COVARIANCE_TYPES],
    pytest.param(lambda: daskem.GaussianMixture(3, init_params="random", n_init=2, random_state=1, max_iter=5, tol=0),
                 id="gmm-random"),
    pytest.param(lambda: daskem.KMeans(3, n_init=2, random_state=0, max_iter=6, tol=0), id="kmeans"),
    pytest.param(lambda: daskem.GaussianMixture(3, covariance_type="diag", n_init=2, random_state=0,
                                                algorithm="stepwise", steps_per_pass=3), id="gmm-stepwise"),
    pytest.param(lambda: daskem.KMeans(3, random_state=0, algorithm="stepwise", steps_per_pass=4, tol=0),
                 id="kmeans-stepwise"),
]


@pytest.mark.parametrize("make", ESTIMATORS)
def test_a_fit_interrupted_at_any_pass_resumes_to_the_same_bits_with_fewer_passes(make, X, tmp_path, interrupt_at):
    reference = make().fit(X)
    path = tmp_path / "fit.checkpoint.npz"
    for at in sorted({2, reference.n_passes_ // 2, reference.n_passes_}):
        disarm = interrupt_at(at)
        with reduction.counting_passes() as finished, pytest.raises(Interrupted):
            make().set_params(checkpoint=str(path)).fit(X)
        disarm()
        assert path.is_file()
        resumed = make().set_params(checkpoint=str(path)).fit(X)
        assert_same_fit(resumed, reference)
        # only the passes that had not finished are made again (stepwise EM: fractions of a pass)
        assert resumed.n_passes_ == pytest.approx(float(reference.n_passes_ - sum(finished.values())), rel=1e-12)
        assert not path.exists(), "a finished fit removes its checkpoint"


def test_a_selection_resumes_to_the_same_table_and_model(X, tmp_path, interrupt_at):
    grid = dict(n_components=[2, 3], covariance_types=["full", "diag"], random_state=0, max_iter=4, tol=0)
    reference = daskem.fit_candidates(X, **grid)
    path = tmp_path / "select.checkpoint.npz"
    disarm = interrupt_at(reference.best.n_passes_ - 1)
    with reduction.counting_passes() as finished, pytest.raises(Interrupted):
        daskem.fit_candidates(X, checkpoint=str(path), **grid)
    disarm()
    resumed = daskem.fit_candidates(X, checkpoint=str(path), **grid)
    assert resumed.table_records() == reference.table_records()
    assert_same_fit(resumed.best, reference.best)
    assert 0 < resumed.best.n_passes_ == reference.best.n_passes_ - sum(finished.values())


def test_a_checkpoint_of_other_parameters_or_data_is_refused_and_restart_discards_it(X, tmp_path, interrupt_at):
    path = str(tmp_path / "fit.checkpoint.npz")
    disarm = interrupt_at(4)
    with pytest.raises(Interrupted):
        daskem.KMeans(3, random_state=0, checkpoint=path).fit(X)
    disarm()
    with pytest.raises(CheckpointMismatch, match=r"different n_clusters.*--restart"):
        daskem.KMeans(4, random_state=0, checkpoint=path).fit(X)
    with pytest.raises(CheckpointMismatch, match=r"different shape"):
        daskem.KMeans(3, random_state=0, checkpoint=path).fit(X[:-1])
    with pytest.raises(CheckpointMismatch, match=r"different slab_rows"):
        daskem.KMeans(3, random_state=0, checkpoint=path).fit(X.rechunk((500, -1)))
    fresh = daskem.KMeans(4, random_state=0).fit(X)
    restarted = daskem.KMeans(4, random_state=0, checkpoint=Checkpoint(path, restart=True)).fit(X)
    assert_same_fit(restarted, fresh)


def test_a_seed_drawn_for_random_state_none_is_kept_for_the_resumed_fit(X, tmp_path, interrupt_at):
    path = str(tmp_path / "fit.checkpoint.npz")
    disarm = interrupt_at(3)
    with pytest.raises(Interrupted):
        daskem.GaussianMixture(3, random_state=None, checkpoint=path).fit(X)
    disarm()
    seed = Checkpoint(path).load("random_state")
    resumed = daskem.GaussianMixture(3, random_state=None, checkpoint=path).fit(X)
    assert_same_fit(resumed, daskem.GaussianMixture(3, random_state=seed).fit(X))


def test_checkpoint_files_are_replaced_whole_and_hold_no_pickle(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint = Checkpoint(str(path), {"what": "test"})
    checkpoint.save("a", {"x": np.arange(3.0), "t": (1, 2.5, None), "nan": float("nan")})
    checkpoint.save("b", [np.eye(2)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary left beside it
    with np.load(path, allow_pickle=False) as archive:  # raises if anything needs pickle
        assert "__document__" in archive.files
    again = Checkpoint(str(path), {"what": "test"})
    state = again.load("a")
    np.testing.assert_array_equal(state["x"], np.arange(3.0))
    assert state["t"] == (1, 2.5, None) and np.isnan(state["nan"])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="not a readable daskem checkpoint"):
        Checkpoint(str(path)).load("a")


def test_an_interrupted_write_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    Checkpoint(str(path), {"what": "test"}).save("a", {"iteration": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.os, "replace", crash)
    with pytest.raises(OSError):
        Checkpoint(str(path), {"what": "test"}).save("a", {"iteration": 2})
    monkeypatch.undo()
    assert Checkpoint(str(path), {"what": "test"}).load("a") == {"iteration": 1}


# ----------------------------------------------------------------------------- the CLI, killed


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckdata")
    done = subprocess.run(
        [sys.executable, "-m", "daskem", "make-data", "blobs.zarr", "--n-samples", "60000", "--n-features", "6",
         "--n-components", "5", "--chunk-rows", "10000", "--seed", "3"],
        cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder / "blobs.zarr"


def run_config(store, output, **model):
    """A run whose initialization takes several passes (k-means|| rounds), to be killed during it."""
    return {"data": {"path": str(store), "array": "X"},
            "model": {"kind": "gmm", "n_components": 5, "max_iter": 12, "tol": 0, "random_state": 0,
                      "init": "k-means||", **model},
            "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False},
            "output": {"path": str(output), "report": False}}


def kill_when(config_path, cwd, marker: str, timeout: float = 180) -> str:
    """Start ``daskem run`` and SIGKILL it (with its embedded cluster) once stderr shows ``marker``."""
    process = subprocess.Popen([sys.executable, "-m", "daskem", "run", str(config_path), "--no-progress"], cwd=cwd,
                               env=cli_env(), stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, deadline = [], time.monotonic() + timeout
    try:
        for line in process.stderr:
            seen.append(line)
            if marker in line or time.monotonic() > deadline:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    text = "".join(seen)
    assert marker in text, text
    return text


def run_to_end(config_path, cwd):
    done = subprocess.run([sys.executable, "-m", "daskem", "run", str(config_path), "--no-progress"], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def model_arrays(output):
    folder = output / "model"
    return {p.name: np.load(p, allow_pickle=False) for p in sorted(folder.glob("*.npy"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, big_store):
    """The output of an uninterrupted run of ``run_config``."""
    folder = tmp_path_factory.mktemp("reference")
    run_to_end(write_config(folder / "reference.yaml", run_config(big_store, folder / "out")), folder)
    return folder / "out"


@pytest.mark.cluster
@pytest.mark.parametrize("marker", ["gmm iteration 4:", pytest.param("k-means|| round 2/", marks=pytest.mark.slow)],
                         ids=["during-em", "during-init"])  # init's resume is also checked in process, stage by stage
def test_killed_run_resumes_with_the_same_model_and_fewer_passes(tmp_path, big_store, reference, marker):
    output = tmp_path / "out"
    config = write_config(tmp_path / "run.yaml", run_config(big_store, output))
    kill_when(config, tmp_path, marker)
    assert (tmp_path / "out.checkpoint.npz").is_file() and not output.exists()
    done = run_to_end(config, tmp_path)
    expected = "resuming from iteration" if "iteration" in marker else "resuming after round"
    assert expected in done.stderr, done.stderr
    for name, array in model_arrays(reference).items():
        np.testing.assert_array_equal(model_arrays(output)[name], array, err_msg=name)
    passes = json.loads((output / "run.json").read_text())["passes"]
    fresh = json.loads((reference / "run.json").read_text())["passes"]
    assert passes["total"] < fresh["total"] and passes["outputs"] == fresh["outputs"] == 1
    assert not (tmp_path / "out.checkpoint.npz").exists()


@pytest.mark.cluster
@pytest.mark.slow  # the identity check itself is tested in process; this is the same through the CLI
def test_a_changed_config_refuses_the_checkpoint_and_restart_starts_afresh(tmp_path, big_store):
    output = tmp_path / "out"
    kill_when(write_config(tmp_path / "run.yaml", run_config(big_store, output)), tmp_path, "gmm iteration 2:")
    changed = write_config(tmp_path / "changed.yaml", run_config(big_store, output, n_components=4))
    done = subprocess.run([sys.executable, "-m", "daskem", "run", str(changed), "--no-progress"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "out.checkpoint.npz" in errors[0] and "--restart" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not output.exists()
    restarted = subprocess.run([sys.executable, "-m", "daskem", "run", str(changed), "--no-progress", "--restart"],
                               cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads((output / "run.json").read_text())["config"]["model"]["n_components"] == 4
