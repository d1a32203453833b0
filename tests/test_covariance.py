"""The shared covariance suite: every registered type, and a toy fifth one, against naive NumPy/SciPy.

Each test taking ``cov`` runs over the built-in types, then over ``scalar`` (``scalar_covariance.py``),
registered for the test as any new type would be. The references know a type only through its
equivalent full matrices (``covariance_reference.as_full``), not by its name. The registry, the
interface and the error messages are tested in ``test_covariance_registry.py``; the comparisons
with scikit-learn, for the types it knows, in ``test_covariance_sklearn.py``.
"""

import dask.array as da
import numpy as np
import pytest
from covariance_reference import (
    as_full,
    chunk_s2,
    log_prob,
    naive_covariances,
    naive_parameters,
    shifted_m_step,
)
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import daskem
from daskem.kernels.mixture import estimate_log_resp, gmm_chunk_stats
from daskem.kernels.params import GMMParams
from daskem.kernels.stats import merge_all

N_SAMPLES, D, K = 150, 3, 3  # rows, features, components
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(D, D))
    X = rng.normal(size=(N_SAMPLES, D)) @ mixing + [1.0, -2.0, 3.0]
    resp = rng.dirichlet(np.ones(K), size=N_SAMPLES)
    return X, resp


def fitted(cov, X, resp):
    """(means, covariances, precisions_cholesky) of the naive M-step, factors from the type."""
    means, covariances = naive_parameters(cov, X, resp)
    return means, covariances, cov.precision_cholesky(covariances)


# ----- statistics and the M-step -------------------------------------------------------------------


def test_parameters_and_statistics_have_the_types_shapes(cov, data):
    X, resp = data
    _, covariances, precisions_cholesky = fitted(cov, X, resp)
    assert np.shape(covariances) == np.shape(precisions_cholesky) == cov.covariances_shape(K, D)
    assert np.shape(chunk_s2(cov, X, resp, np.zeros((K, D)))) == cov.s2_shape(K, D)
    assert np.shape(shifted_m_step(cov, X, resp, X[:K], 0.1)[1]) == cov.covariances_shape(K, D)


def test_chunk_s2_of_an_empty_slab_is_zero(cov):
    s2 = chunk_s2(cov, np.empty((0, D)), np.empty((0, K)), np.ones((K, D)))
    np.testing.assert_array_equal(s2, np.zeros(cov.s2_shape(K, D)))


def test_m_step_from_shifted_stats_matches_naive_weighted_np_cov(cov, data):
    X, resp = data
    _, covariances = shifted_m_step(cov, X, resp, shift=X[:K], reg_covar=1e-3)
    np.testing.assert_allclose(covariances, naive_covariances(cov, X, resp, 1e-3), **TOL)


def test_m_step_maximizes_the_expected_log_likelihood_over_the_types_parameters(cov, data):
    X, resp = data
    means, covariances = shifted_m_step(cov, X, resp, shift=X[:K], reg_covar=0.0)

    def expected_log_likelihood(values):
        full = as_full(cov, values, K, D)
        full = 0.5 * (full + np.swapaxes(full, 1, 2))
        return sum(resp[:, k] @ multivariate_normal(means[k], full[k]).logpdf(X) for k in range(K))

    best = expected_log_likelihood(covariances)
    rng = np.random.default_rng(5)
    for _ in range(10):
        step = 1e-3 * np.abs(covariances).max() * rng.normal(size=np.shape(covariances))
        assert expected_log_likelihood(covariances + step) < best
        assert expected_log_likelihood(covariances - step) < best


def test_reg_covar_is_added_to_every_variance(cov, data):
    X, resp = data
    _, plain = shifted_m_step(cov, X, resp, shift=X[:K], reg_covar=0.0)
    _, regularized = shifted_m_step(cov, X, resp, shift=X[:K], reg_covar=0.25)
    difference = as_full(cov, regularized, K, D) - as_full(cov, plain, K, D)
    np.testing.assert_allclose(difference, np.broadcast_to(0.25 * np.eye(D), (K, D, D)), atol=1e-12)


# ----- precision factors and densities -------------------------------------------------------------


