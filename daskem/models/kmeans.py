"""``KMeans``: Lloyd's algorithm on the same engine as the mixtures, with hard assignments."""

from __future__ import annotations

import warnings
from functools import partial
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from daskem.data.checks import as_row_blocks, check_features, check_fitted_arrays
from daskem.engine.per_row import apply_rows
from daskem.engine.reduction import new_run_id, pass_count
from daskem.models.families import KMeansFamily, KMeansParams
from daskem.models.fitting import (
    best_restart,
    close_checkpoint,
    checked_weights,
    fit_restarts,
    open_checkpoint,
    partial_fit_update,
    stepwise_spec,
    weighted_params,
)
from daskem.models.initialization import Candidate, ExplicitStart, InitSpec
from daskem.models.parameters import SHARED_PARAMETER_CONSTRAINTS, Choices

# ``init`` choices and the seeding each one names (see ``daskem.models.initialization``).
INIT_METHODS = {
    "k-means||": "k-means||",
    "k-means++": "k-means++",
    "random": "random_rows",
}


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means fitted by Lloyd's algorithm over the chunks of a Dask array.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random"} or array of shape (n_clusters, n_features), default="k-means||"
        "k-means||" (Bahmani et al. 2012, see :mod:`daskem.models.initialization.kmeans_parallel`):
        a uniformly drawn first centre, then ``init_rounds`` rounds that each draw about
        ``oversampling_factor * n_clusters`` candidate rows with probability proportional to their
        squared distance to the candidates so far, then weighted k-means++ and Lloyd on the
        candidates on the client: ``init_rounds + 1`` passes over the data, whatever its size.
        "k-means++": seeded on a uniform sample of at most ``init_sample_size`` rows (one pass).
        "random": distinct rows drawn uniformly (one pass). An array: the initial centres.
    n_init : int, default=1
        Restarts; they advance together, one read of the data per pass for all (initialization
        included), and the lowest inertia wins.
    max_iter : int, default=300
        Maximum number of Lloyd iterations (one pass over the data each).
    tol : float, default=1e-4
        Convergence threshold on the relative change of the inertia between two iterations (not
        scikit-learn's centre shift).
    random_state : int, RandomState instance or None, default=None
        Seeds every random draw; draws are keyed by the seed and the global row index, so the fit
        does not depend on the chunking or the cluster.
    fan_in : int, default=8
        (daskem) Partial statistics merged per reduction task.
    init_sample_size : int, default=100_000
        (daskem) Rows sampled, in one pass, to seed "k-means++".
    oversampling_factor : float, default=2.0
        (daskem) k-means||: about ``oversampling_factor * n_clusters`` candidates drawn per round.
    init_rounds : int, default=5
        (daskem) k-means||: rounds of candidate draws, one pass over the data each.
    algorithm, max_passes, steps_per_pass, learning_offset, learning_decay
        (daskem) As in :class:`daskem.GaussianMixture`: "stepwise" runs stepwise k-means, the centres
        updated after every group of slabs (defaults "batch", 2, 10, 2.0, 0.7).
    warm_start : bool, default=False
        A refit starts from the last fit's centres, with one initialization (as scikit-learn's
        ``GaussianMixture`` does).
    checkpoint : str or None, default=None
        (daskem) Path (or fsspec URL) of a checkpoint file written after every pass; a fit of the
        same parameters on the same data resumes from it, bit for bit, and removes it when done.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    inertia_ : float
        Summed squared distance of each row to its nearest centre, for the returned centres.
    n_iter_ : int
    converged_ : bool
        (daskem) Whether ``tol`` was met before ``max_iter``.
    history_ : list of float
        (daskem) The inertia at every iteration.
    iteration_seconds_ : list of float
        (daskem) Wall-clock seconds of every iteration.
    n_passes_ : int
        (daskem) Reads of the data by the fit, initialization included.
    n_reseeded_ : int
        (daskem) Empty clusters re-seeded by splitting the largest one, each with a warning line.
    labels_ : ndarray or dask array of shape (n_samples,)
        Nearest centre of each row of the fitted data; for Dask input a lazy array (as in dask-ml),
        computed only when asked for (one more read of the data).
    n_features_in_ : int
    """

    # Fitted attributes with one value per fitted row: the data's, not the model's, so never saved.
    _per_row_attributes = ("labels_",)

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
        algorithm="batch",
        max_passes=2,
        steps_per_pass=10,
        learning_offset=2.0,
        learning_decay=0.7,
        warm_start=False,
        checkpoint=None,
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
        self.algorithm = algorithm
        self.max_passes = max_passes
        self.steps_per_pass = steps_per_pass
        self.learning_offset = learning_offset
        self.learning_decay = learning_decay
        self.warm_start = warm_start
        self.checkpoint = checkpoint

    def _start(self, n_features: int) -> tuple[Candidate, InitSpec]:
        """The parameters checked, and the model as a candidate to start with how to start it."""
        self._validate_params()
        warm = self.warm_start and hasattr(self, "cluster_centers_")
        explicit = self.cluster_centers_ if warm else (None if isinstance(self.init, str) else self.init)
        candidate = Candidate(KMeansFamily(), self.n_clusters,
                              ExplicitStart.of(self.n_clusters, n_features, means=explicit, means_name="init"))
        spec = InitSpec(INIT_METHODS.get(self.init) if explicit is None else None, self.random_state, self.n_init,
                        self.init_sample_size, self.oversampling_factor, self.init_rounds, self.fan_in)
        return candidate, spec

    def _set_fitted(self, result, n_features: int, passes) -> None:
        self.n_passes_ = pass_count(sum(passes.values()))
        self.cluster_centers_ = result.params.centers
        self.inertia_ = float(result.objective)
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.n_reseeded_ = result.reseeded
        self.history_ = list(result.history)
        self.iteration_seconds_ = list(result.seconds)
        self.n_features_in_ = n_features

    def fit(self, X, y=None, sample_weight=None):
        """Fit the centres to ``X`` (NumPy or a Dask array chunked along rows); ``sample_weight`` (one
        non-negative value per row, or one number) weighs the rows in every pass, as in scikit-learn."""
        self._validate_params()
        data, X = X, as_row_blocks(X, min_rows=self.n_clusters, what="n_clusters")
        weights, total = checked_weights(sample_weight, X)
        candidate, spec = self._start(X.shape[1])
        checkpoint, spec = open_checkpoint(self.checkpoint, "KMeans", weighted_params(self, weights, total), X, spec)
        outcome = fit_restarts(X, [candidate], spec, labels=["k-means"], max_iter=self.max_iter, tol=self.tol,
                               run_id=new_run_id("kmeans"), checkpoint=checkpoint, weights=weights,
                               stepwise=stepwise_spec(self, spec.random_state))
        self._set_fitted(best_restart(candidate, outcome.results[0]), X.shape[1], outcome.passes)
        self._stepwise_state = None
        self.labels_ = self.predict(data)  # lazy for Dask input, as in dask-ml
        close_checkpoint(self.checkpoint, checkpoint)
        if not self.converged_ and self.algorithm == "batch":
            warnings.warn(
                f"KMeans did not converge in {self.max_iter} iterations (tol={self.tol}): raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then label ``X`` with the fitted centres (lazy for Dask input)."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def partial_fit(self, X, y=None):
        """One stepwise update of the centres from the rows of ``X`` (as after one group of slabs of
        ``algorithm="stepwise"``, and like scikit-learn's ``MiniBatchKMeans.partial_fit``); the first
        call seeds the centres from ``X`` by ``init``. ``inertia_`` is then that of ``X`` before the update."""
        fitted = hasattr(self, "cluster_centers_")
        X = as_row_blocks(X, min_rows=1 if fitted else self.n_clusters, what="n_clusters")
        if fitted:
            check_features(X, self.n_features_in_, "KMeans")
        candidate, spec = self._start(X.shape[1])
        params = KMeansParams(self.cluster_centers_) if fitted else None
        history = list(self.history_) if fitted else []
        result, self._stepwise_state, passes = partial_fit_update(
            X, candidate, spec, params, getattr(self, "_stepwise_state", None), self,
            run_id=new_run_id("kmeans-partial"))
        self._set_fitted(result, X.shape[1], passes)
        self.history_ = history + result.history
        return self

    def row_kernel(self):
        """A picklable ``kernel(rows, names) -> {name: array}`` for the per-row outputs ``labels``,
        ``squared_distance`` and ``distances``."""
        check_is_fitted(self, "cluster_centers_")
        return partial(KMeansFamily().row_outputs, KMeansParams(self.cluster_centers_))

    def _apply(self, X, name, columns, dtype):
        return apply_rows(X, self.row_kernel(), name, n_features=self.n_features_in_, columns=columns, dtype=dtype,
                          model=type(self).__name__, column_dim="cluster")

    def predict(self, X):
        """Index of the nearest centre for each row."""
        return self._apply(X, "labels", None, np.int64)

    def transform(self, X):
        """Euclidean distance of each row to each centre."""
        return self._apply(X, "distances", self.n_clusters, np.float64)

    def score(self, X, y=None) -> float:
        """Opposite of the inertia of ``X`` under the fitted centres (computed now)."""
        return -float(np.asarray(self._apply(X, "squared_distance", None, np.float64).sum()))

    def check_fitted(self) -> None:
        """Raise a ValueError naming the attribute whose shape or values fitted k-means cannot have
        (for models read back from files)."""
        check_is_fitted(self, ["cluster_centers_", "n_features_in_"])
        check_fitted_arrays(self, {"cluster_centers_": (self.n_clusters, self.n_features_in_)})
