"""``KMeans``: Lloyd's algorithm on the same engine as the mixtures, with hard assignments."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from daskem.data.checks import as_row_blocks, check_shape
from daskem.engine.em import run_em
from daskem.engine.per_row import apply_rows
from daskem.kernels import nearest
from daskem.kernels.draws import seeds_from
from daskem.models.families import KMeansFamily, KMeansParams
from daskem.models.initialization.seeding import kmeans_initial_centers
from daskem.models.parameters import SHARED_PARAMETER_CONSTRAINTS, Choices, new_run_id

INIT_METHODS = ("k-means||", "k-means++", "random")


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means fitted by Lloyd's algorithm over the chunks of a Dask array.

    ``tol`` is the convergence threshold on the relative change of the inertia between two
    iterations (not scikit-learn's centre shift). ``init`` is one of:

    - "k-means||" (default, Bahmani et al. 2012, see :mod:`daskem.models.initialization.kmeans_parallel`): a uniformly
      drawn first centre, then ``init_rounds`` rounds that each draw about
      ``oversampling_factor * n_clusters`` candidate rows with probability proportional to their
      squared distance to the candidates so far, then weighted k-means++ and Lloyd on the candidates
      on the client. ``init_rounds + 1`` passes over the data, whatever its size;
    - "k-means++": seeded on a uniform sample of at most ``init_sample_size`` rows (one pass);
    - "random": distinct rows drawn uniformly (one pass);
    - an array of initial centres.

    Every draw is keyed by the seed and the global row index, so the result does not depend on
    the chunking or the cluster. ``n_init`` restarts advance together, one read of the data per
    pass for all (initialization included), and the lowest inertia wins. ``inertia_`` is the
    inertia of the returned centres.
    """

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [Choices(INIT_METHODS), "array-like"],
        **SHARED_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means||",
        n_init=1,
        max_iter=300,
        tol=1e-4,
        random_state=None,
        fan_in=8,
        init_sample_size=100_000,
        oversampling_factor=2.0,
        init_rounds=5,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.fan_in = fan_in
        self.init_sample_size = init_sample_size
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds

    def fit(self, X, y=None):
        """Fit the centres to ``X`` (NumPy or a Dask array chunked along rows)."""
        self._validate_params()
        X = as_row_blocks(X, min_rows=self.n_clusters, what="n_clusters")
        explicit = not isinstance(self.init, str)
        if explicit:
            check_shape(self.init, (self.n_clusters, X.shape[1]), "init")
        run_id = new_run_id("kmeans")
        seeds = seeds_from(self.random_state, 1 if explicit else self.n_init)
        starts = kmeans_initial_centers(X, self.n_clusters, self.init, seeds, sample_size=self.init_sample_size,
                                        name=f"{run_id}-init", fan_in=self.fan_in,
                                        oversampling_factor=self.oversampling_factor, n_rounds=self.init_rounds)
        labels = [f"k-means restart {i}" for i in range(len(starts))] if len(starts) > 1 else ["k-means"]
        results = run_em(X, [KMeansFamily()] * len(starts), [KMeansParams(c) for c in starts],
                         max_iter=self.max_iter, tol=self.tol, run_id=run_id, fan_in=self.fan_in, labels=labels)
        best = min(results, key=lambda result: result.objective)
        self.cluster_centers_ = best.params.centers
        self.inertia_ = float(best.objective)
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.history_ = list(best.history)
        self.iteration_seconds_ = list(best.seconds)
        self.n_features_in_ = X.shape[1]
        if not self.converged_:
            warnings.warn(
                f"KMeans did not converge in {self.max_iter} iterations (tol={self.tol}): raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_predict(self, X, y=None):
        """Fit, then label ``X`` with the fitted centres (lazy for Dask input)."""
        return self.fit(X).predict(X)

    def _apply(self, X, kernel, columns, dtype):
        check_is_fitted(self, "cluster_centers_")
        return apply_rows(X, kernel, self.cluster_centers_, n_features=self.n_features_in_,
                          columns=columns, dtype=dtype)

    def predict(self, X):
        """Index of the nearest centre for each row."""
        return self._apply(X, _nearest_rows, None, np.int64)

    def transform(self, X):
        """Euclidean distance of each row to each centre."""
        return self._apply(X, nearest.kmeans_transform, self.n_clusters, np.float64)

    def score(self, X, y=None) -> float:
        """Opposite of the inertia of ``X`` under the fitted centres (computed now)."""
        squared = self._apply(X, _squared_distance_rows, None, np.float64)
        return -float(np.asarray(squared.sum()))


def _nearest_rows(rows, centers):
    return nearest.nearest_center(rows, centers)[0]


def _squared_distance_rows(rows, centers):
    return nearest.nearest_center(rows, centers)[1]
