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
import platform
import shutil
import tempfile
from importlib import metadata
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from .errors import DaskemUserError, OutputError
from .preprocess import Preprocessing, PreprocessedModel

logger = logging.getLogger("daskem")

FORMAT = "daskem-model"
FORMAT_VERSION = 1
PACKAGES = ("daskem", "numpy", "scipy", "dask", "distributed", "zarr", "dask-ml", "scikit-learn", "pydantic")


def _estimator_classes() -> dict[str, type]:
    from .gmm import GaussianMixture
    from .kmeans import KMeans

    return {"GaussianMixture": GaussianMixture, "KMeans": KMeans}


def package_versions() -> dict[str, str | None]:
    """Versions of Python and of the packages a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out["daskem"] is None:  # running from a source tree
        from . import __version__

        out["daskem"] = __version__
    return out


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
        if not key.endswith("_") or key.startswith("_"):
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
    preprocessed features: its prediction methods then take raw rows.
    """
    directory = Path(path)
    if not (directory / "model.json").is_file() and (directory / "model" / "model.json").is_file():
        directory = directory / "model"
    document_path = directory / "model.json"
    if not document_path.is_file():
        raise DaskemUserError(f"{path}: no model.json there; point at a run's output directory or its model/ directory")
    document = json.loads(document_path.read_text())
    if document.get("format") != FORMAT or document.get("format_version", 0) > FORMAT_VERSION:
        raise DaskemUserError(
            f"{document_path}: not a daskem model of format version <= {FORMAT_VERSION} "
            f"(format {document.get('format')!r}, version {document.get('format_version')!r}); upgrade daskem"
        )
    classes = _estimator_classes()
    cls = classes.get(document["estimator"])
    if cls is None:
        raise DaskemUserError(
            f"{document_path}: unknown estimator {document['estimator']!r}; known: {', '.join(classes)}"
        )
    params = dict(document["params"])
    for key in document.get("array_params", []):
        params[key] = _load_npy(directory / "params" / f"{key}.npy")
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise DaskemUserError(f"{document_path}: parameters do not fit this daskem's {cls.__name__} ({exc})") from None
    for key, value in document["fitted"].items():
        setattr(estimator, key, value)
    for key in document["fitted_arrays"]:
        setattr(estimator, key, _load_npy(directory / f"{key}.npy"))
    prep = document.get("preprocessing")
    if prep is None:
        return estimator
    arrays = {key: _load_npy(directory / "preprocessing" / f"{key}.npy") for key in prep["arrays"]}
    return PreprocessedModel(estimator, Preprocessing.from_arrays(prep["n_features_in"], arrays))


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


def _jsonable(value: Any, key: str) -> Any:
    """``value`` as JSON-ready Python (numbers, strings, lists, dicts), or a TypeError naming ``key``."""
    if value is None or isinstance(value, (bool, str, np.bool_)):
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, key) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, key) for k, v in value.items()}
    raise TypeError(f"cannot save {key}={value!r} ({type(value).__name__}) as JSON")


def write_json(path: str | os.PathLike, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON, through a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=lambda v: _jsonable(v, path.name)) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- predictions


def write_predictions(
    model,
    X,
    path: str | os.PathLike,
    *,
    labels: bool = True,
    responsibilities: bool = False,
    log_density: bool = False,
) -> dict[str, dict[str, Any]]:
    """Write the requested per-row outputs of ``model`` on ``X`` to the Zarr group ``path``.

    ``labels`` (int32, N), ``responsibilities`` (float32, N x K), ``log_density`` (float64, N),
    chunked like the rows of ``X``. For a Dask ``X`` the workers compute and write each chunk;
    nothing is gathered. Returns a description of each array written.
    """
    wanted = []
    if labels:
        wanted.append(("labels", model.predict, np.int32))
    if responsibilities:
        wanted.append(("responsibilities", model.predict_proba, np.float32))
    if log_density:
        wanted.append(("log_density", model.score_samples, np.float64))
    if not wanted:
        return {}
    n_rows = X.shape[0]
    chunk = max(X.chunks[0]) if isinstance(X, da.Array) else n_rows
    if isinstance(X, da.Array) and any(size != chunk for size in X.chunks[0][:-1]):
        X = X.rechunk({0: chunk})  # zarr chunks are regular: each block must be one chunk
    group = zarr.open_group(str(path), mode="w-")
    sources, targets, written = [], [], {}
    for name, method, dtype in wanted:
        values = method(X)
        values = values.astype(dtype)
        shape = (n_rows,) + tuple(values.shape[1:])
        target = group.create_array(name, shape=shape, chunks=(chunk,) + shape[1:], dtype=dtype)
        if isinstance(values, da.Array):
            sources.append(values)
            targets.append(target)
        else:
            target[...] = values
        written[name] = {"dtype": np.dtype(dtype).name, "shape": list(shape), "chunk_rows": chunk}
    if sources:
        da.store(sources, targets, lock=False)
    return written


# ----------------------------------------------------------------------------- atomic directory


class StagedOutput:
    """An output directory that appears only when complete.

    ``check()`` refuses an existing, non-empty ``final`` unless ``overwrite``. Used as a context
    manager it yields a hidden temporary sibling to write into; ``commit()`` renames it into
    place (replacing the old directory only then, when overwriting). Leaving the block without a
    commit (an exception) removes the temporary directory and any parent directory created for it.
    """

    def __init__(self, final: str | os.PathLike, *, overwrite: bool = False):
        self.final = Path(final).expanduser().absolute()
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self._created: Path | None = None

    def check(self) -> None:
        final = self.final
        if final.exists() or final.is_symlink():
            if not final.is_dir():
                raise OutputError(f"{final}: exists and is not a directory; choose another output.path")
            if any(final.iterdir()) and not self.overwrite:
                raise OutputError(
                    f"{final}: output directory already exists; set output.overwrite: true "
                    "(--set output.overwrite=true) to replace it, or choose another output.path"
                )
        parent = next((p for p in final.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise OutputError(f"{final}: cannot create it, {parent} is not a writable directory")

    def __enter__(self) -> Path:
        self.check()
        parent = self.final.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        self._created = missing[-1] if missing else None
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        return self.tmp

    def commit(self) -> Path:
        """Move the finished temporary directory into place; the old one goes only after."""
        if self.tmp is None:
            raise RuntimeError("commit() outside the 'with' block")
        self.check()
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
            if self._created is not None:  # not committed: leave the parent as it was
                _remove_empty_tree(self._created)
        return False


def _remove_empty_tree(top: Path) -> None:
    """Remove ``top`` and its subdirectories if they hold no file."""
    directories = [p for p in [top, *top.rglob("*")] if p.is_dir()]
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            return
