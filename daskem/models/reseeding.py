"""Re-seeding of collapsed components, after the M-step, on the client.

A mixture component whose effective number of rows (its summed responsibilities, weighted rows
counted by their weight) falls below ``n_features + 1`` can no longer estimate a covariance: it is
re-seeded by splitting the heaviest component, which must hold at least twice that floor. The two
halves share the donor's weight and covariance, their means one draw from the donor's Gaussian
apart. A k-means cluster left empty is re-seeded the same way from the largest cluster, its offset
drawn at the fit's mean spread per feature. Draws are seeded by the two components' indices, so a
fit re-seeds the same way every time; at most ``n_components`` re-seeds per fit, so that data with
fewer groups than components still converges.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from daskem.kernels.params import GMMParams, KMeansParams
from daskem.kernels.stats import SuffStats

# Seeds every split's draw together with the two components' indices.
RESEED_SEED = 4242


def mixture_floor(n_features: int) -> float:
    """The fewest effective rows a mixture component may keep before it is re-seeded: D + 1."""
    return n_features + 1.0


def reseed_mixture(family, stats: SuffStats, params: GMMParams, done: int):
    """The M-step of ``family`` with every collapsed component split off the heaviest one, and one
    line per split; None when no component collapsed (or none can be split, or the budget is spent)."""
    floor = mixture_floor(stats.s1.shape[1])
    dead = _dead(stats.nk, floor, done)
    if not dead or stats.nk.max() < 2 * floor:
        return None
    updated = family.update(stats, params)
    weights, means = updated.weights.copy(), updated.means.copy()
    covariances, lines = updated.covariances, []
    for target in dead:
        source = _heaviest(weights, dead)
        covariances = family.covariance.copy_component(covariances, source, target)
        counts = np.zeros(len(weights), dtype=np.int64)
        counts[source] = 1
        rng = np.random.default_rng([RESEED_SEED, target, source])
        offset = family.covariance.sample(rng, np.zeros_like(means), covariances, counts)[0] / 2
        means[target], means[source] = means[source] + offset, means[source] - offset
        weights[target] = weights[source] = weights[source] / 2
        lines.append(f"component {target} kept {stats.nk[target]:.3g} effective rows, below the floor of {floor:g} "
                     f"(n_features + 1): re-seeded by splitting component {source}")
    precisions_cholesky = family.covariance.precision_cholesky(covariances, reg_covar=family.reg_covar)
    return replace(updated, weights=weights, means=means, covariances=covariances,
                   precisions_cholesky=precisions_cholesky), lines


def reseed_kmeans(family, stats: SuffStats, params: KMeansParams, done: int):
    """Lloyd's update with every empty cluster split off the largest one, and one line per split;
    None when no cluster is empty (or the budget is spent)."""
    dead = _dead(stats.nk, np.finfo(np.float64).tiny, done)
    if not dead or stats.nk.max() <= 0:
        return None
    centers = family.update(stats, params).centers.copy()
    n_features = centers.shape[1]
    spread = np.sqrt(max(stats.objective, 0.0) / (stats.n_samples * n_features))
    counts, lines = stats.nk.astype(np.float64).copy(), []
    for target in dead:
        source = _heaviest(counts, dead)
        rng = np.random.default_rng([RESEED_SEED, target, source])
        offset = spread * rng.standard_normal(n_features) / 2
        centers[target], centers[source] = centers[source] + offset, centers[source] - offset
        counts[target] = counts[source] = counts[source] / 2
        lines.append(f"cluster {target} is empty: re-seeded by splitting cluster {source}")
    return KMeansParams(centers), lines


def _dead(nk: np.ndarray, floor: float, done: int) -> list[int]:
    """Components below ``floor``, as many as the budget of re-seeds (one per component) allows."""
    budget = max(0, len(nk) - done)
    return [int(k) for k in np.flatnonzero(nk < floor)][:budget]


def _heaviest(sizes: np.ndarray, dead: list[int]) -> int:
    """The largest component that is not being re-seeded itself."""
    sizes = np.asarray(sizes, dtype=np.float64).copy()
    sizes[dead] = -np.inf
    return int(np.argmax(sizes))
