"""From the same initial parameters, daskem fits what scikit-learn fits, to a relative 1e-8."""

import warnings

import dask.array as da
import numpy as np
import pytest
from covariance_reference import SKLEARN_TYPES
from sklearn import cluster, mixture
from sklearn.datasets import load_iris, load_wine, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

import daskem

RTOL = 1e-8
N_ITER = 15


def _anisotropic_mixture():
    rng = np.random.default_rng(3)
    parts = [rng.multivariate_normal(mean, cov, size=n) for mean, cov, n in [
        ([0, 0, 0], [[2.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 0.5]], 400),
        ([3, -2, 1], [[0.5, -0.2, 0.0], [-0.2, 1.5, 0.4], [0.0, 0.4, 1.0]], 250),
        ([-2, 3, 4], [[1.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 2.0]], 350),
    ]]
    return np.vstack(parts), 3


DATASETS = {
    "iris": lambda: (load_iris().data, 3),
    "wine-standardized": lambda: (StandardScaler().fit_transform(load_wine().data), 3),
    "blobs": lambda: (make_blobs(1200, n_features=4, centers=5, cluster_std=2.0, random_state=7)[0], 5),
    "anisotropic": _anisotropic_mixture,
}


def uneven_chunks(n_rows: int, n_components: int) -> tuple[int, ...]:
    """Uneven row chunks, one of them smaller than the number of components."""
    small = max(1, n_components - 1)
    first = n_rows // 3
    return (first, small, n_rows // 5, n_rows - first - small - n_rows // 5)


def sklearn_start(X, n_components, covariance_type):
    """Initial parameters both implementations start from: one scikit-learn EM step after k-means."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = mixture.GaussianMixture(n_components, covariance_type=covariance_type, max_iter=1,
                                        random_state=0).fit(X)
    return dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", sorted(SKLEARN_TYPES))
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_gmm_matches_sklearn_from_same_start(dataset, covariance_type):
    X, n_components = DATASETS[dataset]()
    init = sklearn_start(X, n_components, covariance_type)
    settings = dict(covariance_type=covariance_type, max_iter=N_ITER, tol=0.0, reg_covar=1e-6)
    expected = mixture.GaussianMixture(n_components, **settings, **init).fit(X)
    chunked = da.from_array(X, chunks=(uneven_chunks(len(X), n_components), -1))
    fitted = daskem.GaussianMixture(n_components, **settings, **init).fit(chunked)

    np.testing.assert_allclose(fitted.weights_, expected.weights_, rtol=RTOL)
    np.testing.assert_allclose(fitted.means_, expected.means_, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(fitted.covariances_, expected.covariances_, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(fitted.precisions_cholesky_, expected.precisions_cholesky_, rtol=RTOL, atol=1e-12)
    assert fitted.lower_bound_ == pytest.approx(expected.lower_bound_, rel=RTOL)
    assert fitted.n_iter_ == expected.n_iter_ == N_ITER
    np.testing.assert_array_equal(fitted.predict(chunked).compute(), expected.predict(X))
    np.testing.assert_allclose(fitted.score_samples(chunked).compute(), expected.score_samples(X), rtol=RTOL)


@pytest.mark.parametrize("covariance_type", sorted(SKLEARN_TYPES))
def test_gmm_converges_at_the_same_iteration_as_sklearn(covariance_type):
    X, n_components = DATASETS["anisotropic"]()
    init = sklearn_start(X, n_components, covariance_type)
    settings = dict(covariance_type=covariance_type, max_iter=500, tol=1e-6)
    expected = mixture.GaussianMixture(n_components, **settings, **init).fit(X)
    fitted = daskem.GaussianMixture(n_components, **settings, **init).fit(
        da.from_array(X, chunks=(uneven_chunks(len(X), n_components), -1)))
    assert fitted.converged_ and expected.converged_
    assert fitted.n_iter_ == expected.n_iter_
    assert fitted.lower_bound_ == pytest.approx(expected.lower_bound_, rel=RTOL)
    assert fitted.bic(X) == pytest.approx(expected.bic(X), rel=RTOL)
    assert fitted.aic(X) == pytest.approx(expected.aic(X), rel=RTOL)
    assert fitted.history_[-1] == fitted.lower_bound_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_kmeans_matches_sklearn_lloyd_from_same_centres(dataset):
    X, n_clusters = DATASETS[dataset]()
    centres = X[np.random.default_rng(1).choice(len(X), n_clusters, replace=False)]
    expected = cluster.KMeans(n_clusters, init=centres, n_init=1, algorithm="lloyd", max_iter=N_ITER,
                              tol=0.0).fit(X)
    chunked = da.from_array(X, chunks=(uneven_chunks(len(X), n_clusters), -1))
    fitted = daskem.KMeans(n_clusters, init=centres, max_iter=N_ITER, tol=0.0).fit(chunked)

    np.testing.assert_allclose(fitted.cluster_centers_, expected.cluster_centers_, rtol=RTOL, atol=1e-12)
    assert fitted.inertia_ == pytest.approx(expected.inertia_, rel=RTOL)
    np.testing.assert_array_equal(fitted.predict(chunked).compute(), expected.labels_)
    np.testing.assert_allclose(fitted.transform(X), expected.transform(X), rtol=RTOL)
    assert fitted.score(X) == pytest.approx(expected.score(X), rel=RTOL)


def test_numpy_and_dask_input_give_the_same_fit():
    X, n_components = DATASETS["blobs"]()
    numpy_fit = daskem.GaussianMixture(n_components, random_state=0).fit(X)
    dask_fit = daskem.GaussianMixture(n_components, random_state=0).fit(da.from_array(X, chunks=(97, -1)))
    np.testing.assert_allclose(numpy_fit.means_, dask_fit.means_, rtol=1e-10)
    assert isinstance(numpy_fit.predict(X), np.ndarray)
    lazy = dask_fit.predict_proba(da.from_array(X, chunks=(97, -1)))
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == da.from_array(X, chunks=(97, -1)).chunks[0]
    np.testing.assert_allclose(lazy.compute(), numpy_fit.predict_proba(X), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_gmm_initialization_finds_well_separated_blobs(init_params):
    X, labels = make_blobs(3000, n_features=3, centers=[[0, 0, 0], [10, 10, 10], [-10, 10, -10]],
                           random_state=2)
    # tol is tight because "random" starts every component near the global mean, where the
    # log-likelihood is flat for a while (scikit-learn stops there too at its default tol)
    fitted = daskem.GaussianMixture(3, init_params=init_params, random_state=4, n_init=2,
                                    max_iter=500, tol=1e-6).fit(da.from_array(X, chunks=(500, -1)))
    found = np.sort(fitted.means_[:, 0])
    np.testing.assert_allclose(found, [-10, 0, 10], atol=0.2)
