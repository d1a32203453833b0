"""Sufficient statistics: the one value that crosses from chunk kernels to the M-step.

A chunk kernel turns a slab of rows into a ``SuffStats``; the cluster adds them up in a tree;
the M-step reads the total. Sums are shifted by a per-component centre ``c_k`` (the previous
means), identical for every chunk, so merging is plain addition and covariances computed from
the total do not suffer the cancellation of raw-moment formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class SuffStats:
    """Shifted, float64 sufficient statistics of some rows for a K-component model.

    n_samples : number of rows summarized.
    objective : summed log-likelihood (GMM) or summed squared distance, the inertia (k-means).
    nk        : (K,) summed responsibilities.
    s1        : (K, D) sum_i r_ik (x_i - c_k).
    s2        : second moments around ``c_k``; its shape is set by the covariance type
                ((K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical), or None (k-means).
    """

    n_samples: int
    objective: float
    nk: np.ndarray
    s1: np.ndarray
    s2: np.ndarray | None = None

    @classmethod
    def zeros(cls, n_components: int, n_features: int, s2_shape: tuple[int, ...] | None = None) -> "SuffStats":
        """The neutral element of ``+``: statistics of zero rows."""
        s2 = None if s2_shape is None else np.zeros(s2_shape)
        return cls(0, 0.0, np.zeros(n_components), np.zeros((n_components, n_features)), s2)

    def __add__(self, other: "SuffStats") -> "SuffStats":
        if not isinstance(other, SuffStats):
            return NotImplemented
        if self.nk.shape != other.nk.shape or self.s1.shape != other.s1.shape:
            raise ValueError(
                f"cannot merge statistics of shapes {self.s1.shape} and {other.s1.shape}: "
                "they come from models with different numbers of components or features"
            )
        if (self.s2 is None) != (other.s2 is None):
            raise ValueError("cannot merge statistics with and without second moments")
        s2 = None if self.s2 is None else self.s2 + other.s2
        return SuffStats(
            self.n_samples + other.n_samples,
            self.objective + other.objective,
            self.nk + other.nk,
            self.s1 + other.s1,
            s2,
        )

    def scaled(self, factor: float) -> "SuffStats":
        """Every sum times ``factor`` (``n_samples`` too): the statistics of rows weighted by ``factor``."""
        s2 = None if self.s2 is None else self.s2 * factor
        return SuffStats(self.n_samples * factor, self.objective * factor, self.nk * factor, self.s1 * factor, s2)

    def shifted(self, old_shift: np.ndarray, new_shift: np.ndarray, covariance=None) -> "SuffStats":
        """The same statistics around ``new_shift`` instead of ``old_shift`` (both (K, D)), exactly:
        ``s1' = s1 + nk (c - c')`` and ``s2`` likewise by ``covariance.shifted_second_moments`` (the
        type that pooled it); the objective does not depend on the shift."""
        delta = np.asarray(old_shift, dtype=np.float64) - np.asarray(new_shift, dtype=np.float64)
        s1 = self.s1 + self.nk[:, None] * delta
        s2 = None if self.s2 is None else covariance.shifted_second_moments(self.s2, self.nk, self.s1, delta)
        return SuffStats(self.n_samples, self.objective, self.nk, s1, s2)

    @property
    def mean_offsets(self) -> np.ndarray:
        """(K, D) weighted mean minus shift, ``s1 / nk``; rows of empty components are 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            offsets = self.s1 / self.nk[:, None]
        return np.where(self.nk[:, None] > 0, offsets, 0.0)


def merge_all(stats: Iterable[SuffStats]) -> SuffStats:
    """Sum an iterable of statistics (at least one); associative, so any tree order gives the same total."""
    return reduce(lambda a, b: a + b, stats)


def merge_candidates(groups: Iterable[tuple[SuffStats, ...]]) -> tuple[SuffStats, ...]:
    """Merge per-slab tuples of statistics (one entry per candidate model) entry by entry."""
    return tuple(merge_all(column) for column in zip(*groups, strict=True))
