"""Model files (NumPy arrays + JSON, no pickle), per-row predictions in Zarr, atomic output directories.

A saved model is a directory::

    model.json              estimator class, constructor parameters, fitted scalars and lists,
                            preprocessing steps, package versions
    <attribute>.npy         one file per fitted array (means_.npy, cluster_centers_.npy, ...)
    params/<name>.npy       array-valued constructor parameters (means_init, ...)
    preprocessing/<name>.npy  the fitted preprocessing, when there is one

``load_model(path)`` rebuilds the estimator with ``cls(**params)`` and sets the fitted attributes
back; with preprocessing it returns a ``PreprocessedModel`` whose methods take raw rows. Every
array is read with ``np.load(allow_pickle=False)``. Both take a local path or an fsspec URL, with
``storage_options``; ``load_model`` refuses a run's output that is not marked complete
(``outputs.locations.check_complete``).
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any, Mapping

import fsspec
import numpy as np

from daskem.data.stores import access_problem
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


def save_model(model, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None,
               storage_options: Mapping[str, Any] | None = None) -> str | os.PathLike:
    """Write a fitted estimator (or ``PreprocessedModel``) to ``directory`` (a path or an fsspec URL,
    new) as .npy files + model.json, written last."""
    given, (fs, root) = directory, _filesystem(directory, storage_options)
    preprocessing = None
    estimator = model
    if isinstance(model, PreprocessedModel):
        estimator, preprocessing = model.estimator, model.preprocessing
    name = type(estimator).__name__
    if _estimator_classes().get(name) is not type(estimator):
        raise TypeError(f"cannot save a {type(estimator).__qualname__}: only daskem's estimators are supported")
    if fs.exists(root):
        raise FileExistsError(f"{directory}: exists; save the model to a new directory")
    fs.makedirs(root, exist_ok=True)
    directory = _Files(fs, root, str(directory))

    params, array_params = {}, []
    for key, value in estimator.get_params(deep=False).items():
        if isinstance(value, (np.ndarray, list, tuple)):
            _save_npy(directory, f"params/{key}.npy", np.asarray(value))
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
            _save_npy(directory, f"{key}.npy", value)
            fitted_arrays.append(key)
        else:
            fitted[key] = _jsonable(value, key)

    prep_json = None
    if preprocessing is not None:
        for key, value in preprocessing.to_arrays().items():
            _save_npy(directory, f"preprocessing/{key}.npy", value)
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
    write_json(directory.path("model.json"), document, fs=fs)
    return given


def load_model(path: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None):
    """A fitted estimator from a model directory or a run's output; see ``read_model``."""
    return read_model(path, storage_options)


def read_model(path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
               options_key: str = "storage_options"):
    """A fitted estimator from a model directory (or a run's output directory holding ``model/``), a
    local path or an fsspec URL opened with ``storage_options``.

    Returns the estimator itself, or a ``PreprocessedModel`` when the model was fitted on
    preprocessed features: its prediction methods then take raw rows. Every file is checked (valid
    JSON of the expected form, readable ``.npy`` arrays of the expected shapes, finite values): a
    damaged model, or a run's output not marked complete, is refused with one line naming the file
    and what is wrong, never half-loaded; a store that cannot be reached, naming ``options_key``.
    """
    from daskem.outputs.locations import check_complete

    fs, root = _filesystem(path, storage_options)
    directory = _Files(fs, root, str(path))
    try:
        check_complete(fs, root, directory.shown)
        if not fs.isfile(directory.path("model.json")) and fs.isfile(directory.path("model/model.json")):
            directory = directory.child("model")
        found = fs.isfile(directory.path("model.json"))
    except DaskemUserError:
        raise
    except Exception as exc:  # credentials, endpoint, backend
        raise DaskemUserError(access_problem(str(path), exc, storage_options or {}, key=options_key,
                                             path_key="the model's path")) from None
    if not found:
        raise DaskemUserError(f"{path}: no model.json there; point at a run's output directory or its model/ directory")
    document_path = directory.shown_path("model.json")
    document = _read_document(directory, "model.json")
    cls = _estimator_classes().get(document["estimator"])
    if cls is None:
        raise DaskemUserError(f"{document_path}: unknown estimator {document['estimator']!r}; "
                              f"known: {', '.join(_estimator_classes())}")
    params = dict(document["params"])
    for key in document["array_params"]:
        params[key] = _load_npy(directory, f"params/{key}.npy")
    try:
        estimator = cls(**params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise DaskemUserError(f"{document_path}: parameters do not fit this daskem's {cls.__name__} ({exc})") from None
    for key, value in document["fitted"].items():
        setattr(estimator, key, value)
    for key in document["fitted_arrays"]:
        setattr(estimator, key, _load_npy(directory, f"{key}.npy"))
    try:
        estimator.check_fitted()
    except ValueError as exc:
        raise DaskemUserError(f"{directory.shown}: the model is damaged: {exc}; fit it again") from None
    prep = document.get("preprocessing")
    if prep is None:
        return estimator
    try:
        arrays = {key: _load_npy(directory, f"preprocessing/{key}.npy") for key in prep["arrays"]}
        return PreprocessedModel(estimator, Preprocessing.from_arrays(prep["n_features_in"], arrays))
    except (KeyError, TypeError, ValueError) as exc:
        raise DaskemUserError(f"{document_path}: the preprocessing is damaged ({exc}); fit the model again") from None


class _Files:
    """The files of a model directory on a filesystem: ``path(name)`` for fsspec, ``shown_path(name)``
    for messages (as the user wrote the directory)."""

    def __init__(self, fs, root: str, shown: str):
        self.fs, self.root, self.shown = fs, root.rstrip("/"), shown.rstrip("/") or shown

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def shown_path(self, name: str) -> str:
        return f"{self.shown}/{name}"

    def child(self, name: str) -> "_Files":
        return _Files(self.fs, self.path(name), self.shown_path(name))


def _filesystem(path: str | os.PathLike, storage_options: Mapping[str, Any] | None):
    """The fsspec filesystem and path of a model directory (a local path is made absolute)."""
    text = os.fspath(path)
    if "://" not in text:
        text = os.path.abspath(os.path.expanduser(text))
    return fsspec.core.url_to_fs(text, **dict(storage_options or {}))


# The keys of model.json and the JSON type each must have.
DOCUMENT_KEYS = {"format": str, "format_version": int, "estimator": str, "params": dict, "array_params": list,
                 "fitted": dict, "fitted_arrays": list}


def _read_document(directory: _Files, name: str) -> dict[str, Any]:
    """model.json, checked to be a daskem model document of a format this daskem reads."""
    path = directory.shown_path(name)
    try:
        document = json.loads(directory.fs.cat_file(directory.path(name)).decode())
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


def _save_npy(directory: _Files, name: str, array: np.ndarray) -> None:
    if array.dtype == object:
        raise TypeError(f"{name}: object arrays cannot be saved without pickle")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    path = directory.path(name)
    directory.fs.makedirs(directory.fs._parent(path), exist_ok=True)
    directory.fs.pipe_file(path, buffer.getvalue())


def _load_npy(directory: _Files, name: str) -> np.ndarray:
    path = directory.shown_path(name)
    try:
        return np.load(io.BytesIO(directory.fs.cat_file(directory.path(name))), allow_pickle=False)
    except FileNotFoundError:
        raise DaskemUserError(f"{path}: missing from the model directory; the model is incomplete") from None
    except (ValueError, OSError, EOFError) as exc:  # a bad header, truncated data, object arrays
        raise DaskemUserError(f"{path}: not a readable .npy array ({exc}); the model is damaged, fit it again") from None
