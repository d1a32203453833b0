"""Synthetic Gaussian-mixture data written to Zarr block by block (``daskem make-data``).

The true mixture (weights, means, full covariances) is drawn from ``seed``; block ``b`` of rows
is drawn from a generator seeded by ``(seed, b)``, so the data does not depend on the number of
threads and a store larger than memory is written with at most a few blocks in memory. Blocks
are whole Zarr chunks (whole shards when sharded), so concurrent writes never share a chunk.

The true parameters are saved beside the store, in ``<store>.truth/``: ``weights.npy``,
``means.npy``, ``covariances.npy`` (full, K x D x D) and ``truth.json`` (the same values and the
generation settings).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import dask
import dask.array as da
import numpy as np
import zarr

from daskem.data.credentials import mask_text
from daskem.data.stores import access_problem, reach
from daskem.errors import DataError

logger = logging.getLogger("daskem")

DEFAULT_BLOCK_BYTES = 32 * 2**20


@dataclass(frozen=True, eq=False)
class TrueMixture:
    """The parameters the rows are drawn from."""

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    covariances: np.ndarray  # (K, D, D)


def make_mixture(n_components: int, n_features: int, *, seed: int = 0, separation: float = 8.0) -> TrueMixture:
    """A random mixture: Dirichlet weights (no component below a third of uniform), means spread by
    ``separation`` standard deviations, covariances with eigenvalues in [0.3, 1.5]."""
    rng = np.random.default_rng([seed, 0xDA5C])
    weights = rng.dirichlet(np.full(n_components, 5.0))
    weights = np.maximum(weights, 1.0 / (3 * n_components))
    weights /= weights.sum()
    means = rng.normal(scale=separation, size=(n_components, n_features))
    covariances = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        q, _ = np.linalg.qr(rng.normal(size=(n_features, n_features)))
        covariances[k] = (q * rng.uniform(0.3, 1.5, size=n_features)) @ q.T
    return TrueMixture(weights, means, covariances)


def sample_block(n_rows: int, mixture: TrueMixture, seed: int, block_index: int, dtype) -> np.ndarray:
    """Rows ``block_index`` of the data set: a pure function of (seed, block_index)."""
    rng = np.random.default_rng([seed, block_index])
    labels = rng.choice(len(mixture.weights), size=n_rows, p=mixture.weights)
    noise = rng.standard_normal((n_rows, mixture.means.shape[1]))
    out = np.empty((n_rows, mixture.means.shape[1]), dtype=dtype)
    for k in range(len(mixture.weights)):
        rows = labels == k
        factor = np.linalg.cholesky(mixture.covariances[k])
        out[rows] = mixture.means[k] + noise[rows] @ factor.T
    return out


def make_data(
    path: str,
    *,
    n_samples: int,
    n_features: int = 2,
    n_components: int = 3,
    chunk_rows: int | None = None,
    shard_rows: int | None = None,
    dtype: str = "float64",
    seed: int = 0,
    separation: float = 8.0,
    array: str | None = "X",
    zarr_format: int = 3,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``n_samples`` x ``n_features`` rows of a ``n_components`` mixture to the Zarr store ``path``.

    ``array`` names the array inside a group; ``None`` or "" writes the array at the store's root.
    ``shard_rows`` (Zarr v3 only) groups chunks into shards of that many rows. ``overwrite`` replaces
    only a store that ``make_data`` wrote (one with its ``.truth`` beside it). Returns a summary.
    """
    dtype = np.dtype(dtype)
    chunk_rows = _check_arguments(n_samples, n_features, n_components, chunk_rows, shard_rows, dtype, zarr_format)
    options = dict(storage_options or {})
    url = path if "://" in path or not options else "file://" + _abspath(path)
    if url.startswith(("file://", "local://")):
        options.setdefault("auto_mkdir", True)  # fsspec's local files do not create directories otherwise
    try:  # the first contact with the store and its first write (the array's metadata): credentials,
        # endpoint, backend and a store that takes no writes fail here, in one line
        fs, fs_path = reach(url, options)  # with the fail-fast settings of its protocol
        truth_path = fs_path.rstrip("/") + ".truth"
        _clear(fs, fs_path, truth_path, path, overwrite)
        fs.makedirs(fs._parent(fs_path), exist_ok=True)  # a new bucket, on object stores
        target = _create_target(url, options, array, (n_samples, n_features), chunk_rows, shard_rows, dtype,
                                zarr_format)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001  (named with the fix by access_problem, as a run's stores are)
        raise DataError(access_problem(path, exc, options, key="--storage-option", path_key="the path",
                                       verb="write")) from None

    mixture = make_mixture(n_components, n_features, seed=seed, separation=separation)

    def block(block_info=None):
        info = block_info[None]
        (start, stop), _ = info["array-location"]
        return sample_block(stop - start, mixture, seed, info["chunk-location"][0], dtype)

    rows = da.core.normalize_chunks((shard_rows or chunk_rows, n_features), (n_samples, n_features))
    lazy = da.map_blocks(block, chunks=rows, dtype=dtype, meta=np.empty((0, 0), dtype=dtype))
    with dask.config.set(scheduler="threads"):
        da.store(lazy, target, lock=False)

    summary = {  # the paths as the log, the truth file and the caller may show them: no URL password
        "path": mask_text(path), "array": array or None, "shape": [n_samples, n_features], "dtype": dtype.name,
        "chunk_rows": chunk_rows, "shard_rows": shard_rows, "zarr_format": zarr_format, "n_components": n_components,
        "seed": seed, "separation": separation,
        "truth": truth_path if "://" not in url else mask_text(f"{url.rstrip('/')}.truth"),
    }
    _write_truth(fs, truth_path, mixture, summary)
    logger.info("make-data: wrote %d x %d %s rows in %d blocks to %s%s; true parameters in %s",
                n_samples, n_features, dtype.name, len(rows[0]), summary["path"],
                f" (array {array})" if array else "", summary["truth"])
    return summary


def _check_arguments(n_samples, n_features, n_components, chunk_rows, shard_rows, dtype, zarr_format) -> int:
    """Refuse arguments that cannot make a store, each naming its flag; the rows per chunk to use."""
    if dtype not in (np.float32, np.float64):
        raise DataError(f"--dtype {dtype}: choose float32 or float64")
    for name, value in (("n_samples", n_samples), ("n_features", n_features), ("n_components", n_components)):
        if value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if n_components > n_samples:
        raise DataError(f"--n-components {n_components} is larger than --n-samples {n_samples}")
    if zarr_format not in (2, 3):
        raise DataError(f"--zarr-format {zarr_format}: choose 2 or 3")
    if chunk_rows is None:  # at least 16 chunks, at most DEFAULT_BLOCK_BYTES each
        chunk_rows = min(-(-n_samples // 16), max(1, DEFAULT_BLOCK_BYTES // (n_features * dtype.itemsize)))
    chunk_rows = min(chunk_rows, n_samples)
    if shard_rows is not None:
        if zarr_format != 3:
            raise DataError("--shard-rows needs --zarr-format 3 (Zarr v2 has no shards)")
        if shard_rows % chunk_rows:
            raise DataError(f"--shard-rows {shard_rows} must be a multiple of --chunk-rows {chunk_rows}")
    return chunk_rows


def _clear(fs, fs_path: str, truth_path: str, path: str, overwrite: bool) -> None:
    """Make room for the new store: refuse an existing path unless ``overwrite``, and even then replace
    only a store this command wrote (its true parameters lie beside it)."""
    if not fs.exists(fs_path):
        return
    if not overwrite:
        raise DataError(f"{path}: already exists; pass --overwrite to replace it, or choose another path")
    if not fs.exists(f"{truth_path}/truth.json"):
        raise DataError(f"{path}: exists and was not written by 'daskem make-data' (no {path.rstrip('/')}.truth/ "
                        "beside it), so --overwrite does not replace it; remove it yourself or choose another path")
    for old in (fs_path, truth_path):
        fs.rm(old, recursive=True)


def _create_target(url, options, array, shape, chunk_rows, shard_rows, dtype, zarr_format):
    """The empty Zarr array to fill: ``array`` in a new group, or the store's root array."""
    kwargs = {"storage_options": options} if "://" in url else {}
    spec = dict(shape=shape, chunks=(chunk_rows, shape[1]), dtype=dtype,
                shards=(shard_rows, shape[1]) if shard_rows else None)
    if array:
        group = zarr.open_group(url, mode="w-", zarr_format=zarr_format, **kwargs)
        return group.create_array(array, **spec)
    return zarr.create_array(url, **spec, zarr_format=zarr_format, **kwargs)


def _write_truth(fs, truth_path: str, mixture: TrueMixture, summary: dict[str, Any]) -> None:
    """The true parameters beside the store: one .npy per parameter and truth.json (written last)."""
    fs.makedirs(truth_path, exist_ok=True)
    for name in ("weights", "means", "covariances"):
        with fs.open(f"{truth_path}/{name}.npy", "wb") as f:
            np.save(f, getattr(mixture, name), allow_pickle=False)
    document = {**summary, "weights": mixture.weights.tolist(), "means": mixture.means.tolist(),
                "covariances": mixture.covariances.tolist(), "covariance_type": "full"}
    with fs.open(f"{truth_path}/truth.json", "w") as f:
        json.dump(document, f, indent=2)


def load_truth(path: str) -> TrueMixture:
    """The true parameters saved beside a local store written by ``make_data``."""
    base = path.rstrip("/") + ".truth"
    names = ("weights", "means", "covariances")
    return TrueMixture(*(np.load(f"{base}/{name}.npy", allow_pickle=False) for name in names))


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(os.path.expanduser(path))
