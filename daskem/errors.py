"""Errors a user can fix: the command line prints them as one line and exits with status 2.

Each is raised where the problem is found, also inside a Dask task on a worker (distributed
re-raises it on the client with its class). Anything that is not a ``DaskemUserError`` is a bug
and keeps its traceback. Every class subclasses ``ValueError``, as scikit-learn's API expects.
"""

from __future__ import annotations


class DaskemUserError(ValueError):
    """A bad config, bad data or an output in the way; the message names the culprit and the fix."""


class ConfigError(DaskemUserError):
    """The YAML file, a ``--set`` override or a value in them is invalid."""


class DataError(DaskemUserError):
    """The data cannot be fitted as given: a store that cannot be opened, not a 2-D numeric array,
    rows holding NaN or infinity, fewer rows than components."""


class FitError(DaskemUserError):
    """The fit cannot start or go on: explicit initial parameters that do not match the data, or a
    component whose covariance collapsed; the message names the parameter or component and the fix."""


class OutputError(DaskemUserError):
    """The output directory exists (and ``overwrite`` is off) or cannot be written."""
