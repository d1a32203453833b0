"""Sampling at scale: rows drawn from a fitted mixture, keyed by (seed, row), written chunk by chunk;
``daskem sample`` as users run it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from daskem import GaussianMixture, KMeans
from daskem.kernels.covariance import COVARIANCE_TYPES, get_covariance_type
from daskem.outputs.model_files import save_model
from daskem.pipeline.sampling import write_samples

D = 3


def blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal([0, 0, 0], [1.0, 2.0, 0.5], size=(600, D)),
                      rng.normal([8, -4, 2], [0.5, 1.0, 1.5], size=(400, D)) @ np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])])


@pytest.fixture(scope="module", params=list(COVARIANCE_TYPES))
def model(request):
    return GaussianMixture(2, covariance_type=request.param, random_state=0).fit(blobs())


def mixture_moments(model) -> tuple[np.ndarray, np.ndarray]:
    """The mean and covariance of the whole mixture, from its parameters."""
    full = get_covariance_type(model.covariance_type).full_covariances(model.covariances_, *model.means_.shape)
    mean = model.weights_ @ model.means_
    second = np.einsum("k,kij->ij", model.weights_, full + np.einsum("ki,kj->kij", model.means_, model.means_))
    return mean, second - np.outer(mean, mean)


def read(path, name):
    return zarr.open_array(str(path), path=name, mode="r")


def test_sample_mean_and_covariance_match_the_model_within_sampling_error(model, tmp_path):
    n = 200_000
    written = write_samples(model, tmp_path / "s.zarr", n, seed=3, chunk_rows=30_000)
    X, component = read(tmp_path / "s.zarr", "X")[:], read(tmp_path / "s.zarr", "component")[:]
    assert written["X"]["shape"] == [n, D] and X.dtype == np.float64 and component.dtype == np.int32
    mean, cov = mixture_moments(model)
    scale = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(X.mean(axis=0), mean, atol=float(5 * scale.max() / np.sqrt(n)))
    # the standard error of a covariance entry is at most about sqrt(2) * scale_i * scale_j / sqrt(n) for a
    # Gaussian; a mixture's tails are heavier, hence the wider margin
    np.testing.assert_allclose(np.cov(X.T), cov, atol=float(10 * np.outer(scale, scale).max() / np.sqrt(n)))
    shares = np.bincount(component, minlength=2) / n
    np.testing.assert_allclose(shares, model.weights_, atol=5 * np.sqrt(0.25 / n))
    for k in range(2):  # each row comes from the component it names
        mine = X[component == k]
        np.testing.assert_allclose(mine.mean(axis=0), model.means_[k], atol=float(6 * scale.max() / np.sqrt(len(mine))))


def test_samples_are_the_same_whatever_the_chunking(model, tmp_path):
    write_samples(model, tmp_path / "a.zarr", 10_001, seed=7, chunk_rows=10_001)
    write_samples(model, tmp_path / "b.zarr", 10_001, seed=7, chunk_rows=997)
    write_samples(model, tmp_path / "c.zarr", 10_001, seed=8, chunk_rows=997)
    for name in ("X", "component"):
        np.testing.assert_array_equal(read(tmp_path / "a.zarr", name)[:], read(tmp_path / "b.zarr", name)[:])
    assert not np.array_equal(read(tmp_path / "a.zarr", "X")[:], read(tmp_path / "c.zarr", "X")[:])
    rows, components = GaussianMixture.sample(model, 50)  # scikit-learn's signature: (X, labels)
    assert rows.shape == (50, D) and components.shape == (50,)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_model(GaussianMixture(2, covariance_type="full", random_state=0).fit(blobs()), folder / "gmm")
    save_model(KMeans(2, random_state=0).fit(blobs()), folder / "kmeans")
    return folder


@pytest.mark.cluster
def test_sample_command_writes_the_rows_the_seed_gives(saved, tmp_path, run_cli, in_process):
    from daskem.outputs.model_files import load_model

    out = tmp_path / "synthetic.zarr"
    done = run_cli("sample", saved / "gmm", "--rows", 5000, "-o", out, "--seed", 4, "--chunk-rows", 1200,
                   "--n-workers", 1, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    write_samples(load_model(saved / "gmm"), tmp_path / "here.zarr", 5000, seed=4, chunk_rows=5000)
    for name in ("X", "component"):
        np.testing.assert_array_equal(read(out, name)[:], read(tmp_path / "here.zarr", name)[:])
    assert read(out, "X").chunks == (1200, D)
    summary = json.loads((out / "run.json").read_text())
    assert summary["complete"] is True and summary["command"] == "sample" and summary["config"]["seed"] == 4

    again = in_process("sample", saved / "gmm", "--rows", 10, "-o", out)
    assert_one_error_line(again, "output directory already exists")


@pytest.mark.parametrize("args, message", [
    (["--rows", "0"], "sample: rows: Input should be greater than 0 (got 0)"),
    (["--rows", "10", "--seed", "-1"], "sample: seed: Input should be greater than or equal to 0 (got -1)"),
    (["--rows", "10", "--chunk-rows", "0"], "sample: chunk_rows: Input should be greater than 0"),
], ids=["rows", "seed", "chunk-rows"])
def test_sample_refuses_bad_arguments_in_one_line(saved, tmp_path, in_process, args, message):
    done = in_process("sample", saved / "gmm", "-o", tmp_path / "s.zarr", *args)
    assert_one_error_line(done, message)
    assert not (tmp_path / "s.zarr").exists()


def test_sample_refuses_an_object_store_output_in_one_line(saved, in_process):
    done = in_process("sample", saved / "gmm", "--rows", 10, "-o", "s3://bucket/s.zarr")
    assert_one_error_line(done, "'s3://bucket/s.zarr': daskem sample writes a local Zarr group")


@pytest.mark.parametrize("model, message", [
    ("kmeans", "holds a KMeans, which has no density to sample; give a gmm model"),
    ("missing", "no model.json there"),
])
def test_sample_refuses_a_model_it_cannot_sample(saved, tmp_path, in_process, model, message):
    done = in_process("sample", saved / model, "--rows", 10, "-o", tmp_path / "s.zarr")
    assert_one_error_line(done, message)


def assert_one_error_line(done, message):
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
