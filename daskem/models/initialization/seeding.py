"""Initial parameters, computed from the data in a fixed number of passes.

k-means|| (the default seeding of k-means, also for the k-means that starts a mixture) lives in
:mod:`daskem.models.initialization.kmeans_parallel`; the samplers below serve "k-means++", "random" and
"random_from_data".

Rows are sampled by priority: each row gets a counter-based uniform draw keyed by (seed, global
row index) and the rows with the smallest draws are kept, merged in the same tree as everything
else. The sample is therefore a uniform sample without replacement, bounded in size on every
worker and on the client, and identical whatever the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import dask.array as da
import numpy as np
from sklearn.cluster import kmeans_plusplus

from daskem.engine.em import run_em
from daskem.engine.reduction import map_reduce
from daskem.kernels.draws import row_uniforms
from daskem.kernels.mixture import resp_chunk_stats
from daskem.kernels.stats import SuffStats, merge_candidates
from daskem.kernels.tiles import check_finite_block
from daskem.models.families import KMeansFamily, KMeansParams
from daskem.models.initialization.kmeans_parallel import kmeans_parallel_centers

SAMPLE_STREAM = 1
RANDOM_RESPONSIBILITY_STREAM = 2

# The k-means that initializes a Gaussian mixture (init_params="kmeans"), as in scikit-learn.
KMEANS_FOR_GMM_MAX_ITER = 100
KMEANS_FOR_GMM_TOL = 1e-4


@dataclass(frozen=True)
class SampleRequest:
    """Draw ``size`` rows for each seed."""

    seeds: tuple[int, ...]
    size: int


def _block_sample(block: np.ndarray, row_start: int, request: SampleRequest) -> list[tuple]:
    """For each seed, the block's ``size`` rows of smallest priority as (priorities, row indices, rows)."""
    check_finite_block(block, row_start)
    samples = []
    for seed in request.seeds:
        priorities = row_uniforms(seed, SAMPLE_STREAM, row_start, block.shape[0])[:, 0]
        keep = _smallest(priorities, request.size)
        samples.append((priorities[keep], row_start + keep, np.asarray(block[keep], dtype=np.float64)))
    return samples


