"""``GaussianMixture``: scikit-learn's estimator, fitted by EM over the chunks of a Dask array."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from daskem.data.checks import as_row_blocks, check_shape, check_weights
from daskem.engine.em import run_em
from daskem.engine.per_row import apply_rows
from daskem.kernels import mixture
from daskem.kernels.covariance import get_covariance_type
from daskem.kernels.draws import seeds_from
from daskem.models.families import GaussianMixtureFamily, GMMParams
from daskem.models.initialization.seeding import (
    gmm_params_from_centers,
    gmm_params_from_random_responsibilities,
    initial_centers,
)
from daskem.models.parameters import SHARED_PARAMETER_CONSTRAINTS, Choices, new_run_id

INIT_PARAMS = ("kmeans", "k-means||", "k-means++", "random", "random_from_data")


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM; the data stays in its chunks, only statistics travel.

    Parameters mean what they mean in :class:`sklearn.mixture.GaussianMixture`, except:

    - ``init_params="kmeans"`` (default) fits k-means by Lloyd's algorithm on the data, seeded
      by k-means|| (:mod:`daskem.models.initialization.kmeans_parallel`; scikit-learn seeds it by k-means++), then
      starts from the statistics of the rows nearest each centre;
    - ``init_params="k-means||"`` (not in scikit-learn) starts from the statistics of the rows
      nearest the k-means|| centres, without Lloyd's iterations;
    - ``init_params`` "k-means++" and "random_from_data" assign every row to its nearest seed to
      compute the initial covariances (scikit-learn uses the seed rows alone).

    ``oversampling_factor`` (about ``oversampling_factor * n_components`` candidates drawn per
    round) and ``init_rounds`` (number of rounds, each one pass over the data) tune k-means|| for
    "kmeans" and "k-means||". ``init_sample_size`` bounds the rows sampled to seed "k-means++".
    ``fan_in`` is the number of partial statistics merged per reduction task. ``n_init`` restarts
    advance together, one read of the data per pass for all.
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

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit the mixture to ``X`` (NumPy or a Dask array chunked along rows)."""
        self._validate_params()
        family = GaussianMixtureFamily(get_covariance_type(self.covariance_type), float(self.reg_covar))
        X = as_row_blocks(X, min_rows=self.n_components)
        run_id = new_run_id("gmm")
        starts = self._initial_params(X, family, run_id)
        labels = [f"gmm restart {i}" for i in range(len(starts))] if len(starts) > 1 else ["gmm"]
        results = run_em(X, [family] * len(starts), starts, max_iter=self.max_iter, tol=self.tol,
                         run_id=run_id, fan_in=self.fan_in, labels=labels)
        self._set_fit(max(results, key=lambda result: result.objective), X.shape[1])
        if not self.converged_:
            warnings.warn(
                f"GaussianMixture did not converge in {self.max_iter} iterations (tol={self.tol}): "
                "raise max_iter or tol, or check the data's scaling",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_predict(self, X, y=None):
        """Fit, then label ``X`` with the fitted model (lazy for Dask input)."""
        return self.fit(X).predict(X)

    def _explicit_start(self, cov, n_features: int):
        """The validated ``weights_init``, ``means_init`` and precision Cholesky factors of
        ``precisions_init`` (each None when not given)."""
        n_components = self.n_components
        weights = None if self.weights_init is None else check_weights(self.weights_init, n_components)
        means = None if self.means_init is None else check_shape(self.means_init, (n_components, n_features), "means_init")
        prec_chol = None
        if self.precisions_init is not None:
            precisions = cov.check_precisions(self.precisions_init, n_components, n_features)
            prec_chol = cov.precision_cholesky_from_precisions(precisions)
        return weights, means, prec_chol

    def _start_centers(self, X, seeds, name) -> list[np.ndarray] | None:
        """Centres whose nearest rows give the initial parameters, one set per restart; None for
        ``init_params="random"`` (random responsibilities instead). Given ``means_init``, they are the
        centres: one pass, where scikit-learn would run the whole ``init_params`` first."""
        _, means, _ = self._explicit_start(get_covariance_type(self.covariance_type), X.shape[1])
        if means is not None:
            return [means]
        if self.init_params == "random":
            return None
        return initial_centers(X, self.n_components, self.init_params, seeds, sample_size=self.init_sample_size,
                               name=name, fan_in=self.fan_in, oversampling_factor=self.oversampling_factor,
                               n_rounds=self.init_rounds)

    def _initial_params(self, X, family, run_id) -> list[GMMParams]:
        """Initial parameters per restart: from ``init_params``, then the explicit ``*_init`` on top."""
        weights, means, prec_chol = self._explicit_start(family.covariance, X.shape[1])
        if weights is not None and means is not None and prec_chol is not None:
            covariances = family.covariance.covariances_from_precision_cholesky(prec_chol)
            return [GMMParams(weights, means, covariances, prec_chol)]
        seeds = seeds_from(self.random_state, self.n_init)
        centers = self._start_centers(X, seeds, f"{run_id}-init")
        if centers is None:
            starts = gmm_params_from_random_responsibilities(X, family, self.n_components, seeds,
                                                             name=f"{run_id}-init", fan_in=self.fan_in)
        else:
            starts = gmm_params_from_centers(X, [(family, c) for c in centers], name=f"{run_id}-assign",
                                             fan_in=self.fan_in)
        return [self._with_explicit(start, family.covariance, X.shape[1]) for start in starts]

    def _with_explicit(self, start: GMMParams, cov, n_features: int) -> GMMParams:
        """``start`` with the explicitly given initial parameters put in its place."""
        weights, means, prec_chol = self._explicit_start(cov, n_features)
        if prec_chol is not None:
            start = GMMParams(start.weights, start.means, cov.covariances_from_precision_cholesky(prec_chol), prec_chol)
        return GMMParams(start.weights if weights is None else weights, start.means if means is None else means,
                         start.covariances, start.precisions_cholesky)

    def _set_fit(self, result, n_features: int) -> None:
        """The fitted attributes of one EM result."""
        self._set_params(result.params, n_features)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.objective
        self.lower_bounds_ = list(result.history)
        self.history_ = list(result.history)
        self.iteration_seconds_ = list(result.seconds)

    def _set_params(self, params: GMMParams, n_features: int) -> None:
        cov = get_covariance_type(self.covariance_type)
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = cov.precisions(params.precisions_cholesky)
        self.n_features_in_ = n_features

    # --------------------------------------------------------------- prediction
    def _fitted(self) -> tuple[GMMParams, object]:
        check_is_fitted(self, ["weights_", "means_", "precisions_cholesky_"])
        params = GMMParams(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)
        return params, get_covariance_type(self.covariance_type)

    def _apply(self, X, kernel, columns, dtype):
        return apply_rows(X, kernel, self._fitted(), n_features=self.n_features_in_, columns=columns, dtype=dtype)

    def predict(self, X):
        """Most probable component of each row."""
        return self._apply(X, _predict_rows, None, np.int64)

    def predict_proba(self, X):
        """Responsibilities: the posterior probability of each component for each row."""
        return self._apply(X, _proba_rows, self.n_components, np.float64)

    def score_samples(self, X):
        """Log-density of each row under the mixture."""
        return self._apply(X, _log_density_rows, None, np.float64)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (computed now, also for Dask input)."""
        return float(np.asarray(self.score_samples(X).mean()))

    def _n_parameters(self) -> int:
        params, _ = self._fitted()
        family = GaussianMixtureFamily(get_covariance_type(self.covariance_type), self.reg_covar)
        return family.n_parameters(self.n_features_in_, params)

    def bic(self, X) -> float:
        """Bayesian information criterion on ``X``: lower is better."""
        n_rows = X.shape[0]
        return -2 * self.score(X) * n_rows + self._n_parameters() * np.log(n_rows)

    def aic(self, X) -> float:
        """Akaike information criterion on ``X``: lower is better."""
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows from the fitted mixture; returns (X, component labels)."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        params, cov = self._fitted()
        rng = np.random.default_rng(seeds_from(self.random_state, 1)[0])
        counts = rng.multinomial(n_samples, params.weights)
        rows = cov.sample(rng, params.means, params.covariances, counts)
        return rows, np.repeat(np.arange(self.n_components), counts)


def _predict_rows(rows, fitted):
    params, cov = fitted
    return mixture.gmm_predict(rows, params.weights, params.means, params.precisions_cholesky, cov)


def _proba_rows(rows, fitted):
    params, cov = fitted
    return mixture.gmm_predict_proba(rows, params.weights, params.means, params.precisions_cholesky, cov)


def _log_density_rows(rows, fitted):
    params, cov = fitted
    return mixture.gmm_score_samples(rows, params.weights, params.means, params.precisions_cholesky, cov)
