"""Row weights: an integer weight fits the same model as the row repeated, in every pass, for both
estimators and every covariance type; bad weights fail in one line (API ValueError, CLI exit 2)."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import write_config

import daskem
from daskem.errors import DataError
from daskem.kernels.covariance import COVARIANCE_TYPES, get_covariance_type


@pytest.fixture(scope="module")
def blobs():
    """Two blobs, integer weights 0-3 (so some rows drop out) and the rows repeated by them."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (70, 3)), rng.normal(4, 1, (70, 3))])
    weights = rng.integers(0, 4, len(X))
    return X, weights, np.repeat(X, weights, axis=0)


def explicit_start(covariance_type: str) -> dict:
    cov = get_covariance_type(covariance_type)
    precisions = cov.precisions(cov.precision_cholesky(np.stack([np.eye(3)] * 2), reg_covar=0.0)) \
        if covariance_type == "full" else {"tied": np.eye(3), "diag": np.ones((2, 3)),
                                            "spherical": np.ones(2)}.get(covariance_type)
    return dict(covariance_type=covariance_type, weights_init=[0.5, 0.5], means_init=[[0, 0, 0], [3, 3, 3]],
                precisions_init=precisions, tol=1e-9, max_iter=200)


@pytest.mark.parametrize("covariance_type", list(COVARIANCE_TYPES))
def test_integer_weights_fit_the_mixture_of_the_repeated_rows(blobs, covariance_type):
    X, weights, repeated = blobs
    start = explicit_start(covariance_type)
    weighted = daskem.GaussianMixture(2, **start).fit(da.from_array(X, chunks=(37, -1)),
                                                      sample_weight=da.from_array(weights, chunks=50))
    plain = daskem.GaussianMixture(2, **start).fit(repeated)
    assert weighted.n_iter_ == plain.n_iter_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(plain, name), rtol=1e-10, atol=1e-12)
    assert weighted.lower_bound_ == pytest.approx(plain.lower_bound_, rel=1e-12)


