"""Covariance types against naive NumPy/SciPy references and scikit-learn's private helpers."""

import re

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import (
    _compute_log_det_cholesky,
    _compute_precision_cholesky,
    _compute_precision_cholesky_from_precisions,
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

from daskem.kernels.covariance import COVARIANCE_TYPES, get_covariance_type
from daskem.kernels.mixture import estimate_log_resp, gmm_chunk_stats
from daskem.kernels.params import GMMParams
from daskem.kernels.stats import merge_all

N_SAMPLES, D, K = 150, 3, 3  # rows, features, components
TOL = dict(rtol=1e-10, atol=1e-12)
COVARIANCES = pytest.mark.parametrize("cov", list(COVARIANCE_TYPES.values()), ids=list(COVARIANCE_TYPES))
MATRIX_TYPES = [cov for cov in COVARIANCE_TYPES.values() if cov.covariances_shape(2, 3)[-2:] == (3, 3)]

# Independent definitions of the types: how each reduces per-component full covariances (K, D, D).
REFERENCE_FROM_FULL = {
    "full": lambda full, nk: full,
    "tied": lambda full, nk: np.tensordot(nk, full, axes=1) / nk.sum(),
    "diag": lambda full, nk: np.diagonal(full, axis1=1, axis2=2),
    "spherical": lambda full, nk: np.diagonal(full, axis1=1, axis2=2).mean(axis=1),
}


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


def naive_covariances(cov, X, resp, reg_covar):
    """Two-pass weighted covariances with np.cov, reduced to the type by its reference definition."""
    full = np.stack([np.cov(X.T, aweights=resp[:, k], bias=True) for k in range(resp.shape[1])])
    return REFERENCE_FROM_FULL[cov.name](full + reg_covar * np.eye(X.shape[1]), resp.sum(axis=0))


def m_step(cov, X, resp, shift, reg_covar, nk_padding=0.0):
    """daskem's M-step from statistics shifted by ``shift``: (means, covariances)."""
    nk = resp.sum(axis=0) + nk_padding
    offsets = (resp.T @ (X - shift.mean(axis=0)) - resp.sum(axis=0)[:, None] * (shift - shift.mean(axis=0)))
    offsets /= nk[:, None]
    covariances = cov.covariances_from_stats(nk, offsets, cov.chunk_s2(X, resp, shift), reg_covar)
    return shift + offsets, covariances


def test_registry_maps_each_name_to_its_type():
    for name, cov in COVARIANCE_TYPES.items():
        assert cov.name == name
        assert get_covariance_type(name) is cov


def test_unknown_covariance_type_error_lists_the_choices():
    message = "unknown covariance_type 'fulll': choose one of 'full', 'tied', 'diag', 'spherical'"
    with pytest.raises(ValueError, match=re.escape(message)):
        get_covariance_type("fulll")


@COVARIANCES
def test_shapes_follow_scikit_learn(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    assert cov.covariances_shape(K, D) == covariances.shape == precisions_cholesky.shape
    assert cov.s2_shape(K, D) == cov.chunk_s2(X, resp, np.zeros((K, D))).shape


@COVARIANCES
def test_chunk_s2_of_an_empty_slab_is_zero(cov):
    s2 = cov.chunk_s2(np.empty((0, D)), np.empty((0, K)), np.ones((K, D)))
    np.testing.assert_array_equal(s2, np.zeros(cov.s2_shape(K, D)))


@COVARIANCES
def test_m_step_from_shifted_stats_matches_scikit_learn(cov, data):
    X, resp = data
    reg_covar = 0.1
    nk, means, covariances, _ = sklearn_parameters(cov, X, resp, reg_covar)
    shift = means + np.random.default_rng(1).normal(size=means.shape)
    padding = nk - resp.sum(axis=0)  # scikit-learn's 10 * eps
    our_means, our_covariances = m_step(cov, X, resp, shift, reg_covar, padding)
    np.testing.assert_allclose(our_means, means, **TOL)
    np.testing.assert_allclose(our_covariances, covariances, **TOL)


@COVARIANCES
def test_m_step_from_shifted_stats_matches_naive_weighted_np_cov(cov, data):
    X, resp = data
    _, covariances = m_step(cov, X, resp, shift=X[:K], reg_covar=1e-3)
    np.testing.assert_allclose(covariances, naive_covariances(cov, X, resp, 1e-3), **TOL)


@COVARIANCES
def test_precision_cholesky_matches_scikit_learn(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    np.testing.assert_allclose(cov.precision_cholesky(covariances), precisions_cholesky, **TOL)


@COVARIANCES
def test_log_det_cholesky_matches_scikit_learn(cov, data):
    X, resp = data
    _, _, _, precisions_cholesky = sklearn_parameters(cov, X, resp)
    expected = _compute_log_det_cholesky(precisions_cholesky, cov.name, D)
    np.testing.assert_allclose(cov.log_det_cholesky(precisions_cholesky, D), expected, **TOL)


@COVARIANCES
def test_log_prob_matches_scikit_learn(cov, data):
    X, resp = data
    _, means, _, precisions_cholesky = sklearn_parameters(cov, X, resp)
    expected = _estimate_log_gaussian_prob(X, means, precisions_cholesky, cov.name)
    np.testing.assert_allclose(cov.log_prob(X, means, precisions_cholesky), expected, **TOL)


@COVARIANCES
def test_log_prob_matches_scipy_multivariate_normal(cov, data):
    X, resp = data
    _, means, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    full = cov.as_full(covariances, K, D)
    expected = np.column_stack([multivariate_normal(means[k], full[k]).logpdf(X) for k in range(K)])
    np.testing.assert_allclose(cov.log_prob(X, means, precisions_cholesky), expected, **TOL)


@COVARIANCES
def test_log_prob_is_accurate_on_float32_data_with_a_large_offset(cov, data):
    X, resp = data
    _, means, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    offset = 1e5
    X32 = (X + offset).astype(np.float32)
    exact_centred = X32.astype(np.float64) - offset  # exact: float32 values near 1e5 minus 1e5
    expected = cov.log_prob(exact_centred, means, precisions_cholesky)
    actual = cov.log_prob(X32, means + offset, precisions_cholesky)
    np.testing.assert_allclose(actual, expected, rtol=1e-9)


@COVARIANCES
def test_precisions_round_trip_through_their_cholesky_factors(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    precisions = cov.precisions(precisions_cholesky)
    full_precisions = np.linalg.inv(cov.as_full(covariances, K, D))
    np.testing.assert_allclose(cov.as_full(precisions, K, D), full_precisions, **TOL)
    expected = _compute_precision_cholesky_from_precisions(precisions, cov.name, xp=np)
    np.testing.assert_allclose(cov.precision_cholesky_from_precisions(precisions), expected, **TOL)
    recovered = cov.covariances_from_precision_cholesky(precisions_cholesky)
    np.testing.assert_allclose(recovered, covariances, **TOL)


@COVARIANCES
def test_n_parameters_equals_scikit_learn_minus_means_and_weights(cov):
    model = GaussianMixture(n_components=K, covariance_type=cov.name)
    model.means_ = np.zeros((K, D))
    mean_and_weight_parameters = K * D + K - 1
    assert cov.n_parameters(K, D) == model._n_parameters() - mean_and_weight_parameters


@COVARIANCES
def test_sample_draws_components_in_order_with_their_moments(cov, data):
    X, resp = data
    _, _, covariances, _ = sklearn_parameters(cov, X, resp)
    means = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, -50.0, 50.0]])
    counts = np.array([20000, 0, 30000])
    rows = cov.sample(np.random.default_rng(2), means, covariances, counts)
    assert rows.shape == (counts.sum(), D)
    full = cov.as_full(covariances, K, D)
    for k, block in zip([0, 2], np.split(rows, [counts[0]])):
        scale = np.sqrt(np.diag(full[k]))
        standard_error = scale.max() / np.sqrt(len(block))
        np.testing.assert_allclose(block.mean(axis=0), means[k], atol=float(6 * standard_error))
        np.testing.assert_allclose(np.cov(block.T), full[k], atol=float(0.05 * np.outer(scale, scale).max()))


@COVARIANCES
def test_sample_with_zero_counts_is_empty(cov, data):
    X, resp = data
    _, means, covariances, _ = sklearn_parameters(cov, X, resp)
    rows = cov.sample(np.random.default_rng(3), means, covariances, np.zeros(K, dtype=int))
    assert rows.shape == (0, D)


COLLAPSED = [
    ("full", np.stack([np.eye(3), np.eye(3), [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]),
     "covariance of component 2 is not positive definite (smallest eigenvalue -1; "),
    ("tied", np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
     "the tied covariance is not positive definite (smallest eigenvalue -1; "),
    ("diag", np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
     "variance of feature 1 in component 2 is not positive (it is 0; "),
    ("spherical", np.array([1.0, 1.0, -0.5]),
     "variance of component 2 is not positive (it is -0.5; "),
]


@pytest.mark.parametrize("name, covariances, what", COLLAPSED, ids=[case[0] for case in COLLAPSED])
def test_not_positive_definite_error_names_the_component_and_reg_covar(name, covariances, what):
    fix = ("it has collapsed onto too few distinct rows): increase reg_covar (now 1e-06), "
           "reduce n_components, or standardize the features")
    with pytest.raises(ValueError, match=re.escape(what + fix)):
        get_covariance_type(name).precision_cholesky(covariances, reg_covar=1e-6)


@COVARIANCES
def test_precision_cholesky_rejects_zero_and_nan_covariances(cov):
    zeros = np.zeros(cov.covariances_shape(K, D))
    fix = r"increase reg_covar \(now 0.001\), reduce n_components, or standardize the features"
    with pytest.raises(ValueError, match="not positive.*" + fix):
        cov.precision_cholesky(zeros, reg_covar=1e-3)
    with pytest.raises(ValueError, match="NaN"):
        cov.precision_cholesky(np.full_like(zeros, np.nan))


@COVARIANCES
def test_check_precisions_rejects_a_wrong_shape_naming_expected_and_got(cov):
    expected = cov.covariances_shape(K, D)
    got = cov.covariances_shape(K + 1, D + 1)
    message = f"precisions_init for covariance_type '{cov.name}' with 3 components and 3 features " \
              f"must have shape {expected}, got {got}"
    with pytest.raises(ValueError, match=re.escape(message)):
        cov.check_precisions(np.ones(got), K, D)


@COVARIANCES
def test_check_precisions_rejects_non_positive_precisions(cov):
    with pytest.raises(ValueError, match=r"precisions_init is invalid: .*precision.* is .*(not positive|-1)"):
        cov.check_precisions(-np.ones(cov.covariances_shape(K, D)), K, D)
    with pytest.raises(ValueError, match="precisions_init contains NaN or infinity"):
        cov.check_precisions(np.full(cov.covariances_shape(K, D), np.inf), K, D)


@pytest.mark.parametrize("cov", MATRIX_TYPES, ids=[cov.name for cov in MATRIX_TYPES])
def test_check_precisions_rejects_a_non_symmetric_matrix(cov):
    matrices = np.broadcast_to(np.eye(D), (K, D, D)).copy()
    matrices[-1, 0, 1] = 0.5
    precisions = matrices[-1] if cov.covariances_shape(K, D) == (3, 3) else matrices
    with pytest.raises(ValueError, match=r"precisions_init is invalid: .*precision.* is not symmetric"):
        cov.check_precisions(precisions, K, D)


def test_check_precisions_names_the_component_that_is_not_positive_definite():
    precisions = np.stack([np.eye(3), np.diag([1.0, -2.0, 1.0]), np.eye(3)])
    message = ("precisions_init is invalid: precision of component 1 is not positive definite "
               "(smallest eigenvalue -2)")
    with pytest.raises(ValueError, match=re.escape(message)):
        get_covariance_type("full").check_precisions(precisions, 3, 3)


@COVARIANCES
def test_check_precisions_and_covariances_accept_valid_values(cov, data):
    X, resp = data
    _, _, covariances, precisions_cholesky = sklearn_parameters(cov, X, resp)
    precisions = cov.precisions(precisions_cholesky)
    np.testing.assert_array_equal(cov.check_precisions(precisions, K, D), precisions)
    np.testing.assert_array_equal(cov.check_covariances(covariances, K, D), covariances)
    with pytest.raises(ValueError, match=r"covariances is invalid: .*(covariance|variance)"):
        cov.check_covariances(np.zeros_like(covariances), K, D)


# ----- numerics: float32 data far from the origin ---------------------------------------------------


@pytest.fixture(scope="module")
def offset_float32_data():
    """20000 float32 rows around 1e5 in two well-separated clusters with std 1, 3 and 10."""
    rng = np.random.default_rng(7)
    centres = np.array([[1e5, 1e5, 1e5], [1e5 + 300.0, 1e5 - 200.0, 1e5 + 100.0]])
    labels = rng.integers(0, 2, size=20000)
    X32 = (centres[labels] + rng.normal(size=(20000, 3)) * [1.0, 3.0, 10.0]).astype(np.float32)
    return X32, centres


@COVARIANCES
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
    assert np.all(np.linalg.eigvalsh(cov.as_full(covariances, n_components, 3)) > 0)
    np.testing.assert_allclose(covariances, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())
