"""The run configuration: YAML validated by typed, frozen pydantic models.

``load_config(path, overrides)`` reads a YAML file, applies ``--set section.key=value`` overrides,
expands ``${ENV_VAR}`` (and ``${ENV_VAR:-default}``) in string values, and validates the result
into one frozen ``DaskemConfig``. Unknown keys are refused with the closest valid key suggested;
every problem becomes a ``ConfigError`` whose one-line message names the key and the fix.
Relative paths are relative to the current directory, not to the YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from dask.utils import parse_bytes
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INITS = {  # the estimators' own choices (INIT_PARAMS of daskem.models.gaussian_mixture, INIT_METHODS of daskem.models.kmeans)
    "gmm": ("kmeans", "k-means||", "k-means++", "random", "random_from_data"),
    "kmeans": ("k-means||", "k-means++", "random"),
}
DEFAULTS = {
    "gmm": {"covariance_type": "full", "tol": 1e-3, "reg_covar": 1e-6, "init": "kmeans"},
    "kmeans": {"tol": 1e-4, "init": "k-means||"},
}
GMM_ONLY_KEYS = ("covariance_type", "reg_covar")
LOCAL_PROTOCOLS = ("file", "local")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the rows to cluster live."""

    path: str = Field(description="Zarr store: a local path or an fsspec URL (file://, s3://, ...).")
    array: Optional[str] = Field(
        None, description="Path of the array inside the store's group; leave out when the store is an array."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to fsspec for a URL (credentials, endpoint, ...)."
    )
    chunk_rows: Optional[PositiveInt] = Field(
        None,
        description="Rows per task; default: the store's row chunk (its shard when sharded). "
        "A multiple of the store's row chunk avoids reading a chunk twice.",
    )
    slab_mib: PositiveInt = Field(
        128,
        description="Target size of one task's rows in MiB when chunk_rows is not given: whole store "
        "chunks (or shards) are grouped up to this size, so a task does real work.",
    )
    cache: Literal["none", "memory", "auto"] = Field(
        "none",
        description="none: stream from the store every pass; memory: keep the (preprocessed) rows in "
        "the workers' memory; auto: keep them when they fit in half of the cluster's memory.",
    )
    allow_missing_chunks: bool = Field(
        False,
        description="Read chunks (or shards) missing from the store as the array's fill value, with a "
        "warning; by default a missing chunk stops the run before fitting, since it would be fitted as zeros.",
    )


class ModelConfig(_Section):
    """Which model to fit and how; defaults that depend on ``kind`` are filled in when left out."""

    kind: Literal["gmm", "kmeans"] = Field(description="gmm: Gaussian mixture; kmeans: k-means.")
    n_components: PositiveInt | list[PositiveInt] = Field(
        8,
        description="Number of mixture components or clusters; gmm: a list fits one candidate per value "
        "in the same passes over the data and keeps the best by model.criterion.",
    )
    covariance_type: Optional[
        Literal["full", "tied", "diag", "spherical"] | list[Literal["full", "tied", "diag", "spherical"]]
    ] = Field(
        None,
        description="gmm only: full | tied | diag | spherical (default full); a list fits a candidate per type.",
    )
    criterion: Literal["bic", "aic", "loglik"] = Field(
        "bic",
        description="gmm: how candidates (lists of n_components or covariance_type, restarts) are ranked: "
        "bic or aic (lower is better) or loglik (the mean log-likelihood, higher is better).",
    )
    max_iter: PositiveInt = Field(100, description="Maximum number of EM (or Lloyd) iterations.")
    tol: Optional[NonNegativeFloat] = Field(
        None,
        description="Convergence threshold: change of the mean log-likelihood per row (gmm, default "
        "1e-3) or relative change of the inertia (kmeans, default 1e-4).",
    )
    reg_covar: Optional[NonNegativeFloat] = Field(
        None, description="gmm only: added to the covariance diagonals (default 1e-6)."
    )
    init: Optional[str] = Field(
        None,
        description="Initialization: gmm: kmeans (default) | k-means|| | k-means++ | random | "
        "random_from_data; kmeans: k-means|| (default) | k-means++ | random.",
    )
    n_init: PositiveInt = Field(1, description="Number of initializations; the best fit is kept.")
    random_state: Optional[int] = Field(0, description="Seed of the initialization; null: a fresh seed.")
    fan_in: int = Field(8, ge=2, description="Fan-in of the tree that merges per-chunk statistics.")
    oversampling_factor: float = Field(
        2.0, gt=0, description="k-means|| initialization: candidates drawn per round, per component."
    )
    init_rounds: PositiveInt = Field(5, description="k-means|| initialization: rounds of candidate draws.")

    @property
    def n_components_list(self) -> list[int]:
        """``n_components`` as a list (one value for a single model)."""
        return list(self.n_components) if isinstance(self.n_components, list) else [self.n_components]

    @property
    def covariance_types(self) -> list[str]:
        """``covariance_type`` as a list (gmm)."""
        return list(self.covariance_type) if isinstance(self.covariance_type, list) else [self.covariance_type]

    @property
    def is_selection(self) -> bool:
        """Several candidate models (beyond restarts): a list of components or of covariance types."""
        return len(self.n_components_list) > 1 or len(self.covariance_types) > 1

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("kind") not in DEFAULTS:
            return data
        kind = data["kind"]
        if kind != "gmm":
            given = [key for key in GMM_ONLY_KEYS if data.get(key) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} applies only to kind: gmm; remove it for kind: {kind}")
        for key in ("n_components", "covariance_type"):
            value = data.get(key)
            if isinstance(value, list):
                if kind != "gmm":
                    raise ValueError(f"a list of {key} is for kind: gmm (model selection by BIC); give one value")
                if not value or len(set(value)) != len(value):
                    raise ValueError(f"{key}: give a non-empty list of distinct values, got {value}")
        filled = dict(data)
        for key, value in DEFAULTS[kind].items():
            if filled.get(key) is None:
                filled[key] = value
        if filled["init"] not in INITS[kind]:
            raise ValueError(
                f"init {filled['init']!r} is not an initialization of kind {kind}; "
                f"choose one of {', '.join(INITS[kind])}"
            )
        return filled


