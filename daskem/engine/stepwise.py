"""Stepwise (online) EM: the parameters updated after every group of slabs, a few passes in all.

Batch EM reads the whole data for every M-step. Stepwise EM (Sato & Ishii 2000; Cappé & Moulines
2009; Liang & Klein 2009) visits the slabs in a seeded random order, in groups; after each group it
blends the group's statistics into running statistics, ``S <- (1 - eta_t) S + eta_t G / n_G`` with
``eta_t = (t + learning_offset) ** -learning_decay`` (the running statistics start at zero; the
M-step does not depend on their scale), and applies the M-step to them on the client. When there is
more than one pass, the last one averages instead: each group weighs its share of the rows read so far
in that pass (``eta = n_G / n_pass``), so the final M-step sees every row once, at nearly converged
parameters, as batch EM's last M-step does, not mostly the last few groups. The running
statistics are kept around the current means (centres): after every M-step they are moved to the
new ones exactly (``SuffStats.shifted``). After ``max_passes`` passes (or earlier, when a whole
pass's objective moved by less than ``tol``) one batch pass scores the final parameters, so the
reported objective is that of the parameters returned, over the whole data.

The order of the slabs comes from the seed and the pass alone (``slab_groups``), and every task is
the same pure E-step as in batch EM, so a fit is the same bits for a given seed and chunking, and a
checkpointed fit resumes after the last group it finished.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import dask.array as da
import numpy as np

from daskem.engine.checkpoint import Checkpoint
from daskem.engine.em import EMResult, SlabPayload, candidate_stats, em_pass, params_nbytes
from daskem.engine.reduction import DEFAULT_FAN_IN, map_reduce
from daskem.kernels.draws import row_uniforms
from daskem.kernels.stats import SuffStats, merge_candidates

logger = logging.getLogger("daskem")

# The random stream of the slab order: pass p draws from ORDER_STREAM + p.
ORDER_STREAM = 3000


@dataclass(frozen=True)
class StepwiseSpec:
    """How stepwise EM runs: passes, groups of slabs per pass, the step sizes and the order's seed."""

    max_passes: int
    steps_per_pass: int
    learning_offset: float
    learning_decay: float
    seed: int

    def step_size(self, t: int) -> float:
        """``eta_t = (t + learning_offset) ** -learning_decay`` for the t-th update (from 0)."""
        return step_size(t, self.learning_offset, self.learning_decay)


def step_size(t: int, learning_offset: float, learning_decay: float) -> float:
    """The weight of the t-th group (from 0) in the running statistics."""
    return float((t + learning_offset) ** -learning_decay)


def slab_groups(n_slabs: int, seed: int, pass_index: int, steps_per_pass: int) -> list[np.ndarray]:
    """The slabs of pass ``pass_index`` in their seeded random order, split into ``steps_per_pass``
    groups of nearly equal size (fewer when there are fewer slabs)."""
    order = np.argsort(row_uniforms(seed, ORDER_STREAM + pass_index, 0, n_slabs)[:, 0], kind="stable")
    return [group for group in np.array_split(order, min(steps_per_pass, n_slabs)) if group.size]


@dataclass(frozen=True)
class StepwiseState:
    """What one model carries from update to update: the updates made, the running statistics."""

    t: int = 0
    running: SuffStats | None = None  # around the current parameters' means; None before the first update


def stepwise_update(family, params, state: StepwiseState, group: SuffStats, eta: float):
    """One stepwise M-step: ``group`` (statistics at ``params``) blended into the running statistics
    with weight ``eta``; returns the new parameters and state (statistics moved to their means)."""
    per_row = group.scaled(1.0 / group.n_samples)
    running = per_row.scaled(eta) if state.running is None else state.running.scaled(1.0 - eta) + per_row.scaled(eta)
    new_params = family.update(running, params)
    return new_params, StepwiseState(state.t + 1, family.shifted(running, params, new_params))


