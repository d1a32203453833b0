"""A run as users run it, with outlier flags and its report: the flags of planted outliers, the
figures (valid, not blank, referenced by index.html), ``daskem report`` and ``daskem predict`` with
the saved threshold."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import write_config

from daskem import KMeans
from daskem.outputs.model_files import load_model
from daskem.outputs.report import report_sample, write_report

N_INLIERS, N_PLANTED, D = 12_000, 120, 3
CONTAMINATION = N_PLANTED / (N_INLIERS + N_PLANTED)
RUN_FIGURES = ["clusters.png", "criteria.png", "log_density.png", "objective.png", "weights.png"]


def planted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three blobs, then uniform rows far around them: (X, is_planted)."""
    rng = np.random.default_rng(seed)
    blobs = [rng.normal(centre, 0.7, size=(N_INLIERS // 3, D)) for centre in ([0, 0, 0], [6, 0, 3], [0, 7, -3])]
    far = rng.uniform(-30, 35, size=(N_PLANTED, D))
    return np.vstack([*blobs, far]), np.r_[np.zeros(N_INLIERS, bool), np.ones(N_PLANTED, bool)]


def store(path, X):
    zarr.create_array(str(path), data=X, chunks=(2_000, D))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, run_cli_module):
    folder = tmp_path_factory.mktemp("report")
    X, is_planted = planted(0)
    config = {
        "data": {"path": str(store(folder / "data.zarr", X))},
        "model": {"kind": "gmm", "n_components": [2, 3], "covariance_type": ["full", "diag"], "max_iter": 30},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB", "dashboard": False},
        "output": {"path": str(folder / "out"), "outliers": {"contamination": CONTAMINATION}},
    }
    done = run_cli_module("run", write_config(folder / "c.yaml", config), "--no-progress", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder, X, is_planted


@pytest.fixture(scope="module")
def run_cli_module(tmp_path_factory):
    """``run_cli`` for module-scoped fixtures."""
    import subprocess
    import sys

    from conftest import cli_env

    def run(*args, cwd, timeout=300):
        return subprocess.run([sys.executable, "-m", "daskem", *map(str, args)], cwd=cwd, env=cli_env(),
                              capture_output=True, text=True, timeout=timeout)

    return run


def assert_figures(report, names):
    import matplotlib.image

    assert sorted(p.name for p in report.glob("*.png")) == sorted(names)
    page = (report / "index.html").read_text()
    for name in names:
        pixels = matplotlib.image.imread(report / name)  # a valid PNG, or this raises
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05, name  # not blank
        assert f'src="{name}"' in page


@pytest.mark.cluster
def test_run_flags_the_planted_outliers_and_records_the_threshold(run):
    folder, X, is_planted = run
    summary = json.loads((folder / "out" / "run.json").read_text())
    outliers = summary["outliers"]
    assert outliers["contamination"] == CONTAMINATION and outliers["rows"] == len(X)
    assert abs(outliers["count"] - CONTAMINATION * len(X)) <= 0.001 * CONTAMINATION * len(X) + 0.5
    assert summary["passes"]["outliers"] == 2 and summary["passes"]["outputs"] == 1
    assert summary["passes"]["report"] == 0  # its sample was taken in the pass that wrote the predictions
    flags = zarr.open_array(str(folder / "out" / "predictions.zarr"), path="outlier")[:]
    assert flags.dtype == bool and np.count_nonzero(flags) == outliers["count"]
    assert np.count_nonzero(flags & is_planted) >= 0.95 * N_PLANTED
    model = load_model(folder / "out")
    assert model.offset_ == outliers["threshold"]
    log_density = zarr.open_array(str(folder / "out" / "predictions.zarr"), path="log_density")[:]
    np.testing.assert_array_equal(flags, log_density < model.offset_)


@pytest.mark.cluster
def test_run_writes_a_report_with_every_figure(run):
    folder, _, _ = run
    report = folder / "out" / "report"
    assert_figures(report, RUN_FIGURES)
    page = (report / "index.html").read_text()
    assert "Candidates, best first by bic" in page and "below log-density" in page
    rows = np.load(report / "sample" / "rows.npy")
    assert 4_000 < len(rows) < 6_000 and rows.shape[1] == D
    # taken in the predictions pass, the sample is the one a pass of its own draws, in other slabs too
    alone = report_sample(load_model(folder / "out"), da.from_zarr(str(folder / "data.zarr"), chunks=(3_000, D)))
    for name, values in alone.items():
        np.testing.assert_array_equal(np.load(report / "sample" / f"{name}.npy"), values)


@pytest.mark.cluster
def test_report_command_draws_the_report_again(run, in_process):
    folder, _, _ = run
    report = folder / "out" / "report"
    (report / "clusters.png").unlink()
    (report / "index.html").write_text("stale")
    done = in_process("report", folder / "out")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(report / "index.html")
    assert_figures(report, RUN_FIGURES)
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["model", "predictions.zarr", "report", "run.json"]


@pytest.mark.cluster
def test_predict_with_the_saved_model_flags_new_rows_by_its_threshold(run, in_process):
    folder, _, _ = run
    new, is_planted = planted(1)
    done = in_process("predict", folder / "out", store(folder / "new.zarr", new), "-o", folder / "pred",
                      "--outliers", "--n-workers", 1, "--no-progress")
    assert done.returncode == 0, done.stderr
    model = load_model(folder / "out")
    flags = zarr.open_array(str(folder / "pred" / "predictions.zarr"), path="outlier")[:]
    np.testing.assert_array_equal(flags, model.predict_outliers(new) == -1)
    assert np.count_nonzero(flags & is_planted) >= 0.95 * N_PLANTED
    summary = json.loads((folder / "pred" / "run.json").read_text())
    assert summary["outliers"]["threshold"] == model.offset_ and summary["outliers"]["count"] == flags.sum()


def test_report_command_refuses_a_directory_that_is_not_a_run(tmp_path, in_process):
    done = in_process("report", tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {tmp_path}: not the output directory of a complete daskem run")


def test_kmeans_report_shows_centres_and_cluster_sizes(tmp_path):
    X, _ = planted(2)
    lazy = da.from_array(X, chunks=(3_000, D))
    model = KMeans(3, random_state=0).fit(lazy)
    sample = report_sample(model, lazy, rows=2_000, seed=1)
    assert set(sample) == {"rows", "labels"} and 1_500 < len(sample["rows"]) < 2_500
    again = report_sample(model, da.from_array(X, chunks=(777, D)), rows=2_000, seed=1)
    np.testing.assert_array_equal(sample["rows"], again["rows"])  # the same rows whatever the chunking
    summary = {"command": "run", "estimator": "KMeans", "objective": "inertia", "history": [9.0, 5.0, 4.5],
               "config": {"model": {"kind": "kmeans", "n_components": 3}}}
    report = write_report(tmp_path / "report", summary, model, sample)
    assert_figures(report, ["clusters.png", "objective.png", "weights.png"])