def _smallest(priorities: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` smallest priorities, in no particular order."""
    if priorities.size <= size:
        return np.arange(priorities.size)
    return np.argpartition(priorities, size - 1)[:size]


def _merge_samples(parts: list[list[tuple]], size: int) -> list[tuple]:
    """Keep, for each seed, the ``size`` rows of smallest priority among the merged parts."""
    merged = []
    for per_seed in zip(*parts, strict=True):
        priorities, rows, data = (np.concatenate(column) for column in zip(*per_seed))
        keep = _smallest(priorities, size)
        merged.append((priorities[keep], rows[keep], data[keep]))
    return merged


def sample_rows(X: da.Array, size: int, seeds: Sequence[int], *, name: str, fan_in: int) -> list[np.ndarray]:
    """One uniform sample of ``min(size, N)`` rows per seed, in one pass, ordered by row index."""
    merged = map_reduce(X, _block_sample, SampleRequest(tuple(seeds), size), name=name,
                        combine=partial(_merge_samples, size=size), fan_in=fan_in)
    return [data[np.argsort(rows)] for _, rows, data in merged]


def kmeans_plusplus_centers(X, n_clusters, seeds, *, sample_size, name, fan_in) -> list[np.ndarray]:
    """k-means++ seeding on one bounded sample of rows, one set of centres per seed."""
    (sample,) = sample_rows(X, max(sample_size, n_clusters), seeds[:1], name=name, fan_in=fan_in)
    return [kmeans_plusplus(sample, n_clusters, random_state=seed)[0] for seed in seeds]


def random_row_centers(X, n_clusters, seeds, *, name, fan_in) -> list[np.ndarray]:
    """``n_clusters`` distinct rows drawn uniformly, one set per seed."""
    return sample_rows(X, n_clusters, seeds, name=name, fan_in=fan_in)


def kmeans_initial_centers(X, n_clusters, init, seeds, *, sample_size, name, fan_in,
                           oversampling_factor=2.0, n_rounds=5) -> list[np.ndarray]:
    """Initial centres for each restart according to ``init`` ("k-means||", "k-means++", "random" or
    an array); ``oversampling_factor`` and ``n_rounds`` serve k-means||, ``sample_size`` k-means++."""
    if isinstance(init, str) and init == "k-means||":
        return kmeans_parallel_centers(X, n_clusters, seeds, oversampling_factor=oversampling_factor,
                                       n_rounds=n_rounds, name=name, fan_in=fan_in)
    if isinstance(init, str) and init == "k-means++":
        return kmeans_plusplus_centers(X, n_clusters, seeds, sample_size=sample_size, name=name, fan_in=fan_in)
    if isinstance(init, str) and init == "random":
        return random_row_centers(X, n_clusters, seeds, name=name, fan_in=fan_in)
    return [np.asarray(init, dtype=np.float64) for _ in seeds]


def lloyd_centers(X, n_clusters, seeds, *, oversampling_factor=2.0, n_rounds=5, name, fan_in) -> list[np.ndarray]:
    """Centres of a k-means fit per seed (k-means|| seeding, then Lloyd), all restarts in the same passes."""
    starts = kmeans_parallel_centers(X, n_clusters, seeds, oversampling_factor=oversampling_factor,
                                     n_rounds=n_rounds, name=f"{name}-seed", fan_in=fan_in)
    results = run_em(X, [KMeansFamily()] * len(starts), [KMeansParams(c) for c in starts],
                     max_iter=KMEANS_FOR_GMM_MAX_ITER, tol=KMEANS_FOR_GMM_TOL, run_id=f"{name}-lloyd",
                     fan_in=fan_in, labels=[f"k-means init {i}" for i in range(len(starts))])
    return [result.params.centers for result in results]


def _hard_assignment_stats(block, row_start, pairs) -> tuple[SuffStats, ...]:
    """Statistics under nearest-centre assignments, for each (family, centres) pair."""
    check_finite_block(block, row_start)
    return tuple(family.hard_chunk_stats(block, centers) for family, centers in pairs)


def gmm_params_from_centers(X, pairs, *, name, fan_in) -> list:
    """Mixture parameters from the rows nearest each set of centres, for every ``(family, centres)``
    pair in one pass (mixtures of several sizes and covariance types share it)."""
    pairs = tuple(pairs)
    stats = map_reduce(X, _hard_assignment_stats, pairs, name=name, combine=merge_candidates, fan_in=fan_in)
    return [family.m_step(s, centers) for s, (family, centers) in zip(stats, pairs)]


def _random_responsibility_stats(block, row_start, payload) -> tuple[SuffStats, ...]:
    """Statistics under random responsibilities drawn per row (by global row index), per seed."""
    check_finite_block(block, row_start)
    family, seeds, shift = payload
    stats = []
    for seed in seeds:
        resp = row_uniforms(seed, RANDOM_RESPONSIBILITY_STREAM, row_start, block.shape[0], shift.shape[0])
        resp /= resp.sum(axis=1, keepdims=True)
        stats.append(resp_chunk_stats(block, resp, shift, family.covariance))
    return tuple(stats)


def gmm_params_from_random_responsibilities(X, family, n_components, seeds, *, name, fan_in) -> list:
    """scikit-learn's init_params="random": responsibilities drawn uniformly and normalized per row."""
    reference = np.asarray(X[:1].compute(), dtype=np.float64)[0]
    shift = np.tile(reference, (n_components, 1))
    stats = map_reduce(X, _random_responsibility_stats, (family, tuple(seeds), shift), name=name,
                       combine=merge_candidates, fan_in=fan_in)
    return [family.m_step(s, shift) for s in stats]


def initial_centers(X, n_components, init_params, seeds, *, sample_size, name, fan_in,
                    oversampling_factor=2.0, n_rounds=5) -> list[np.ndarray]:
    """Centres per restart that start a mixture, for every ``init_params`` but "random":
    "kmeans" (k-means|| seeding then Lloyd), and otherwise the k-means seedings themselves:
    "k-means||", "k-means++" (on a sample of ``sample_size`` rows), "random_from_data" (distinct rows)."""
    if init_params == "kmeans":
        return lloyd_centers(X, n_components, seeds, oversampling_factor=oversampling_factor,
                             n_rounds=n_rounds, name=name, fan_in=fan_in)
    seeding = "random" if init_params == "random_from_data" else init_params
    return kmeans_initial_centers(X, n_components, seeding, seeds, sample_size=sample_size, name=name, fan_in=fan_in,
                                  oversampling_factor=oversampling_factor, n_rounds=n_rounds)
