"""Output directories that appear only when complete, and replace only what daskem itself wrote.

``StagedOutput(final, overwrite=..., inputs=...).check()`` refuses, naming the path, the reason and
the fix, an output path that is, contains or lies inside one of the ``inputs`` (the data store, a
model), that is or contains the working directory or the home directory, a filesystem root, and an
existing non-empty directory that is not a daskem output (see ``is_daskem_output``); a daskem
output is replaced only with ``overwrite``. Paths are resolved first, so symlinks and ``..`` do not
get around the rules. As a context manager it yields a hidden sibling directory
``.NAME.partial-PID@HOST-XXXXXXXX`` to write into, after removing the ones that earlier runs on
this host left behind when their process died; ``commit()`` renames it into place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from daskem.errors import OutputError
from daskem.outputs.records import OUTPUT_FORMAT

logger = logging.getLogger("daskem")

STAGING_KINDS = ("partial", "old")  # .NAME.partial-*: being written; .NAME.old-*: being replaced
FIX = "choose another output.path (a new or empty directory, or an earlier daskem output)"


class StagedOutput:
    """An output directory that appears only when complete.

    ``inputs`` maps a name (``"data.path"``) to a path or URL that the output must leave alone;
    URLs other than ``file://`` are not local and need no protection. Leaving the ``with`` block
    without a commit (an exception) removes the staging directory and any parent created for it.
    """

    def __init__(self, final: str | os.PathLike, *, overwrite: bool = False,
                 inputs: Mapping[str, str | os.PathLike] | None = None):
        self.final = resolve(final)
        self.overwrite = overwrite
        self.inputs = dict(inputs or {})
        self.tmp: Path | None = None
        self._created: Path | None = None

    def check(self) -> None:
        """Raise ``OutputError`` unless writing (and, with ``overwrite``, replacing) ``final`` is safe."""
        final = self.final
        check_location(final, self.inputs)
        if final.exists():
            if not final.is_dir():
                raise OutputError(f"{final}: exists and is not a directory; {FIX}")
            if any(final.iterdir()):
                if not is_daskem_output(final):
                    raise OutputError(
                        f"{final}: output directory already exists and was not written by daskem (no run.json "
                        f"of a complete daskem run in it); daskem replaces only its own outputs: {FIX}"
                    )
                if not self.overwrite:
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
        remove_leftovers(self.final)
        self.tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(self.final.name, "partial") + f"{_owner()}-",
                                         dir=parent))
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
            old = self.final.with_name(_staging_prefix(self.final.name, "old") + f"{_owner()}-{secrets.token_hex(4)}")
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


def resolve(path: str | os.PathLike) -> Path:
    """``path`` absolute, with ``~``, ``..`` and every symlink resolved (the parts that exist)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def local_path(location: str | os.PathLike) -> Path | None:
    """The resolved local path of a path or ``file://`` URL; ``None`` for another protocol."""
    text = os.fspath(location)
    protocol, sep, rest = text.partition("://")
    if sep and protocol not in ("file", "local"):
        return None
    return resolve(rest if sep else text)


def is_daskem_output(directory: Path) -> bool:
    """Whether ``directory`` holds a daskem output: a run.json (a file, not a link) written last by a
    completed daskem command, with daskem's format tag."""
    record = directory / "run.json"
    if record.is_symlink() or not record.is_file():
        return False
    try:
        document = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("complete") is True and document.get("format") == OUTPUT_FORMAT


def check_location(final: Path, inputs: Mapping[str, str | os.PathLike]) -> None:
    """Refuse a resolved output path whose replacement would destroy what daskem did not write."""
    if final.parent == final:
        raise OutputError(f"{final}: output.path is a filesystem root; {FIX}")
    for what, place in _places_to_keep():
        if final == place or final in place.parents:
            relation = "is" if final == place else "contains"
            raise OutputError(f"{final}: output.path {relation} {what} ({place}), which daskem never replaces; {FIX}")
    for key, location in inputs.items():
        place = local_path(location)
        if place is None:
            continue
        if final == place or final in place.parents or place in final.parents:
            relation = "is" if final == place else "contains" if final in place.parents else "is inside"
            raise OutputError(
                f"{final}: output.path {relation} the input {key} ({place}); daskem never writes over its "
                "input: choose an output.path outside it"
            )


def remove_leftovers(final: Path) -> list[str]:
    """Remove the staging directories beside ``final`` that runs on this host left when their process
    died (killed, or the machine lost power); those of live processes, or of other hosts, stay."""
    removed = []
    siblings = final.parent.iterdir() if final.parent.is_dir() else ()
    for entry in siblings:
        pid, host = _staging_owner(final.name, entry.name)
        if pid is not None and host == _host() and not _alive(pid) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        logger.info("removed %d staging director%s left beside %s by interrupted runs: %s", len(removed),
                    "y" if len(removed) == 1 else "ies", final, ", ".join(sorted(removed)))
    return removed


def _places_to_keep() -> Iterator[tuple[str, Path]]:
    yield "the working directory", resolve(os.getcwd())
    try:
        yield "the home directory", resolve(Path.home())
    except RuntimeError:  # no home directory can be determined
        pass


def _staging_prefix(name: str, kind: str) -> str:
    return f".{name}.{kind}-"


def _owner() -> str:
    """``PID@HOST`` of this process, as written into the names of its staging directories."""
    return f"{os.getpid()}@{_host()}"


def _host() -> str:
    """This host's name with only letters, digits, dots and underscores (no '-' or '@')."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "_"


def _staging_owner(name: str, entry: str) -> tuple[int | None, str | None]:
    """(pid, host) from a staging directory's name ``.NAME.KIND-PID@HOST-RANDOM``; (None, None) if it is not one."""
    for kind in STAGING_KINDS:
        prefix = _staging_prefix(name, kind)
        if entry.startswith(prefix):
            match = re.fullmatch(r"(\d+)@([A-Za-z0-9._]+)-[A-Za-z0-9_]+", entry[len(prefix):])
            if match:
                return int(match.group(1)), match.group(2)
    return None, None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (where that cannot be told, assume it does)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to another user
        return True
    return True


def _remove_empty_tree(top: Path) -> None:
    """Remove ``top`` and its subdirectories if they hold no file."""
    directories = [p for p in [top, *top.rglob("*")] if p.is_dir()]
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            return
