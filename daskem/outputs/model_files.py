"""Model files (NumPy arrays + JSON, no pickle), per-row predictions in Zarr, atomic output directories.

A saved model is a directory::

    model.json              estimator class, constructor parameters, fitted scalars and lists,
                            preprocessing steps, package versions
    <attribute>.npy         one file per fitted array (means_.npy, cluster_centers_.npy, ...)
    params/<name>.npy       array-valued constructor parameters (means_init, ...)
    preprocessing/<name>.npy  the fitted preprocessing, when there is one

``load_model(path)`` rebuilds the estimator with ``cls(**params)`` and sets the fitted attributes
back; with preprocessing it returns a ``PreprocessedModel`` whose methods take raw rows. Every
array is read with ``np.load(allow_pickle=False)``.

``StagedOutput`` makes a run's output directory appear complete or not at all: everything is
written into a hidden sibling directory that is renamed into place at the very end.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from daskem.errors import DaskemUserError
from daskem.models.preprocessing import PreprocessedModel, Preprocessing
from daskem.outputs.records import _jsonable, package_versions, write_json

logger = logging.getLogger("daskem")

FORMAT = "daskem-model"
FORMAT_VERSION = 1


def _estimator_classes() -> dict[str, type]:
    from daskem.models.gaussian_mixture import GaussianMixture
    from daskem.models.kmeans import KMeans

    return {"GaussianMixture": GaussianMixture, "KMeans": KMeans}




# ----------------------------------------------------------------------------- model files


def save_model(model, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write a fitted estimator (or ``PreprocessedModel``) to ``directory`` as .npy files + model.json."""
    directory = Path(directory)
    preprocessing = None
    estimator = model
    if isinstance(model, PreprocessedModel):
        estimator, preprocessing = model.estimator, model.preprocessing
    name = type(estimator).__name__
    if _estimator_classes().get(name) is not type(estimator):
        raise TypeError(f"cannot save a {type(estimator).__qualname__}: only daskem's estimators are supported")
    directory.mkdir(parents=True, exist_ok=False)

    params, array_params = {}, []
    for key, value in estimator.get_params(deep=False).items():
        if isinstance(value, (np.ndarray, list, tuple)):
            _save_npy(directory / "params" / f"{key}.npy", np.asarray(value))
            array_params.append(key)
        elif isinstance(value, (np.random.RandomState, np.random.Generator)):
            logger.warning("model parameter %s=%r is saved as null: save an int seed to keep it", key, value)
            params[key] = None
        else:
            params[key] = _jsonable(value, key)

    fitted, fitted_arrays = {}, []
    for key, value in vars(estimator).items():
        if not key.endswith("_") or key.startswith("_") or key in getattr(estimator, "_per_row_attributes", ()):
            continue
        if isinstance(value, np.ndarray):
            _save_npy(directory / f"{key}.npy", value)
            fitted_arrays.append(key)
        else:
            fitted[key] = _jsonable(value, key)

    prep_json = None
    if preprocessing is not None:
        for key, value in preprocessing.to_arrays().items():
            _save_npy(directory / "preprocessing" / f"{key}.npy", value)
        prep_json = {**preprocessing.to_json(), "arrays": sorted(preprocessing.to_arrays())}

    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": name,
        "params": params,
        "array_params": sorted(array_params),
        "fitted": fitted,
        "fitted_arrays": sorted(fitted_arrays),
        "preprocessing": prep_json,
        "versions": package_versions(),
        **(metadata or {}),
    }
    write_json(directory / "model.json", document)
    return directory


def load_model(path: str | os.PathLike):
    """A fitted estimator from a model directory (or a run's output directory holding ``model/``).

    Returns the estimator itself, or a ``PreprocessedModel`` when the model was fitted on
    preprocessed features: its prediction methods then take raw rows. Every file is checked (valid
    JSON of the expected form, readable ``.npy`` arrays of the expected shapes, finite values): a
    damaged model is refused with one line naming the file and what is wrong, never half-loaded.
    """
    directory = Path(path)
    if not (directory / "model.json").is_file() and (directory / "model" / "model.json").is_file():
        directory = directory / "model"
    document_path = directory / "model.json"
    if not document_path.is_file():
        raise DaskemUserError(f"{path}: no model.json there; point at a run's output directory or its model/ directory")
    document = _read_document(document_path)
    cls = _estimator_classes().get(document["estimator"])
    if cls is None:
        raise DaskemUserError(f"{document_path}: unknown estimator {document['estimator']!r}; "
                              f"known: {', '.join(_estimator_classes())}")
    params = dict(document["params"])
    for key in document["array_params"]:
        params[key] = _load_npy(directory / "params" / f"{key}.npy")
    try:
        estimator = cls(**params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise DaskemUserError(f"{document_path}: parameters do not fit this daskem's {cls.__name__} ({exc})") from None
    for key, value in document["fitted"].items():
        setattr(estimator, key, value)
    for key in document["fitted_arrays"]:
        setattr(estimator, key, _load_npy(directory / f"{key}.npy"))
    try:
        estimator.check_fitted()
    except ValueError as exc:
        raise DaskemUserError(f"{directory}: the model is damaged: {exc}; fit it again") from None
    prep = document.get("preprocessing")
    if prep is None:
        return estimator
    try:
        arrays = {key: _load_npy(directory / "preprocessing" / f"{key}.npy") for key in prep["arrays"]}
        return PreprocessedModel(estimator, Preprocessing.from_arrays(prep["n_features_in"], arrays))
    except (KeyError, TypeError, ValueError) as exc:
        raise DaskemUserError(f"{document_path}: the preprocessing is damaged ({exc}); fit the model again") from None


# The keys of model.json and the JSON type each must have.
DOCUMENT_KEYS = {"format": str, "format_version": int, "estimator": str, "params": dict, "array_params": list,
                 "fitted": dict, "fitted_arrays": list}


def _read_document(path: Path) -> dict[str, Any]:
    """model.json, checked to be a daskem model document of a format this daskem reads."""
    try:
        document = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise DaskemUserError(f"{path}: not a text file; the model is damaged, fit it again") from None
    except json.JSONDecodeError as exc:
        raise DaskemUserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the model is damaged, "
                              "fit it again") from None
    if not isinstance(document, dict):
        raise DaskemUserError(f"{path}: holds a {type(document).__name__}, not a model document; fit it again")
    if document.get("format") != FORMAT or not isinstance(document.get("format_version"), int) \
            or document["format_version"] > FORMAT_VERSION:
        raise DaskemUserError(
            f"{path}: not a daskem model of format version <= {FORMAT_VERSION} "
            f"(format {document.get('format')!r}, version {document.get('format_version')!r}); upgrade daskem"
        )
    for key, kind in DOCUMENT_KEYS.items():
        if not isinstance(document.get(key), kind):
            found = "missing" if key not in document else f"a {type(document[key]).__name__}"
            raise DaskemUserError(f"{path}: key {key!r} must be a {kind.__name__}, but it is {found}; "
                                  "the model is damaged, fit it again")
    return document


def _save_npy(path: Path, array: np.ndarray) -> None:
    if array.dtype == object:
        raise TypeError(f"{path.name}: object arrays cannot be saved without pickle")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=False)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DaskemUserError(f"{path}: missing from the model directory; the model is incomplete") from None
    except (ValueError, OSError, EOFError) as exc:  # a bad header, truncated data, object arrays
        raise DaskemUserError(f"{path}: not a readable .npy array ({exc}); the model is damaged, fit it again") from None






# ----------------------------------------------------------------------------- predictions




# ----------------------------------------------------------------------------- atomic directory
