"""The EM loop: several candidate models advanced by the same passes over the data.

Each iteration is one :func:`~daskem.engine.reduction.map_reduce` pass: every slab is read once
and each candidate's statistics computed in turn, so memory holds one candidate's temporaries at
a time; the client then applies each candidate's M-step. The loop knows nothing of mixtures or
k-means: it drives any object that follows the ``Family`` protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import dask.array as da
import numpy as np

from daskem.engine.checkpoint import Checkpoint
from daskem.engine.reduction import DEFAULT_FAN_IN, map_reduce
from daskem.kernels.stats import SuffStats, merge_candidates
from daskem.kernels.tiles import check_finite_block

logger = logging.getLogger("daskem")


class Family(Protocol):
    """What the EM loop needs of a model: statistics of a slab on a worker, the M-step on the client.

    Implementations are small frozen (picklable) objects; ``chunk_stats`` must be a pure function of
    its inputs, so that a task recomputed after a lost worker gives the same bits.
    """

    # True when the objective reported for a fit must be that of the parameters returned (k-means'
    # inertia): on convergence the loop keeps the parameters just scored instead of updating them,
    # and after max_iter it scores the final parameters in one more pass. False for scikit-learn's
    # ``lower_bound_``: the objective of the last E-step, before the final M-step.
    reports_objective_of_returned_params: bool

    def chunk_stats(self, X: np.ndarray, params: Any, weights: np.ndarray | None = None) -> SuffStats:
        """Sufficient statistics of one slab under ``params``, its rows weighted by ``weights`` when
        given (runs on a worker)."""

    def update(self, stats: SuffStats, params: Any) -> Any:
        """The M-step: new parameters from the statistics of an E-step at ``params``."""

    def objective(self, stats: SuffStats) -> float:
        """The objective of the whole data from its total statistics."""

    def has_converged(self, previous: float, current: float, tol: float) -> bool:
        """Whether the objective moved from ``previous`` to ``current`` by less than ``tol`` (by its rule)."""

    def shifted(self, stats: SuffStats, old: Any, new: Any) -> SuffStats:
        """Statistics taken at ``old`` moved to the shift of ``new`` (stepwise EM's running statistics)."""

    # Optional: ``reseed(stats, params, done) -> (params, lines) | None``, the update with collapsed
    # components re-seeded (``done`` re-seeds made so far), one log line each; None if none is.


@dataclass(frozen=True)
class SlabPayload:
    """What every E-step task needs: the candidate models and whether to check the rows."""

    families: tuple[Family, ...]
    params: tuple
    check_finite: bool = False


def candidate_stats(slab: np.ndarray, row_start: int, payload: SlabPayload, weights=None) -> tuple[SuffStats, ...]:
    """The E-step task: one slab read, then each candidate in turn, so memory holds one at a time."""
    if payload.check_finite:
        check_finite_block(slab, row_start)
    return tuple(family.chunk_stats(slab, params, weights) for family, params in zip(payload.families, payload.params))


@dataclass
class EMResult:
    """The outcome of one candidate's fit."""

    params: Any
    objective: float
    history: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    reseeded: int = 0  # collapsed components re-seeded (see the family's ``reseed``)
    objective_of_params: bool = False  # ``objective`` scores ``params`` themselves (a final scoring pass)


def run_em(
    X: da.Array,
    families: Sequence[Family],
    initial_params: Sequence,
    *,
    max_iter: int,
    tol: float,
    run_id: str,
    fan_in: int = DEFAULT_FAN_IN,
    labels: Sequence[str] | None = None,
    checkpoint: Checkpoint | None = None,
    stage: str = "em",
) -> list[EMResult]:
    """Fit every candidate ``(family, params)`` by EM, all advancing in the same pass over ``X``.

    A candidate stops when its family's convergence rule holds or after ``max_iter`` M-steps;
    the others go on without it. Rows are checked for NaN and infinity during the first pass.
    With a ``checkpoint``, the state after every M-step is saved as ``stage``, and a saved state is
    resumed from: the passes already made are not made again, and the results are the same bits.
    """
    labels = list(labels) if labels is not None else [f"candidate {i}" for i in range(len(families))]
    state = checkpoint.load(stage) if checkpoint is not None else None
    if state is None:
        state = {"iteration": 0, "results": [EMResult(params, np.nan) for params in initial_params],
                 "active": list(range(len(families))), "done": False}
    elif not state["done"]:
        logger.info("%s: resuming from iteration %d of at most %d", stage, state["iteration"], max_iter)
    results, active = state["results"], state["active"]
    for iteration in range(state["iteration"] + 1, max_iter + 1):
        if state["done"] or not active:
            break
        seconds = _iterate(X, families, results, active, iteration, labels, tol=tol, fan_in=fan_in,
                           name=f"{run_id}-iter{iteration}")
        _save(checkpoint, stage, iteration, results, active, done=False)
        if active and iteration < max_iter:
            left = max_iter - iteration
            logger.info("%s: pass %d done in %.2f s; at most %d more (about %s) unless all converge sooner",
                        stage, iteration, seconds, left, _duration(left * seconds))
    if not state["done"]:
        unscored = [i for i in active if families[i].reports_objective_of_returned_params]
        if unscored:
            final_stats = em_pass(X, families, results, unscored, name=f"{run_id}-final", fan_in=fan_in)
            for index, stats in zip(unscored, final_stats):
                results[index].objective = families[index].objective(stats)
        for index in active:
            logger.info("%s stopped at max_iter=%d without converging", labels[index], max_iter)
        _save(checkpoint, stage, max_iter, results, active, done=True)
    return results


def _iterate(X, families, results, active, iteration, labels, *, tol, fan_in, name) -> float:
    """One EM iteration of the ``active`` candidates: one pass, then each M-step; converged ones leave
    ``active``. Returns the seconds it took."""
    started = time.perf_counter()
    all_stats = em_pass(X, families, results, active, name=name, check_finite=iteration == 1, fan_in=fan_in)
    seconds = time.perf_counter() - started
    for index, stats in zip(list(active), all_stats):
        family, result = families[index], results[index]
        objective = family.objective(stats)
        previous = result.history[-1] if result.history else None
        result.history.append(objective)
        result.seconds.append(seconds)
        result.objective = objective
        change = np.nan if previous is None else objective - previous
        result.converged = previous is not None and family.has_converged(previous, objective, tol)
        reseeded = family.reseed(stats, result.params, result.reseeded) if hasattr(family, "reseed") else None
        if reseeded is not None:  # collapsed components re-seeded: the fit goes on
            result.params, lines = reseeded
            result.reseeded += len(lines)
            result.converged, result.n_iter = False, iteration
            for line in lines:
                logger.warning("%s iteration %d: %s", labels[index], iteration, line)
        elif not (result.converged and family.reports_objective_of_returned_params):
            result.params = family.update(stats, result.params)
            result.n_iter = iteration
        logger.info("%s iteration %d: objective %.10g, change %+.3e, %.2f s",
                    labels[index], iteration, objective, change, seconds)
        if result.converged:
            active.remove(index)
            logger.info("%s converged after %d iterations", labels[index], result.n_iter)
    return seconds


def _duration(seconds: float) -> str:
    """``seconds`` for a person: 42 s, 3.5 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _save(checkpoint, stage, iteration, results, active, *, done: bool) -> None:
    if checkpoint is not None:
        checkpoint.save(stage, {"iteration": iteration, "results": results, "active": list(active), "done": done})


def em_pass(X, families, results, active, *, name, fan_in, check_finite=False) -> tuple[SuffStats, ...]:
    """One read of the data computing the statistics of the ``active`` candidates."""
    payload = SlabPayload(
        tuple(families[i] for i in active), tuple(results[i].params for i in active), check_finite
    )
    return map_reduce(X, candidate_stats, payload, name=name, combine=merge_candidates, fan_in=fan_in,
                      result_bytes=params_nbytes(payload.params))


def params_nbytes(params) -> int:
    """Bytes of the arrays in ``params`` (nested tuples and dataclasses of arrays): about the size of
    the statistics one slab returns for them, which hold as many numbers as the parameters."""
    if isinstance(params, np.ndarray):
        return params.nbytes
    if isinstance(params, (tuple, list)):
        return sum(params_nbytes(item) for item in params)
    if dataclasses.is_dataclass(params):
        return sum(params_nbytes(getattr(params, item.name)) for item in dataclasses.fields(params))
    return 64
