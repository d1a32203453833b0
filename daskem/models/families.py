"""Model families: what a slab contributes (chunk statistics) and how totals become parameters.

A family is a small frozen object that the EM loop drives without knowing which model it fits
(it follows ``daskem.engine.em.Family``): ``chunk_stats(X, params)`` runs on the workers,
``update(stats, params)`` on the client. The Gaussian mixture delegates everything that depends on
the covariance type to a covariance object; k-means is the same engine with hard assignments and no
second moments. Each family also serves its model's per-row outputs and its restarts' ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from daskem.kernels import mixture, nearest
from daskem.kernels.covariance import CovarianceType
from daskem.kernels.params import GMMParams, KMeansParams
from daskem.kernels.stats import SuffStats
from daskem.models import reseeding

__all__ = ["GMMParams", "GaussianMixtureFamily", "KMeansFamily", "KMeansParams", "information_criteria"]

# scikit-learn adds this to every component's count so that empty components do not divide by 0.
COUNT_EPSILON = 10 * np.finfo(np.float64).eps


def information_criteria(mean_log_likelihood: float, n_rows: int, n_parameters: int) -> tuple[float, float]:
    """(BIC, AIC) of a model with ``n_parameters`` free parameters and this mean log-likelihood per row."""
    minus_twice_log_likelihood = -2 * mean_log_likelihood * n_rows
    return (minus_twice_log_likelihood + n_parameters * np.log(n_rows),
            minus_twice_log_likelihood + 2 * n_parameters)


@dataclass(frozen=True)
class GaussianMixtureFamily:
    """EM for a Gaussian mixture with the given covariance type and covariance regularization."""

    covariance: CovarianceType
    reg_covar: float

    # The objective reported for a fit is that of the last E-step, before the final M-step, as in
    # scikit-learn's ``lower_bound_``; no extra pass scores the returned parameters.
    reports_objective_of_returned_params = False
    # Starting from centres takes one pass: the statistics of the rows nearest each centre.
    starts_from_center_stats = True

    def chunk_stats(self, X: np.ndarray, params: GMMParams, weights: np.ndarray | None = None) -> SuffStats:
        """E-step on one slab (rows weighted by ``weights`` when given): statistics shifted by the current means."""
        return mixture.gmm_chunk_stats(X, params, self.covariance, weights)

    def center_stats(self, X: np.ndarray, centers: np.ndarray, weights: np.ndarray | None = None) -> SuffStats:
        """Statistics of one slab under nearest-centre assignments (to start from centres)."""
        return nearest.hard_chunk_stats(X, centers, self.covariance, weights)

    def from_centers(self, centers: np.ndarray, stats: SuffStats) -> GMMParams:
        """Initial parameters from the statistics of the rows nearest ``centers``."""
        return self.m_step(stats, centers)

    def m_step(self, stats: SuffStats, shift: np.ndarray) -> GMMParams:
        """New parameters from statistics accumulated around ``shift`` (the means they were taken at)."""
        nk = stats.nk + COUNT_EPSILON
        offsets = stats.s1 / nk[:, None]
        covariances = self.covariance.covariances_from_stats(nk, offsets, stats.s2, self.reg_covar)
        precisions_cholesky = self.covariance.precision_cholesky(covariances, reg_covar=self.reg_covar)
        return GMMParams(nk / nk.sum(), shift + offsets, covariances, precisions_cholesky)

    def update(self, stats: SuffStats, params: GMMParams) -> GMMParams:
        """The M-step after an E-step at ``params``."""
        return self.m_step(stats, params.means)

    def reseed(self, stats: SuffStats, params: GMMParams, done: int):
        """The M-step with collapsed components re-seeded, and a line per re-seed; None if none is
        (see ``daskem.models.reseeding``)."""
        return reseeding.reseed_mixture(self, stats, params, done)
    def shifted(self, stats: SuffStats, old: GMMParams, new: GMMParams) -> SuffStats:
        """Statistics taken around ``old``'s means, moved to ``new``'s (stepwise EM's running statistics)."""
        return stats.shifted(old.means, new.means, self.covariance)

    def objective(self, stats: SuffStats) -> float:
        """Mean log-likelihood per row."""
        return stats.objective / stats.n_samples

    def has_converged(self, previous: float, current: float, tol: float) -> bool:
        """scikit-learn's rule: the mean log-likelihood changed by less than ``tol``."""
        return abs(current - previous) < tol

    def best(self, objectives: Sequence[float]) -> int:
        """Index of the best restart: the highest mean log-likelihood."""
        return int(np.argmax(objectives))

    def n_parameters(self, n_features: int, params: GMMParams) -> int:
        """Free parameters: covariances, means and the K - 1 free weights."""
        n_components = params.means.shape[0]
        return (
            self.covariance.n_parameters(n_components, n_features)
            + n_components * n_features
            + n_components
            - 1
        )

    def row_outputs(self, params: GMMParams, X: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-row ``labels``, ``responsibilities`` and ``log_density`` of one slab, from one E-step."""
        return mixture.row_outputs(X, params, self.covariance, names)


@dataclass(frozen=True)
class KMeansFamily:
    """Lloyd's algorithm as EM with one-hot responsibilities and identity covariances."""

    # The inertia reported is that of the returned centres: on convergence the engine keeps the
    # centres it just scored; after ``max_iter`` it scores the final centres in one more pass.
    reports_objective_of_returned_params = True
    # Centres are the parameters: starting from them needs no pass over the data.
    starts_from_center_stats = False

    def chunk_stats(self, X: np.ndarray, params: KMeansParams, weights: np.ndarray | None = None) -> SuffStats:
        """Assignment step on one slab (rows weighted when given): counts, sums around the centres, inertia."""
        return nearest.hard_chunk_stats(X, params.centers, weights=weights)

    def from_centers(self, centers: np.ndarray, stats: SuffStats | None = None) -> KMeansParams:
        """The centres themselves."""
        return KMeansParams(np.asarray(centers, dtype=np.float64))

    def update(self, stats: SuffStats, params: KMeansParams) -> KMeansParams:
        """Each centre moves to the mean of its rows; a centre that lost all rows stays where it was
        (``reseed`` moves it)."""
        return KMeansParams(params.centers + stats.mean_offsets)

    def reseed(self, stats: SuffStats, params: KMeansParams, done: int):
        """Lloyd's update with empty clusters re-seeded, and a line per re-seed; None if none is."""
        return reseeding.reseed_kmeans(self, stats, params, done)
    def shifted(self, stats: SuffStats, old: KMeansParams, new: KMeansParams) -> SuffStats:
        """Statistics taken around ``old``'s centres, moved to ``new``'s (stepwise k-means' running statistics)."""
        return stats.shifted(old.centers, new.centers)

    def objective(self, stats: SuffStats) -> float:
        """The inertia: summed squared distance of each row to its nearest centre."""
        return stats.objective

    def has_converged(self, previous: float, current: float, tol: float) -> bool:
        """The inertia changed by at most ``tol`` relative to its previous value."""
        return abs(previous - current) <= tol * abs(previous)

    def best(self, objectives: Sequence[float]) -> int:
        """Index of the best restart: the lowest inertia."""
        return int(np.argmin(objectives))

    def row_outputs(self, params: KMeansParams, X: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-row ``labels``, ``squared_distance`` and ``distances`` of one slab."""
        return nearest.row_outputs(X, params.centers, names)
