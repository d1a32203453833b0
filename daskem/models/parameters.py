"""The parameter rules both estimators share.

The ``_parameter_constraints`` of the estimators are the one home of the rules on parameter
values: the estimators check them in ``fit`` (``_validate_params``) and the YAML config checks
its values with the same tables (``daskem.pipeline.config``); the engine trusts them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

from daskem.engine.checkpoint import Checkpoint


class Choices(StrOptions):
    """``StrOptions`` that names its options in the order given, so a message reads the same in
    every process (a set's order changes with the hash seed)."""

    def __init__(self, options: Sequence[str]):
        super().__init__(set(options))
        self.ordered = tuple(options)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(option) for option in self.ordered)


# How EM updates the parameters: after a pass over all the data, or after every group of slabs.
ALGORITHMS = ("batch", "stepwise")

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
    "algorithm": [Choices(ALGORITHMS)],
    "max_passes": [Interval(Integral, 1, None, closed="left")],
    "steps_per_pass": [Interval(Integral, 1, None, closed="left")],
    # eta_t = (t + offset) ** -decay stays in (0, 1]; decay in (0.5, 1] meets Robbins-Monro's conditions
    "learning_offset": [Interval(Real, 1.0, None, closed="left")],
    "learning_decay": [Interval(Real, 0.5, 1.0, closed="right")],
    "checkpoint": [str, os.PathLike, Checkpoint, None],
}

