"""The config's sections about where a run happens and where it writes: ``cluster`` (with its
``tls``) and ``output`` (with its ``outliers``). ``daskem.pipeline.config`` assembles them into the
commands' configs; a run's and a prediction's share these sections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from dask.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from daskem.models.outliers import CONTAMINATION_MAX, check_outlier_rule

LOCAL_PROTOCOLS = ("file", "local")  # an output URL with one of these is a local path
# Filesystems that live inside one process: the workers cannot write the outputs there.
PROCESS_PROTOCOLS = ("memory",)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    timeout: float = Field(
        120.0, gt=0,
        description="Seconds a pass may go without any worker able to run it (all gone, all paused for memory) "
        "or without an answer from the scheduler, before the run stops with an error instead of waiting.",
    )

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


class OutliersConfig(_Section):
    """Anomaly flags (gmm): rows whose log-density lies below a threshold (``predictions.zarr/outlier``)."""

    contamination: Optional[float] = Field(
        None, gt=0, le=CONTAMINATION_MAX,
        description=f"Fraction of the rows to flag, in (0, {CONTAMINATION_MAX}]: the threshold is the log-density "
        "below which that fraction lies, found out of core in a few passes.",
    )
    threshold: Optional[float] = Field(
        None, description="The log-density itself (in nats), instead of contamination."
    )

    @model_validator(mode="after")
    def _finite_threshold(self) -> "OutliersConfig":
        if self.threshold is not None:
            check_outlier_rule(None, self.threshold)
        if self.contamination is not None and self.threshold is not None:
            raise ValueError("give contamination or threshold, not both")
        return self

    @property
    def given(self) -> bool:
        """Whether a rule is given (predict may leave both out: the threshold saved with the model)."""
        return self.contamination is not None or self.threshold is not None


class OutputConfig(_Section):
    """What to write, and where."""

    path: str = Field(
        description="Output directory (local path or file:// URL) or object-store prefix (an fsspec URL: "
        "s3://, gs://, az://, ...), created by the run."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options passed to fsspec for a URL path (credentials, endpoint, ...), as data.storage_options.",
    )
    labels: bool = Field(True, description="Write predictions.zarr/labels (int32, one per row).")
    responsibilities: bool = Field(
        False, description="gmm only: write predictions.zarr/responsibilities (float32, rows x components)."
    )
    log_density: bool = Field(False, description="gmm only: write predictions.zarr/log_density (float64, one per row).")
    outliers: Optional[OutliersConfig] = Field(
        None,
        description="gmm only: {contamination: 0.01} or {threshold: <log-density>}; writes predictions.zarr/outlier "
        "(bool) and log_density, saves the threshold with the model and records it in run.json.",
    )
    report: bool = Field(
        True, description="Write report/ (index.html and PNG figures of the run); run only."
    )
    overwrite: bool = Field(
        False, description="Replace an existing daskem output (a directory: only once the new one is complete)."
    )

    @field_validator("path")
    @classmethod
    def _local_or_shared(cls, value: str) -> str:
        protocol, sep, rest = value.partition("://")
        if sep and protocol in LOCAL_PROTOCOLS:
            return rest
        if sep and protocol in PROCESS_PROTOCOLS:
            raise ValueError(f"{value!r}: a {protocol}:// filesystem lives in one process, and the workers write "
                             "the outputs from theirs; use a local directory or an object store (s3://, gs://, az://)")
        return value

    @model_validator(mode="after")
    def _options_for_urls(self) -> "OutputConfig":
        if self.storage_options and self.is_local:
            raise ValueError("storage_options are for an fsspec URL path (s3://, gs://, az://, ...); remove them "
                             f"for the local directory {self.path!r}")
        return self

    @property
    def is_local(self) -> bool:
        """True for a local directory (a path), False for an object-store URL."""
        return "://" not in self.path

    @property
    def local_path(self) -> Path:
        return Path(self.path).expanduser().absolute()

    @property
    def location(self) -> str:
        """How the output is named: its absolute local path, or its URL."""
        return str(self.local_path) if self.is_local else self.path.rstrip("/")
