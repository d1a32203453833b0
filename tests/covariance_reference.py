"""What the tests need to know about a covariance type, from its registered object alone.

The library never needs a type's parameters as full matrices, nor a slab's log-density or second
moments outside a kernel; the tests do, so those live here. The references know a type only
through ``as_full`` (its parameters as (K, D, D) matrices), never by its name, so the shared
suite runs unchanged over any registered type, the toy ``scalar`` type of
``scalar_covariance.py`` included.
"""

from __future__ import annotations

import contextlib

import numpy as np
from scalar_covariance import ScalarCovariance
from sklearn.mixture import GaussianMixture

from daskem.kernels.covariance import COVARIANCE_TYPES, MatrixCovariance, get_covariance_type, register
from daskem.kernels.mixture import SlabSums
from daskem.kernels.tiles import CentredRows

# Every built-in type, then the toy type the shared suite registers for the length of a test.
SHARED_SUITE_TYPES = [*COVARIANCE_TYPES, ScalarCovariance.name]
# The registered types scikit-learn knows too: the only ones it can be an oracle for.
SKLEARN_TYPES = [
    name for name in COVARIANCE_TYPES if name in GaussianMixture._parameter_constraints["covariance_type"][0].options
]


@contextlib.contextmanager
def registered(name: str):
    """The registered type ``name``; the toy type is registered on entry and removed on exit."""
    if name in COVARIANCE_TYPES:
        yield get_covariance_type(name)
        return
    assert name == ScalarCovariance.name, name
    toy = ScalarCovariance()
    register(toy)
    try:
        yield toy
    finally:
        del COVARIANCE_TYPES[name]


def as_full(cov, values, n_components: int, n_features: int) -> np.ndarray:
    """(K, D, D) full matrices equivalent to parameters (covariances, precisions or their factors)."""
    per_component = cov._expand(np.asarray(values, dtype=np.float64), n_components, n_features)
    if isinstance(cov, MatrixCovariance):
        return np.array(per_component)
    full = np.zeros((n_components, n_features, n_features))
    full[:, np.arange(n_features), np.arange(n_features)] = per_component
    return full


def log_prob(cov, X, means, precisions_cholesky) -> np.ndarray:
    """(n, K) log N(x_i; mu_k, Sigma_k) through the type's own E-step pieces, on data centred at
    the mean of the means (as the kernels centre each block)."""
    means = np.asarray(means, dtype=np.float64)
    precisions_cholesky = np.asarray(precisions_cholesky, dtype=np.float64)
    reference = means.mean(axis=0)
    terms = cov.density_terms(means - reference, precisions_cholesky)
    log_det = cov.log_det_cholesky(precisions_cholesky, means.shape[1])
    return cov.log_gaussian(CentredRows.of(X, reference), terms, log_det)


def chunk_s2(cov, X, resp, shift) -> np.ndarray:
    """Second moments of one slab around ``shift`` (K, D), weighted by ``resp`` (n, K), pooled by type."""
    shift = np.asarray(shift, dtype=np.float64)
    reference = shift.mean(axis=0)
    sums = SlabSums(cov, shift - reference)
    sums.add(CentredRows.of(X, reference), np.array(resp, dtype=np.float64), np.zeros(len(X)))
    return sums.stats().s2


def weighted_covariances(X, resp) -> np.ndarray:
    """(K, D, D) two-pass weighted covariances of each component, with ``np.cov``."""
    return np.stack([np.cov(X.T, aweights=resp[:, k], bias=True) for k in range(resp.shape[1])])


def project(cov, full, nk, n_features: int) -> np.ndarray:
    """Parameters of ``cov`` nearest (K, D, D) matrices ``full``: least squares over components
    weighted by ``nk``, in the span of the type's full matrices.

    For a type that shares entries between components or features, this is the maximum-likelihood
    M-step given the per-component covariances: ``full`` itself, their ``nk``-weighted mean
    (``tied``), their diagonals (``diag``), the mean of those (``spherical``), and so on.
    """
    n_components = len(nk)
    shape = cov.covariances_shape(n_components, n_features)
    size = int(np.prod(shape))
    scale = np.sqrt(np.asarray(nk, dtype=np.float64))[:, None, None]
    columns = [(scale * as_full(cov, unit.reshape(shape), n_components, n_features)).ravel() for unit in np.eye(size)]
    solution, *_ = np.linalg.lstsq(np.column_stack(columns), (scale * full).ravel(), rcond=None)
    return solution.reshape(shape)


def naive_covariances(cov, X, resp, reg_covar: float) -> np.ndarray:
    """The M-step the slow way: weighted ``np.cov`` per component plus ``reg_covar I``, projected on the type."""
    full = weighted_covariances(X, resp) + reg_covar * np.eye(X.shape[1])
    return project(cov, full, resp.sum(axis=0), X.shape[1])


def naive_parameters(cov, X, resp, reg_covar: float = 1e-6):
    """(means, covariances) of the naive M-step from responsibilities ``resp``."""
    means = (resp.T @ X) / resp.sum(axis=0)[:, None]
    return means, naive_covariances(cov, X, resp, reg_covar)


def shifted_m_step(cov, X, resp, shift, reg_covar: float, nk_padding=0.0):
    """daskem's M-step from one slab's statistics around ``shift``: (means, covariances)."""
    nk = resp.sum(axis=0) + nk_padding
    offsets = resp.T @ (X - shift.mean(axis=0)) - resp.sum(axis=0)[:, None] * (shift - shift.mean(axis=0))
    offsets /= nk[:, None]
    covariances = cov.covariances_from_stats(nk, offsets, chunk_s2(cov, X, resp, shift), reg_covar)
    return shift + offsets, covariances
