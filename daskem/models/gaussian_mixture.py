"""``GaussianMixture``: scikit-learn's estimator, fitted by EM over the chunks of a Dask array."""

from __future__ import annotations

import warnings
from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from daskem.data.checks import as_row_blocks, check_features, check_fitted_arrays
from daskem.engine.per_row import apply_rows
from daskem.engine.reduction import new_run_id, pass_count
from daskem.kernels.covariance import get_covariance_type
from daskem.kernels.draws import seeds_from
from daskem.kernels.sampling import mixture_rows
from daskem.models.families import (
    GaussianMixtureFamily,
    GMMParams,
    information_criteria,
)
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
from daskem.models.outliers import (
    check_offset,
    check_outlier_rule,
    contamination_threshold,
    has_outlier_threshold,
    log_density_bound,
    outlier_rows,
)
from daskem.models.parameters import SHARED_PARAMETER_CONSTRAINTS, Choices

# ``init_params`` choices and the start each one names (see ``daskem.models.initialization``).
INIT_PARAMS = {
    "kmeans": "sample_kmeans",
    "lloyd": "lloyd",
    "k-means||": "k-means||",
    "k-means++": "k-means++",
    "random": "random_responsibilities",
    "random_from_data": "random_rows",
}


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM; the data stays in its chunks, only statistics travel.

    Parameters mean what they mean in :class:`sklearn.mixture.GaussianMixture`; the differences
    and the parameters scikit-learn does not have are marked.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Any name in ``daskem.kernels.covariance.COVARIANCE_TYPES``.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood per row.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    max_iter : int, default=100
        Maximum number of EM iterations (one pass over the data each).
    n_init : int, default=1
        Restarts; they advance together, one read of the data per pass for all, and the best
        (highest lower bound) is kept.
    init_params : {"kmeans", "lloyd", "k-means||", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the initial parameters are found; the centres are then turned into initial parameters by
        one pass (the statistics of the rows nearest each centre). Passes over the data, in all:
        "kmeans": k-means (4 restarts) on a uniform sample of 256 rows per component (at most
        ``init_sample_size``), 2 passes (scikit-learn runs k-means on all the data). "lloyd":
        k-means by Lloyd's algorithm on all the data, seeded by k-means||
        (:mod:`daskem.models.initialization.kmeans_parallel`): ``init_rounds + 2`` passes plus one per
        Lloyd iteration. "k-means||" (not in scikit-learn): the k-means|| centres, without Lloyd,
        ``init_rounds + 2``. "k-means++" and "random_from_data": 2 (scikit-learn computes the initial
        covariances from the seed rows alone). "random": responsibilities drawn uniformly per row, 1
        (plus a read of the first row). Several ``n_components`` (``fit_candidates``) and restarts share
        these passes: the summary is drawn once, for the largest number of components.
    weights_init, means_init, precisions_init : array-like, default=None
        Explicit initial values; given means replace the ``init_params`` centres.
    random_state : int, RandomState instance or None, default=None
        Seeds every random draw; draws are keyed by the seed and the global row index, so the fit
        does not depend on the chunking or the cluster.
    fan_in : int, default=8
        (daskem) Partial statistics merged per reduction task.
    init_sample_size : int, default=100_000
        (daskem) Rows sampled, in one pass, to seed "k-means++"; at most this many for "kmeans".
    oversampling_factor : float, default=2.0
        (daskem) k-means||: about ``oversampling_factor * n_components`` candidates drawn per round.
    init_rounds : int, default=5
        (daskem) k-means||: rounds of candidate draws, one pass over the data each.
    algorithm : {"batch", "stepwise"}, default="batch"
        (daskem) "batch": an M-step after every pass over the data. "stepwise": stepwise (online)
        EM, an M-step after every group of slabs (:mod:`daskem.engine.stepwise`), for at most
        ``max_passes`` passes, then one pass to score the returned parameters.
    max_passes : int, default=2
        (daskem) Stepwise: passes over the data; fewer when a pass's objective moved by less than
        ``tol`` from the previous pass's.
    steps_per_pass : int, default=10
        (daskem) Stepwise: groups of slabs per pass, hence M-steps per pass (at most one per slab).
    learning_offset, learning_decay : float, default=2.0, 0.7
        (daskem) Stepwise: the t-th group (from 0) weighs ``(t + learning_offset) ** -learning_decay``
        in the running statistics; ``learning_offset >= 1``, ``0.5 < learning_decay <= 1``. The last
        of several passes averages its groups by rows instead.
    warm_start : bool, default=False
        As in scikit-learn: a refit starts from the last fit's solution, with one initialization.
    checkpoint : str or None, default=None
        (daskem) Path (or fsspec URL) of a checkpoint file written after every pass; a fit of the
        same parameters on the same data resumes from it, bit for bit, and removes it when done.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_, precisions_, precisions_cholesky_ : ndarray
        Shaped by the covariance type, as in scikit-learn.
    converged_ : bool
        Stepwise: whether the last pass's objective moved by less than ``tol`` from the previous pass's.
    n_iter_ : int
        EM iterations (stepwise: M-steps) of the best restart.
    lower_bound_ : float
        Mean log-likelihood per row at the last E-step (before the final M-step), as in scikit-learn;
        stepwise: that of the returned parameters, from the scoring pass; ``partial_fit``: that of
        its ``X`` before the update.
    lower_bounds_, history_ : list of float
        ``lower_bound_`` at every iteration.
    iteration_seconds_ : list of float
        (daskem) Wall-clock seconds of every iteration.
    n_passes_ : int
        (daskem) Reads of the data by the fit, initialization included.
    n_reseeded_ : int
        (daskem) Components re-seeded during EM because their effective number of rows fell below
        n_features + 1 (see :mod:`daskem.models.reseeding`), each with a warning line.
    n_features_in_ : int
    offset_ : float
        (after ``set_outlier_threshold``) The log-density below which a row is an outlier, as in
        scikit-learn's outlier detectors: ``decision_function(X) = score_samples(X) - offset_``.
    contamination_ : float or None
        (after ``set_outlier_threshold``) The fraction of rows the threshold was set to flag, or
        None for a threshold given as a log-density.
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [str],  # checked against the registry, whose error lists the choices
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "init_params": [Choices(INIT_PARAMS)],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        **SHARED_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
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
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
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

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture to ``X`` (NumPy or a Dask array chunked along rows); ``sample_weight`` (one
        non-negative value per row, or one number) weighs the rows in every pass: an integer weight
        fits the same model as the row repeated that many times."""
        X = as_row_blocks(X, min_rows=self.n_components)
        weights, total = checked_weights(sample_weight, X)
        candidate, spec = mixture_start(self, X.shape[1])
        checkpoint, spec = open_checkpoint(self.checkpoint, "GaussianMixture", weighted_params(self, weights, total),
                                           X, spec)
        outcome = fit_restarts(X, [candidate], spec, labels=["gmm"], max_iter=self.max_iter, tol=self.tol,
                               run_id=new_run_id("gmm"), checkpoint=checkpoint, weights=weights,
                               stepwise=stepwise_spec(self, spec.random_state))
        set_fitted(self, best_restart(candidate, outcome.results[0]), X.shape[1])
        self.n_passes_ = pass_count(sum(outcome.passes.values()))
        self._stepwise_state = None
        close_checkpoint(self.checkpoint, checkpoint)
        if not self.converged_ and self.algorithm == "batch":
            warnings.warn(
                f"GaussianMixture did not converge in {self.max_iter} iterations (tol={self.tol}): "
                "raise max_iter or tol, or check the data's scaling",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then label ``X`` with the fitted model (lazy for Dask input)."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def partial_fit(self, X, y=None):
        """One stepwise EM update from the rows of ``X`` (as after one group of slabs of
        ``algorithm="stepwise"``); the first call starts the model from ``X`` by ``init_params``.
        ``lower_bound_`` is then the mean log-likelihood of ``X`` before the update."""
        fitted = hasattr(self, "means_")
        X = as_row_blocks(X, min_rows=1 if fitted else self.n_components)
        if fitted:
            check_features(X, self.n_features_in_, "GaussianMixture")
        candidate, spec = mixture_start(self, X.shape[1])
        result, self._stepwise_state, passes = partial_fit_update(
            X, candidate, spec, self._fitted() if fitted else None, getattr(self, "_stepwise_state", None), self,
            run_id=new_run_id("gmm-partial"))
        history = list(getattr(self, "history_", [])) if fitted else []
        set_fitted(self, result, X.shape[1])
        self.lower_bounds_ = self.history_ = history + result.history
        self.n_passes_ = pass_count(sum(passes.values()))
        return self

    def _family(self) -> GaussianMixtureFamily:
        return GaussianMixtureFamily(get_covariance_type(self.covariance_type), float(self.reg_covar))

    # --------------------------------------------------------------- prediction
    def _fitted(self) -> GMMParams:
        check_is_fitted(self, ["weights_", "means_", "precisions_cholesky_"])
        return GMMParams(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def row_kernel(self):
        """A picklable ``kernel(rows, names) -> {name: array}`` for the per-row outputs ``labels``,
        ``responsibilities``, ``log_density`` and, once a threshold is set, ``outlier``, all from one
        E-step per tile."""
        kernel = partial(self._family().row_outputs, self._fitted())
        return kernel if getattr(self, "offset_", None) is None else partial(outlier_rows, kernel, self.offset_)

    def _apply(self, X, name, columns, dtype):
        return apply_rows(X, self.row_kernel(), name, n_features=self.n_features_in_, columns=columns, dtype=dtype,
                          model=type(self).__name__, column_dim="component")

    def predict(self, X):
        """Most probable component of each row."""
        return self._apply(X, "labels", None, np.int64)

    def predict_proba(self, X):
        """Responsibilities: the posterior probability of each component for each row."""
        return self._apply(X, "responsibilities", self.n_components, np.float64)

    def score_samples(self, X):
        """Log-density of each row under the mixture."""
        return self._apply(X, "log_density", None, np.float64)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (computed now, also for Dask input)."""
        return float(np.asarray(self.score_samples(X).mean()))

    # ----------------------------------------------------------------- outliers
    def set_outlier_threshold(self, X=None, *, contamination=None, threshold=None):
        """Set ``offset_``, the log-density below which a row is an outlier: ``threshold`` itself, or
        the value below which a fraction ``contamination`` of the rows of ``X`` lie (found out of
        core, exactly; see :mod:`daskem.models.outliers`). Returns self; saved with the model."""
        self._fitted()
        check_outlier_rule(contamination, threshold)
        if contamination is not None:
            if X is None:
                raise ValueError("contamination needs X, the rows of which that fraction is flagged")
            X = as_row_blocks(X)
            check_features(X, self.n_features_in_)
            upper = log_density_bound(self._fitted(), self._family().covariance, self.n_features_in_)
            threshold = contamination_threshold(X, self.row_kernel(), float(contamination), upper=upper,
                                                fan_in=self.fan_in)
        self.offset_ = float(threshold)
        self.contamination_ = None if contamination is None else float(contamination)
        return self

    @available_if(has_outlier_threshold)
    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers, as in scikit-learn's outlier detectors
        (there once ``set_outlier_threshold`` has set ``offset_``)."""
        return self.score_samples(X) - self.offset_

    @available_if(has_outlier_threshold)
    def predict_outliers(self, X):
        """-1 for an outlier (log-density below ``offset_``), +1 otherwise: an outlier detector's ``predict``."""
        return (self.decision_function(X) >= 0) * 2 - 1

    def _n_parameters(self) -> int:
        return self._family().n_parameters(self.n_features_in_, self._fitted())

    def bic(self, X) -> float:
        """Bayesian information criterion on ``X``: lower is better."""
        return information_criteria(self.score(X), X.shape[0], self._n_parameters())[0]

    def aic(self, X) -> float:
        """Akaike information criterion on ``X``: lower is better."""
        return information_criteria(self.score(X), X.shape[0], self._n_parameters())[1]

    def check_fitted(self) -> None:
        """Raise a ValueError naming the attribute whose shape or values a fitted mixture cannot have
        (for models read back from files)."""
        check_is_fitted(self, ["weights_", "means_", "covariances_", "precisions_cholesky_", "n_features_in_"])
        k, d = self.n_components, self.n_features_in_
        shape = self._family().covariance.covariances_shape(k, d)
        check_fitted_arrays(self, {"weights_": (k,), "means_": (k, d), "covariances_": shape,
                                   "precisions_cholesky_": shape, "precisions_": shape})
        if np.any(self.weights_ < 0) or not np.isclose(self.weights_.sum(), 1.0):
            raise ValueError(f"weights_ must be non-negative and sum to 1, they sum to {self.weights_.sum():.6g}")
        log_det = self._family().covariance.log_det_cholesky(self.precisions_cholesky_, d)
        if not np.all(np.isfinite(log_det)):
            raise ValueError("precisions_cholesky_ has a factor that is not positive definite")
        check_offset(getattr(self, "offset_", None))

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows from the fitted mixture; returns (X, component labels). Rows are keyed
        by ``random_state`` and their index (:mod:`daskem.kernels.sampling`), as ``daskem sample`` draws them."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        rows, components = mixture_rows(self._fitted(), self._family().covariance,
                                         seeds_from(self.random_state, 1)[0], 0, int(n_samples))
        return rows, components.astype(np.int64)