class ClusterConfig(_Section):
    """The Dask cluster that does the work."""

    address: Optional[str] = Field(
        None,
        description="Scheduler address (tcp://host:8786) of a running cluster; null: start an "
        "embedded LocalCluster with the settings below.",
    )
    n_workers: PositiveInt = Field(2, description="Embedded cluster: number of worker processes.")
    threads_per_worker: PositiveInt = Field(1, description="Embedded cluster: threads per worker.")
    memory_limit: str = Field(
        "4GiB", description="Embedded cluster: memory per worker, e.g. 4GiB, 512MB, or auto."
    )
    dashboard: bool = Field(True, description="Embedded cluster: serve the Dask dashboard on a free port.")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _check_memory(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value != "auto":
            try:
                parse_bytes(value)
            except (ValueError, TypeError):
                raise ValueError(f"{value!r} is not a size; write e.g. 4GiB, 512MB or auto") from None
        return value


class PCAConfig(_Section):
    """Principal component projection (dask-ml's PCA)."""

    n_components: PositiveInt = Field(description="Number of principal components kept.")
    whiten: bool = Field(False, description="Scale the projected features to unit variance.")


class PreprocessConfig(_Section):
    """Feature transforms fitted on the data before clustering, saved with the model."""

    standardize: bool = Field(False, description="Center each feature and scale it to unit variance.")
    pca: Optional[PCAConfig] = Field(None, description="Project onto principal components (after standardizing).")

    @property
    def enabled(self) -> bool:
        return self.standardize or self.pca is not None


class OutputConfig(_Section):
    """What to write, and where."""

    path: str = Field(description="Output directory (local path or file:// URL), created by the run.")
    labels: bool = Field(True, description="Write predictions.zarr/labels (int32, one per row).")
    responsibilities: bool = Field(
        False, description="gmm only: write predictions.zarr/responsibilities (float32, rows x components)."
    )
    log_density: bool = Field(False, description="gmm only: write predictions.zarr/log_density (float64, one per row).")
    overwrite: bool = Field(
        False, description="Replace an existing output directory (only once the new one is complete)."
    )

    @field_validator("path")
    @classmethod
    def _local_only(cls, value: str) -> str:
        protocol, sep, rest = value.partition("://")
        if sep and protocol not in LOCAL_PROTOCOLS:
            raise ValueError(f"{value!r}: outputs are written to a local (or shared) directory; use a path or file://")
        return rest if sep else value

    @property
    def local_path(self) -> Path:
        return Path(self.path).expanduser().absolute()


class DaskemConfig(_Section):
    """A whole run: data -> (preprocess) -> model on a cluster -> outputs."""

    data: DataConfig = Field(description="The input Zarr store.")
    model: ModelConfig = Field(description="The estimator and its parameters.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The Dask cluster.")
    preprocess: Optional[PreprocessConfig] = Field(None, description="Optional feature transforms.")
    output: OutputConfig = Field(description="Where the model and per-row results go.")

    @model_validator(mode="after")
    def _per_row_outputs_exist_for_kind(self) -> "DaskemConfig":
        if self.model.kind == "kmeans":
            bad = [key for key in ("responsibilities", "log_density") if getattr(self.output, key)]
            if bad:
                raise ValueError(
                    f"output.{bad[0]} is only for kind: gmm (k-means has no probabilities); set it to false"
                )
        return self


class PredictConfig(_Section):
    """``daskem predict``: a saved model applied to another store."""

    model_path: str = Field(description="A run's output directory or its model/ directory.")
    data: DataConfig = Field(description="The input Zarr store.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The Dask cluster.")
    output: OutputConfig = Field(description="Where the per-row results go.")


# ----------------------------------------------------------------------------- loading

















