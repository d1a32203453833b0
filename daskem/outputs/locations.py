"""Where a command's outputs go: a local directory or an object-store prefix, behind one interface.

``output_location(path, storage_options, overwrite=..., inputs=...)`` gives a ``LocalOutput`` for a
path (a staging directory renamed into place, see ``staging.StagedOutput``) or a ``PrefixOutput``
for an fsspec URL. Both ``check()`` (refuse, in one line, what must not be written over), yield an
``OutputDir`` to write into from their ``with`` block, and ``commit(record)`` write ``run.json``
last, which makes the output complete. An object store has no rename, so a prefix is written in
place: ``run.json`` with ``"complete": false`` (and its writer, ``PID@HOST``) first, then the old
daskem objects are deleted, the new ones written, and ``run.json`` replaced by the complete record
last (one PUT). A crash leaves a prefix whose record says incomplete; every reader
(``check_complete``: ``load_model``, ``predict``, a later run) refuses or replaces it, never uses it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from daskem.data.credentials import scrub
from daskem.data.stores import access_problem, reach
from daskem.errors import OutputError
from daskem.outputs.records import OUTPUT_FORMAT, output_format, write_json
from daskem.outputs.staging import FIX, StagedOutput, _alive, _host, _owner, local_path

logger = logging.getLogger("daskem")

RECORD = "run.json"
# What a daskem command writes under its output prefix; anything else there is someone else's.
OWN_ENTRIES = ("model", "predictions.zarr", "report", RECORD)


@dataclass(frozen=True)
class OutputDir:
    """A directory or prefix being written: ``join(name)`` is a path or URL for the writers, which
    take ``storage_options`` with it (the fsspec convention)."""

    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def join(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    @contextmanager
    def written_here(self, name: str) -> Iterator[Path]:
        """A local directory for ``name``, for writers that know only files (matplotlib): the entry itself
        under a local root; under a prefix, a temporary directory copied there file by file on the way out."""
        if "://" not in self.root:
            yield Path(self.root) / name
            return
        import fsspec

        with tempfile.TemporaryDirectory(prefix="daskem-") as scratch:
            here = Path(scratch) / name
            yield here
            fs, there = fsspec.core.url_to_fs(self.join(name), **self.storage_options)
            for file in sorted(p for p in here.rglob("*") if p.is_file()):
                fs.put_file(str(file), f"{there}/{file.relative_to(here).as_posix()}")


def output_location(path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
                    overwrite: bool = False, inputs: Mapping[str, str] | None = None):
    """The ``LocalOutput`` of a path or the ``PrefixOutput`` of an fsspec URL."""
    text = os.fspath(path)
    if "://" in text and local_path(text) is None:
        return PrefixOutput(text, storage_options, overwrite=overwrite, inputs=inputs)
    return LocalOutput(text, overwrite=overwrite, inputs=inputs)


class LocalOutput:
    """A local output directory, staged beside its place and renamed into it by ``commit``."""

    def __init__(self, path: str, *, overwrite: bool = False, inputs: Mapping[str, str] | None = None):
        self.staged = StagedOutput(local_path(path), overwrite=overwrite, inputs=inputs)
        self.url = str(self.staged.final)
        self.storage_options: dict[str, Any] = {}

    def check(self) -> None:
        self.staged.check()

    def __enter__(self) -> OutputDir:
        return OutputDir(str(self.staged.__enter__()))

    def commit(self, record: dict[str, Any]) -> Path:
        write_json(self.staged.tmp / RECORD, record)
        return self.staged.commit()

    def __exit__(self, *exc) -> bool:
        return self.staged.__exit__(*exc)


class PrefixOutput:
    """An output prefix in an object store (any fsspec URL), written in place with ``run.json`` as
    its completion marker: see the module doc. ``check`` also reaches the store (missing bucket,
    credentials, endpoint: one line each), and refuses a bucket's root, an input's prefix, and a
    prefix holding objects daskem did not write, which are never deleted."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, *, overwrite: bool = False,
                 inputs: Mapping[str, str] | None = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.overwrite = overwrite
        self.inputs = dict(inputs or {})
        self._fs = self._root = None
        self._writing = False
        self._leftover: str | None = None

    # ----------------------------------------------------------------------------- checks
    def check(self) -> None:
        """Raise ``OutputError`` unless writing (and, with ``overwrite``, replacing) the prefix is safe."""
        fs, root = self._filesystem()
        buckets = not fs.root_marker  # s3, gs, az: the first part of a path is a bucket (container)
        if not root.strip("/") or (buckets and "/" not in root.strip("/")):
            raise OutputError(f"{self.url}: output.path is the root of a {'bucket' if buckets else 'filesystem'}; "
                              f"name a prefix inside it, e.g. {self.url}/results/run")
        self._check_inputs(fs, root)
        try:
            fs.info(root.split("/")[0] if buckets else fs.root_marker)
        except FileNotFoundError as exc:
            raise OutputError(f"{self.url}: no such bucket ({scrub(exc, self.storage_options)}); create it first, "
                              "or check output.path") from None
        except Exception as exc:
            raise OutputError(access_problem(self.url, exc, self.storage_options, key="output.storage_options",
                                             path_key="output.path", verb="write")) from None
        self._check_existing(*self._listing())

    def _check_inputs(self, fs, root: str) -> None:
        for key, location in self.inputs.items():
            if "://" not in str(location) or str(location).partition("://")[0] != self.url.partition("://")[0]:
                continue
            place = fs._strip_protocol(str(location)).rstrip("/")
            if root == place or place.startswith(root + "/") or root.startswith(place + "/"):
                relation = "is" if root == place else "contains" if place.startswith(root + "/") else "is inside"
                raise OutputError(f"{self.url}: output.path {relation} the input {key} ({location}); daskem never "
                                  "writes over its input: choose an output.path outside it")

    def _listing(self) -> tuple[list[str], dict[str, Any] | None]:
        """The names of the objects under the prefix (relative to it), and its run.json if daskem's."""
        fs, root = self._filesystem()
        fs.invalidate_cache(root)
        try:
            if fs.isfile(root):
                raise OutputError(f"{self.url}: exists and is an object, not a prefix; {FIX}")
            names = sorted(name[len(root) + 1:] for name in fs.find(root) if name.startswith(root + "/"))
        except OutputError:
            raise
        except Exception as exc:
            raise OutputError(access_problem(self.url, exc, self.storage_options, key="output.storage_options",
                                             path_key="output.path", verb="list and write")) from None
        return names, read_record(fs, f"{root}/{RECORD}") if RECORD in names else None

    def _check_existing(self, names: list[str], record: dict[str, Any] | None) -> None:
        if not names:
            return
        foreign = [name for name in names if name.split("/")[0] not in OWN_ENTRIES]
        if record is None or foreign:
            shown = ", ".join((foreign or names)[:3]) + (" ..." if len(foreign or names) > 3 else "")
            raise OutputError(
                f"{self.url}: the prefix holds {len(foreign or names)} object(s) daskem did not write ({shown}); "
                f"daskem deletes only its own outputs: {FIX}"
            )
        if record.get("complete") is True:
            if not self.overwrite:
                raise OutputError(f"{self.url}: output already exists; set output.overwrite: true "
                                  "(--set output.overwrite=true) to replace it, or choose another output.path")
            return
        writer = str(record.get("writer", "?"))
        pid, _, host = writer.partition("@")
        if host == _host() and pid.isdigit() and not _alive(int(pid)):
            self._leftover = writer  # replaced on entering, with a log line
            return
        if not self.overwrite:
            raise OutputError(
                f"{self.url}: an incomplete daskem output, being written by {writer} since "
                f"{record.get('started_at', '?')} (or left there by a run that died); if no run is writing it, "
                "set output.overwrite: true to replace it, or choose another output.path"
            )

    # ----------------------------------------------------------------------------- writing
    def __enter__(self) -> OutputDir:
        self.check()
        fs, root = self._filesystem()
        if self._leftover:
            logger.info("replacing the incomplete output %s left by the interrupted run %s", self.url, self._leftover)
        try:
            write_record(fs, f"{root}/{RECORD}", {**output_format(), "complete": False, "writer": _owner(),
                                                   "started_at": _now()})
        except Exception as exc:  # credentials that may list but not write
            raise OutputError(access_problem(self.url, exc, self.storage_options, key="output.storage_options",
                                             path_key="output.path", verb="write")) from None
        self._writing = True
        self._remove(exclude_record=True)  # an earlier daskem output, now marked incomplete first
        return OutputDir(self.url, self.storage_options)

    def commit(self, record: dict[str, Any]) -> str:
        """Write the complete ``run.json`` last, if the prefix is still this run's."""
        fs, root = self._filesystem()
        fs.invalidate_cache(root)
        current = read_record(fs, f"{root}/{RECORD}")
        if current is None or current.get("writer") != _owner():
            raise OutputError(f"{self.url}: another run took this output over while this one wrote it "
                              f"(run.json now names {current and current.get('writer')}); run again")
        write_record(fs, f"{root}/{RECORD}", record)
        self._writing = False
        return self.url

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._writing:  # not committed: remove what this run wrote, its marker last
            self._writing = False
            try:
                self._remove(exclude_record=False)
            except Exception as error:  # the store is gone: the marker says incomplete
                logger.warning("%s: could not remove the incomplete output (%s); it stays marked incomplete",
                               self.url, scrub(error, self.storage_options))
        return False

    def _remove(self, *, exclude_record: bool) -> None:
        fs, root = self._filesystem()
        fs.invalidate_cache(root)
        for name in OWN_ENTRIES:
            path = f"{root}/{name}"
            if name == RECORD:
                if not exclude_record and fs.exists(path):
                    fs.rm_file(path)
            elif fs.exists(path):
                fs.rm(path, recursive=True)
        fs.invalidate_cache(root)

    def _filesystem(self):
        if self._fs is None:
            try:
                self._fs, root = reach(self.url, self.storage_options)
            except Exception as exc:
                raise OutputError(access_problem(self.url, exc, self.storage_options, key="output.storage_options",
                                                 path_key="output.path", verb="write")) from None
            self._root = root.rstrip("/")
        return self._fs, self._root


# ----------------------------------------------------------------------------- the marker


def read_record(fs, path: str) -> dict[str, Any] | None:
    """The run.json at ``path`` if it is daskem's (its format tag), else None."""
    try:
        document = json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and document.get("format") == OUTPUT_FORMAT else None


def write_record(fs, path: str, document: dict[str, Any]) -> None:
    """``document`` as run.json in one PUT: an object store shows the old record or the new one."""
    fs.pipe_file(path, (json.dumps(document, indent=2) + "\n").encode())


def check_complete(fs, directory: str, shown: str) -> None:
    """Refuse (``OutputError``) a run's output, or its ``model/``, whose run.json is daskem's but not
    marked complete: its run was interrupted or is still writing. ``shown`` names it in the message."""
    directory = directory.rstrip("/")
    candidates = [directory] + ([directory.rpartition("/")[0]] if directory.endswith("/model") else [])
    for place in candidates:
        record = read_record(fs, f"{place}/{RECORD}")
        if record is not None and record.get("complete") is not True:
            raise OutputError(
                f"{shown}: an incomplete daskem output (its run.json says complete: false: the run that wrote it, "
                f"{record.get('writer', '?')}, was interrupted or is still writing); run it again, or use a "
                "complete output"
            )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
