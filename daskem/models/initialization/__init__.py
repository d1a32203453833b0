"""Initialization: starting parameters for every candidate model, in a constant number of passes.

:func:`initial_params` is the one entry point: the estimators and ``fit_candidates`` describe their
candidates and how to start them (an ``InitSpec``), and get one list of starting parameters per
candidate (one entry per restart). Centres are seeded once per number of components and shared by
every candidate of that size (see :mod:`.seeding` and :mod:`.kmeans_parallel`); one pass then turns
them into mixture parameters for every candidate at once (see :mod:`.starts`).
"""

from daskem.models.initialization.starts import (
    Candidate,
    ExplicitStart,
    InitSpec,
    initial_params,
)

__all__ = ["Candidate", "ExplicitStart", "InitSpec", "initial_params"]
