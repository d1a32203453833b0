"""Chunk kernels: pure functions of one slab of rows and the current parameters.

Each kernel runs inside one Dask task, so it never imports dask. ``X`` may be float32 or float64;
everything is computed and accumulated in float64. Every kernel accepts an empty slab (n == 0)
and returns correctly shaped zeros or empties, so empty chunks merge as the neutral element.
"""

from __future__ import annotations

import numpy as np

from daskem.covariance import CovarianceType
from daskem.stats import SuffStats


def estimate_log_resp(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: np.ndarray,
    cov: CovarianceType,
) -> tuple[np.ndarray, np.ndarray]:
    """E-step on one slab: (n,) log p(x_i) and (n, K) log responsibilities, by log-sum-exp."""
    weighted = _weighted_log_prob(X, weights, means, precisions_cholesky, cov)
    log_norm = _logsumexp_rows(weighted)
    return log_norm, weighted - log_norm[:, None]


def gmm_chunk_stats(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: np.ndarray,
    cov: CovarianceType,
) -> SuffStats:
    """E-step and sufficient statistics of one slab, shifted by the current ``means``."""
    X = np.asarray(X, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    log_norm, log_resp = estimate_log_resp(X, weights, means, precisions_cholesky, cov)
    resp = np.exp(log_resp)
    nk = resp.sum(axis=0)
    # s1 = sum_i r_ik (x_i - mu_k) around the mean of the means: a large common offset is removed
    # before the product, where resp.T @ X - nk * means would cancel it catastrophically.
    reference = means.mean(axis=0)
    s1 = resp.T @ (X - reference) - nk[:, None] * (means - reference)
    return SuffStats(X.shape[0], float(log_norm.sum()), nk, s1, cov.chunk_s2(X, resp, means))


def nearest_center(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int64 index of each row's nearest centre (lowest on ties) and its exact squared distance."""
    labels, differences = _assign(X, centers)
    return labels, np.einsum("nd,nd->n", differences, differences)


def hard_chunk_stats(X: np.ndarray, centers: np.ndarray, cov: CovarianceType | None = None) -> SuffStats:
    """k-means statistics of one slab: one-hot nearest-centre responsibilities, shifted by ``centers``.

    The objective is the inertia; ``s2`` is filled only when ``cov`` is given (to start a GMM from
    k-means labels).
    """
    X = np.asarray(X, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    n_components, n_features = centers.shape
    labels, differences = _assign(X, centers)
    nk = np.bincount(labels, minlength=n_components).astype(np.float64)
    s1 = np.zeros((n_components, n_features))
    for feature in range(n_features):
        s1[:, feature] = np.bincount(labels, weights=differences[:, feature], minlength=n_components)
    inertia = float(np.einsum("nd,nd->", differences, differences))
    s2 = None
    if cov is not None:
        one_hot = (labels[:, None] == np.arange(n_components)).astype(np.float64)
        s2 = cov.chunk_s2(X, one_hot, centers)
    return SuffStats(X.shape[0], inertia, nk, s1, s2)


def gmm_predict(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: np.ndarray,
    cov: CovarianceType,
) -> np.ndarray:
    """(n,) int64 most probable component of each row."""
    weighted = _weighted_log_prob(X, weights, means, precisions_cholesky, cov)
    return np.argmax(weighted, axis=1).astype(np.int64)


def gmm_predict_proba(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: np.ndarray,
    cov: CovarianceType,
) -> np.ndarray:
    """(n, K) posterior probability of each component for each row."""
    return np.exp(estimate_log_resp(X, weights, means, precisions_cholesky, cov)[1])


def gmm_score_samples(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: np.ndarray,
    cov: CovarianceType,
) -> np.ndarray:
    """(n,) log-likelihood of each row under the mixture."""
    return estimate_log_resp(X, weights, means, precisions_cholesky, cov)[0]


def kmeans_transform(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, K) Euclidean distance from each row to each centre."""
    return np.sqrt(_squared_distances(*_centred(X, centers)))


def _weighted_log_prob(X, weights, means, precisions_cholesky, cov: CovarianceType) -> np.ndarray:
    """(n, K) log N(x_i; mu_k, Sigma_k) + log w_k; a zero weight gives -inf, not a warning."""
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.asarray(weights, dtype=np.float64))
    return cov.log_prob(X, means, precisions_cholesky) + log_weights


def _logsumexp_rows(values: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(values))), shifted by each row's maximum; same values as
    scipy.special.logsumexp(values, axis=1) but about 3x faster on (n, K) arrays."""
    peak = values.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)  # a row of -inf stays -inf instead of NaN
    with np.errstate(divide="ignore", under="ignore"):
        return np.log(np.exp(values - peak).sum(axis=1)) + peak[:, 0]


def _centred(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and centres in float64, both minus the mean of the centres (keeps offset data accurate)."""
    centers = np.asarray(centers, dtype=np.float64)
    reference = centers.mean(axis=0)
    return np.asarray(X, dtype=np.float64) - reference, centers - reference


def _squared_distances(centred_X: np.ndarray, centred_centers: np.ndarray) -> np.ndarray:
    """(n, K) squared Euclidean distances by one GEMM, clipped at 0 against rounding."""
    distances = (
        np.einsum("nd,nd->n", centred_X, centred_X)[:, None]
        - 2.0 * (centred_X @ centred_centers.T)
        + np.einsum("kd,kd->k", centred_centers, centred_centers)
    )
    return np.maximum(distances, 0.0)


def _assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-centre labels (argmin keeps the lowest index on ties) and exact differences x_i - c_label."""
    X = np.asarray(X, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    labels = np.argmin(_squared_distances(*_centred(X, centers)), axis=1).astype(np.int64)
    return labels, X - centers[labels]
