"""xarray ``DataArray`` input: its array (lazy when Dask-backed) goes in, and per-row outputs come back
labelled with its row dimension and coordinate. xarray is never imported: a labelled array is
recognized by its type's module, and the outputs are built with the input's own class."""

from __future__ import annotations

from typing import Any


def is_labelled(X: Any) -> bool:
    """Whether ``X`` is an xarray ``DataArray``."""
    return type(X).__module__.split(".")[0] == "xarray" and hasattr(X, "dims") and hasattr(X, "data")


def unlabelled(X: Any) -> Any:
    """The array under a ``DataArray`` (its ``.data``, a Dask array stays lazy); anything else as it is."""
    return X.data if is_labelled(X) else X


def labelled_like(X: Any, values: Any, column_dim: str | None = None) -> Any:
    """``values`` (one row per row of ``X``, NumPy or Dask) as a ``DataArray`` on the row dimension of
    ``X`` with its row coordinate, when ``X`` is one; otherwise ``values`` as they are."""
    if not is_labelled(X):
        return values
    row_dim = X.dims[0]
    dims = (row_dim,) if values.ndim == 1 else (row_dim, column_dim or "column")
    coords = {name: coord for name, coord in X.coords.items() if coord.dims == (row_dim,)}
    return type(X)(values, dims=dims, coords=coords)
