"""The parameter rules both estimators share (scikit-learn's ``_parameter_constraints``)."""

from __future__ import annotations

import os
from numbers import Integral, Real

from sklearn.utils._param_validation import Interval

from daskem.engine.checkpoint import Checkpoint

# The parameter rules both estimators share: iterations, restarts, seeds and the engine's settings.
SHARED_PARAMETER_CONSTRAINTS = {
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    "random_state": ["random_state"],
    "fan_in": [Interval(Integral, 2, None, closed="left")],
    "init_sample_size": [Interval(Integral, 1, None, closed="left")],
    "oversampling_factor": [Interval(Real, 0.0, None, closed="neither")],
    "init_rounds": [Interval(Integral, 1, None, closed="left")],
    "warm_start": ["boolean"],
    "checkpoint": [str, os.PathLike, Checkpoint, None],
}

