"""Checkpoints: the client's state after every pass, so a run killed at any point resumes bit for bit.

A checkpoint is one ``.npz`` file (NumPy arrays and a JSON document, read with
``allow_pickle=False``) holding the state of every stage of a fit by name: an initialization round,
an EM iteration, the starting parameters. A stage saves its state after each of its passes and
its result when it is done; a resumed run asks each stage for its saved state and goes on from
there, so it reads the data only for the passes that had not finished. The file is replaced
atomically (written beside, then renamed; a single PUT on an object store), so a resume never
reads a half-written checkpoint. It records the identity of what it belongs to (the parameters
and the data's shape, dtype and slabs, plus whatever the caller adds, such as the store's path): a
checkpoint written for something else is refused, never silently used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import logging
import os
import uuid
from typing import Any

import fsspec
import fsspec.implementations.local
import numpy as np

from daskem.errors import DaskemUserError

logger = logging.getLogger("daskem")

FORMAT = "daskem-checkpoint"
FORMAT_VERSION = 1


class CheckpointMismatch(DaskemUserError):
    """A checkpoint exists but was written for another config or other data."""


class Checkpoint:
    """The checkpoint file at ``path`` (a local path or an fsspec URL) of the fit described by ``identity``.

    The identity grows as the layers of a run add to it (the pipeline: the config and the store; the
    estimator: its parameters and the data's slabs); each addition is checked against the identity the
    file was written with, key by key. ``restart=True`` discards a checkpoint written for something else
    instead of refusing it.
    """

    def __init__(self, path: str, identity: dict[str, Any] | None = None, *, restart: bool = False,
                 storage_options: dict[str, Any] | None = None):
        self.path = str(path)
        self.restart = restart
        self.storage_options = dict(storage_options or {})
        self.identity: dict[str, Any] = {}
        self._saved_identity: dict[str, Any] | None = None  # as read from the file
        self._stages: dict[str, Any] | None = None
        self._created: list[str] = []  # folders made for the file, deepest first, removed with it
        self._resuming = False  # whether a state an earlier run saved was loaded, and the log told so
        self._saved_here: set[str] = set()  # the stages this run saved
        self.with_identity(**(identity or {}))

    def with_identity(self, **more: Any) -> "Checkpoint":
        """Add ``more`` to the identity (checked against the file's) and return this checkpoint."""
        more = _jsonable_identity(more)
        self._read()
        saved = self._saved_identity or {}
        changed = differences(saved, more)
        unrecorded = [name for name in unrecorded_names(saved, more) if "." in name]
        if unrecorded and not changed:
            logger.info("checkpoint %s was written by an earlier daskem, without %s: resuming on what it records",
                        self.path, ", ".join(unrecorded))
        if changed:
            if not self.restart:
                what = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
                raise CheckpointMismatch(
                    f"{self.path}: the checkpoint was written for another fit (different {what}); run with "
                    "--restart to start afresh (the checkpoint is then replaced), or delete it"
                )
            logger.info("checkpoint %s belongs to another fit: starting afresh", self.path)
            self._stages, self._saved_identity = {}, {}
        self.identity.update(more)
        return self

    # ----------------------------------------------------------------------------- stages
    def load(self, stage: str) -> Any:
        """The saved state of ``stage``, or None when it has none. The log says the run resumes when it
        first loads a state an earlier run saved (not when it reads the file, which may be refused or
        discarded yet)."""
        stages = self._read()
        if stage in stages and stage not in self._saved_here and not self._resuming:
            logger.info("resuming from checkpoint %s (%s)", self.path, ", ".join(stages))
            self._resuming = True
        return stages.get(stage)

    def save(self, stage: str, state: Any) -> None:
        """Record ``state`` for ``stage`` and write the whole checkpoint atomically."""
        stages = self._read()
        stages[stage] = state
        self._write(stages)
        self._saved_here.add(stage)

    def stages(self) -> list[str]:
        """Names of the stages that have a saved state."""
        return list(self._read())

    def remove(self) -> None:
        """Delete the checkpoint file (the run it served is complete, or is restarted)."""
        fs, path = self._fs()
        if fs.exists(path):
            fs.rm(path)
        self._stages, self._saved_identity = {}, {}
        for directory in self._created:  # deepest first: only the folders the first write made, if empty
            try:
                os.rmdir(directory)
            except OSError:
                break
        self._created = []

    # ----------------------------------------------------------------------------- file
    def _fs(self):
        return fsspec.core.url_to_fs(self.path, **self.storage_options)

    def _read(self) -> dict[str, Any]:
        if self._stages is not None:
            return self._stages
        fs, path = self._fs()
        self._stages, self._saved_identity = {}, {}
        if not fs.exists(path):
            return self._stages
        try:
            with fs.open(path, "rb") as f:
                document, arrays = _unpack(f.read())
            stages = {name: decode(state, arrays) for name, state in document["stages"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatch(
                f"{self.path}: not a readable daskem checkpoint ({exc}); delete it, or run with --restart"
            ) from None
        self._stages, self._saved_identity = stages, document.get("identity", {})
        return self._stages

    def _write(self, stages: dict[str, Any]) -> None:
        arrays: dict[str, np.ndarray] = {}
        identity = {**(self._saved_identity or {}), **self.identity}
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "identity": identity,
                    "stages": {name: encode(state, arrays) for name, state in stages.items()}}
        buffer = io.BytesIO()
        np.savez(buffer, __document__=np.array(json.dumps(document)), **arrays)
        fs, path = self._fs()
        if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
            directory = os.path.dirname(path)
            missing = [d for d in _ancestors(directory) if not os.path.isdir(d)]
            os.makedirs(directory, exist_ok=True)
            self._created = self._created or missing
            tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
            with open(tmp, "wb") as f:
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:  # one PUT: an object appears whole or not at all
            with fs.open(path, "wb") as f:
                f.write(buffer.getvalue())
        self._stages, self._saved_identity = stages, identity


def _ancestors(directory: str) -> list[str]:
    """``directory`` and its parents, deepest first."""
    out = [os.path.abspath(directory)]
    while os.path.dirname(out[-1]) != out[-1]:
        out.append(os.path.dirname(out[-1]))
    return out


def identity_of_array(X) -> dict[str, Any]:
    """What identifies the data of a fit: its shape, dtype and the rows of each slab (the merge order)."""
    return {"shape": [int(s) for s in X.shape], "dtype": str(X.dtype),
            "slab_rows": hashlib.sha256(np.asarray(X.chunks[0], dtype=np.int64).tobytes()).hexdigest()[:16]}


def differences(saved: dict[str, Any], identity: dict[str, Any], within: str = "") -> list[str]:
    """The dotted names of ``identity``'s entries that ``saved`` records with another value. An entry
    ``saved`` lacks is no difference: a layer adds its part later, or an earlier version left it out."""
    found = []
    for key, value in identity.items():
        if key not in saved:
            continue
        if isinstance(value, dict) and isinstance(saved[key], dict):
            found += differences(saved[key], value, f"{within}{key}.")
        elif saved[key] != value:
            found.append(f"{within}{key}")
    return found


def unrecorded_names(saved: dict[str, Any], identity: dict[str, Any], within: str = "") -> list[str]:
    """The dotted names of ``identity``'s entries that ``saved`` does not record."""
    found = []
    for key, value in identity.items():
        if key not in saved:
            found.append(f"{within}{key}")
        elif isinstance(value, dict) and isinstance(saved[key], dict):
            found += unrecorded_names(saved[key], value, f"{within}{key}.")
    return found


def _jsonable_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(identity, sort_keys=True, default=repr))


# ----------------------------------------------------------------------------- encoding
# The dataclasses a state may hold, by name, with the module that defines them: decoding imports
# only these and rebuilds them from their fields, without pickle.
CLASSES = {
    "EMResult": "daskem.engine.em",
    "GMMParams": "daskem.kernels.params",
    "KMeansParams": "daskem.kernels.params",
    "KMeansParallelResult": "daskem.models.initialization.kmeans_parallel",
    "SuffStats": "daskem.kernels.stats",
}


def _class(name: str) -> type:
    return getattr(importlib.import_module(CLASSES[name]), name)


def encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, its arrays moved to ``arrays`` (exact: floats round-trip through repr)."""
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if dataclasses.is_dataclass(value) and CLASSES.get(type(value).__name__) == type(value).__module__:
        return {"__class__": type(value).__name__,
                "fields": {f.name: encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [encode(v, arrays) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return arrays[value["__array__"]]
    if "__class__" in value:
        cls = _class(value["__class__"])
        return cls(**{name: decode(v, arrays) for name, v in value["fields"].items()})
    if "__tuple__" in value:
        return tuple(decode(v, arrays) for v in value["__tuple__"])
    return {decode(k, arrays): decode(v, arrays) for k, v in value["__dict__"]}


def _unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    document = json.loads(str(arrays.pop("__document__")))
    if document.get("format") != FORMAT or document.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"format {document.get('format')!r} version {document.get('format_version')!r}")
    return document, arrays
