"""The run configuration: YAML validated by typed, frozen pydantic models.

``load_config(path, overrides)`` reads a YAML file, applies ``--set section.key=value`` overrides,
expands ``${ENV_VAR}`` (and ``${ENV_VAR:-default}``) in string values, and validates the result
into one frozen ``DaskemConfig``. Unknown keys are refused with the closest valid key suggested;
every problem becomes a ``ConfigError`` whose one-line message names the key and the fix.
Relative paths are relative to the current directory, not to the YAML file.
"""

from __future__ import annotations

import os
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


class TLSConfig(_Section):
    """Certificates of a client that talks TLS to a running scheduler (``tls://`` addresses).

    Dask's TLS is mutual: the scheduler checks the client's certificate against its own CA, and the
    client checks the scheduler's against ``ca_file``."""

    ca_file: str = Field(description="PEM file of the certificate authority that signed the scheduler's certificate.")
    cert_file: str = Field(description="PEM file of this client's certificate (it may hold the private key too).")
    key_file: Optional[str] = Field(None, description="PEM file of the private key; leave out when cert_file holds it.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable_file(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        path = Path(value).expanduser().absolute()
        if not path.is_file():
            raise ValueError(f"{value!r}: no such file; give the path of a PEM file")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{value!r}: not readable by this user; fix its permissions")
        return str(path)


class ClusterConfig(_Section):
    """The Dask cluster that does the work: an embedded LocalCluster, or a running scheduler named by
    ``address`` or ``scheduler_file``."""

    address: Optional[str] = Field(
        None,
        description="Scheduler address (tcp://host:8786, or tls://host:8786 with cluster.tls) of a running "
        "cluster; null (and no scheduler_file): start an embedded LocalCluster with the settings below.",
    )
    scheduler_file: Optional[str] = Field(
        None,
        description="JSON file a running scheduler wrote its address to (dask scheduler --scheduler-file, "
        "dask-jobqueue, dask-mpi); waited for up to dask's connect timeout. Instead of address.",
    )
    tls: Optional[TLSConfig] = Field(
        None, description="Certificates for a tls:// scheduler; null for tcp://."
    )
    n_workers: PositiveInt = Field(2, description="Embedded cluster: number of worker processes.")
    threads_per_worker: PositiveInt = Field(1, description="Embedded cluster: threads per worker.")
    memory_limit: str = Field(
        "4GiB", description="Embedded cluster: memory per worker, e.g. 4GiB, 512MB, or auto."
    )
    dashboard: bool = Field(True, description="Embedded cluster: serve the Dask dashboard on a free port.")

    @property
    def embedded(self) -> bool:
        """True when the run starts its own LocalCluster (neither address nor scheduler_file given)."""
        return self.address is None and self.scheduler_file is None

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

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            check_scheduler_address(value)
        return value

    @field_validator("scheduler_file")
    @classmethod
    def _absolute_file(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else str(Path(value).expanduser().absolute())

    @model_validator(mode="after")
    def _one_scheduler_and_its_tls(self) -> "ClusterConfig":
        if self.address is not None and self.scheduler_file is not None:
            raise ValueError("address and scheduler_file both name a scheduler; keep one")
        if self.tls is not None and self.embedded:
            raise ValueError("tls is for a running scheduler: set address (tls://host:port) or scheduler_file, "
                             "or remove tls for an embedded cluster")
        problem = None if self.address is None else tls_mismatch(self.address, self.tls)
        if problem:  # a scheduler file's address is checked once read (daskem.pipeline.cluster)
            raise ValueError(f"address {problem}")
        return self


SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss")
TLS_SCHEMES = ("tls", "wss")


def check_scheduler_address(address: str) -> None:
    """Raise ``ValueError`` unless ``address`` is ``[scheme://]host:port`` with a scheme Dask
    connects to over TCP (tcp, tls, ws, wss; tcp when left out)."""
    scheme, sep, location = address.rpartition("://")
    if sep and scheme not in SCHEDULER_SCHEMES:
        raise ValueError(f"{address!r}: unknown scheme {scheme!r}; write tcp://host:port or tls://host:port")
    host, colon, port = location.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not a scheduler address; write tcp://host:port, e.g. tcp://10.0.0.5:8786")


def tls_mismatch(address: str, tls: Optional[TLSConfig]) -> Optional[str]:
    """Why ``address`` and ``tls`` do not go together (a TLS scheduler without certificates, or
    certificates for a plain one), or None."""
    encrypted = address.partition("://")[0] in TLS_SCHEMES
    if encrypted and tls is None:
        return (f"{address}, a TLS scheduler: set cluster.tls (ca_file, cert_file, key_file) to the "
                "certificates that let this client in")
    if not encrypted and tls is not None:
        return f"{address}, not a tls:// address, but cluster.tls is set; write tls://host:port, or remove cluster.tls"
    return None


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

















