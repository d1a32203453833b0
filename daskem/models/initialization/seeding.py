"""Initial centres, computed from the data in a fixed number of passes, one set per size and seed.

Every method reads the data to build one bounded summary, for the largest number of centres asked
for, and every size and restart seed takes its centres from it: a grid of ``n_components`` costs
the passes of one seeding. Passes over the data:

* ``sample_kmeans`` (a mixture's default, "kmeans"): a uniform sample of ``SAMPLE_ROWS_PER_CENTER``
  rows per centre (at most ``sample_size``), then k-means with ``SAMPLE_KMEANS_RESTARTS`` restarts
  on the client; 1 pass.
* ``k-means||`` (:mod:`daskem.models.initialization.kmeans_parallel`): ``n_rounds + 1`` passes; each
  size reduces the weighted candidates on the client.
* ``lloyd``: k-means|| and then Lloyd's algorithm on the whole data, every size and seed in the
  same passes: ``n_rounds + 1`` plus one per Lloyd iteration.
* ``k-means++``: k-means++ on a uniform sample of ``sample_size`` rows; 1 pass.
* ``random_rows``: distinct rows drawn uniformly; 1 pass.

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

from daskem.engine.checkpoint import Checkpoint
from daskem.engine.em import run_em
from daskem.engine.reduction import map_reduce
from daskem.kernels.draws import row_uniforms
from daskem.kernels.tiles import check_finite_block

from daskem.models.families import KMeansFamily, KMeansParams
from daskem.models.initialization.kmeans_parallel import centers_for, kmeans_parallel

logger = logging.getLogger("daskem")

SAMPLE_STREAM = 1

# The k-means that initializes a Gaussian mixture, as in scikit-learn.
KMEANS_FOR_GMM_MAX_ITER = 100
KMEANS_FOR_GMM_TOL = 1e-4
# The sample that k-means starts a mixture from: rows per centre (faiss trains on 256 per centroid),
# and the restarts of k-means on it (on the client, a few milliseconds each).
SAMPLE_ROWS_PER_CENTER = 256
SAMPLE_KMEANS_RESTARTS = 4


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


def sample_kmeans_centers(X, sizes, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> dict[int, list]:
    """k-means (``SAMPLE_KMEANS_RESTARTS`` restarts of k-means++ and Lloyd) on one uniform sample of
    ``SAMPLE_ROWS_PER_CENTER`` rows per centre of the largest size, for every size and seed."""
    size = min(spec.sample_size, SAMPLE_ROWS_PER_CENTER * max(sizes))
    (sample,) = sample_rows(X, max(size, max(sizes)), seeds[:1], name=name, fan_in=spec.fan_in)
    return {k: [_local_kmeans(sample, None, k, seed) for seed in seeds] for k in sizes}


def _local_kmeans(rows: np.ndarray, weights, n_clusters: int, seed: int) -> np.ndarray:
    """Centres of k-means on rows in memory (weighted when ``weights`` is given), best of several restarts."""
    # scikit-learn runs on the client only, so it is imported on use: workers unpickle tasks that
    # name this module and should not load it.
    from sklearn.cluster import KMeans as LocalKMeans

    kmeans = LocalKMeans(n_clusters, n_init=SAMPLE_KMEANS_RESTARTS, max_iter=KMEANS_FOR_GMM_MAX_ITER,
                         tol=KMEANS_FOR_GMM_TOL, random_state=seed)
    return kmeans.fit(rows, sample_weight=weights).cluster_centers_


def kmeans_plusplus_centers(X, sizes, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> dict[int, list]:
    """k-means++ seeding on one bounded sample of rows, one set of centres per size and seed."""
    from sklearn.cluster import kmeans_plusplus  # client only (see _local_kmeans)

    (sample,) = sample_rows(X, max(spec.sample_size, max(sizes)), seeds[:1], name=name, fan_in=spec.fan_in)
    return {k: [kmeans_plusplus(sample, k, random_state=seed)[0] for seed in seeds] for k in sizes}


def random_row_centers(X, sizes, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> dict[int, list]:
    """``k`` distinct rows drawn uniformly per size and seed: one sample of the largest size per seed,
    of which each size takes the ``k`` rows of smallest priority (ordered by row index)."""
    merged = map_reduce(X, _slab_sample, SampleRequest(tuple(seeds), max(sizes)), name=name,
                        combine=partial(_merge_samples, size=max(sizes)), fan_in=spec.fan_in)
    out: dict[int, list] = {k: [] for k in sizes}
    for priorities, rows, data in merged:
        by_priority = np.argsort(priorities, kind="stable")
        for k in sizes:
            kept = by_priority[:k]
            out[k].append(data[kept][np.argsort(rows[kept])])
    return out


def kmeans_parallel_seeding(X, sizes, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> dict[int, list]:
    """The k-means|| centres (see :mod:`daskem.models.initialization.kmeans_parallel`) for the largest
    size, round by round in the checkpoint; the other sizes reduce the same weighted candidates."""
    results = kmeans_parallel(X, max(sizes), seeds, oversampling_factor=spec.oversampling_factor,
                              n_rounds=spec.n_rounds, name=name, fan_in=spec.fan_in, checkpoint=checkpoint,
                              stage=f"{stage}/k-means||", smallest=min(sizes))
    return {k: [centers_for(result, k, seed) for result, seed in zip(results, seeds)] for k in sizes}


def lloyd_centers(X, sizes, seeds, spec: SeedingSpec, *, name, checkpoint, stage) -> dict[int, list]:
    """Centres of a k-means fit per size and seed (k-means|| seeding, then Lloyd on the whole data),
    all of them in the same passes."""
    starts = kmeans_parallel_seeding(X, sizes, seeds, spec, name=f"{name}-seed", checkpoint=checkpoint, stage=stage)
    pairs = [(k, centers) for k in sizes for centers in starts[k]]
    results = run_em(X, [KMeansFamily()] * len(pairs), [KMeansParams(c) for _, c in pairs],
                     max_iter=KMEANS_FOR_GMM_MAX_ITER, tol=KMEANS_FOR_GMM_TOL, run_id=f"{name}-lloyd",
                     fan_in=spec.fan_in, labels=[f"k-means init K={k} {i}" for i, (k, _) in enumerate(pairs)],
                     checkpoint=checkpoint, stage=f"{stage}/lloyd")
    out: dict[int, list] = {k: [] for k in sizes}
    for (k, _), result in zip(pairs, results):
        out[k].append(result.params.centers)
    return out


# Seeding methods by name: each gives, for every size, one (k, D) array of centres per seed.
SEEDINGS = {
    "sample_kmeans": sample_kmeans_centers,
    "lloyd": lloyd_centers,
    "k-means||": kmeans_parallel_seeding,
    "k-means++": kmeans_plusplus_centers,
    "random_rows": random_row_centers,
}


def seed_centers(X, sizes: Sequence[int], seeds: Sequence[int], spec: SeedingSpec, *, name: str,
                 checkpoint: Checkpoint | None = None, stage: str = "seeding") -> dict[int, list[np.ndarray]]:
    """Initial centres by ``spec.method`` for every size in ``sizes``: one (k, D) array per seed, all
    from one summary of the data; with a ``checkpoint``, saved as ``stage`` (and their own passes saved
    within it), so a resumed run does not seed again."""
    saved = checkpoint.load(stage) if checkpoint is not None else None
    if saved is not None:
        return saved
    sizes = sorted({int(k) for k in sizes})
    centers = SEEDINGS[spec.method](X, sizes, list(seeds), spec, name=name, checkpoint=checkpoint, stage=stage)
    if checkpoint is not None:
        checkpoint.save(stage, {k: list(v) for k, v in centers.items()})
    return centers
