"""What both estimators share: parameter rules, run ids, and applying a row kernel to NumPy or,
lazily, to Dask input."""

from __future__ import annotations

import uuid
from numbers import Integral, Real

from sklearn.utils._param_validation import Interval

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
}


def new_run_id(kind: str) -> str:
    """A fresh prefix for the task keys of one fit, so keys are never reused with other contents."""
    return f"daskem-{kind}-{uuid.uuid4().hex[:12]}"


