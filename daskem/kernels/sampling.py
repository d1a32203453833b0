"""Rows drawn from a fitted mixture, keyed by (seed, global row): the same whatever the chunking.

Row i's component comes from one uniform of stream ``COMPONENT_STREAM`` (inverse CDF of the
weights) and its D standard normals from ``NORMAL_STREAM`` (inverse normal CDF), both keyed by the
seed and i alone (``kernels.draws.row_uniforms``): any slab of rows can be drawn by any task, and a
task recomputed after a lost worker draws the same bits.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from daskem.kernels.covariance.base import CovarianceType
from daskem.kernels.draws import row_uniforms
from daskem.kernels.params import GMMParams

# Random streams of row_uniforms used by sampling (the initialization uses 1, 2 and 1000 on).
COMPONENT_STREAM = 500
NORMAL_STREAM = 501


def mixture_rows(params: GMMParams, cov: CovarianceType, seed: int, row_start: int,
                 n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``row_start .. row_start + n_rows - 1`` of the sample of seed ``seed``: ``(X (n, D)
    float64, component (n,) int32)``."""
    weights = np.asarray(params.weights, dtype=np.float64)
    n_features = params.means.shape[1]
    cumulative = np.cumsum(weights / weights.sum())
    u = row_uniforms(seed, COMPONENT_STREAM, row_start, n_rows)[:, 0]
    components = np.minimum(np.searchsorted(cumulative, u, side="right"), len(weights) - 1).astype(np.int32)
    uniforms = row_uniforms(seed, NORMAL_STREAM, row_start, n_rows, n_features)
    normals = ndtri(np.maximum(uniforms, 2.0**-54))  # in (0, 1): no infinite normal
    return cov.from_normals(normals, params.means, params.covariances, components), components
