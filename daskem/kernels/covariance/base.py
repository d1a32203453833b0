"""The interface every covariance type implements, and what all types share.

Each type knows the shapes of its parameters and statistics, the M-step from shifted sufficient
statistics, the precision Cholesky factors (scikit-learn's conventions exactly) and the Gaussian
log-density. Types come in two kinds, each with its base class: matrix types (``MatrixCovariance``:
``full``, ``tied``) and variance types (``VarianceCovariance``: ``diag``, ``spherical``). Within a
kind they differ only in how per-component quantities are pooled (``_pool``) and expanded back to
one entry per component (``_expand``), and in the few products where pooling first saves work.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from daskem.errors import FitError
from daskem.kernels.compiled import compiled
from daskem.kernels.tiles import CentredRows, tile_rows

LOG_2PI = math.log(2.0 * math.pi)


class CovarianceType(ABC):
    """Interface of a covariance type; the methods common to all types are implemented here.

    Every abstract method is a hook that the common methods or the kernels call. A kind's base
    class implements the hooks its types share; a type subclasses one kind and defines the rest.
    """

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

    def tile_columns(self, n_features: int) -> int:
        """Floats per row in this type's widest per-tile temporary, from which ``tile_rows`` sizes
        the tiles: D here (squares, whitened rows); the packed outer products of ``full`` are wider."""
        return n_features

    def widest_product(self, n_components: int, n_features: int) -> int:
        """N K of the widest GEMM a tile makes, its M being the tile's rows (see ``tile_rows``): here
        the weighted sums ``resp.T @ y`` and the variance types' E-step products, K x D."""
        return n_components * n_features

    def tile_rows(self, n_components: int, n_features: int) -> int:
        """Rows per tile of this type's kernels at K components and D features (see ``tile_rows``)."""
        return tile_rows(n_components, self.tile_columns(n_features), self.widest_product(n_components, n_features))

    @abstractmethod
    def weighted_products(self, rows: CentredRows, resp: np.ndarray) -> np.ndarray:
        """``sum_i r_ik y_i y_i^T`` (or its diagonal) of one tile, pooled to this type's shape, in the
        layout that tiles add in (``_unpacked`` turns their sum into that shape)."""

    @abstractmethod
    def density_terms(self, centred_means: np.ndarray, precisions_cholesky: np.ndarray) -> Any:
        """Whatever ``distance_parts`` needs, computed once per slab from the parameters."""

    @abstractmethod
    def distance_parts(self, rows: CentredRows, terms: Any) -> "DistanceParts":
        """The products whose sum is the (n, K) squared Mahalanobis distances of centred rows to the
        centred means (see ``DistanceParts``), in work buffers of ``rows``."""

    # ----- implemented once per kind (matrix or variance) ----------------------------------

    @abstractmethod
    def _outer(self, offsets: np.ndarray) -> np.ndarray:
        """Per-component ``d_k d_k^T`` of (K, D) offsets: (K, D, D), or its diagonal ``d_k**2``, (K, D)."""

    @abstractmethod
    def _cross(self, shift: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """Per-component ``d_k a_k^T + a_k d_k^T`` of two (K, D) arrays, or its diagonal, shaped like ``_outer``."""

    @abstractmethod
    def _regularize(self, covariances: np.ndarray, reg_covar: float) -> np.ndarray:
        """Covariances of this type's shape with ``reg_covar`` added to every variance."""

    @abstractmethod
    def _scale_normals(self, normals: np.ndarray, covariance: np.ndarray) -> np.ndarray:
        """(n, D) standard normal draws turned into draws of N(0, covariance): ``normals @ L^T`` with
        ``covariance = L L^T``; ``covariance`` is one entry of ``_expand``."""

    @abstractmethod
    def _check_positive(self, values: np.ndarray, label: str, noun: str) -> None:
        """Raise a ValueError naming ``label`` and the entry unless ``values`` are valid for this kind
        (symmetric positive definite matrices, or positive variances)."""

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

    # ----- common to all types ------------------------------------------------------------

    def s2_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the second-moment statistic: the covariances' own shape, pooled the same way."""
        return self.covariances_shape(n_components, n_features)

    def second_moments(
        self, products: np.ndarray, nk: np.ndarray, weighted_sums: np.ndarray, centred_shift: np.ndarray
    ) -> np.ndarray:
        """Second moments around the shift ``c_k``, from rows centred at a common reference ``g``.

        ``sum_i r_ik (y_i - d_k)(y_i - d_k)^T = S_k - d_k a_k^T - a_k d_k^T + n_k d_k d_k^T`` with
        ``d_k = c_k - g``, ``S_k`` the summed ``weighted_products`` and ``a_k = sum_i r_ik y_i``
        (``weighted_sums``): the products over the rows, then a correction the size of the spread
        between the means, once per slab.
        """
        outer = self._outer(centred_shift)
        correction = self._cross(centred_shift, weighted_sums) - _per_component(nk, outer) * outer
        return self._unpacked(products, centred_shift.shape[1]) - self._pool(correction)

    def _unpacked(self, products: np.ndarray, n_features: int) -> np.ndarray:
        """Summed ``weighted_products`` in this type's shape (they are already, unless a type packs them)."""
        return products

    def shifted_second_moments(
        self, s2: np.ndarray, nk: np.ndarray, s1: np.ndarray, delta: np.ndarray
    ) -> np.ndarray:
        """Second moments around ``c' = c - delta`` from those around ``c`` (exact algebra):
        ``sum_i r_ik (y_i + d_k)(y_i + d_k)^T = s2_k + d_k s1_k^T + s1_k d_k^T + n_k d_k d_k^T``."""
        outer = self._outer(delta)
        return np.asarray(s2, dtype=np.float64) + self._pool(self._cross(delta, s1) + _per_component(nk, outer) * outer)

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
        counts = _per_component(nk, outer)
        centred_s2 = np.asarray(s2, dtype=np.float64) - self._pool(counts * outer)
        covariances = centred_s2 / self._pool(np.broadcast_to(counts, outer.shape))
        return self._regularize(covariances, reg_covar)

    def copy_component(self, covariances: np.ndarray, source: int, target: int) -> np.ndarray:
        """``covariances`` with component ``target`` given the covariance of ``source`` (to re-seed a
        collapsed component); a covariance shared by every component is returned as it is."""
        covariances = np.array(covariances, dtype=np.float64)
        if self.covariances_shape(1, 1) == self.covariances_shape(2, 1):  # shared: no per-component entry
            return covariances
        covariances[target] = covariances[source]
        return covariances

    def log_gaussian(self, rows: CentredRows, terms: Any, log_det: np.ndarray) -> np.ndarray:
        """(n, K) log N(x_i; mu_k, Sigma_k) from prepared terms and log-determinants (plus anything
        added to them, such as log-weights); the result lives in a work buffer of ``rows``."""
        parts = self.distance_parts(rows, terms)
        offsets = np.empty(parts.cross.shape[1])
        offsets[:] = log_det - 0.5 * rows.values.shape[1] * LOG_2PI
        _log_density(parts.quadratic, parts.row_terms, parts.column_weights, parts.cross, parts.constant, offsets)
        return parts.cross

    def sample(
        self, rng: np.random.Generator, means: np.ndarray, covariances: np.ndarray, counts: np.ndarray
    ) -> np.ndarray:
        """(sum(counts), D) rows drawn component by component, ``counts[k]`` from component k."""
        means = np.asarray(means, dtype=np.float64)
        n_components, n_features = means.shape
        counts = np.asarray(counts)
        if counts.shape != (n_components,) or np.any(counts < 0):
            raise ValueError(f"counts must be {n_components} non-negative integers, got {counts!r}")
        normals = rng.standard_normal((int(counts.sum()), n_features))
        return self.from_normals(normals, means, covariances, np.repeat(np.arange(n_components), counts))

    def from_normals(self, normals: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                     components: np.ndarray) -> np.ndarray:
        """(n, D) rows of N(mean_k, Sigma_k) made from (n, D) standard normal draws, row i from
        component ``components[i]``: the one place where a draw takes a component's shape."""
        means = np.asarray(means, dtype=np.float64)
        n_components, n_features = means.shape
        per_component = self._expand(np.asarray(covariances, dtype=np.float64), n_components, n_features)
        rows = np.empty((len(components), n_features))
        for k in np.unique(components):
            chosen = components == k
            rows[chosen] = means[k] + self._scale_normals(normals[chosen], per_component[k])
        return rows

    def full_covariances(self, covariances: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """(K, D, D): every component's covariance as a full matrix (for plots and reports)."""
        per_component = self._expand(np.asarray(covariances, dtype=np.float64), n_components, n_features)
        factors = [self._scale_normals(np.eye(n_features), per_component[k]) for k in range(n_components)]  # L^T
        return np.stack([factor.T @ factor for factor in factors])

    def check_precisions(self, precisions: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """Validate a user's ``precisions_init`` (shape, finite, symmetric, positive); return float64."""
        return self._check_parameter(precisions, n_components, n_features, "precisions_init", "precision")

    def _check_parameter(self, values, n_components: int, n_features: int, label: str, noun: str):
        values = np.asarray(values, dtype=np.float64)
        expected = self.covariances_shape(n_components, n_features)
        if values.shape != expected:
            raise FitError(
                f"{label} for covariance_type '{self.name}' with {n_components} components and "
                f"{n_features} features must have shape {expected}, got {values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise FitError(f"{label} contains NaN or infinity")
        self._check_positive(values, label, noun)
        return values

    def _non_finite_error(self, index: tuple[int, ...]) -> FitError:
        """The M-step's error for NaN or infinite statistics: they come from the data, not from collapse."""
        what = self._describe(index, self._noun)
        return FitError(f"{what} contains NaN or infinity: check the data for NaN or infinite values")

    def _not_positive_error(self, index: tuple[int, ...], detail: str, reg_covar: float | None) -> FitError:
        """The M-step's error for a collapsed component: what, how bad, and the fix."""
        what = self._describe(index, self._noun)
        fix = "increase reg_covar" + ("" if reg_covar is None else f" (now {reg_covar:g})")
        return FitError(
            f"{what} is not {self._requirement} ({detail}; it has collapsed onto too few distinct rows): "
            f"{fix}, reduce n_components, or standardize the features"
        )


class DistanceParts(NamedTuple):
    """Squared Mahalanobis distances in parts: ``cross + constant`` plus a full (n, K) ``quadratic``
    and/or a rank-one ``row_terms`` (n,) times ``column_weights`` (K,) (squared norms weighed by each
    component's precision: no (n, K) array is built for them). One compiled sweep adds the parts and
    makes them log-densities, where NumPy made five passes over the (n, K) array."""

    quadratic: np.ndarray | None
    row_terms: np.ndarray | None
    column_weights: np.ndarray | None
    cross: np.ndarray
    constant: np.ndarray


@compiled
def _log_density(quadratic, row_terms, column_weights, cross, constant, offsets) -> None:
    """``cross[i, k] = offsets[k] - max(d_ik, 0) / 2`` in place, ``d_ik`` the sum of the parts (a
    distance that rounding made negative counts as 0)."""
    n_rows, n_components = cross.shape
    for i in range(n_rows):
        for k in range(n_components):
            distance = cross[i, k] + constant[k]
            if quadratic is not None:
                distance += quadratic[i, k]
            if row_terms is not None:
                distance += row_terms[i] * column_weights[k]
            cross[i, k] = offsets[k] - 0.5 * max(distance, 0.0)


def _per_component(nk: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``nk`` shaped to broadcast against a per-component array ``like``."""
    return nk.reshape((-1,) + (1,) * (like.ndim - 1))


def first_index(mask: np.ndarray) -> tuple[int, ...] | None:
    """Index tuple of the first True entry of ``mask`` (row-major), or None."""
    flat = np.flatnonzero(mask)
    return None if flat.size == 0 else tuple(int(i) for i in np.unravel_index(flat[0], mask.shape))
