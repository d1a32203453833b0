"""The covariance types scikit-learn knows, against its private helpers (the shared suite is in
``test_covariance.py``); also checks the suite's naive M-step against scikit-learn's."""

import numpy as np
import pytest
from covariance_reference import SKLEARN_TYPES, chunk_s2, log_prob, naive_covariances, shifted_m_step
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import (
    _compute_log_det_cholesky,
    _compute_precision_cholesky,
    _compute_precision_cholesky_from_precisions,
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

from daskem.kernels.covariance import get_covariance_type

N_SAMPLES, D, K = 150, 3, 3  # rows, features, components
TOL = dict(rtol=1e-10, atol=1e-12)
SKLEARN_COVARIANCES = pytest.mark.parametrize("cov", [get_covariance_type(name) for name in SKLEARN_TYPES],
                                              ids=SKLEARN_TYPES)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(D, D))
    X = rng.normal(size=(N_SAMPLES, D)) @ mixing + [1.0, -2.0, 3.0]
    resp = rng.dirichlet(np.ones(K), size=N_SAMPLES)
    return X, resp


def sklearn_parameters(cov, X, resp, reg_covar=1e-6):
    """(nk, means, covariances, precisions_cholesky) as scikit-learn's M-step computes them."""
    nk, means, covariances = _estimate_gaussian_parameters(X, resp, reg_covar, cov.name)
    return nk, means, covariances, _compute_precision_cholesky(covariances, cov.name)


def test_the_scikit_learn_comparisons_cover_the_four_built_in_types():
    assert SKLEARN_TYPES == ["full", "tied", "diag", "spherical"]


@pytest.mark.parametrize("name", SKLEARN_TYPES)
def test_registry_maps_each_name_to_the_type_scikit_learn_means_by_it(name, data):
    X, resp = data
    _, _, expected = _estimate_gaussian_parameters(X, resp, 0.1, name)
    _, covariances = shifted_m_step(get_covariance_type(name), X, resp, X[:K], 0.1)
    assert np.shape(covariances) == expected.shape
    np.testing.assert_allclose(covariances, expected, **TOL)


@SKLEARN_COVARIANCES
def test_shapes_follow_scikit_learn(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    assert cov.covariances_shape(K, D) == covariances.shape == precisions_cholesky.shape
    assert cov.s2_shape(K, D) == chunk_s2(cov, X, resp, np.zeros((K, D))).shape


@SKLEARN_COVARIANCES
def test_m_step_from_shifted_stats_matches_scikit_learn(cov, data):
    X, resp = data
    reg_covar = 0.1
    nk, means, covariances, _ = sklearn_parameters(cov, X, resp, reg_covar)
    shift = means + np.random.default_rng(1).normal(size=means.shape)
    padding = nk - resp.sum(axis=0)  # scikit-learn's 10 * eps
    our_means, our_covariances = shifted_m_step(cov, X, resp, shift, reg_covar, padding)
    np.testing.assert_allclose(our_means, means, **TOL)
    np.testing.assert_allclose(our_covariances, covariances, **TOL)


@SKLEARN_COVARIANCES
def test_the_suites_naive_m_step_matches_scikit_learn(cov, data):
    X, resp = data
    _, _, covariances, _ = sklearn_parameters(cov, X, resp, reg_covar=1e-3)
    np.testing.assert_allclose(naive_covariances(cov, X, resp, 1e-3), covariances, **TOL)


@SKLEARN_COVARIANCES
def test_precision_cholesky_matches_scikit_learn(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    np.testing.assert_allclose(cov.precision_cholesky(covariances), precisions_cholesky, **TOL)


@SKLEARN_COVARIANCES
def test_log_det_cholesky_matches_scikit_learn(cov, data):
    X, resp = data
    _, _, _, precisions_cholesky = sklearn_parameters(cov, X, resp)
    expected = _compute_log_det_cholesky(precisions_cholesky, cov.name, D)
    np.testing.assert_allclose(cov.log_det_cholesky(precisions_cholesky, D), expected, **TOL)


@SKLEARN_COVARIANCES
def test_log_prob_matches_scikit_learn(cov, data):
    X, resp = data
    _, means, _, precisions_cholesky = sklearn_parameters(cov, X, resp)
    expected = _estimate_log_gaussian_prob(X, means, precisions_cholesky, cov.name)
    np.testing.assert_allclose(log_prob(cov, X, means, precisions_cholesky), expected, **TOL)


@SKLEARN_COVARIANCES
def test_precisions_round_trip_like_scikit_learn(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    precisions = cov.precisions(precisions_cholesky)
    expected = _compute_precision_cholesky_from_precisions(precisions, cov.name, xp=np)
    np.testing.assert_allclose(cov.precision_cholesky_from_precisions(precisions), expected, **TOL)
    recovered = cov.covariances_from_precision_cholesky(precisions_cholesky)
    np.testing.assert_allclose(recovered, covariances, **TOL)


@SKLEARN_COVARIANCES
def test_n_parameters_equals_scikit_learn_minus_means_and_weights(cov):
    model = GaussianMixture(n_components=K, covariance_type=cov.name)
    model.means_ = np.zeros((K, D))
    mean_and_weight_parameters = K * D + K - 1
    assert cov.n_parameters(K, D) == model._n_parameters() - mean_and_weight_parameters