def run_stepwise(
    X: da.Array,
    families: Sequence[Any],
    initial_params: Sequence,
    spec: StepwiseSpec,
    *,
    tol: float,
    run_id: str,
    fan_in: int = DEFAULT_FAN_IN,
    labels: Sequence[str] | None = None,
    checkpoint: Checkpoint | None = None,
    stage: str = "stepwise",
) -> list[EMResult]:
    """Fit every candidate ``(family, params)`` by stepwise EM, all updated from the same reads.

    Each candidate's ``history`` holds the objective of every group (scaled to the whole data),
    ``n_iter`` its updates; it stops when a pass's objective moved by less than ``tol`` from the
    previous pass's (``converged``) or after ``spec.max_passes`` passes. Its ``objective`` is that of
    its returned parameters, from one final batch pass. With a ``checkpoint``, the state after every
    group is saved as ``stage`` and resumed from.
    """
    labels = list(labels) if labels is not None else [f"candidate {i}" for i in range(len(families))]
    n_rows, n_slabs = X.shape[0], X.numblocks[0]
    state = checkpoint.load(stage) if checkpoint is not None else None
    if state is None:
        state = {"pass": 0, "group": 0, "t": 0, "done": False, "active": list(range(len(families))),
                 "results": [EMResult(params, np.nan) for params in initial_params],
                 "running": [None] * len(families), "pass_totals": [[0.0, 0.0] for _ in families],
                 "previous": [None] * len(families)}
    elif not state["done"]:
        logger.info("%s: resuming at pass %d, group %d", stage, state["pass"] + 1, state["group"] + 1)
    results, active = state["results"], state["active"]
    while not state["done"] and active and state["pass"] < spec.max_passes:
        groups = slab_groups(n_slabs, spec.seed, state["pass"], spec.steps_per_pass)
        for number in range(state["group"], len(groups)):
            _step(X, families, state, groups[number], spec, n_rows, fan_in=fan_in,
                  name=f"{run_id}-pass{state['pass']}-group{number}")
            state["group"] = number + 1
            _save(checkpoint, stage, state)
        _end_pass(families, state, labels, tol)
        _save(checkpoint, stage, state)
    if not state["done"]:
        scored = list(range(len(families)))
        final = em_pass(X, families, results, scored, name=f"{run_id}-final", fan_in=fan_in)
        for index, stats in zip(scored, final):
            results[index].objective = families[index].objective(stats)
            results[index].objective_of_params = True
        state["done"] = True
        _save(checkpoint, stage, state)
    return results


def _step(X, families, state: dict, slabs: np.ndarray, spec: StepwiseSpec, n_rows: int, *, fan_in: int,
          name: str) -> None:
    """One group: one read of its slabs for every active candidate, then each one's stepwise M-step."""
    active, results = state["active"], state["results"]
    started = time.perf_counter()
    payload = SlabPayload(tuple(families[i] for i in active), tuple(results[i].params for i in active),
                          check_finite=state["pass"] == 0)
    all_stats = map_reduce(X, candidate_stats, payload, name=name, combine=merge_candidates, fan_in=fan_in,
                           slabs=slabs, result_bytes=params_nbytes(payload.params))
    seconds = time.perf_counter() - started
    averaging = spec.max_passes > 1 and state["pass"] == spec.max_passes - 1
    for index, group in zip(active, all_stats):
        if group.n_samples == 0:  # a group of empty slabs says nothing
            continue
        family, result = families[index], results[index]
        result.history.append(family.objective(group.scaled(n_rows / group.n_samples)))
        result.seconds.append(seconds)
        totals = state["pass_totals"][index]
        totals[0] += group.n_samples
        totals[1] += group.objective
        eta = group.n_samples / totals[0] if averaging else spec.step_size(state["t"])
        carried = StepwiseState(state["t"], state["running"][index])
        result.params, carried = stepwise_update(family, result.params, carried, group, eta)
        state["running"][index] = carried.running
        result.n_iter += 1
    state["t"] += 1


def _end_pass(families, state: dict, labels, tol: float) -> None:
    """A pass is over: each candidate's objective over it, compared with the previous pass's."""
    number = state["pass"] + 1
    for index in list(state["active"]):
        n_samples, total = state["pass_totals"][index]
        objective = families[index].objective(SuffStats(n_samples, total, np.zeros(0), np.zeros((0, 0))))
        previous = state["previous"][index]
        result = state["results"][index]
        result.converged = previous is not None and families[index].has_converged(previous, objective, tol)
        logger.info("%s stepwise pass %d: objective %.10g over the pass, %d updates", labels[index], number,
                    objective, result.n_iter)
        state["previous"][index], state["pass_totals"][index] = objective, [0.0, 0.0]
        if result.converged:
            state["active"].remove(index)
            logger.info("%s converged after %d passes", labels[index], number)
    state["pass"], state["group"] = number, 0


def _save(checkpoint, stage: str, state: dict) -> None:
    if checkpoint is not None:
        checkpoint.save(stage, state)
