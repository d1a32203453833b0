"""Open the input Zarr store lazily and check that it holds a 2-D numeric array.

``open_data(config.data)`` returns a small frozen ``DataSource`` (what was opened, for logs and
``run.json``) and a Dask array chunked along rows only: one column chunk, and row chunks (slabs)
made of whole store chunks (whole shards when the array is sharded) grouped up to
``data.slab_mib``, so every stored chunk is read by exactly one task, unless ``data.chunk_rows``
is set. Nothing is read but metadata; each task reads its slab through ``chunks.SlabReader``, so a
corrupt chunk fails with its name. ``check_chunks(config.data)`` lists the store once to find
chunks missing from it. Every problem is a ``DataError`` whose message names the store or array
and the fix.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import dask.array as da
import fsspec
import numpy as np
import zarr
from dask.base import tokenize

from daskem.data.chunks import (
    SlabReader,
    describe_chunk,
    missing_chunks,
    missing_chunks_message,
    stored_chunk_shape,
)
from daskem.data import stamps
from daskem.data.credentials import scrub
from daskem.data.slabs import DEFAULT_SLAB_BYTES, plan_slab_rows
from daskem.errors import DataError

logger = logging.getLogger("daskem")


@dataclass(frozen=True)
class DataSource:
    """What ``open_data`` opened: enough to describe the input in logs and ``run.json``."""

    path: str
    array: str | None
    shape: tuple[int, int]
    dtype: str  # as stored; the Dask array is float32 or float64
    store_chunks: tuple[int, ...]  # the store's chunk shape (its shard shape when sharded)
    row_chunks: tuple[int, ...]  # rows per Dask block
    zarr_format: int

    @property
    def name(self) -> str:
        return f"{self.path}" + (f" (array {self.array})" if self.array else "")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["n_chunks"] = len(self.row_chunks)
        out["row_chunks"] = sorted(set(self.row_chunks), reverse=True)  # distinct sizes, not one per block
        return out


def open_data(data_config, *, slab_bytes: int | None = None) -> tuple[DataSource, da.Array]:
    """Open ``data_config`` (a ``DataConfig``) as a validated ``DataSource`` and a lazy Dask array;
    ``slab_bytes`` overrides ``data_config.slab_mib``."""
    return open_array(
        data_config.path,
        array=data_config.array,
        storage_options=data_config.storage_options,
        chunk_rows=data_config.chunk_rows,
        slab_bytes=slab_bytes or data_config.slab_mib * 2**20,
    )


def open_array(
    path: str,
    *,
    array: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunk_rows: int | None = None,
    slab_bytes: int = DEFAULT_SLAB_BYTES,
) -> tuple[DataSource, da.Array]:
    """Open the array ``array`` of the Zarr store at ``path`` (or the store itself, when an array)."""
    node = open_zarr_array(path, array=array, storage_options=storage_options)
    where = describe(path, array)
    if node.ndim != 2:
        raise DataError(
            f"{where}: the array has {node.ndim} dimension(s) (shape {node.shape}); daskem needs a 2-D "
            "array of rows x features: reshape it to (n_samples, n_features)"
        )
    n_rows, n_features = node.shape
    if n_rows == 0 or n_features == 0:
        raise DataError(f"{where}: the array is empty (shape {node.shape}); write some rows first")
    dtype = np.dtype(node.dtype)
    target = _working_dtype(dtype, where)
    store_chunks = stored_chunk_shape(node)
    rows = chunk_rows or plan_slab_rows(store_chunks[0], n_features * target.itemsize, slab_bytes)
    if chunk_rows and chunk_rows % store_chunks[0]:
        logger.warning(
            "data.chunk_rows=%d is not a multiple of the store's %d-row chunks: some chunks are read "
            "by two tasks",
            chunk_rows,
            store_chunks[0],
        )
    reader = SlabReader(node, where)
    x = da.from_array(reader, chunks=(min(rows, n_rows), n_features), name=f"read-zarr-{tokenize(reader)}",
                      fancy=False, asarray=False, meta=np.empty((0, 0), dtype=dtype))
    if dtype != target:
        x = x.astype(target)
    source = DataSource(
        path=str(path),
        array=array,
        shape=(int(n_rows), int(n_features)),
        dtype=str(dtype),
        store_chunks=tuple(int(c) for c in store_chunks),
        row_chunks=tuple(int(c) for c in x.chunks[0]),
        zarr_format=int(node.metadata.zarr_format),
    )
    return source, x


def open_weights(data_config, X: da.Array) -> da.Array | None:
    """The row weights ``data.weights`` names (an array in the same group as the rows), lazily, chunked
    like the rows of ``X``; None when not set. Their values are checked when the fit starts."""
    if getattr(data_config, "weights", None) is None:
        return None
    if not data_config.array:
        raise DataError(f"{data_config.path}: data.weights needs the rows and the weights as two arrays of one "
                        "group: set data.array to the rows' array")
    node = open_zarr_array(data_config.path, array=data_config.weights, storage_options=data_config.storage_options)
    where = describe(data_config.path, data_config.weights)
    if node.ndim != 1 or node.shape[0] != X.shape[0]:
        raise DataError(f"{where}: data.weights has shape {node.shape} but the rows are {X.shape[0]}: write one "
                        "weight per row, a 1-D array")
    _working_dtype(np.dtype(node.dtype), where)
    reader = SlabReader(node, where)
    return da.from_array(reader, chunks=(X.chunks[0],), name=f"read-zarr-{tokenize(reader)}", fancy=False,
                         asarray=False, meta=np.empty((0,), dtype=node.dtype)).astype(np.float64)


def check_chunks(data_config) -> str:
    """Refuse (``DataError``) an array with a chunk or shard missing from its store, which Zarr would read
    as the fill value; with ``data.allow_missing_chunks`` log a warning instead. One listing of the store
    per array (the rows, and the weights when ``data.weights`` is set). Returns the digest of what was
    listed (``stamps.digest``), which tells this store from one rewritten in place later."""
    weights = getattr(data_config, "weights", None)
    return stamps.digest({array or "": _check_array_chunks(data_config, array)
                          for array in [data_config.array, *([weights] if weights else [])]})


def _check_array_chunks(data_config, array: str | None) -> dict[str, Any]:
    """Check one array's chunks (see ``check_chunks``); the stamps of its stored objects."""
    node = open_zarr_array(data_config.path, array=array, storage_options=data_config.storage_options)
    fs, root = store_filesystem(data_config.path, data_config.storage_options)
    prefix = fs._strip_protocol("/".join(part for part in (root.rstrip("/"), node.path) if part))
    try:
        fs.invalidate_cache(prefix)  # a listing cached by a filesystem instance (fsspec keeps them) would hide a rewrite
        listed = fs.find(prefix, detail=True)
        entries = stamps.array_entries(listed, prefix)
        if not stamps.has_stamps(entries):  # an index page lists names only: ask a sample of chunks
            entries.update(stamps.asked_entries(fs, prefix, stamps.sampled_keys(node)))
    except Exception as exc:
        raise DataError(
            f"{data_config.path}: cannot list the store to check its chunks ({scrub(exc, data_config.storage_options)}); "
            "check the permissions of data.storage_options, which must allow listing"
        ) from None
    missing = missing_chunks(node, list(listed), prefix)
    if missing:
        where = describe(data_config.path, array)
        if not data_config.allow_missing_chunks:
            raise DataError(missing_chunks_message(node, where, missing))
        logger.warning("data.allow_missing_chunks: %d chunk(s) missing from %s are read as the fill value %s, "
                       "first %s", len(missing), where, node.fill_value, describe_chunk(node, missing[0]))
    return entries


