"""A toy fifth covariance type, ``scalar``: one variance shared by every component and feature.

It shows what a new type costs (this one class, plus one ``register`` line) and lets the shared
covariance suite run over a type that scikit-learn does not know.
"""

from __future__ import annotations

import numpy as np

from daskem.kernels.covariance import VarianceCovariance


class ScalarCovariance(VarianceCovariance):
    """``sigma^2 I`` for every component: the variance pooled over all components and features."""

    name = "scalar"

    def covariances_shape(self, n_components, n_features):
        return ()

    def n_parameters(self, n_components, n_features):
        return 1

    def _pool(self, per_component):
        return per_component.sum()

    def _expand(self, values, n_components, n_features):
        return np.broadcast_to(values, (n_components, n_features))

    def _describe(self, index, noun):
        return f"the shared {noun}"

    def log_det_cholesky(self, precisions_cholesky, n_features):
        """A 0-d value, as for ``tied``: the one factor ``p`` stands for ``p I`` in every component."""
        return n_features * np.log(np.asarray(precisions_cholesky, dtype=np.float64))
