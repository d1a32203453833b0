"""Model families: what a slab contributes (chunk statistics) and how totals become parameters.

A family is a small frozen object that the engine drives without knowing which model it fits:
``chunk_stats(X, params)`` runs on the workers, ``m_step(stats, params)`` on the client. The
Gaussian mixture delegates everything that depends on the covariance type to a covariance object;
k-means is the same engine with hard assignments and no second moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskem.kernels.covariance.base import CovarianceType
from daskem.kernels.mixture import gmm_chunk_stats
from daskem.kernels.nearest import hard_chunk_stats
from daskem.kernels.stats import SuffStats

# scikit-learn adds this to every component's count so that empty components do not divide by 0.
COUNT_EPSILON = 10 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class GMMParams:
    """Parameters of a Gaussian mixture; precision Cholesky factors are kept so the E-step never inverts."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


@dataclass(frozen=True)
class KMeansParams:
    """Parameters of k-means: the centres."""

    centers: np.ndarray


@dataclass(frozen=True)
class GaussianMixtureFamily:
    """EM for a Gaussian mixture with the given covariance type and covariance regularization."""

    covariance: CovarianceType
    reg_covar: float

    # The objective reported for a fit is that of the last E-step, before the final M-step, as in
    # scikit-learn's ``lower_bound_``; no extra pass scores the returned parameters.
    scores_returned_params = False

    def chunk_stats(self, X: np.ndarray, params: GMMParams) -> SuffStats:
        """E-step on one slab: statistics shifted by the current means."""
        return gmm_chunk_stats(X, params.weights, params.means, params.precisions_cholesky, self.covariance)

    def hard_chunk_stats(self, X: np.ndarray, centers: np.ndarray) -> SuffStats:
        """Statistics of one slab under nearest-centre assignments (initialization from k-means)."""
        return hard_chunk_stats(X, centers, self.covariance)

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

    def objective(self, stats: SuffStats) -> float:
        """Mean log-likelihood per row."""
        return stats.objective / stats.n_samples

    def has_converged(self, previous: float, current: float, tol: float) -> bool:
        """scikit-learn's rule: the mean log-likelihood changed by less than ``tol``."""
        return abs(current - previous) < tol

    def n_parameters(self, n_features: int, params: GMMParams) -> int:
        """Free parameters: covariances, means and the K - 1 free weights."""
        n_components = params.means.shape[0]
        return (
            self.covariance.n_parameters(n_components, n_features)
            + n_components * n_features
            + n_components
            - 1
        )


@dataclass(frozen=True)
class KMeansFamily:
    """Lloyd's algorithm as EM with one-hot responsibilities and identity covariances."""

    # The inertia reported is that of the returned centres: on convergence the engine keeps the
    # centres it just scored; after ``max_iter`` it scores the final centres in one more pass.
    scores_returned_params = True

    def chunk_stats(self, X: np.ndarray, params: KMeansParams) -> SuffStats:
        """Assignment step on one slab: counts, sums around the current centres, inertia."""
        return hard_chunk_stats(X, params.centers)

    def update(self, stats: SuffStats, params: KMeansParams) -> KMeansParams:
        """Each centre moves to the mean of its rows; a centre that lost all rows stays where it was."""
        return KMeansParams(params.centers + stats.mean_offsets)

    def objective(self, stats: SuffStats) -> float:
        """The inertia: summed squared distance of each row to its nearest centre."""
        return stats.objective

    def has_converged(self, previous: float, current: float, tol: float) -> bool:
        """The inertia changed by at most ``tol`` relative to its previous value."""
        return abs(previous - current) <= tol * abs(previous)
