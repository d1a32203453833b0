"""Errors a user can fix: the command line prints them as one line and exits with status 2.

Anything that is not a ``DaskemUserError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class DaskemUserError(ValueError):
    """A bad config, bad data or an output in the way; the message names the culprit and the fix."""


class ConfigError(DaskemUserError):
    """The YAML file, a ``--set`` override or a value in them is invalid."""


class DataError(DaskemUserError):
    """The data store cannot be opened or does not hold a 2-D numeric array."""


class OutputError(DaskemUserError):
    """The output directory exists (and ``overwrite`` is off) or cannot be written."""
