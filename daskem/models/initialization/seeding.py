"""Initial centres, computed from the data in a fixed number of passes, one set per seed.

k-means|| (the default seeding of k-means, also for the k-means that starts a mixture) lives in
:mod:`daskem.models.initialization.kmeans_parallel`; the samplers below serve "k-means++" and
random rows; :func:`lloyd_centers` runs Lloyd's algorithm from k-means|| ("kmeans" for a mixture).

Rows are sampled by priority: each row gets a counter-based uniform draw keyed by (seed, global
row index) and the rows with the smallest draws are kept, merged in the same tree as everything
else. The sample is therefore a uniform sample without replacement, bounded in size on every
worker and on the client, and identical whatever the chunking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import dask.array as da
import numpy as np
from sklearn.cluster import kmeans_plusplus

from daskem.engine.checkpoint import Checkpoint
from daskem.engine.em import run_em
from daskem.engine.reduction import map_reduce
from daskem.kernels.draws import row_uniforms
from daskem.kernels.tiles import check_finite_block

logger = logging.getLogger("daskem")
from daskem.models.families import KMeansFamily, KMeansParams
from daskem.models.initialization.kmeans_parallel import kmeans_parallel_centers

SAMPLE_STREAM = 1

# The k-means that initializes a Gaussian mixture (init_params="kmeans"), as in scikit-learn.
KMEANS_FOR_GMM_MAX_ITER = 100
KMEANS_FOR_GMM_TOL = 1e-4


@dataclass(frozen=True)
class SeedingSpec:
    """How to seed centres: the method and its settings (see ``daskem.models.initialization.InitSpec``)."""

    method: str  # one of SEEDINGS
    sample_size: int
    oversampling_factor: float
    n_rounds: int
    fan_in: int


@dataclass(frozen=True)
class SampleRequest:
    """Draw ``size`` rows for each seed."""

    seeds: tuple[int, ...]
    size: int


def _slab_sample(slab: np.ndarray, row_start: int, request: SampleRequest, weights=None) -> list[tuple]:
    """For each seed, the slab's ``size`` rows of smallest priority as (priorities, row indices, rows).
    With row weights the priority is ``-log(1 - u) / w`` (Efraimidis-Spirakis: a sample drawn with
    probability proportional to the weights; a row of zero weight is never drawn)."""
    check_finite_block(slab, row_start)
    samples = []
    for seed in request.seeds:
        priorities = row_uniforms(seed, SAMPLE_STREAM, row_start, slab.shape[0])[:, 0]
        if weights is not None:
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero weight: inf (or NaN), never drawn
                priorities = -np.log1p(-priorities) / np.asarray(weights, dtype=np.float64)
        keep = _smallest(priorities, request.size)
        keep = keep[np.isfinite(priorities[keep])]  # rows of zero weight are never drawn
        samples.append((priorities[keep], row_start + keep, np.asarray(slab[keep], dtype=np.float64)))
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
    merged = map_reduce(X, _slab_sample, SampleRequest(tuple(seeds), size), name=name,
                        combine=partial(_merge_samples, size=size), fan_in=fan_in)
    logger.info("init: sampled %d rows per seed for %d seed(s) in one pass", min(size, X.shape[0]), len(seeds))
    return [data[np.argsort(rows)] for _, rows, data in merged]


def kmeans_plusplus_centers(X, n_clusters, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> list[np.ndarray]:
    """k-means++ seeding on one bounded sample of rows, one set of centres per seed."""
    (sample,) = sample_rows(X, max(spec.sample_size, n_clusters), seeds[:1], name=name, fan_in=spec.fan_in)
    return [kmeans_plusplus(sample, n_clusters, random_state=seed)[0] for seed in seeds]


def random_row_centers(X, n_clusters, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> list[np.ndarray]:
    """``n_clusters`` distinct rows drawn uniformly, one set per seed."""
    return sample_rows(X, n_clusters, seeds, name=name, fan_in=spec.fan_in)


def kmeans_parallel_seeding(X, n_clusters, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> list[np.ndarray]:
    """The k-means|| centres (see :mod:`daskem.models.initialization.kmeans_parallel`), round by round
    in the checkpoint."""
    return kmeans_parallel_centers(X, n_clusters, seeds, oversampling_factor=spec.oversampling_factor,
                                   n_rounds=spec.n_rounds, name=name, fan_in=spec.fan_in,
                                   checkpoint=checkpoint, stage=f"{stage}/k-means||")


def lloyd_centers(X, n_clusters, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> list[np.ndarray]:
    """Centres of a k-means fit per seed (k-means|| seeding, then Lloyd), all restarts in the same passes."""
    starts = kmeans_parallel_seeding(X, n_clusters, seeds, spec, name=f"{name}-seed", checkpoint=checkpoint,
                                     stage=stage)
    results = run_em(X, [KMeansFamily()] * len(starts), [KMeansParams(c) for c in starts],
                     max_iter=KMEANS_FOR_GMM_MAX_ITER, tol=KMEANS_FOR_GMM_TOL, run_id=f"{name}-lloyd",
                     fan_in=spec.fan_in, labels=[f"k-means init {i}" for i in range(len(starts))],
                     checkpoint=checkpoint, stage=f"{stage}/lloyd")
    return [result.params.centers for result in results]


# Seeding methods by name: each gives one (k, D) array of centres per seed.
SEEDINGS = {
    "lloyd": lloyd_centers,
    "k-means||": kmeans_parallel_seeding,
    "k-means++": kmeans_plusplus_centers,
    "random_rows": random_row_centers,
}


def seed_centers(X, n_clusters: int, seeds: Sequence[int], spec: SeedingSpec, *, name: str,
                 checkpoint: Checkpoint | None = None, stage: str = "seeding") -> list[np.ndarray]:
    """Initial centres by ``spec.method``, one (n_clusters, D) array per seed; with a ``checkpoint``,
    saved as ``stage`` (and their own passes saved within it), so a resumed run does not seed again."""
    saved = checkpoint.load(stage) if checkpoint is not None else None
    if saved is not None:
        return saved
    centers = SEEDINGS[spec.method](X, n_clusters, list(seeds), spec, name=name, checkpoint=checkpoint, stage=stage)
    if checkpoint is not None:
        checkpoint.save(stage, list(centers))
    return centers
