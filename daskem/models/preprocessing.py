"""Feature preprocessing fitted out of core with dask-ml, kept as plain arrays.

``fit_preprocessing(X, config.preprocess)`` fits dask-ml's ``StandardScaler`` and/or ``PCA`` on
the Dask array (each a few passes over the data, on the cluster) and keeps only what they
learned in a frozen ``Preprocessing``: centre and scale, principal axes, their mean and, when
whitening, the per-axis scale. Its ``transform`` is one NumPy function applied block by block,
the same code at fit time, in ``predict`` and after ``daskem.load_model``::

    x -> ((x - center) / scale - pca_mean) @ components.T / whiten_scale

A model fitted on preprocessed rows is handed out as a ``PreprocessedModel``: the estimator and
its ``Preprocessing``, whose prediction methods take raw rows and transform them first. Its
fitted attributes (``means_``, ``cluster_centers_``, ...) are those of the estimator, in the
transformed space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from daskem.errors import ConfigError

logger = logging.getLogger("daskem")

ARRAY_FIELDS = ("center", "scale", "pca_mean", "components", "whiten_scale")


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """A fitted feature transform; every array is float64 and may be None (step not used)."""

    n_features_in: int
    center: np.ndarray | None = None  # (D,) standardize: mean of each feature
    scale: np.ndarray | None = None  # (D,) standardize: standard deviation (1 where constant)
    pca_mean: np.ndarray | None = None  # (D,) mean of the (standardized) features
    components: np.ndarray | None = None  # (P, D) principal axes, one per row
    whiten_scale: np.ndarray | None = None  # (P,) sqrt of the explained variances, when whitening

    @property
    def n_features_out(self) -> int:
        return self.n_features_in if self.components is None else self.components.shape[0]

    @property
    def steps(self) -> list[str]:
        out = ["standardize"] if self.center is not None else []
        if self.components is not None:
            out.append("pca+whiten" if self.whiten_scale is not None else "pca")
        return out

    def transform(self, X):
        """Transform raw rows: NumPy in, NumPy out; Dask in, lazy Dask out with the same row chunks."""
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            raise ValueError(
                f"X has shape {X.shape}, but the preprocessing was fitted on {self.n_features_in} features"
            )
        if not isinstance(X, da.Array):
            return transform_rows(np.asarray(X), self)
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        node = dask.delayed(self, name=f"daskem-preprocessing-{tokenize(self.to_arrays())}", traverse=False)
        return X.map_blocks(
            transform_rows, node, chunks=(X.chunks[0], (self.n_features_out,)), dtype=X.dtype
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays by name (the ones in use only)."""
        return {name: getattr(self, name) for name in ARRAY_FIELDS if getattr(self, name) is not None}

    def to_json(self) -> dict[str, Any]:
        return {"n_features_in": self.n_features_in, "n_features_out": self.n_features_out, "steps": self.steps}

    @classmethod
    def from_arrays(cls, n_features_in: int, arrays: dict[str, np.ndarray]) -> "Preprocessing":
        unknown = set(arrays) - set(ARRAY_FIELDS)
        if unknown:
            raise ValueError(f"unknown preprocessing arrays: {', '.join(sorted(unknown))}")
        return cls(int(n_features_in), **{name: np.asarray(value, dtype=np.float64) for name, value in arrays.items()})