def describe(path: str, array: str | None) -> str:
    """How messages name an array: the store's path, and the array inside it."""
    return f"{path}" + (f", array {array!r}" if array else "")


def store_filesystem(path: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec filesystem and root path of the store at ``path``; ``DataError`` if it cannot be reached."""
    try:
        return fsspec.core.url_to_fs(_as_url(str(path), storage_options), **dict(storage_options or {}))
    except Exception as exc:  # bad protocol, missing fsspec backend, bad options...
        raise DataError(
            f"{path}: cannot reach the store ({type(exc).__name__}: {exc}); check data.path and data.storage_options"
        ) from None


def open_zarr_array(path: str, *, array: str | None = None, storage_options: Mapping[str, Any] | None = None):
    """The ``zarr.Array`` at ``path`` (or ``path``/``array``), read-only; ``DataError`` if not there."""
    url = _as_url(str(path), storage_options)
    options = dict(storage_options or {})
    check_reachable(str(path), url, options)
    try:
        node = zarr.open(url, mode="r", **({"storage_options": options} if "://" in url else {}))
    except (zarr.errors.NodeNotFoundError, FileNotFoundError):
        raise DataError(
            f"{path}: not a Zarr store (no zarr.json, .zarray or .zgroup at its root); point data.path "
            "at a Zarr store, e.g. one written by 'daskem make-data'"
        ) from None
    except Exception as exc:
        raise DataError(f"{path}: cannot open as a Zarr store ({scrub(exc, options)})") from None
    if isinstance(node, zarr.Array):
        if array:
            raise DataError(f"{path}: the store is an array, not a group; remove data.array ({array!r})")
        return node
    arrays = list_arrays(node)
    if not array:
        listed = ", ".join(arrays) if arrays else "none"
        raise DataError(f"{path}: the store is a group; set data.array to one of its arrays: {listed}")
    try:
        found = node[array]
    except KeyError:
        found = None
    if not isinstance(found, zarr.Array):
        listed = ", ".join(arrays) if arrays else "none"
        raise DataError(f"{path}: no array {array!r} in the store; arrays present: {listed}")
    return found


def list_arrays(group) -> list[str]:
    """Paths of all arrays in ``group``, nested ones included, sorted."""
    return sorted(name for name, member in group.members(max_depth=None) if isinstance(member, zarr.Array))


def _working_dtype(dtype: np.dtype, where: str) -> np.dtype:
    """float32/float64 are used as stored; integers and booleans become float64, float16 float32."""
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise DataError(
        f"{where}: dtype {dtype} is not numeric (or is complex); store the features as float32 or float64"
    )


# Reaching an object store. The first look-up of a store fails fast (few retries, short connect
# timeouts), so a wrong endpoint is reported in seconds; the reads of a fit keep the backend's own
# retries. An error is explained by the first class name of its type's MRO found below: the
# backends' classes (botocore's, aiohttp's) are matched without importing them.
FAIL_FAST_OPTIONS = {
    "s3": {"config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 2, "mode": "standard"}}},
}
ACCESS_ERRORS = (
    (("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"),
     "no credentials found", "set them in {options} (s3: key and secret, e.g. key: "
     "${{AWS_ACCESS_KEY_ID}}, secret: ${{AWS_SECRET_ACCESS_KEY}}), or anon: true for a public bucket"),
    (("PermissionError",),
     "access denied", "check the credentials in {options} (s3: key and secret) and that they may {verb} it"),
    (("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError", "TimeoutError"),
     "cannot connect", "check {options}.endpoint_url and that the server is up"),
    (("ImportError",),
     "no filesystem for this protocol", "install it (gs://: pip install 'daskem[gcs]'; az:// or abfs://: "
     "pip install 'daskem[azure]')"),
)


def check_reachable(path: str, url: str, options: Mapping[str, Any]) -> None:
    """Look ``url`` up once; a missing store, refused credentials or an unreachable endpoint become
    one ``DataError`` naming ``path`` and the fix, without the secrets of ``options``."""
    protocol = url.partition("://")[0] if "://" in url else "file"
    try:
        fs, fs_path = reach(url, options)
        fs.info(fs_path)
    except FileNotFoundError as exc:
        if protocol in ("file", "local"):
            raise DataError(f"{path}: no such file or directory; check data.path (relative paths start at "
                            "the current directory)") from None
        raise DataError(f"{path}: no such bucket or object ({scrub(exc, options)}); check data.path") from None
    except Exception as exc:  # bad protocol, missing backend, credentials, endpoint...
        raise DataError(access_problem(path, exc, options)) from None


def reach(url: str, options: Mapping[str, Any]):
    """The fsspec filesystem and path of ``url``, with the fail-fast settings of its protocol under ``options``."""
    protocol = url.partition("://")[0] if "://" in url else "file"
    return fsspec.core.url_to_fs(url, **_merged(FAIL_FAST_OPTIONS.get(protocol, {}), options))


def access_problem(path: str, exc: BaseException, options: Mapping[str, Any], *,
                   key: str = "data.storage_options", path_key: str = "data.path", verb: str = "read") -> str:
    """One line for an error reaching a store (credentials, endpoint, backend): ``path``, what went wrong
    and the fix, naming the config keys ``key`` (the options) and ``path_key``; secrets scrubbed."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    what, fix = next(((what, fix) for classes, what, fix in ACCESS_ERRORS if names.intersection(classes)),
                     ("cannot reach the store", "check {path_key} and {options}"))
    return f"{path}: {what} ({scrub(exc, options)}); {fix.format(options=key, path_key=path_key, verb=verb)}"


def _merged(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh copy of ``options`` over ``defaults``, nested mappings merged (backends mutate them)."""
    out = copy.deepcopy(dict(defaults))
    for name, value in options.items():
        both = isinstance(value, Mapping) and isinstance(out.get(name), Mapping)
        out[name] = _merged(out[name], value) if both else copy.deepcopy(value)
    return out


def _as_url(path: str, storage_options: Mapping[str, Any] | None) -> str:
    """URLs stay as they are; a local path becomes absolute (workers may run elsewhere), and a
    file:// URL when storage_options ask for fsspec."""
    if "://" in path:
        return path
    absolute = os.path.abspath(os.path.expanduser(path))
    return "file://" + absolute if storage_options else absolute
