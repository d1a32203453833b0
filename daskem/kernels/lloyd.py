"""Lloyd's statistics of one slab in one compiled pass over its rows (numba), for a few centres.

The NumPy kernel reads each tile six or seven times (centring copy, distance GEMM, argmin, counts,
sums, inertia); this loop reads each row once, from the slab's own dtype, and keeps its centred
copy, its distances and its sums in registers and cache. For each row ``y = x - reference``:
``||c_k||^2 - 2 y.c_k`` for every centre (four centres per sweep of ``y``), the lowest (lowest index
on ties), then the float64 sums ``y`` into that centre, its count and the clipped squared distance.
The distance products are a dot product per centre, so their cost grows as K D; past
``COMPILED_COMPONENTS`` centres a BLAS GEMM is faster and the NumPy kernel runs instead (see
``nearest.hard_chunk_stats``). Compiled once and cached on disk (``kernels.compiled``).
"""

from __future__ import annotations

import numpy as np

from daskem.kernels.compiled import compiled

# Most centres for which the compiled loop beats the GEMM kernel (measured: 2.6x faster at K = 16,
# D = 32; 1.3x at K = 64; slower from K = 128 at D = 32).
COMPILED_COMPONENTS = 64
# Slab dtypes the loop runs on (every store is read as one of them); others take the NumPy kernel.
COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@compiled
def lloyd_sums(X, reference, centred, norms, weights, sums, nk, y) -> float:
    """Add each row of ``X`` to its nearest centre in ``sums`` (K, D) and ``nk`` (K,), float64 and in
    place, with ``weights`` (n,) or None; return the (weighted) sum of squared distances.
    ``centred`` are the centres less ``reference``, ``norms`` their squared norms; ``y`` (D,) float64
    is the loop's work row."""
    n_rows, n_features = X.shape
    n_components = norms.shape[0]
    by_four = n_components - n_components % 4
    inertia = 0.0
    for i in range(n_rows):
        for d in range(n_features):
            y[d] = np.float64(X[i, d]) - reference[d]
        squared_norm = 0.0
        for d in range(n_features):  # a sum in a loop of its own, with no store (see kernels.compiled)
            squared_norm += y[d] * y[d]
        best, lowest = 0, np.inf
        for k in range(0, by_four, 4):  # four dot products per sweep of y: y is loaded once for them
            dot0 = dot1 = dot2 = dot3 = 0.0
            for d in range(n_features):
                dot0 += y[d] * centred[k, d]
                dot1 += y[d] * centred[k + 1, d]
                dot2 += y[d] * centred[k + 2, d]
                dot3 += y[d] * centred[k + 3, d]
            for j, dot in enumerate((dot0, dot1, dot2, dot3)):
                partial = norms[k + j] - 2.0 * dot
                if partial < lowest:
                    best, lowest = k + j, partial
        for k in range(by_four, n_components):
            dot = 0.0
            for d in range(n_features):
                dot += y[d] * centred[k, d]
            partial = norms[k] - 2.0 * dot
            if partial < lowest:
                best, lowest = k, partial
        weight = 1.0 if weights is None else weights[i]
        inertia += weight * max(lowest + squared_norm, 0.0)
        nk[best] += weight
        for d in range(n_features):
            sums[best, d] += weight * y[d]
    return inertia