def test_precision_cholesky_factors_round_trip(cov, data):
    X, resp = data
    _, covariances, factors = fitted(cov, X, resp)
    full_factors = as_full(cov, factors, K, D)
    full_precisions = np.linalg.inv(as_full(cov, covariances, K, D))
    np.testing.assert_array_equal(full_factors, np.triu(full_factors))
    np.testing.assert_allclose(full_factors @ np.swapaxes(full_factors, 1, 2), full_precisions, **TOL)
    precisions = cov.precisions(factors)
    np.testing.assert_allclose(as_full(cov, precisions, K, D), full_precisions, **TOL)
    np.testing.assert_allclose(cov.precision_cholesky_from_precisions(precisions), factors, **TOL)
    np.testing.assert_allclose(cov.covariances_from_precision_cholesky(factors), covariances, **TOL)


def test_log_det_cholesky_is_the_log_determinant_of_each_factor(cov, data):
    X, resp = data
    _, _, factors = fitted(cov, X, resp)
    sign, expected = np.linalg.slogdet(as_full(cov, factors, K, D))
    assert np.all(sign == 1)
    np.testing.assert_allclose(np.broadcast_to(cov.log_det_cholesky(factors, D), (K,)), expected, **TOL)


def test_log_prob_matches_scipy_multivariate_normal(cov, data):
    X, resp = data
    means, covariances, factors = fitted(cov, X, resp)
    full = as_full(cov, covariances, K, D)
    expected = np.column_stack([multivariate_normal(means[k], full[k]).logpdf(X) for k in range(K)])
    np.testing.assert_allclose(log_prob(cov, X, means, factors), expected, **TOL)


def test_log_prob_is_accurate_on_float32_data_with_a_large_offset(cov, data):
    X, resp = data
    means, _, factors = fitted(cov, X, resp)
    offset = 1e5
    X32 = (X + offset).astype(np.float32)
    exact_centred = X32.astype(np.float64) - offset  # exact: float32 values near 1e5 minus 1e5
    expected = log_prob(cov, exact_centred, means, factors)
    actual = log_prob(cov, X32, means + offset, factors)
    np.testing.assert_allclose(actual, expected, rtol=1e-9)


def test_n_parameters_is_the_dimension_of_the_types_symmetric_matrices(cov):
    shape = cov.covariances_shape(K, D)
    units = [as_full(cov, unit.reshape(shape), K, D) for unit in np.eye(int(np.prod(shape)))]
    symmetric = np.stack([(unit + np.swapaxes(unit, 1, 2)).ravel() for unit in units])
    assert cov.n_parameters(K, D) == np.linalg.matrix_rank(symmetric)


# ----- sampling ------------------------------------------------------------------------------------


def test_sample_draws_components_in_order_with_their_moments(cov, data):
    X, resp = data
    _, covariances, _ = fitted(cov, X, resp)
    means = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, -50.0, 50.0]])
    counts = np.array([20000, 0, 30000])
    rows = cov.sample(np.random.default_rng(2), means, covariances, counts)
    assert rows.shape == (counts.sum(), D)
    full = as_full(cov, covariances, K, D)
    for k, block in zip([0, 2], np.split(rows, [counts[0]])):
        scale = np.sqrt(np.diag(full[k]))
        standard_error = scale.max() / np.sqrt(len(block))
        np.testing.assert_allclose(block.mean(axis=0), means[k], atol=float(6 * standard_error))
        np.testing.assert_allclose(np.cov(block.T), full[k], atol=float(0.05 * np.outer(scale, scale).max()))


def test_sample_with_zero_counts_is_empty(cov, data):
    X, resp = data
    means, covariances, _ = fitted(cov, X, resp)
    rows = cov.sample(np.random.default_rng(3), means, covariances, np.zeros(K, dtype=int))
    assert rows.shape == (0, D)


def test_check_precisions_accepts_valid_values(cov, data):
    X, resp = data
    _, _, factors = fitted(cov, X, resp)
    precisions = cov.precisions(factors)
    np.testing.assert_array_equal(cov.check_precisions(precisions, K, D), precisions)


# ----- numerics: float32 data far from the origin --------------------------------------------------


@pytest.fixture(scope="module")
def offset_float32_data():
    """20000 float32 rows around 1e5 in two well-separated clusters with std 1, 3 and 10."""
    rng = np.random.default_rng(7)
    centres = np.array([[1e5, 1e5, 1e5], [1e5 + 300.0, 1e5 - 200.0, 1e5 + 100.0]])
    labels = rng.integers(0, 2, size=20000)
    X32 = (centres[labels] + rng.normal(size=(20000, 3)) * [1.0, 3.0, 10.0]).astype(np.float32)
    return X32, centres


