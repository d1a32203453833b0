"""Variance covariance types: per component and feature (``diag``) or per component (``spherical``)."""

from __future__ import annotations

import numpy as np

from daskem.errors import FitError
from daskem.kernels.covariance.base import CovarianceType, DistanceParts, first_index


class VarianceCovariance(CovarianceType):
    """Types whose parameters are variances: per component and feature (diag) or per component (spherical)."""

    _noun = "variance"
    _requirement = "positive"

    def _outer(self, offsets):
        return offsets * offsets

    def _cross(self, shift, sums):
        return 2.0 * shift * sums

    def _squares(self, rows) -> np.ndarray:
        """(n, W) the squares of the rows that the variances weigh: each feature's (W = D) here; a type
        whose components have one variance for all features may use the squared norms (W = 1)."""
        return rows.squares

    def _square_weights(self, precisions: np.ndarray) -> np.ndarray:
        """(K, W) the precisions that weigh ``_squares``, from the (K, D) per-feature precisions."""
        return precisions

    def weighted_products(self, rows, resp):
        """``sum_i r_ik`` times the ``_squares`` of each row, for all components in one GEMM, pooled by type."""
        return self._pool(resp.T @ self._squares(rows))

    def density_terms(self, centred_means, precisions_cholesky):
        """Precisions weighing ``_squares`` (K x W), ``-2 p_k * m_k`` (D x K) and ``sum_d p_kd m_kd^2``."""
        precisions = self._expand(precisions_cholesky, *centred_means.shape) ** 2
        weighted_means = centred_means * precisions
        return (np.ascontiguousarray(self._square_weights(precisions).T), np.ascontiguousarray(-2.0 * weighted_means.T),
                np.sum(centred_means * weighted_means, axis=1))

    def distance_parts(self, rows, terms):
        """``sum_d p_kd (y_d - m_kd)^2`` as GEMMs; accurate because the inputs are centred."""
        square_weights, minus_twice_weighted_means, constant = terms
        shape = (rows.n_rows, square_weights.shape[1])
        cross = np.matmul(rows.values, minus_twice_weighted_means, out=rows.take("cross", shape))
        return DistanceParts(*self._weighed_squares(rows, square_weights), cross, constant)

    def _weighed_squares(self, rows, square_weights):
        """``(quadratic, row_terms, column_weights)`` of ``DistanceParts``: the squares weighed by the
        (W, K) ``square_weights``, one GEMM (W = D); a type with W = 1 weighs the norms as a rank one."""
        quadratic = np.matmul(self._squares(rows), square_weights, out=rows.take("distances", (rows.n_rows, square_weights.shape[1])))
        return quadratic, None, None

    def _regularize(self, covariances, reg_covar):
        return covariances + reg_covar

    def precision_cholesky(self, covariances, *, reg_covar=None):
        covariances = np.asarray(covariances, dtype=np.float64)
        non_finite = first_index(~np.isfinite(covariances))
        if non_finite is not None:
            raise self._non_finite_error(non_finite)
        not_positive = first_index(covariances <= 0)
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

    def _scale_normals(self, normals, covariance):
        return normals * np.sqrt(covariance)

    def _check_positive(self, values, label, noun):
        not_positive = first_index(values <= 0)
        if not_positive is not None:
            what = self._describe(not_positive, noun)
            raise FitError(f"{label} is invalid: {what} is {values[not_positive]:.3g}, not positive")


class DiagCovariance(VarianceCovariance):
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


class SphericalCovariance(VarianceCovariance):
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

    def _squares(self, rows):
        """The squared norms as one column: one product per row and component instead of D."""
        return rows.norms[:, None]

    def _square_weights(self, precisions):
        return precisions[:, :1]  # the same for every feature

    def _weighed_squares(self, rows, square_weights):
        return None, rows.norms, np.ascontiguousarray(square_weights[0])