def mixture_start(estimator: GaussianMixture, n_features: int) -> tuple[Candidate, InitSpec]:
    """The estimator's parameters checked, and the model as a candidate to start (its explicit initial
    values checked once) with how to start it; ``fit`` and ``fit_candidates`` share it."""
    estimator._validate_params()
    family = estimator._family()
    warm = estimator.warm_start and hasattr(estimator, "converged_")
    if warm:  # scikit-learn's warm start: the last fit's solution, one initialization
        explicit = ExplicitStart(estimator.weights_, estimator.means_, estimator.precisions_cholesky_,
                                 estimator.covariances_)
    else:
        explicit = ExplicitStart.of(estimator.n_components, n_features, weights=estimator.weights_init,
                                    means=estimator.means_init, precisions=estimator.precisions_init,
                                    covariance=family.covariance)
    spec = InitSpec(INIT_PARAMS[estimator.init_params], estimator.random_state, 1 if warm else estimator.n_init,
                    estimator.init_sample_size, estimator.oversampling_factor, estimator.init_rounds, estimator.fan_in)
    return Candidate(family, estimator.n_components, explicit), spec


def set_fitted(estimator: GaussianMixture, result, n_features: int) -> None:
    """Set the fitted attributes of ``estimator`` from one EM result."""
    params = result.params
    for stale in ("offset_", "contamination_"):  # an outlier threshold belongs to the parameters it was set for
        estimator.__dict__.pop(stale, None)
    estimator.weights_ = params.weights
    estimator.means_ = params.means
    estimator.covariances_ = params.covariances
    estimator.precisions_cholesky_ = params.precisions_cholesky
    estimator.precisions_ = estimator._family().covariance.precisions(params.precisions_cholesky)
    estimator.n_features_in_ = n_features
    estimator.converged_ = result.converged
    estimator.n_iter_ = result.n_iter
    estimator.n_reseeded_ = result.reseeded
    estimator.lower_bound_ = result.objective
    estimator.lower_bounds_ = list(result.history)
    estimator.history_ = list(result.history)
    estimator.iteration_seconds_ = list(result.seconds)
