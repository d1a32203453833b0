"""``daskem sample``: rows drawn from a saved mixture, written to Zarr chunk by chunk by the workers.

Each task draws one chunk of rows, keyed by (seed, global row) (``daskem.kernels.sampling``), and
writes it into ``X`` (float64, rows x features) and ``component`` (int32) of the output group:
nothing is gathered but row counts, any number of rows can be drawn, and the rows are the same
for a seed whatever the cluster or the chunking. The output is a directory like every other
daskem output: staged, renamed into place when complete, with a run.json; it replaces only an
earlier daskem output (``outputs.staging``).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import dask.array as da
import numpy as np
import zarr
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from daskem.errors import ConfigError
from daskem.kernels.sampling import mixture_rows
from daskem.outputs.model_files import load_model
from daskem.outputs.predictions import store_rows
from daskem.outputs.records import output_format, package_versions, write_json
from daskem.outputs.staging import StagedOutput
from daskem.pipeline.cluster import cluster_summary, connect
from daskem.pipeline.config import ClusterConfig, OutputConfig, _Section
from daskem.pipeline.config_loading import mask_document, masking_secrets, secret_values
from daskem.pipeline.progress import ProgressBars
from daskem.pipeline.run import _now
from daskem.pipeline.watchdog import watched

logger = logging.getLogger("daskem")

# Rows per task when not given: about this many bytes of X each.
CHUNK_BYTES = 64 * 2**20


class SampleConfig(_Section):
    """``daskem sample``: how many rows to draw from which saved model, and where to write them."""

    model_path: str = Field(description="A run's output directory or its model/ directory (a gmm model).")
    rows: PositiveInt = Field(description="Number of rows to draw.")
    seed: NonNegativeInt = Field(0, description="Seed of the draws: the same seed gives the same rows.")
    chunk_rows: Optional[PositiveInt] = Field(
        None, description=f"Rows per task and per Zarr chunk; default: about {CHUNK_BYTES // 2**20} MiB of X."
    )
    output: str = Field(description="The Zarr group to create (a local path), e.g. synthetic.zarr.")
    overwrite: bool = Field(False, description="Replace an earlier daskem output at that path.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The Dask cluster.")

    def stores(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every store the command names, by its config key: (path or URL, its storage options)."""
        return {"model_path": (self.model_path, {}), "output": (self.output, {})}

    @field_validator("output")
    @classmethod
    def _local_output(cls, value: str) -> str:
        path = OutputConfig._local_or_shared(value)
        if "://" in path:
            raise ValueError(f"{value!r}: daskem sample writes a local Zarr group (a path or file:// URL); "
                             "write it locally, then copy it to the object store")
        return path


def sample_kernel(params, covariance, seed: int, index: np.ndarray, names) -> dict[str, np.ndarray]:
    """The rows of one chunk, whose global row indices are ``index`` (one column): ``X`` and ``component``."""
    row_start = int(index[0, 0]) if index.shape[0] else 0
    rows, components = mixture_rows(params, covariance, seed, row_start, index.shape[0])
    return {"X": rows, "component": components}


def write_samples(model, path, n_rows: int, *, seed: int, chunk_rows: int | None = None, fan_in: int = 8) -> dict:
    """Draw ``n_rows`` rows of ``model`` (a fitted ``GaussianMixture``) into the Zarr group ``path``,
    one task per chunk of rows; a description of the arrays written."""
    n_features = model.n_features_in_
    chunk = min(n_rows, chunk_rows or max(1, CHUNK_BYTES // (8 * n_features)))
    index = da.arange(n_rows, chunks=chunk, dtype=np.int64)[:, None]  # each task's rows, by global index
    group = zarr.open_group(str(path), mode="w-")
    targets = {"X": group.create_array("X", shape=(n_rows, n_features), chunks=(chunk, n_features), dtype=np.float64),
               "component": group.create_array("component", shape=(n_rows,), chunks=(chunk,), dtype=np.int32)}
    kernel = partial(sample_kernel, model._fitted(), model._family().covariance, int(seed))
    counts = store_rows(index, kernel, targets, fan_in=fan_in)
    if counts["rows"] != n_rows:
        raise RuntimeError(f"sample: {counts['rows']} rows written of {n_rows}")
    return {"X": {"dtype": "float64", "shape": [n_rows, n_features], "chunk_rows": chunk},
            "component": {"dtype": "int32", "shape": [n_rows], "chunk_rows": chunk}}


def sampled_model(model_path: str):
    """The saved mixture to sample from, or a one-line error for a model that cannot be sampled."""
    model = load_model(model_path)
    if hasattr(model, "preprocessing"):
        raise ConfigError(f"{model_path}: the model was fitted on preprocessed features (standardize / PCA); "
                          "daskem samples only models fitted on the raw features")
    if not hasattr(model, "sample"):
        raise ConfigError(f"{model_path}: holds a {type(model).__name__}, which has no density to sample; "
                          "give a gmm model")
    return model


@masking_secrets
def sample(config: SampleConfig, *, progress: bool = True) -> Path:
    """Draw ``config.rows`` rows of the saved model into ``config.output``; the output directory. Log
    lines, errors and run.json show none of the model URL's credentials."""
    started_at, t0 = _now(), time.perf_counter()
    model = sampled_model(config.model_path)
    staged = StagedOutput(config.output, overwrite=config.overwrite, inputs={"model_path": config.model_path})
    staged.check()
    with connect(config.cluster) as client, ProgressBars(client, enabled=progress), \
            watched(client, config.cluster.timeout, memory_hint="give the workers more memory or lower --chunk-rows"):
        cluster = cluster_summary(client, config.cluster.embedded)
        with staged as tmp:
            written = write_samples(model, tmp, config.rows, seed=config.seed, chunk_rows=config.chunk_rows)
            model_path = config.model_path if "://" in config.model_path else str(Path(config.model_path).absolute())
            write_json(tmp / "run.json", mask_document({
                **output_format(), "complete": True, "command": "sample", "started_at": started_at,
                "finished_at": _now(), "config": config.model_dump(mode="json"), "versions": package_versions(),
                "model_path": model_path, "cluster": cluster, "outputs": {"arrays": written},
                "timings": {"total": round(time.perf_counter() - t0, 3)},
            }, secret_values(config)))
            final = staged.commit()
    logger.info("%d rows of %s drawn (seed %d) into %s", config.rows, config.model_path, config.seed, final)
    return final
