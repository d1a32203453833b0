"""Matrix covariance types: one D x D matrix per component (``full``) or one shared (``tied``)."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from daskem.errors import FitError
from daskem.kernels.covariance.base import CovarianceType, DistanceParts
from daskem.kernels.tiles import pack_symmetric, unpack_symmetric


class MatrixCovariance(CovarianceType):
    """Types whose parameters are D x D matrices: one per component (full) or one shared (tied)."""

    _noun = "covariance"
    _requirement = "positive definite"

    def _outer(self, offsets):
        return offsets[:, :, None] * offsets[:, None, :]

    def _cross(self, shift, sums):
        """``d_k a_k^T + a_k d_k^T`` per component."""
        product = shift[:, :, None] * sums[:, None, :]
        return product + np.swapaxes(product, -1, -2)

    def _regularize(self, covariances, reg_covar):
        """Make the matrices exactly symmetric and add ``reg_covar`` to their diagonals."""
        symmetric = 0.5 * (covariances + np.swapaxes(covariances, -1, -2))
        return symmetric + reg_covar * np.eye(covariances.shape[-1])

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

    def _scale_normals(self, normals, covariance):
        return normals @ np.linalg.cholesky(covariance).T

    def _check_positive(self, values, label, noun):
        n_features = values.shape[-1]
        for k, matrix in enumerate(values.reshape(-1, n_features, n_features)):
            what = self._describe((k,), noun)
            if not np.allclose(matrix, matrix.T):
                asymmetry = np.max(np.abs(matrix - matrix.T))
                raise FitError(
                    f"{label} is invalid: {what} is not symmetric (max |A - A^T| = {asymmetry:.3g})"
                )
            smallest = np.linalg.eigvalsh(matrix)[0]
            if smallest <= 0:
                raise FitError(
                    f"{label} is invalid: {what} is not positive definite "
                    f"(smallest eigenvalue {smallest:.3g})"
                )


class FullCovariance(MatrixCovariance):
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

    def tile_columns(self, n_features):
        return n_features * (n_features + 1) // 2  # the packed outer products

    def widest_product(self, n_components, n_features):
        return n_components * self.tile_columns(n_features)  # the packed products against K components

    def weighted_products(self, rows, resp):
        """All K matrices ``sum_i r_ik y_i y_i^T`` in one GEMM over the packed outer products, left
        packed ((P, K) upper triangles) until the slab's sum is unpacked once."""
        return rows.packed_outer @ resp

    def _unpacked(self, products, n_features):
        return unpack_symmetric(products, n_features)

    def density_terms(self, centred_means, precisions_cholesky):
        """(K, P) packed precisions, ``-2 Lambda_k m_k`` as a D x K matrix, and ``m_k^T Lambda_k m_k``."""
        precisions = self.precisions(precisions_cholesky)
        linear = np.einsum("kde,ke->kd", precisions, centred_means)
        quadratic = np.ascontiguousarray(pack_symmetric(precisions).T)
        return quadratic, np.ascontiguousarray(-2.0 * linear.T), np.einsum("kd,kd->k", linear, centred_means)

    def distance_parts(self, rows, terms):
        """``y^T Lambda_k y - 2 y^T Lambda_k m_k + m_k^T Lambda_k m_k``: one GEMM over packed outer products."""
        quadratic, minus_twice_linear, constant = terms
        n_components = quadratic.shape[0]
        # (K x P) @ (P x n) then transposed: twice as fast as (n x P) @ (P x K) for these shapes
        distances = np.matmul(quadratic, rows.packed_outer, out=rows.take("distances", (n_components, rows.n_rows))).T
        cross = np.matmul(rows.values, minus_twice_linear, out=rows.take("cross", (rows.n_rows, n_components)))
        return DistanceParts(distances, None, None, cross, constant)


class TiedCovariance(MatrixCovariance):
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

    def widest_product(self, n_components, n_features):
        return n_features * max(n_features, n_components)  # whitening and pooled products: D x D

    def weighted_products(self, rows, resp):
        """``sum_i (sum_k r_ik) y_i y_i^T``: pooling before the product needs one D x D GEMM, not K."""
        pooled = resp @ rows.ones(resp.shape[1])  # a matrix-vector product: 4x faster than resp.sum(axis=1)
        weighted = np.multiply(rows.values, pooled[:, None], out=rows.take("weighted", rows.values.shape))
        return weighted.T @ rows.values

    def density_terms(self, centred_means, precisions_cholesky):
        """The shared factor P, ``-2 (m_k P)^T`` (D x K) and the whitened means' squared norms."""
        whitened_means = centred_means @ precisions_cholesky
        return (np.ascontiguousarray(precisions_cholesky), np.ascontiguousarray(-2.0 * whitened_means.T),
                np.einsum("kd,kd->k", whitened_means, whitened_means))

    def distance_parts(self, rows, terms):
        """``||y P||^2 - 2 (y P).(m_k P) + ||m_k P||^2``: whiten the rows once for all components."""
        factor, minus_twice_whitened_means, whitened_norms = terms
        whitened = np.matmul(rows.values, factor, out=rows.take("whitened", rows.values.shape))
        cross = np.matmul(whitened, minus_twice_whitened_means,
                          out=rows.take("distances", (rows.n_rows, minus_twice_whitened_means.shape[1])))
        squared_norms = np.einsum("nd,nd->n", whitened, whitened)
        return DistanceParts(None, squared_norms, rows.ones(cross.shape[1]), cross, whitened_norms)
