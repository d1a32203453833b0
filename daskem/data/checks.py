"""Checks on the data and the initial parameters, each failing with the problem and its fix."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from daskem.data.labelled import unlabelled
from daskem.errors import DaskemUserError, DataError, FitError

# Row blocks made for NumPy input hold about this many bytes.
NUMPY_BLOCK_BYTES = 64 * 2**20


def as_row_blocks(X, *, min_rows: int = 1, what: str = "n_components") -> da.Array:
    """``X`` as a 2-D floating Dask array split along rows only, with at least ``min_rows`` rows; the
    messages follow scikit-learn's ``check_array`` wording, so its conventions recognize them."""
    X = unlabelled(X)
    array = X if isinstance(X, da.Array) and isinstance(X._meta, np.ndarray) else _dense(X)
    if array.ndim != 2:
        hint = (": Reshape your data with X.reshape(-1, 1) if it has a single feature, or X.reshape(1, -1) if "
                "it is a single row" if array.ndim == 1 else "")
        raise DataError(
            f"X must be 2-D (rows x features), got a {array.ndim}-D array of shape {array.shape}{hint}"
        )
    array = _real(array)
    for axis, noun in ((0, "sample"), (1, "feature")):
        if array.shape[axis] == 0:
            raise DataError(f"Found array with 0 {noun}(s) (shape={array.shape}) while a minimum of 1 is required: "
                            f"X has no {noun}s")
    if not isinstance(array, da.Array):
        rows = max(1, NUMPY_BLOCK_BYTES // max(1, array.shape[1] * array.itemsize))
        array = da.from_array(array, chunks=(rows, -1))
    if any(math.isnan(size) for size in array.chunks[0]):
        raise DataError("X has unknown chunk sizes: call X.compute_chunk_sizes() before fitting")
    if array.numblocks[1] != 1:
        raise DataError(
            f"X is split into {array.numblocks[1]} chunks along the feature axis, but every chunk must "
            "hold whole rows: rechunk it with X.rechunk({1: -1})"
        )
    check_enough_rows(array.shape[0], min_rows, key=what)
    return array


def _dense(X):
    """``X`` as a NumPy array (a Dask array's blocks checked by their meta); sparse input refused."""
    sparse = isinstance(X, da.Array) and not isinstance(X._meta, np.ndarray) and hasattr(X._meta, "todense")
    if sparse or hasattr(X, "toarray") or type(X).__module__.startswith("sparse"):
        raise DataError(f"X is a sparse {type(X).__name__}, but sparse input is not supported: densify it "
                        "(X.toarray(), or X.map_blocks(lambda block: block.todense()) for a Dask array)")
    if isinstance(X, da.Array):
        raise DataError(f"X is a Dask array of {type(X._meta).__name__} blocks: only NumPy blocks are supported; "
                        "convert them with X.map_blocks(numpy.asarray)")
    return np.asarray(X)


def _real(array):
    """``array`` with a floating dtype: integers and booleans converted, object arrays converted when
    they hold numbers only (a ``TypeError`` naming the value otherwise), complex and text refused."""
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"Complex data not supported: X has dtype {array.dtype}; fit its real and imaginary parts "
                        "as separate features (numpy.hstack([X.real, X.imag]))")
    if array.dtype == object and not isinstance(array, da.Array):
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"X has dtype object and a value that is not a number ({exc}): convert X to "
                            "numbers first") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"X must hold real numbers, got dtype {array.dtype}: convert it with X.astype('float64')")
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def check_enough_rows(n_rows: int, n_components: int, *, key: str = "n_components", data: str = "X",
                      error: type[DaskemUserError] = DataError) -> None:
    """The one rule on the number of rows: at least one per component. ``key`` and ``data`` name the
    parameter and the rows in the message (``model.n_components`` and the store for a config)."""
    if n_rows < n_components:
        raise error(
            f"{data} has {n_rows} rows but {key}={n_components}: there must be at least as many rows "
            f"as components; lower {key} or add data"
        )


def check_features(X: da.Array, n_features: int, model: str = "the model") -> None:
    """Data to predict on must have the features the model was fitted on (scikit-learn's wording)."""
    if X.shape[1] != n_features:
        raise DataError(f"X has {X.shape[1]} features, but {model} is expecting {n_features} features as input "
                        f"(the features it was fitted on)")


def check_shape(value, expected: tuple[int, ...], name: str) -> np.ndarray:
    """``value`` as a float64 array of exactly ``expected`` shape, finite."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != expected:
        raise FitError(f"{name} has shape {array.shape}, expected {expected} (n_components x n_features)"
                         if len(expected) == 2 else f"{name} has shape {array.shape}, expected {expected}")
    if not np.isfinite(array).all():
        raise FitError(f"{name} holds NaN or infinite values")
    return array


def check_weights(weights, n_components: int) -> np.ndarray:
    """Initial weights: K non-negative values that sum to 1."""
    weights = check_shape(weights, (n_components,), "weights_init")
    if weights.min() < 0:
        raise FitError(f"weights_init must be non-negative, but its minimum is {weights.min():g}")
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise FitError(f"weights_init must sum to 1, but it sums to {weights.sum():.8g}: divide it by its sum")
    return weights


def check_fitted_arrays(estimator, shapes: dict[str, tuple[int, ...]]) -> None:
    """Each fitted attribute in ``shapes`` is a finite numeric array of exactly that shape."""
    for name, expected in shapes.items():
        value = np.asarray(getattr(estimator, name, None))
        if value.dtype.kind not in "fiu" or value.shape != tuple(expected):
            raise ValueError(f"{name} has shape {value.shape} and dtype {value.dtype}, expected a numeric array "
                             f"of shape {tuple(expected)}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} holds NaN or infinite values")


def sample_weight_blocks(sample_weight, X: da.Array, *, name: str = "sample_weight") -> da.Array | None:
    """Row weights for ``X`` (a NumPy or Dask array with one value per row, or one number for every
    row) as a lazy float64 Dask array chunked like the rows of ``X``; None: every row counts once.
    Their values are checked by :func:`check_weight_values` once their minimum and sum are known."""
    if sample_weight is None:
        return None
    weights = unlabelled(sample_weight)
    if not isinstance(weights, da.Array):
        weights = np.asarray(weights)
        if not np.issubdtype(weights.dtype, np.number) or np.issubdtype(weights.dtype, np.complexfloating):
            raise DataError(f"{name} must hold real numbers, got dtype {weights.dtype}")
        if weights.ndim == 0:
            weights = da.full(X.shape[0], float(weights), chunks=(X.chunks[0],))
    if weights.ndim != 1 or weights.shape[0] != X.shape[0]:
        raise DataError(f"{name} has shape {weights.shape} but X has {X.shape[0]} rows: give one weight per row "
                        "(or one number for every row)")
    return da.asarray(weights).astype(np.float64).rechunk((X.chunks[0],))


def check_weight_values(lowest: float, total: float, *, name: str = "sample_weight") -> None:
    """Row weights with this minimum and sum are usable: finite, non-negative, not all zero."""
    if not np.isfinite(total):
        raise DataError(f"{name} holds NaN or infinite values: give every row a finite weight")
    if lowest < 0:
        raise DataError(f"{name} must be non-negative, but its minimum is {lowest:g}: give every row a weight of 0 "
                        "or more")
    if total <= 0:
        raise DataError(f"{name} is zero for every row: at least one row must have a positive weight")