def test_chunked_m_step_on_offset_float32_data_matches_a_float64_two_pass_reference(cov, offset_float32_data):
    X32, centres = offset_float32_data
    n_components = len(centres)
    # A generic isotropic start, 25 I, for any type: zero statistics plus reg_covar.
    start = cov.covariances_from_stats(np.ones(n_components), np.zeros((n_components, 3)),
                                       np.zeros(cov.s2_shape(n_components, 3)), reg_covar=25.0)
    weights, means, prec_chol = np.full(n_components, 0.5), centres + 0.5, cov.precision_cholesky(start)
    bounds = [0, 0, 1, 5000, 5000, 12345, 20000]
    chunks = [X32[a:b] for a, b in zip(bounds, bounds[1:])]
    stats = merge_all(gmm_chunk_stats(chunk, GMMParams(weights, means, start, prec_chol), cov) for chunk in chunks)
    nk = stats.nk + 10 * np.finfo(np.float64).eps
    covariances = cov.covariances_from_stats(nk, stats.s1 / nk[:, None], stats.s2, reg_covar=0.0)

    X64 = X32.astype(np.float64)
    resp = np.exp(estimate_log_resp(X64, GMMParams(weights, means, start, prec_chol), cov)[1])
    reference = naive_covariances(cov, X64, resp, reg_covar=0.0)
    assert np.all(np.linalg.eigvalsh(as_full(cov, covariances, n_components, 3)) > 0)
    np.testing.assert_allclose(covariances, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())


# ----- the whole estimator -------------------------------------------------------------------------


def naive_em(cov, X, weights, means, covariances, *, n_iter, reg_covar):
    """EM the slow way: SciPy log-densities, then the naive M-step; returns the last E-step's bound too."""
    n_components, n_features = means.shape
    for _ in range(n_iter):
        full = as_full(cov, covariances, n_components, n_features)
        weighted = np.column_stack([np.log(weights[k]) + multivariate_normal(means[k], full[k]).logpdf(X)
                                    for k in range(n_components)])
        log_norm = logsumexp(weighted, axis=1)
        resp = np.exp(weighted - log_norm[:, None])
        nk = resp.sum(axis=0)
        weights, means = nk / nk.sum(), resp.T @ X / nk[:, None]
        covariances = naive_covariances(cov, X, resp, reg_covar)
    return weights, means, covariances, log_norm.mean()


def test_gaussian_mixture_of_any_registered_type_matches_a_naive_em(cov):
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, -1.0, 2.0], [-3.0, 3.0, 1.0]])
    X = centres[rng.integers(0, K, size=600)] + rng.normal(size=(600, D)) * [1.0, 0.7, 1.4]
    start_means, start_covariances = naive_parameters(cov, X, rng.dirichlet(np.ones(K) * 5, size=600))
    start = dict(weights_init=np.full(K, 1 / K), means_init=start_means,
                 precisions_init=np.asarray(cov.precisions(cov.precision_cholesky(start_covariances))))
    model = daskem.GaussianMixture(K, covariance_type=cov.name, max_iter=8, tol=0.0, reg_covar=1e-6, **start)
    with pytest.warns(UserWarning, match="did not converge in 8 iterations"):
        model.fit(da.from_array(X, chunks=((200, 2, 150, 248), -1)))
    weights, means, covariances, lower_bound = naive_em(cov, X, start["weights_init"], start_means,
                                                        start_covariances, n_iter=8, reg_covar=1e-6)
    np.testing.assert_allclose(model.weights_, weights, rtol=1e-8)
    np.testing.assert_allclose(model.means_, means, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.covariances_, covariances, rtol=1e-8)
    assert model.lower_bound_ == pytest.approx(lower_bound, rel=1e-10)
    assert model.n_iter_ == 8
    full = as_full(cov, covariances, K, D)
    log_density = logsumexp([np.log(weights[k]) + multivariate_normal(means[k], full[k]).logpdf(X)
                             for k in range(K)], axis=0)
    np.testing.assert_allclose(model.score_samples(X), log_density, rtol=1e-8)
    n_parameters = cov.n_parameters(K, D) + K * D + K - 1
    assert model.bic(X) == pytest.approx(-2 * log_density.sum() + n_parameters * np.log(len(X)), rel=1e-8)