def test_integer_weights_fit_the_centres_of_the_repeated_rows(blobs):
    X, weights, repeated = blobs
    init = np.array([[0.0, 0, 0], [3, 3, 3]])
    weighted = daskem.KMeans(2, init=init, tol=0.0).fit(X, sample_weight=weights)
    plain = daskem.KMeans(2, init=init, tol=0.0).fit(repeated)
    np.testing.assert_allclose(weighted.cluster_centers_, plain.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert weighted.inertia_ == pytest.approx(plain.inertia_, rel=1e-12)


def test_selection_criteria_count_the_weighted_rows(blobs):
    X, weights, repeated = blobs
    start = {key: value for key, value in explicit_start("diag").items() if key != "covariance_type"}
    weighted = daskem.fit_candidates(X, n_components=[2], covariance_types=["diag"], sample_weight=weights, **start)
    plain = daskem.fit_candidates(repeated, n_components=[2], covariance_types=["diag"], **start)
    assert weighted.table[0].bic == pytest.approx(plain.table[0].bic, rel=1e-10)
    assert weighted.table[0].aic == pytest.approx(plain.table[0].aic, rel=1e-10)


@pytest.mark.parametrize("model", [lambda: daskem.KMeans(2, random_state=0),
                                   lambda: daskem.GaussianMixture(2, random_state=0),
                                   lambda: daskem.GaussianMixture(2, init_params="k-means++", random_state=0),
                                   lambda: daskem.GaussianMixture(2, init_params="random_from_data", random_state=0)],
                         ids=["kmeans", "gmm-kmeans", "gmm-k-means++", "gmm-random_from_data"])
def test_rows_of_zero_weight_do_not_seed_or_pull_the_model(blobs, model):
    X, _, _ = blobs
    far = np.full((40, 3), 500.0) + np.random.default_rng(1).normal(size=(40, 3))
    data, weights = np.vstack([X, far]), np.r_[np.ones(len(X)), np.zeros(len(far))]
    fitted = model().fit(da.from_array(data, chunks=(45, -1)), sample_weight=weights)
    centres = getattr(fitted, "cluster_centers_", getattr(fitted, "means_", None))
    assert np.abs(centres).max() < 10, centres  # the initialization never picked a far row


@pytest.mark.parametrize("weights,message", [
    (lambda n: -np.ones(n), "sample_weight must be non-negative, but its minimum is -1"),
    (lambda n: np.r_[np.nan, np.ones(n - 1)], "sample_weight holds NaN or infinite values"),
    (lambda n: np.zeros(n), "sample_weight is zero for every row"),
    (lambda n: np.ones(n - 1), rf"sample_weight has shape \({139},\) but X has 140 rows"),
    (lambda n: da.from_array(np.r_[-2.0, np.ones(n - 1)], chunks=30), "minimum is -2"),
    (lambda n: np.ones((n, 2)), "give one weight per row"),
])
@pytest.mark.parametrize("model", [daskem.KMeans, daskem.GaussianMixture])
def test_bad_weights_fail_in_one_line(blobs, weights, message, model):
    X = blobs[0]
    with pytest.raises(DataError, match=message):
        model(2).fit(X, sample_weight=weights(len(X)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("model", [
    lambda: daskem.KMeans(2, init=[[0.0, 0, 0], [3, 3, 3]], algorithm="stepwise", max_passes=2,
                          steps_per_pass=3, random_state=5),
    lambda: daskem.GaussianMixture(2, means_init=[[0.0, 0, 0], [3, 3, 3]], algorithm="stepwise", max_passes=2,
                                   steps_per_pass=3, random_state=5)], ids=["kmeans", "gmm"])
def test_stepwise_fits_weigh_rows_as_batch_fits_do(blobs, model):
    """Stepwise EM's mini-batches carry the weights: the same weight on every row changes nothing,
    and far rows of weight zero pull no centre."""
    X, _, _ = blobs
    rows = da.from_array(X, chunks=(20, -1))
    centres = lambda fitted: getattr(fitted, "cluster_centers_", getattr(fitted, "means_", None))  # noqa: E731
    np.testing.assert_allclose(centres(model().fit(rows, sample_weight=np.full(len(X), 3.0))),
                               centres(model().fit(rows)), rtol=0, atol=1e-12)
    far = X.copy()
    far[::7] = 500.0
    weights = np.ones(len(X))
    weights[::7] = 0.0
    assert np.abs(centres(model().fit(da.from_array(far, chunks=(20, -1)), sample_weight=weights))).max() < 10


def test_a_scalar_weight_is_every_row_repeated(blobs):
    X = blobs[0]
    init = np.array([[0.0, 0, 0], [3, 3, 3]])
    tripled = daskem.KMeans(2, init=init).fit(X, sample_weight=3)
    assert tripled.inertia_ == pytest.approx(3 * daskem.KMeans(2, init=init).fit(X).inertia_, rel=1e-12)


def weighted_store(path, X, weights):
    group = zarr.open_group(str(path), mode="w")
    group.create_array("X", data=X, chunks=(50, X.shape[1]))
    group.create_array("w", data=weights, chunks=(50,))
    return path


@pytest.mark.cluster
def test_config_data_weights_fits_as_the_api_and_bad_weights_exit_2(tmp_path, run_cli, blobs):
    X, weights, _ = blobs
    store = weighted_store(tmp_path / "data.zarr", X, weights.astype(np.float32))
    init = {"kind": "kmeans", "n_components": 2, "random_state": 0}
    config = {"data": {"path": str(store), "array": "X", "weights": "w"}, "model": init,
              "cluster": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False},
              "output": {"path": str(tmp_path / "out"), "report": False}}
    done = run_cli("run", write_config(tmp_path / "c.yaml", config))
    assert done.returncode == 0, done.stderr
    api = daskem.KMeans(2, random_state=0).fit(X, sample_weight=weights)
    model = daskem.load_model(tmp_path / "out")
    np.testing.assert_allclose(np.sort(model.cluster_centers_, axis=0), np.sort(api.cluster_centers_, axis=0),
                               rtol=1e-9)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["config"]["data"]["weights"] == "w"

    negative = weights.astype(np.float64)
    negative[5] = -1
    weighted_store(tmp_path / "bad.zarr", X, negative)
    config["data"]["path"], config["output"]["path"] = str(tmp_path / "bad.zarr"), str(tmp_path / "bad-out")
    done = run_cli("run", write_config(tmp_path / "bad.yaml", config))
    assert done.returncode == 2, done.stderr
    assert "data.weights (w) must be non-negative, but its minimum is -1" in done.stderr.splitlines()[-1]
    assert not (tmp_path / "bad-out").exists()


def test_a_weights_chunk_missing_from_the_store_is_refused_like_a_rows_chunk(tmp_path, blobs):
    from daskem.data.stores import check_chunks
    from daskem.pipeline.config import DataConfig

    X, weights, _ = blobs
    gappy = weights.astype(np.float64)
    gappy[50:100] = 0.0  # an all-zero chunk, which Zarr leaves out of the store
    store = weighted_store(tmp_path / "data.zarr", X, gappy)
    with pytest.raises(DataError, match=r"array 'w': chunk c/1 \(index \(1,\), rows 50-99\) is missing"):
        check_chunks(DataConfig(path=str(store), array="X", weights="w"))
    check_chunks(DataConfig(path=str(store), array="X"))  # the rows alone are whole
