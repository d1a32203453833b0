"""k-means kernels: nearest centres, hard-assignment statistics, distances; pure NumPy."""

from __future__ import annotations

import numpy as np

from daskem.kernels.covariance.base import CovarianceType
from daskem.kernels.mixture import _row_blocks, _weighted_stats
from daskem.kernels.stats import SuffStats


def nearest_center(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int64 index of each row's nearest centre (lowest on ties) and its exact squared distance."""
    labels, differences = _assign(X, centers)
    return labels, np.einsum("nd,nd->n", differences, differences)



def hard_chunk_stats(X: np.ndarray, centers: np.ndarray, cov: CovarianceType | None = None) -> SuffStats:
    """k-means statistics of one slab: one-hot nearest-centre responsibilities, shifted by ``centers``.

    The objective is the inertia; ``s2`` is filled only when ``cov`` is given (to start a GMM from
    k-means labels). Distances come from one GEMM per block on rows centred at the mean of the
    centres, and the counts and sums from one product with the one-hot assignments.
    """
    centers = np.asarray(centers, dtype=np.float64)
    n_components, n_features = centers.shape
    reference = centers.mean(axis=0)
    centred_centers = centers - reference
    scaled_centers = -2.0 * centred_centers.T
    center_norms = np.einsum("kd,kd->k", centred_centers, centred_centers)
    components = np.arange(n_components)
    total = SuffStats.zeros(n_components, n_features, None if cov is None else cov.s2_shape(n_components, n_features))
    for rows in _row_blocks(X, reference):
        distances = np.matmul(rows.values, scaled_centers, out=rows.take("distances", (rows.n_rows, n_components)))
        distances += center_norms
        labels = distances.argmin(axis=1)
        nearest = distances[np.arange(rows.n_rows), labels] + rows.norms
        one_hot = rows.take("one_hot", (rows.n_rows, n_components))
        np.equal(labels[:, None], components, out=one_hot, casting="unsafe")
        inertia = float(np.maximum(nearest, 0.0).sum())
        total = total + _weighted_stats(rows, one_hot, centred_centers, inertia, cov)
    return total



def kmeans_transform(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, K) Euclidean distance from each row to each centre."""
    return np.sqrt(_squared_distances(*_centred(X, centers)))



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

