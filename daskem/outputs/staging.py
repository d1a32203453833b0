"""Output directories that appear only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from daskem.errors import OutputError


class StagedOutput:
    """An output directory that appears only when complete.

    ``check()`` refuses an existing, non-empty ``final`` unless ``overwrite``. Used as a context
    manager it yields a hidden temporary sibling to write into; ``commit()`` renames it into
    place (replacing the old directory only then, when overwriting). Leaving the block without a
    commit (an exception) removes the temporary directory and any parent directory created for it.
    """

    def __init__(self, final: str | os.PathLike, *, overwrite: bool = False):
        self.final = Path(final).expanduser().absolute()
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self._created: Path | None = None

    def check(self) -> None:
        final = self.final
        if final.exists() or final.is_symlink():
            if not final.is_dir():
                raise OutputError(f"{final}: exists and is not a directory; choose another output.path")
            if any(final.iterdir()) and not self.overwrite:
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
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=parent))
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
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
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



def _remove_empty_tree(top: Path) -> None:
    """Remove ``top`` and its subdirectories if they hold no file."""
    directories = [p for p in [top, *top.rglob("*")] if p.is_dir()]
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            return

