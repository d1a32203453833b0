"""What every output records of its provenance: package versions, the output's format tag, JSON
written atomically."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import fsspec
import fsspec.implementations.local
import numpy as np

PACKAGES = ("daskem", "numpy", "scipy", "dask", "distributed", "zarr", "dask-ml", "scikit-learn", "pydantic")

# The tag of the run.json that a daskem command writes last into its output directory: with
# "complete": true, it marks a directory as a daskem output, the only kind "overwrite" may replace.
OUTPUT_FORMAT = "daskem-output"
OUTPUT_FORMAT_VERSION = 1


def output_format() -> dict[str, Any]:
    """The format keys that open every run.json."""
    return {"format": OUTPUT_FORMAT, "format_version": OUTPUT_FORMAT_VERSION}


def package_versions() -> dict[str, str | None]:
    """Versions of Python and of the packages a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out["daskem"] is None:  # running from a source tree
        from daskem import __version__

        out["daskem"] = __version__
    return out



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



def write_json(path: str | os.PathLike, document: dict[str, Any], *, fs=None) -> None:
    """Write ``document`` as indented JSON: on a local disk through a temporary file renamed into
    place, on another fsspec filesystem ``fs`` in one PUT (an object appears whole or not at all)."""
    text = json.dumps(document, indent=2, default=lambda v: _jsonable(v, os.path.basename(str(path)))) + "\n"
    if fs is not None and not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        fs.pipe_file(str(path), text.encode())
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
