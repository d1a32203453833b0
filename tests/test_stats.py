"""Sufficient statistics merge exactly: any chunking, empty chunks included, in any order.

Part of the shared covariance suite: each test taking ``cov`` runs over every registered type and
the toy ``scalar`` type (see conftest.py), with parameters from the naive M-step.
"""

import dataclasses
import functools

import numpy as np
import pytest
from covariance_reference import naive_parameters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskem.kernels.mixture import gmm_chunk_stats, resp_chunk_stats
from daskem.kernels.nearest import hard_chunk_stats
from daskem.kernels.params import GMMParams
from daskem.kernels.stats import SuffStats, merge_all

N_SAMPLES, D, K = 60, 3, 3  # rows, features, components
RTOL = 1e-12
EXPLICIT_CHUNK_SIZES = [
    [N_SAMPLES],
    [0, N_SAMPLES],
    [N_SAMPLES, 0],
    [0, 1, 0, N_SAMPLES - 1],
    [N_SAMPLES - 1, 1],
    [1] * N_SAMPLES,
    [7, 0, 0, 13, 40],
]


@functools.lru_cache
def data():
    """Rows around three blobs (with a common offset) and one GMM's parameters for each type."""
    rng = np.random.default_rng(0)
    blobs = rng.normal(size=(K, D)) * 3 + 50.0
    X = blobs[rng.integers(0, K, size=N_SAMPLES)] + rng.normal(size=(N_SAMPLES, D))
    resp = rng.dirichlet(np.ones(K), size=N_SAMPLES)
    return X, resp


def gmm_parameters(cov):
    """Weights, means (moved off the optimum) and precision factors of one GMM of type ``cov``."""
    X, resp = data()
    means, covariances = naive_parameters(cov, X, resp)
    return resp.sum(axis=0) / len(X), means + 0.1, cov.precision_cholesky(covariances)


def kernels(cov):
    """The two chunk kernels as functions of a slab, with fixed parameters."""
    weights, means, precisions_cholesky = gmm_parameters(cov)
    return {
        "gmm": lambda slab: gmm_chunk_stats(slab, GMMParams(weights, means, None, precisions_cholesky), cov),
        "hard": lambda slab: hard_chunk_stats(slab, means, cov),
        "hard_without_s2": lambda slab: hard_chunk_stats(slab, means),
    }


KERNEL_NAMES = pytest.mark.parametrize("kernel", ["gmm", "hard", "hard_without_s2"])


def split(X, boundaries):
    """Slabs between sorted cut points (repeated points make empty slabs)."""
    cuts = [0, *sorted(boundaries), len(X)]
    return [X[a:b] for a, b in zip(cuts, cuts[1:])]


def assert_stats_close(actual: SuffStats, expected: SuffStats):
    """Equal up to rounding: rtol 1e-12, with an absolute floor scaled by each field's magnitude."""
    assert actual.n_samples == expected.n_samples
    np.testing.assert_allclose(actual.objective, expected.objective, rtol=RTOL)
    for field in ("nk", "s1", "s2"):
        a, e = getattr(actual, field), getattr(expected, field)
        assert (a is None) == (e is None)
        if e is not None:
            assert a.shape == e.shape
            np.testing.assert_allclose(a, e, rtol=RTOL, atol=RTOL * max(np.abs(e).max(), 1.0))


@KERNEL_NAMES
# ``cov`` only registers a type for the test: nothing to reset between examples
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(boundaries=st.lists(st.integers(0, N_SAMPLES), max_size=6))
def test_merge_of_chunk_stats_equals_whole_array_stats(cov, kernel, boundaries):
    X, _ = data()
    run = kernels(cov)[kernel]
    assert_stats_close(merge_all(run(slab) for slab in split(X, boundaries)), run(X))


@KERNEL_NAMES
@pytest.mark.parametrize("sizes", EXPLICIT_CHUNK_SIZES, ids=str)
def test_merge_of_chunk_stats_equals_whole_array_stats_for_explicit_chunkings(cov, kernel, sizes):
    X, _ = data()
    run = kernels(cov)[kernel]
    slabs = np.split(X, np.cumsum(sizes)[:-1])
    assert sum(len(slab) for slab in slabs) == N_SAMPLES
    assert_stats_close(merge_all(run(slab) for slab in slabs), run(X))


@KERNEL_NAMES
def test_zeros_is_the_neutral_element_of_merge(cov, kernel):
    X, _ = data()
    stats = kernels(cov)[kernel](X)
    s2_shape = None if stats.s2 is None else cov.s2_shape(K, D)
    zeros = SuffStats.zeros(K, D, s2_shape)
    assert_stats_close(zeros + stats, stats)
    assert_stats_close(stats + zeros, stats)
    assert_stats_close(zeros + zeros, zeros)


def tree_merge(stats, fan_in=2):
    """Merge pairwise, level by level, as a Dask tree reduction would."""
    while len(stats) > 1:
        stats = [merge_all(stats[i:i + fan_in]) for i in range(0, len(stats), fan_in)]
    return stats[0]


@KERNEL_NAMES
def test_merge_order_does_not_matter_tree_or_chain(cov, kernel):
    X, _ = data()
    stats = [kernels(cov)[kernel](slab) for slab in split(X, [0, 5, 5, 17, 30, 31, 44, 60])]
    chain = merge_all(stats)
    assert_stats_close(tree_merge(stats), chain)
    assert_stats_close(tree_merge(stats, fan_in=3), chain)
    assert_stats_close(merge_all(reversed(stats)), chain)


@pytest.mark.parametrize("with_s2", [True, False], ids=["with_s2", "without_s2"])
def test_statistics_shifted_to_new_centres_equal_the_statistics_taken_around_them(cov, with_s2):
    """Stepwise EM moves its running statistics to each new set of means: exact algebra, not a recomputation."""
    X, resp = data()
    _, means, _ = gmm_parameters(cov)
    new_means = means + np.random.default_rng(1).normal(size=means.shape) * 2.0

    def around(shift):
        stats = resp_chunk_stats(X, resp, shift, cov)
        return stats if with_s2 else dataclasses.replace(stats, s2=None)

    moved = around(means).shifted(means, new_means, cov if with_s2 else None)
    assert_stats_close(moved, around(new_means))


def test_scaled_statistics_are_the_statistics_of_weighted_rows(cov):
    X, resp = data()
    _, means, _ = gmm_parameters(cov)
    stats = resp_chunk_stats(X, resp, means, cov)
    tripled = resp_chunk_stats(np.vstack([X] * 3), np.vstack([resp] * 3), means, cov)
    assert_stats_close(stats.scaled(3), tripled)
