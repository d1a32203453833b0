"""Covariance types as objects: one small class per type, found through ``COVARIANCE_TYPES``.

Each class knows the shapes of its parameters and statistics, the M-step from shifted sufficient
statistics, the precision Cholesky factors (scikit-learn's conventions exactly) and the Gaussian
log-density. Nothing outside this module branches on a type's name. Pure NumPy + SciPy, float64.

Two families share most of the code: matrix types (``full``, ``tied``) store D x D matrices,
variance types (``diag``, ``spherical``) store variances. Within a family the types differ only in
how per-component quantities are pooled (``_pool``) and expanded back to one entry per component
(``_expand``): ``tied`` sums over components, ``spherical`` averages over features.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import scipy.linalg

_LOG_2PI = math.log(2.0 * math.pi)
# Largest temporary of the full/tied log-density, in float64 elements (32 MB): rows are blocked to fit.
_BLOCK_ELEMENTS = 1 << 22


class CovarianceType(ABC):
    """Interface of a covariance type; the methods common to all types are implemented here."""

    name: str
    # How messages call one entry of ``covariances_`` and what it must be.
    _noun: str
    _requirement: str

    # ----- per-type structure -------------------------------------------------------------

    @abstractmethod
    def covariances_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_`` (also of ``precisions_cholesky_`` and ``precisions_``)."""

    @abstractmethod
    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of the covariances alone (no means, no weights)."""

    @abstractmethod
    def _pool(self, per_component: np.ndarray) -> np.ndarray:
        """Reduce a per-component array ((K, D, D) or (K, D)) to this type's parameter shape."""

    @abstractmethod
    def _expand(self, values: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """Broadcast parameters of this type to one entry per component ((K, D, D) or (K, D))."""

    @abstractmethod
    def _describe(self, index: tuple[int, ...], noun: str) -> str:
        """Name the parameter entry at ``index`` for an error message, e.g. 'covariance of component 2'."""

    # ----- public operations, implemented once per family -----------------------------------
    # Families also provide the private hooks used below: _weighted_second_moment, _outer,
    # _regularize, _squared_mahalanobis, _draw and _check_positive.

    @abstractmethod
    def precision_cholesky(self, covariances: np.ndarray, *, reg_covar: float | None = None) -> np.ndarray:
        """Cholesky factors of the precisions; ``reg_covar`` is only quoted in the error message."""

    @abstractmethod
    def precision_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        """Precision Cholesky factors from precisions (for ``precisions_init``)."""

    @abstractmethod
    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        """``precisions_`` from ``precisions_cholesky_``, as scikit-learn computes them."""

    @abstractmethod
    def covariances_from_precision_cholesky(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        """Covariances from the precision Cholesky factors (for models given by precisions)."""

    @abstractmethod
    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> np.ndarray:
        """Log-determinant of each precision Cholesky factor: (K,), or a 0-d value for a shared one."""

    @abstractmethod
    def as_full(self, covariances: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """(K, D, D) full covariance matrices equivalent to these parameters."""

    # ----- common to all types ------------------------------------------------------------

    def s2_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the second-moment statistic: the covariances' own shape, pooled the same way."""
        return self.covariances_shape(n_components, n_features)

    def chunk_s2(self, X: np.ndarray, resp: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Second moments of one slab around ``shift`` (K, D), weighted by ``resp`` (n, K), pooled by type."""
        X = np.asarray(X, dtype=np.float64)
        resp = np.asarray(resp, dtype=np.float64)
        shift = np.asarray(shift, dtype=np.float64)
        per_component = np.stack([
            self._weighted_second_moment(*_centred_nonzero_rows(X, resp[:, k], shift[k]))
            for k in range(shift.shape[0])
        ])
        return self._pool(per_component)

    def covariances_from_stats(
        self, nk: np.ndarray, offsets: np.ndarray, s2: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        """M-step: covariances from shifted statistics, ``(s2 - pool(nk d d^T)) / pool(nk) + reg_covar I``.

        ``nk`` already includes scikit-learn's ``10 * eps``; ``offsets = s1 / nk`` are the new means
        minus the shift, so no raw moment is ever formed.
        """
        nk = np.asarray(nk, dtype=np.float64)
        offsets = np.asarray(offsets, dtype=np.float64)
        outer = self._outer(offsets)
        counts = np.broadcast_to(nk.reshape((-1,) + (1,) * (outer.ndim - 1)), outer.shape)
        centred_s2 = np.asarray(s2, dtype=np.float64) - self._pool(counts * outer)
        covariances = centred_s2 / self._pool(counts)
        return self._regularize(covariances, reg_covar)

    def log_prob(self, X: np.ndarray, means: np.ndarray, precisions_cholesky: np.ndarray) -> np.ndarray:
        """(n, K) log N(x_i; mu_k, Sigma_k), computed on data centred at the mean of the means.

        Centring first keeps float32 data with a large common offset accurate: the products only
        ever see differences of the size of the spread between components.
        """
        means = np.asarray(means, dtype=np.float64)
        precisions_cholesky = np.asarray(precisions_cholesky, dtype=np.float64)
        reference = means.mean(axis=0)
        centred_X = np.asarray(X, dtype=np.float64) - reference
        n_features = means.shape[1]
        mahalanobis = self._squared_mahalanobis(centred_X, means - reference, precisions_cholesky)
        log_det = self.log_det_cholesky(precisions_cholesky, n_features)
        return -0.5 * (n_features * _LOG_2PI + mahalanobis) + log_det

    def sample(
        self, rng: np.random.Generator, means: np.ndarray, covariances: np.ndarray, counts: np.ndarray
    ) -> np.ndarray:
        """(sum(counts), D) rows drawn component by component, ``counts[k]`` from component k."""
        means = np.asarray(means, dtype=np.float64)
        n_components, n_features = means.shape
        counts = np.asarray(counts)
        if counts.shape != (n_components,) or np.any(counts < 0):
            raise ValueError(f"counts must be {n_components} non-negative integers, got {counts!r}")
        per_component = self._expand(np.asarray(covariances, dtype=np.float64), n_components, n_features)
        draws = [self._draw(rng, means[k], per_component[k], int(counts[k])) for k in range(n_components)]
        return np.vstack(draws).reshape(-1, n_features)

    def check_precisions(self, precisions: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """Validate a user's ``precisions_init`` (shape, finite, symmetric, positive); return float64."""
        return self._check_parameter(precisions, n_components, n_features, "precisions_init", "precision")

    def check_covariances(self, covariances: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """Validate loaded or user-given ``covariances`` the same way; return them as float64."""
        return self._check_parameter(covariances, n_components, n_features, "covariances", self._noun)

    def _check_parameter(self, values, n_components: int, n_features: int, label: str, noun: str):
        values = np.asarray(values, dtype=np.float64)
        expected = self.covariances_shape(n_components, n_features)
        if values.shape != expected:
            raise ValueError(
                f"{label} for covariance_type '{self.name}' with {n_components} components and "
                f"{n_features} features must have shape {expected}, got {values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{label} contains NaN or infinity")
        self._check_positive(values, label, noun)
        return values

    def _non_finite_error(self, index: tuple[int, ...]) -> ValueError:
        """The M-step's error for NaN or infinite statistics: they come from the data, not from collapse."""
        what = self._describe(index, self._noun)
        return ValueError(f"{what} contains NaN or infinity: check the data for NaN or infinite values")

    def _not_positive_error(self, index: tuple[int, ...], detail: str, reg_covar: float | None) -> ValueError:
        """The M-step's error for a collapsed component: what, how bad, and the fix."""
        what = self._describe(index, self._noun)
        fix = "increase reg_covar" + ("" if reg_covar is None else f" (now {reg_covar:g})")
        return ValueError(
            f"{what} is not {self._requirement} ({detail}; it has collapsed onto too few distinct rows): "
            f"{fix}, reduce n_components, or standardize the features"
        )


class _MatrixCovariance(CovarianceType):
    """Types whose parameters are D x D matrices: one per component (full) or one shared (tied)."""

    _noun = "covariance"
    _requirement = "positive definite"

    def _weighted_second_moment(self, centred, weights):
        """sum_i w_i y_i y_i^T of centred rows, as one symmetric product."""
        scaled = centred * np.sqrt(weights)[:, None]
        return scaled.T @ scaled

    def _outer(self, offsets):
        return offsets[:, :, None] * offsets[:, None, :]

    def _regularize(self, covariances, reg_covar):
        """Make the matrices exactly symmetric and add ``reg_covar`` to their diagonals."""
        symmetric = 0.5 * (covariances + np.swapaxes(covariances, -1, -2))
        return symmetric + reg_covar * np.eye(covariances.shape[-1])

    def _squared_mahalanobis(self, centred_X, centred_means, precisions_cholesky):
        """(n, K) ||(x_i - mu_k) P_k||^2 with one GEMM against all stacked factors, rows in blocks."""
        n_samples, n_features = centred_X.shape
        n_components = centred_means.shape[0]
        factors = precisions_cholesky.reshape(-1, n_features, n_features)  # (K, D, D) or (1, D, D) shared
        stacked = factors.transpose(1, 0, 2).reshape(n_features, -1)  # [P_0 | P_1 | ...], one GEMM for all
        per_component = np.broadcast_to(factors, (n_components, n_features, n_features))
        whitened_means = np.einsum("kd,kde->ke", centred_means, per_component)
        distances = np.empty((n_samples, n_components))
        rows_per_block = max(1, _BLOCK_ELEMENTS // (n_components * n_features))
        for start in range(0, n_samples, rows_per_block):
            rows = slice(start, start + rows_per_block)
            whitened = (centred_X[rows] @ stacked).reshape(-1, factors.shape[0], n_features) - whitened_means
            distances[rows] = np.einsum("nkd,nkd->nk", whitened, whitened)
        return distances

    def precision_cholesky(self, covariances, *, reg_covar=None):
        covariances = np.asarray(covariances, dtype=np.float64)
        n_features = covariances.shape[-1]
        identity = np.eye(n_features)
        stack = covariances.reshape(-1, n_features, n_features)
        factors = np.empty_like(stack)
        for k, covariance in enumerate(stack):
            if not np.all(np.isfinite(covariance)):
                raise self._non_finite_error((k,))
            try:
                lower = scipy.linalg.cholesky(covariance, lower=True)
            except np.linalg.LinAlgError:
                smallest = np.linalg.eigvalsh(covariance)[0]
                detail = f"smallest eigenvalue {smallest:.3g}"
                raise self._not_positive_error((k,), detail, reg_covar) from None
            factors[k] = scipy.linalg.solve_triangular(lower, identity, lower=True).T
        return factors.reshape(covariances.shape)

    def precision_cholesky_from_precisions(self, precisions):
        # Upper factor U with U U^T = precision: Cholesky of the row/column-reversed matrix, reversed back.
        stack = np.asarray(precisions, dtype=np.float64)
        flipped = stack[..., ::-1, ::-1]
        lower = np.stack([
            scipy.linalg.cholesky(matrix, lower=True) for matrix in flipped.reshape(-1, *stack.shape[-2:])
        ])
        return np.ascontiguousarray(lower.reshape(stack.shape)[..., ::-1, ::-1])

    def precisions(self, precisions_cholesky):
        factors = np.asarray(precisions_cholesky, dtype=np.float64)
        return factors @ np.swapaxes(factors, -1, -2)

    def covariances_from_precision_cholesky(self, precisions_cholesky):
        factors = np.asarray(precisions_cholesky, dtype=np.float64)
        n_features = factors.shape[-1]
        inverses = np.stack([
            scipy.linalg.solve_triangular(factor, np.eye(n_features), lower=False)
            for factor in factors.reshape(-1, n_features, n_features)
        ]).reshape(factors.shape)
        covariances = np.swapaxes(inverses, -1, -2) @ inverses  # (P P^T)^-1 = P^-T P^-1
        return 0.5 * (covariances + np.swapaxes(covariances, -1, -2))

    def log_det_cholesky(self, precisions_cholesky, n_features):
        diagonals = np.diagonal(np.asarray(precisions_cholesky, dtype=np.float64), axis1=-2, axis2=-1)
        return np.sum(np.log(diagonals), axis=-1)

    def _draw(self, rng, mean, covariance, count):
        return rng.multivariate_normal(mean, covariance, count)

    def _check_positive(self, values, label, noun):
        n_features = values.shape[-1]
        for k, matrix in enumerate(values.reshape(-1, n_features, n_features)):
            what = self._describe((k,), noun)
            if not np.allclose(matrix, matrix.T):
                asymmetry = np.max(np.abs(matrix - matrix.T))
                raise ValueError(
                    f"{label} is invalid: {what} is not symmetric (max |A - A^T| = {asymmetry:.3g})"
                )
            smallest = np.linalg.eigvalsh(matrix)[0]
            if smallest <= 0:
                raise ValueError(
                    f"{label} is invalid: {what} is not positive definite "
                    f"(smallest eigenvalue {smallest:.3g})"
                )

    def as_full(self, covariances, n_components, n_features):
        return np.array(self._expand(np.asarray(covariances, dtype=np.float64), n_components, n_features))


class _VarianceCovariance(CovarianceType):
    """Types whose parameters are variances: per component and feature (diag) or per component (spherical)."""

    _noun = "variance"
    _requirement = "positive"

    def _weighted_second_moment(self, centred, weights):
        """sum_i w_i y_i**2 of centred rows, feature by feature, in one pass."""
        return np.einsum("n,nd,nd->d", weights, centred, centred)

    def _outer(self, offsets):
        return offsets * offsets

    def _regularize(self, covariances, reg_covar):
        return covariances + reg_covar

    def _squared_mahalanobis(self, centred_X, centred_means, precisions_cholesky):
        """(n, K) sum_d p_kd (x_d - mu_kd)^2 as three GEMMs; accurate because the inputs are centred."""
        precisions = self._expand(precisions_cholesky, *centred_means.shape) ** 2
        distances = (
            (centred_X * centred_X) @ precisions.T
            - 2.0 * (centred_X @ (centred_means * precisions).T)
            + np.sum(centred_means * centred_means * precisions, axis=1)
        )
        return np.maximum(distances, 0.0)

    def precision_cholesky(self, covariances, *, reg_covar=None):
        covariances = np.asarray(covariances, dtype=np.float64)
        non_finite = _first_index(~np.isfinite(covariances))
        if non_finite is not None:
            raise self._non_finite_error(non_finite)
        not_positive = _first_index(covariances <= 0)
        if not_positive is not None:
            raise self._not_positive_error(not_positive, f"it is {covariances[not_positive]:.3g}", reg_covar)
        return 1.0 / np.sqrt(covariances)

    def precision_cholesky_from_precisions(self, precisions):
        return np.sqrt(np.asarray(precisions, dtype=np.float64))

    def precisions(self, precisions_cholesky):
        return np.asarray(precisions_cholesky, dtype=np.float64) ** 2

    def covariances_from_precision_cholesky(self, precisions_cholesky):
        return 1.0 / np.asarray(precisions_cholesky, dtype=np.float64) ** 2

    def log_det_cholesky(self, precisions_cholesky, n_features):
        factors = np.asarray(precisions_cholesky, dtype=np.float64)
        return np.sum(np.log(self._expand(factors, factors.shape[0], n_features)), axis=1)

    def _draw(self, rng, mean, covariance, count):
        return mean + rng.standard_normal(size=(count, mean.shape[0])) * np.sqrt(covariance)

    def _check_positive(self, values, label, noun):
        not_positive = _first_index(values <= 0)
        if not_positive is not None:
            what = self._describe(not_positive, noun)
            raise ValueError(f"{label} is invalid: {what} is {values[not_positive]:.3g}, not positive")

    def as_full(self, covariances, n_components, n_features):
        variances = self._expand(np.asarray(covariances, dtype=np.float64), n_components, n_features)
        full = np.zeros((n_components, n_features, n_features))
        full[:, np.arange(n_features), np.arange(n_features)] = variances
        return full


class FullCovariance(_MatrixCovariance):
    """Each component has its own general covariance matrix."""

    name = "full"

    def covariances_shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def _pool(self, per_component):
        return per_component

    def _expand(self, values, n_components, n_features):
        return values

    def _describe(self, index, noun):
        return f"{noun} of component {index[0]}"


class TiedCovariance(_MatrixCovariance):
    """All components share one covariance matrix, pooled over components."""

    name = "tied"

    def covariances_shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def _pool(self, per_component):
        return per_component.sum(axis=0)

    def _expand(self, values, n_components, n_features):
        return np.broadcast_to(values, (n_components, n_features, n_features))

    def _describe(self, index, noun):
        return f"the tied {noun}"


class DiagCovariance(_VarianceCovariance):
    """Each component has its own diagonal covariance: one variance per feature."""

    name = "diag"

    def covariances_shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def _pool(self, per_component):
        return per_component

    def _expand(self, values, n_components, n_features):
        return values

    def _describe(self, index, noun):
        return f"{noun} of feature {index[1]} in component {index[0]}"


class SphericalCovariance(_VarianceCovariance):
    """Each component has one variance shared by all features (the mean of its diagonal variances)."""

    name = "spherical"

    def covariances_shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def _pool(self, per_component):
        return per_component.sum(axis=-1)

    def _expand(self, values, n_components, n_features):
        return np.broadcast_to(values[:, None], (n_components, n_features))

    def _describe(self, index, noun):
        return f"{noun} of component {index[0]}"


def _centred_nonzero_rows(
    X: np.ndarray, weights: np.ndarray, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with non-zero weight, minus ``centre``, and their weights: hard assignments skip most rows."""
    rows = np.flatnonzero(weights)
    if rows.size < weights.size:
        X, weights = X[rows], weights[rows]
    return X - centre, weights


def _first_index(mask: np.ndarray) -> tuple[int, ...] | None:
    """Index tuple of the first True entry of ``mask`` (row-major), or None."""
    flat = np.flatnonzero(mask)
    return None if flat.size == 0 else tuple(int(i) for i in np.unravel_index(flat[0], mask.shape))


COVARIANCE_TYPES: dict[str, CovarianceType] = {
    covariance.name: covariance
    for covariance in (FullCovariance(), TiedCovariance(), DiagCovariance(), SphericalCovariance())
}


def get_covariance_type(name: str) -> CovarianceType:
    """The registered covariance type called ``name``; a ValueError lists the choices otherwise."""
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(choice) for choice in COVARIANCE_TYPES)
        raise ValueError(f"unknown covariance_type {name!r}: choose one of {choices}") from None
