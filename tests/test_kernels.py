"""Chunk kernels against scikit-learn and naive NumPy, including empty and float32 slabs."""

import numpy as np
import pytest
from covariance_reference import chunk_s2, log_prob
from scipy.special import logsumexp
from sklearn.metrics import euclidean_distances, pairwise_distances_argmin_min
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
)

from daskem.kernels.covariance import COVARIANCE_TYPES
from daskem.kernels.mixture import estimate_log_resp, gmm_chunk_stats, row_outputs
from daskem.kernels.compiled import compiled
from daskem.kernels.lloyd import COMPILED_COMPONENTS
from daskem.kernels.nearest import hard_chunk_stats, kmeans_transform, nearest_center
from daskem.kernels.params import GMMParams
from daskem.kernels.stats import SuffStats
from daskem.kernels.tiles import CentredRows, packed_indices

N_SAMPLES, D, K = 200, 4, 3  # rows, features, components
TOL = dict(rtol=1e-10, atol=1e-12)
COVARIANCES = pytest.mark.parametrize("cov", list(COVARIANCE_TYPES.values()), ids=list(COVARIANCE_TYPES))


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    blobs = rng.normal(size=(K, D)) * 4
    return blobs[rng.integers(0, K, size=N_SAMPLES)] + rng.normal(size=(N_SAMPLES, D))


def fitted_sklearn_model(cov, X):
    """A scikit-learn GaussianMixture whose fitted attributes are set by hand from random responsibilities."""
    resp = np.random.default_rng(1).dirichlet(np.ones(K), size=len(X))
    nk, means, covariances = _estimate_gaussian_parameters(X, resp, 1e-6, cov.name)
    model = GaussianMixture(n_components=K, covariance_type=cov.name)
    model.weights_ = nk / nk.sum()
    model.means_ = means
    model.covariances_ = covariances
    model.precisions_cholesky_ = _compute_precision_cholesky(covariances, cov.name)
    model.n_features_in_ = X.shape[1]
    return model


def parameters(model):
    return GMMParams(model.weights_, model.means_, model.covariances_, model.precisions_cholesky_)


def gmm_predict(X, params, cov):
    return row_outputs(X, params, cov, ["labels"])["labels"]


def gmm_predict_proba(X, params, cov):
    return row_outputs(X, params, cov, ["responsibilities"])["responsibilities"]


def gmm_score_samples(X, params, cov):
    return row_outputs(X, params, cov, ["log_density"])["log_density"]


@COVARIANCES
def test_estimate_log_resp_matches_scikit_learn(cov, X):
    model = fitted_sklearn_model(cov, X)
    expected_norm, expected_resp = model._estimate_log_prob_resp(X)
    log_norm, log_resp = estimate_log_resp(X, parameters(model), cov)
    np.testing.assert_allclose(log_norm, expected_norm, **TOL)
    np.testing.assert_allclose(log_resp, expected_resp, **TOL)


@COVARIANCES
def test_a_component_with_zero_weight_gets_zero_responsibility(cov, X):
    params = parameters(fitted_sklearn_model(cov, X))
    weights, means, precisions_cholesky = params.weights, params.means, params.precisions_cholesky
    weights = np.array([0.0, weights[1], 1.0 - weights[1]])
    log_norm, log_resp = estimate_log_resp(X, GMMParams(weights, means, None, precisions_cholesky), cov)
    with np.errstate(divide="ignore"):
        weighted = log_prob(cov, X, means, precisions_cholesky) + np.log(weights)
    np.testing.assert_allclose(log_norm, logsumexp(weighted, axis=1), **TOL)
    assert np.all(log_resp[:, 0] == -np.inf) and np.all(np.isfinite(log_resp[:, 1:]))
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-12)


@COVARIANCES
def test_gmm_predictions_match_scikit_learn(cov, X):
    model = fitted_sklearn_model(cov, X)
    np.testing.assert_array_equal(gmm_predict(X, parameters(model), cov), model.predict(X))
    np.testing.assert_allclose(gmm_predict_proba(X, parameters(model), cov), model.predict_proba(X), **TOL)
    np.testing.assert_allclose(gmm_score_samples(X, parameters(model), cov), model.score_samples(X), **TOL)


