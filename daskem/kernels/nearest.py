"""k-means kernels: nearest centres, hard-assignment statistics and distances, tile by tile.

One path serves every caller (Lloyd's statistics, k-means|| draws and weights, ``predict``,
``transform``, ``score``): rows and centres are centred at the mean of the centres, the distances of
a tile to every centre come from one GEMM, and the nearest centre is their argmin (lowest index on
ties). Pure NumPy; every function accepts an empty slab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from daskem.kernels.covariance.base import CovarianceType
from daskem.kernels.lloyd import COMPILED_COMPONENTS, COMPILED_DTYPES, lloyd_sums
from daskem.kernels.mixture import SlabSums, tile_weights
from daskem.kernels.stats import SuffStats
from daskem.kernels.tiles import CentredRows, tile_rows, tiles


@dataclass(frozen=True)
class PreparedCenters:
    """Centres prepared once per slab: the reference, the centred centres, ``-2 C^T`` and ``||c_k||^2``."""

    reference: np.ndarray
    centred: np.ndarray
    minus_twice_transposed: np.ndarray
    norms: np.ndarray

    @classmethod
    def of(cls, centers: np.ndarray) -> "PreparedCenters":
        centers = np.asarray(centers, dtype=np.float64)
        reference = centers.mean(axis=0)
        centred = centers - reference
        return cls(reference, centred, -2.0 * centred.T, np.einsum("kd,kd->k", centred, centred))

    def partial_distances(self, rows: CentredRows) -> np.ndarray:
        """(n, K) ``||c_k||^2 - 2 y.c_k``: the squared distances minus ``||y||^2``, in a work buffer."""
        distances = np.matmul(rows.values, self.minus_twice_transposed,
                              out=rows.take("distances", (rows.n_rows, len(self.norms))))
        distances += self.norms
        return distances

    def tiles(self, X: np.ndarray, cov: CovarianceType | None = None) -> Iterator[tuple[int, CentredRows, np.ndarray, np.ndarray]]:
        """``(offset, rows, labels, partial distances)`` per tile of the slab, sized for the distances
        and, given ``cov``, for that type's products (see ``tile_rows``). The distance GEMM alone is
        not cut to BLAS's small-product bound: argmin and sums dominate the tile, and k-means measured
        no faster for it (K = 80 to 300)."""
        n_components, n_features = self.centred.shape
        n_rows = tile_rows(n_components) if cov is None else cov.tile_rows(n_components, n_features)
        for offset, rows in tiles(X, self.reference, n_rows):
            distances = self.partial_distances(rows)
            yield offset, rows, distances.argmin(axis=1), distances


def nearest_tiles(X: np.ndarray, centers: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(offset, labels, squared distances)`` per tile: each row's nearest centre and its exact squared
    distance (from the difference ``x_i - c_label``, not the GEMM, so it is exact on offset data)."""
    prepared = PreparedCenters.of(centers)
    for offset, rows, labels, _ in prepared.tiles(X):
        differences = rows.values - prepared.centred[labels]
        yield offset, labels.astype(np.int64), np.einsum("nd,nd->n", differences, differences)


def nearest_center(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int64 index of each row's nearest centre (lowest on ties) and its exact squared distance."""
    labels, squared = np.empty(X.shape[0], dtype=np.int64), np.empty(X.shape[0])
    for offset, tile_labels, tile_squared in nearest_tiles(X, centers):
        labels[offset : offset + len(tile_labels)] = tile_labels
        squared[offset : offset + len(tile_labels)] = tile_squared
    return labels, squared


def hard_chunk_stats(X: np.ndarray, centers: np.ndarray, cov: CovarianceType | None = None,
                     weights: np.ndarray | None = None) -> SuffStats:
    """k-means statistics of one slab: one-hot nearest-centre responsibilities, shifted by ``centers``.

    The objective is the inertia; ``s2`` is filled only when ``cov`` is given (to start a GMM from
    k-means labels). Each row counts ``weights[i]`` times when weights are given (an integer weight
    is the row repeated). Lloyd's statistics for a few centres come from one compiled pass
    (``lloyd.lloyd_sums``); otherwise the counts and sums come from the distance GEMM's assignments.
    """
    prepared = PreparedCenters.of(centers)
    if cov is None and len(prepared.norms) <= COMPILED_COMPONENTS and X.dtype in COMPILED_DTYPES:
        return _compiled_stats(X, prepared, weights)
    sums = SlabSums(cov, prepared.centred)
    for start, rows, labels, distances in prepared.tiles(X, cov):
        sums.add_nearest(rows, labels, distances[np.arange(rows.n_rows), labels], tile_weights(weights, start, rows))
    return sums.stats()


def _compiled_stats(X: np.ndarray, prepared: PreparedCenters, weights: np.ndarray | None) -> SuffStats:
    """``hard_chunk_stats`` without second moments, from ``lloyd_sums`` (the same shifted sums)."""
    sums, nk = np.zeros(prepared.centred.shape), np.zeros(len(prepared.norms))
    if weights is not None:
        weights = np.ascontiguousarray(weights, dtype=np.float64)
    inertia = lloyd_sums(X, prepared.reference, prepared.centred, prepared.norms, weights, sums, nk,
                         np.empty(X.shape[1]))
    n_samples = X.shape[0] if weights is None else float(weights.sum())
    return SuffStats(n_samples, float(inertia), nk, sums - nk[:, None] * prepared.centred, None)


def kmeans_transform(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, K) Euclidean distance from each row to each centre."""
    prepared = PreparedCenters.of(centers)
    out = np.empty((X.shape[0], len(prepared.norms)))
    for offset, rows, _, distances in prepared.tiles(X):
        distances += rows.norms[:, None]
        np.sqrt(np.maximum(distances, 0.0, out=distances), out=out[offset : offset + rows.n_rows])
    return out


# The per-row outputs ``row_outputs`` can compute, all from one distance GEMM per tile.
ROW_OUTPUTS = ("labels", "squared_distance", "distances")


def row_outputs(X: np.ndarray, centers: np.ndarray, names) -> dict[str, np.ndarray]:
    """The per-row outputs ``names`` of one slab: ``labels`` (n,) nearest centre, ``squared_distance``
    (n,) exact squared distance to it, ``distances`` (n, K) Euclidean distance to every centre."""
    names = tuple(names)
    unknown = set(names) - set(ROW_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown per-row outputs {sorted(unknown)}; known: {', '.join(ROW_OUTPUTS)}")
    out = {}
    if "labels" in names or "squared_distance" in names:
        labels, squared = nearest_center(X, centers)
        out.update(labels=labels, squared_distance=squared)
    if "distances" in names:
        out["distances"] = kmeans_transform(X, centers)
    return {name: out[name] for name in names}