def transform_rows(rows: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """The transform of one block of rows, computed in float64 and returned in the rows' dtype."""
    out = np.asarray(rows, dtype=np.float64)
    if prep.center is not None:
        out = (out - prep.center) / prep.scale
    if prep.components is not None:
        out = (out - prep.pca_mean) @ prep.components.T
        if prep.whiten_scale is not None:
            out = out / prep.whiten_scale
    dtype = rows.dtype if np.issubdtype(rows.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)


def check_pca_width(n_components: int, n_features: int, *, data: str = "X") -> None:
    """The one rule on the PCA's width: no more axes than features (checked before any cluster
    starts, from the store's shape, and again by ``fit_preprocessing`` for direct callers)."""
    if n_components > n_features:
        raise ConfigError(
            f"preprocess.pca.n_components={n_components} is larger than the {n_features} features of {data}; lower it"
        )


def fit_preprocessing(X: da.Array, config, *, random_state: int | None = None) -> Preprocessing:
    """Fit the steps of ``config`` (a ``PreprocessConfig``) on the Dask array ``X``, out of core."""
    from dask_ml.decomposition import PCA
    from dask_ml.preprocessing import StandardScaler

    n_features = X.shape[1]
    found: dict[str, np.ndarray] = {}
    prep = Preprocessing(n_features)
    if config.standardize:
        scaler = StandardScaler().fit(X)
        found["center"] = np.asarray(scaler.mean_, dtype=np.float64)
        found["scale"] = np.asarray(scaler.scale_, dtype=np.float64)
        prep = Preprocessing.from_arrays(n_features, found)
        logger.info("preprocess: standardized %d features", n_features)
    if config.pca is not None:
        n_components = config.pca.n_components
        check_pca_width(n_components, n_features)
        pca = PCA(n_components=n_components, whiten=config.pca.whiten, random_state=random_state)
        pca.fit(prep.transform(X) if prep.center is not None else X)
        found["pca_mean"] = np.asarray(pca.mean_, dtype=np.float64)
        found["components"] = np.asarray(pca.components_, dtype=np.float64)
        if config.pca.whiten:
            found["whiten_scale"] = np.sqrt(np.asarray(pca.explained_variance_, dtype=np.float64))
        ratio = float(np.sum(pca.explained_variance_ratio_))
        logger.info("preprocess: PCA onto %d of %d axes keeps %.1f%% of the variance",
                    n_components, n_features, 100 * ratio)
    return Preprocessing.from_arrays(n_features, found)


class PreprocessedModel:
    """A fitted estimator behind its fitted ``Preprocessing``: prediction methods take raw rows.

    ``predict``, ``predict_proba``, ``score_samples``, ``score``, ``transform``, ``bic``, ``aic`` and
    the outlier methods (``set_outlier_threshold``, ``decision_function``, ``predict_outliers``) transform ``X`` with ``preprocessing`` and call the estimator's method. Other
    attributes (``means_``, ``n_iter_``, ...) are read from ``estimator``.
    """

    def __init__(self, estimator, preprocessing: Preprocessing):
        self.estimator = estimator
        self.preprocessing = preprocessing

    @property
    def n_features_in_(self) -> int:
        return self.preprocessing.n_features_in

    def __getattr__(self, name: str):
        if name in ("estimator", "preprocessing"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.estimator, name)

    def __repr__(self) -> str:
        return f"PreprocessedModel({self.estimator!r}, steps={self.preprocessing.steps})"

    def row_kernel(self):
        """The estimator's row kernel (see ``GaussianMixture.row_kernel``) behind the transform."""
        return partial(_transformed_outputs, self.preprocessing, self.estimator.row_kernel())

    def predict(self, X):
        return self.estimator.predict(self.preprocessing.transform(X))

    def predict_proba(self, X):
        return self.estimator.predict_proba(self.preprocessing.transform(X))

    def score_samples(self, X):
        return self.estimator.score_samples(self.preprocessing.transform(X))

    def score(self, X, y=None) -> float:
        return self.estimator.score(self.preprocessing.transform(X))

    def transform(self, X):
        return self.estimator.transform(self.preprocessing.transform(X))

    def bic(self, X) -> float:
        return self.estimator.bic(self.preprocessing.transform(X))

    def set_outlier_threshold(self, X=None, **rule):
        self.estimator.set_outlier_threshold(None if X is None else self.preprocessing.transform(X), **rule)
        return self

    def decision_function(self, X):
        return self.estimator.decision_function(self.preprocessing.transform(X))

    def predict_outliers(self, X):
        return self.estimator.predict_outliers(self.preprocessing.transform(X))

    def aic(self, X) -> float:
        return self.estimator.aic(self.preprocessing.transform(X))


def _transformed_outputs(prep: Preprocessing, kernel, rows: np.ndarray, names) -> dict:
    """``kernel``'s per-row outputs of raw rows: transformed first."""
    return kernel(transform_rows(rows, prep), names)