@COVARIANCES
def test_all_per_row_outputs_come_from_one_e_step_per_tile_and_equal_each_alone(cov, X, monkeypatch):
    from daskem.kernels import mixture

    params = parameters(fitted_sklearn_model(cov, X))
    alone = {name: row_outputs(X, params, cov, [name])[name] for name in mixture.ROW_OUTPUTS}
    calls = []
    original = mixture.PreparedMixture.weighted_log_prob
    monkeypatch.setattr(mixture.PreparedMixture, "weighted_log_prob",
                        lambda self, rows: calls.append(rows.n_rows) or original(self, rows))
    together = row_outputs(X, params, cov, ["log_density", "responsibilities"])
    assert len(calls) == -(-len(X) // cov.tile_rows(*params.means.shape))  # one E-step per tile for both outputs
    for name in ("log_density", "responsibilities"):
        np.testing.assert_array_equal(together[name], alone[name])
    labels_and_rest = row_outputs(X, params, cov, mixture.ROW_OUTPUTS)
    for name in mixture.ROW_OUTPUTS:
        np.testing.assert_array_equal(labels_and_rest[name], alone[name])


@COVARIANCES
def test_gmm_chunk_stats_are_shifted_sums_of_scikit_learn_responsibilities(cov, X):
    model = fitted_sklearn_model(cov, X)
    resp = model.predict_proba(X)
    stats = gmm_chunk_stats(X, parameters(model), cov)
    assert stats.n_samples == N_SAMPLES
    np.testing.assert_allclose(stats.objective, model.score_samples(X).sum(), **TOL)
    np.testing.assert_allclose(stats.nk, resp.sum(axis=0), **TOL)
    naive_s1 = np.stack([resp[:, k] @ (X - model.means_[k]) for k in range(K)])
    np.testing.assert_allclose(stats.s1, naive_s1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.s2, chunk_s2(cov, X, resp, model.means_), **TOL)


@COVARIANCES
def test_gmm_chunk_stats_of_float32_rows_equal_those_of_the_same_values_in_float64(cov, X):
    model = fitted_sklearn_model(cov, X)
    X32 = X.astype(np.float32)
    from32 = gmm_chunk_stats(X32, parameters(model), cov)
    from64 = gmm_chunk_stats(X32.astype(np.float64), parameters(model), cov)
    for field in ("nk", "s1", "s2", "objective"):
        np.testing.assert_array_equal(getattr(from32, field), getattr(from64, field))


def test_nearest_center_matches_pairwise_distances_argmin_min(X):
    centers = X[[3, 50, 120]]
    labels, squared_distances = nearest_center(X, centers)
    expected_labels, expected_distances = pairwise_distances_argmin_min(X, centers)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(squared_distances, expected_distances**2, rtol=1e-12, atol=1e-12)


def test_nearest_center_breaks_ties_to_the_lowest_index():
    centers = np.array([[5.0, 5.0], [0.0, 0.0], [5.0, 5.0], [0.0, 0.0]])
    X = np.array([[0.0, 0.0], [5.0, 5.0], [4.0, 6.0], [2.5, 2.5]])
    labels, squared_distances = nearest_center(X, centers)
    np.testing.assert_array_equal(labels, [1, 0, 0, 0])
    np.testing.assert_array_equal(squared_distances, [0.0, 0.0, 2.0, 12.5])


def test_nearest_center_distances_are_exact_on_float32_data_with_a_large_offset():
    rng = np.random.default_rng(2)
    centers = 1e5 + np.array([[0.0, 0.0, 0.0], [40.0, -30.0, 10.0]])
    X32 = (centers[rng.integers(0, 2, size=5000)] + rng.normal(size=(5000, 3))).astype(np.float32)
    X64 = X32.astype(np.float64)
    exact = ((X64[:, None, :] - centers) ** 2).sum(axis=2)
    labels, squared_distances = nearest_center(X32, centers)
    np.testing.assert_array_equal(labels, exact.argmin(axis=1))
    np.testing.assert_allclose(squared_distances, exact.min(axis=1), rtol=1e-13)


def test_hard_chunk_stats_equal_naive_sums_over_nearest_centre_groups(X):
    centers = X[[3, 50, 120]] + 0.25
    labels, _ = pairwise_distances_argmin_min(X, centers)
    stats = hard_chunk_stats(X, centers)
    assert stats.s2 is None and stats.n_samples == N_SAMPLES
    naive_inertia = sum(float(np.sum((x - centers[label]) ** 2)) for x, label in zip(X, labels))
    np.testing.assert_allclose(stats.objective, naive_inertia, rtol=1e-12)
    np.testing.assert_array_equal(stats.nk, np.bincount(labels, minlength=K).astype(float))
    naive_s1 = np.stack([(X[labels == k] - centers[k]).sum(axis=0) for k in range(K)])
    np.testing.assert_allclose(stats.s1, naive_s1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_centres", [1, 3, 4, 7, COMPILED_COMPONENTS, COMPILED_COMPONENTS + 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd_statistics_equal_exact_sums_on_both_sides_of_the_compiled_limit(n_centres, dtype, weighted):
    """The compiled loop (up to COMPILED_COMPONENTS centres) and the GEMM kernel (beyond) give the
    shifted sums of exact float64 differences, on float32 rows far from the origin, with weights."""
    rng = np.random.default_rng(n_centres)
    X = (1e5 + 3.0 * rng.normal(size=(3000, 6))).astype(dtype)
    centers = X[rng.choice(len(X), n_centres, replace=False)].astype(np.float64) + 0.25
    weights = rng.uniform(0.0, 2.0, len(X)) if weighted else None
    stats = hard_chunk_stats(X, centers, weights=weights)
    X64 = X.astype(np.float64)
    squared = ((X64[:, None, :] - centers) ** 2).sum(axis=2)
    labels = squared.argmin(axis=1)
    w = np.ones(len(X)) if weights is None else weights
    assert stats.s2 is None and stats.n_samples == pytest.approx(w.sum(), rel=1e-14)
    np.testing.assert_allclose(stats.nk, np.bincount(labels, w, minlength=n_centres), rtol=1e-13)
    expected_s1 = np.stack([((X64[labels == k] - centers[k]) * w[labels == k, None]).sum(axis=0)
                            for k in range(n_centres)])
    np.testing.assert_allclose(stats.s1, expected_s1, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(stats.objective, float(squared.min(axis=1) @ w), rtol=1e-10)


def test_compiled_lloyd_statistics_break_ties_to_the_lowest_index_and_read_any_layout():
    centers = np.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    on_the_border = np.column_stack([np.zeros(50), np.linspace(-2.0, 2.0, 50)])
    stats = hard_chunk_stats(on_the_border, centers)
    np.testing.assert_array_equal(stats.nk, [50.0, 0.0, 0.0])
    X = np.random.default_rng(4).normal(size=(400, 6))
    for layout in (np.asfortranarray(X), np.hstack([X, X])[:, :6], X[::-1].copy()[::-1]):  # same rows, same order
        expected = hard_chunk_stats(np.ascontiguousarray(layout), centers[:, [0, 1, 0, 1, 0, 1]])
        assert_stats_equal(hard_chunk_stats(layout, centers[:, [0, 1, 0, 1, 0, 1]]), expected)


def _placed_near(head: np.ndarray, gap_bytes: int, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``head`` copied into one buffer with an empty array of ``shape``, ``gap_bytes`` after its end
    (or, for a negative gap, that many bytes before its start)."""
    size, gap = int(np.prod(shape)), abs(gap_bytes) // 8
    buffer = np.empty(head.size + gap + size)
    head_at, work_at = (0, head.size + gap) if gap_bytes >= 0 else (size + gap, 0)
    copy = buffer[head_at : head_at + head.size].reshape(head.shape)
    copy[...] = head
    return copy, buffer[work_at : work_at + size].reshape(shape)


@pytest.mark.parametrize("n_features", [4, 7, 32])
def test_compiled_sweeps_give_the_same_bits_wherever_their_work_buffers_lie(n_features):
    """A work row or tile placed next to the reference (where LLVM's run-time check sends a loop that
    stores down its scalar version) gives the bits it gives far from it (kernels.compiled)."""
    from daskem.kernels.lloyd import lloyd_sums
    from daskem.kernels.tiles import _centre

    rng = np.random.default_rng(7)
    X = rng.normal(size=(64, n_features)) * 3.0 + 1.0
    reference, centres = X[:8].mean(axis=0), X[8:16] - X[:8].mean(axis=0)
    norms = np.einsum("kd,kd->k", centres, centres)

    def inertia(reference, row):
        return lloyd_sums(X, reference, centres, norms, None, np.zeros(centres.shape), np.zeros(len(norms)), row)

    far_values, far_norms = np.empty_like(X), np.empty(len(X))
    _centre(X, reference, far_values, far_norms)
    far_inertia = inertia(reference, np.empty(n_features))
    for gap in range(-320, 320, 8):
        near_reference, row = _placed_near(reference, gap, (n_features,))
        assert inertia(near_reference, row) == far_inertia, gap
        near_reference, values = _placed_near(reference, gap, X.shape)
        near_norms = np.empty(len(X))
        _centre(X, near_reference, values, near_norms)
        np.testing.assert_array_equal(values, far_values, err_msg=f"gap {gap}")
        np.testing.assert_array_equal(near_norms, far_norms, err_msg=f"gap {gap}")


def test_a_loop_numba_cannot_cache_is_compiled_in_the_process_instead():
    """Where no cache directory can be written (here: a function with no source file), the loop
    still compiles and runs."""
    namespace = {}
    exec("def double(values):\n    return values * 2.0\n", namespace)
    np.testing.assert_array_equal(compiled(namespace["double"])(np.arange(3.0)), [0.0, 2.0, 4.0])


@COVARIANCES
def test_hard_chunk_stats_with_a_covariance_type_add_one_hot_second_moments(cov, X):
    centers = X[[3, 50, 120]]
    labels, _ = pairwise_distances_argmin_min(X, centers)
    one_hot = (labels[:, None] == np.arange(K)).astype(float)
    stats = hard_chunk_stats(X, centers, cov)
    np.testing.assert_allclose(stats.s2, chunk_s2(cov, X, one_hot, centers), rtol=1e-12)


def test_kmeans_transform_matches_euclidean_distances(X):
    centers = X[[3, 50, 120]] + 0.5
    np.testing.assert_allclose(kmeans_transform(X, centers), euclidean_distances(X, centers), rtol=1e-10)


@COVARIANCES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kernel_accepts_an_empty_slab(cov, dtype, X):
    model = fitted_sklearn_model(cov, X)
    empty = np.empty((0, D), dtype=dtype)
    centers = model.means_
    log_norm, log_resp = estimate_log_resp(empty, parameters(model), cov)
    assert log_norm.shape == (0,) and log_resp.shape == (0, K)
    assert gmm_predict(empty, parameters(model), cov).shape == (0,)
    assert gmm_predict_proba(empty, parameters(model), cov).shape == (0, K)
    assert gmm_score_samples(empty, parameters(model), cov).shape == (0,)
    assert kmeans_transform(empty, centers).shape == (0, K)
    labels, squared_distances = nearest_center(empty, centers)
    assert labels.shape == squared_distances.shape == (0,) and labels.dtype == np.int64
    zeros = SuffStats.zeros(K, D, cov.s2_shape(K, D))
    assert_stats_equal(gmm_chunk_stats(empty, parameters(model), cov), zeros)
    assert_stats_equal(hard_chunk_stats(empty, centers, cov), zeros)
    assert_stats_equal(hard_chunk_stats(empty, centers), SuffStats.zeros(K, D))


def assert_stats_equal(actual: SuffStats, expected: SuffStats):
    assert actual.n_samples == expected.n_samples and actual.objective == expected.objective
    for field in ("nk", "s1", "s2"):
        a, e = getattr(actual, field), getattr(expected, field)
        assert (a is None) == (e is None)
        if e is not None:
            assert a.shape == e.shape and a.dtype == np.float64
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("n_rows,n_features", [(0, 3), (1, 1), (7, 5), (600, 33)])
def test_packed_outer_products_are_the_upper_triangles_in_packed_order(n_rows, n_features):
    values = np.random.default_rng(n_features).normal(size=(n_rows, n_features))
    rows, columns = packed_indices(n_features)
    expected = (values[:, :, None] * values[:, None, :])[:, rows, columns].T
    np.testing.assert_array_equal(CentredRows(values.copy()).packed_outer, expected)


@COVARIANCES
@pytest.mark.parametrize("n_components,n_features", [(1, 1), (3, 4), (16, 32), (64, 32), (16, 64), (256, 32), (16, 128)])
def test_tiles_keep_every_product_under_the_small_gemm_bound_unless_that_leaves_too_few_rows(cov, n_components, n_features):
    from daskem.kernels import tiles

    rows = cov.tile_rows(n_components, n_features)
    width = cov.widest_product(n_components, n_features)
    assert 1 <= rows <= tiles.TILE_ROWS
    assert rows <= tiles.tile_rows(n_components, cov.tile_columns(n_features))  # never larger than without the bound
    if tiles.SMALL_PRODUCT // width >= tiles.FEWEST_SMALL_PRODUCT_ROWS:
        assert rows * width <= tiles.SMALL_PRODUCT
        assert rows >= tiles.FEWEST_SMALL_PRODUCT_ROWS
    else:
        assert rows == tiles.tile_rows(n_components, cov.tile_columns(n_features))


@COVARIANCES
@pytest.mark.parametrize("tile", [1, 7, 64])
def test_slab_statistics_and_outputs_do_not_depend_on_how_the_slab_is_cut_into_tiles(cov, tile, X, monkeypatch):
    from daskem.kernels import tiles

    model = fitted_sklearn_model(cov, X)
    whole = gmm_chunk_stats(X, parameters(model), cov)
    whole_outputs = row_outputs(X, parameters(model), cov, ["labels", "responsibilities", "log_density"])
    monkeypatch.setattr(tiles, "TILE_ROWS", tile)  # a last tile shorter than the others, for 7 and 64
    cut = gmm_chunk_stats(X, parameters(model), cov)
    assert cov.tile_rows(K, D) == tile
    for field in ("nk", "s1", "s2", "objective"):
        np.testing.assert_allclose(getattr(cut, field), getattr(whole, field), **TOL)
    cut_outputs = row_outputs(X, parameters(model), cov, ["labels", "responsibilities", "log_density"])
    np.testing.assert_array_equal(cut_outputs["labels"], whole_outputs["labels"])
    for name in ("responsibilities", "log_density"):
        np.testing.assert_allclose(cut_outputs[name], whole_outputs[name], **TOL)


def test_a_workspace_gives_each_shape_asked_for_and_reuses_one_buffer_per_name():
    from daskem.kernels.tiles import Workspace

    workspace = Workspace()
    first = workspace.take("buffer", (8, 3))
    assert first.shape == (8, 3) and workspace.take("buffer", (8, 3)) is first
    last = workspace.take("buffer", (5, 3))  # a slab's last, shorter tile
    assert last.shape == (5, 3) and np.shares_memory(last, first)
    grown = workspace.take("buffer", (9, 3))
    assert grown.shape == (9, 3) and workspace.take("buffer", (2, 3)).shape == (2, 3)
    assert workspace.take("other", (8, 3)).shape == (8, 3) and not np.shares_memory(workspace.take("other", (8, 3)), grown)
    np.testing.assert_array_equal(workspace.ones(4), np.ones(4))
    assert workspace.ones(3).shape == (3,) and workspace.ones(6).shape == (6,)


@pytest.mark.parametrize("n_components", [1, 2, 16, 37])
def test_logsumexp_rows_and_responsibilities_match_scipy_with_rows_of_minus_infinity(n_components):
    from daskem.kernels.mixture import logsumexp_rows

    rng = np.random.default_rng(n_components)
    values = rng.normal(size=(301, n_components)) * 40 - 700  # exp underflows without the shift
    values[5] = -np.inf  # no component can have the row: -inf, not NaN
    values[7, : max(1, n_components // 2)] = -np.inf  # components of zero weight
    values[9] = 3.0  # a tie across the row
    scratch = np.empty_like(values)
    log_norm = logsumexp_rows(values, scratch)
    with np.errstate(invalid="ignore"):
        expected = logsumexp(values, axis=1)
    np.testing.assert_allclose(log_norm, expected, rtol=1e-14)
    assert log_norm[5] == -np.inf
    finite = np.isfinite(expected)
    np.testing.assert_allclose(scratch[finite], np.exp(values[finite] - expected[finite, None]), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(scratch[finite].sum(axis=1), 1.0, rtol=1e-14)
    assert logsumexp_rows(np.empty((0, n_components))).shape == (0,)
    for dtype in (np.float32, np.float16, np.int64):  # summed in float64, as scipy sums them
        narrow = (values[10:] / 100).astype(dtype)
        np.testing.assert_allclose(logsumexp_rows(narrow), logsumexp(narrow.astype(np.float64), axis=1), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_centred_rows_and_their_norms_are_those_of_numpy_for_every_dtype(dtype):
    X = (np.random.default_rng(3).normal(size=(301, 9)) * 5 + 1e3).astype(dtype)
    reference = X.astype(np.float64).mean(axis=0) + 0.25
    rows = CentredRows.of(X, reference)
    expected = X.astype(np.float64) - reference
    np.testing.assert_array_equal(rows.values, expected)
    np.testing.assert_allclose(rows.norms, np.einsum("nd,nd->n", expected, expected), rtol=1e-13)
    assert CentredRows.of(X[:0], reference).norms.shape == (0,)
