"""The fit skeleton every estimator shares: start every candidate, run EM on all restarts in the same
passes, keep the best restart of each candidate; checkpointed and pass-counted throughout."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

import dask.array as da
import numpy as np
from sklearn.utils import check_random_state

from daskem.engine.checkpoint import Checkpoint, identity_of_array
from daskem.data.checks import check_weight_values, sample_weight_blocks
from daskem.engine.em import EMResult, em_pass, run_em
from daskem.engine.reduction import compute, counting_passes, pass_count, row_weights, step
from daskem.engine.stepwise import StepwiseSpec, StepwiseState, run_stepwise, step_size, stepwise_update
from daskem.kernels.draws import seeds_from
from daskem.models.initialization import Candidate, InitSpec, initial_params

logger = logging.getLogger("daskem")

# The checkpoint stage that records the seed a fit drew when its random_state was not an int.
SEED_STAGE = "random_state"
# Estimator parameters that do not change what a fit computes, left out of a checkpoint's identity.
NOT_IDENTITY = ("checkpoint", "warm_start")


@dataclass
class FitOutcome:
    """Every restart's EM result, one list per candidate, and the passes over the data by step."""

    results: list[list[EMResult]]
    passes: Counter


def fit_restarts(
    X: da.Array,
    candidates: Sequence[Candidate],
    spec: InitSpec,
    *,
    labels: Sequence[str],
    max_iter: int,
    tol: float,
    run_id: str,
    checkpoint: Checkpoint | None = None,
    weights: da.Array | None = None,
    stepwise: StepwiseSpec | None = None,
) -> FitOutcome:
    """EM results of every restart of every candidate, all advancing in the same passes over ``X``
    (batch EM, or stepwise EM when ``stepwise`` is given).

    ``labels`` name the candidates in the log ("K=4 full"); restarts add " restart r". With a
    ``checkpoint``, initialization and every EM iteration are saved and a saved state is resumed.
    ``weights`` (checked, chunked like the rows) weigh the rows in every pass.
    """
    with counting_passes() as passes, row_weights(X, weights):
        with step("init"):
            starts = initial_params(X, candidates, spec, name=f"{run_id}-init", checkpoint=checkpoint)
        families, initial, restart_labels, owners = [], [], [], []
        for index, (candidate, label, candidate_starts) in enumerate(zip(candidates, labels, starts, strict=True)):
            for restart, start in enumerate(candidate_starts):
                families.append(candidate.family)
                initial.append(start)
                restart_labels.append(f"{label} restart {restart}" if len(candidate_starts) > 1 else label)
                owners.append(index)
        logger.info("init: %s pass(es) over the data", pass_count(passes["init"]))
        with step("em"):
            if stepwise is None:
                results = run_em(X, families, initial, max_iter=max_iter, tol=tol, run_id=run_id,
                                 fan_in=spec.fan_in, labels=restart_labels, checkpoint=checkpoint)
            else:
                results = run_stepwise(X, families, initial, stepwise, tol=tol, run_id=run_id, fan_in=spec.fan_in,
                                       labels=restart_labels, checkpoint=checkpoint)
        logger.info("em: %s pass(es) over the data", pass_count(passes["em"]))
    grouped: list[list[EMResult]] = [[] for _ in candidates]
    for owner, result in zip(owners, results):
        grouped[owner].append(result)
    return FitOutcome(grouped, passes)


def stepwise_spec(estimator, random_state) -> StepwiseSpec | None:
    """The estimator's stepwise settings, or None for batch EM; the slab order is seeded by
    ``random_state`` (an int once a checkpoint is open, so a resumed fit visits the same order)."""
    if estimator.algorithm != "stepwise":
        return None
    return StepwiseSpec(estimator.max_passes, estimator.steps_per_pass, float(estimator.learning_offset),
                        float(estimator.learning_decay), seeds_from(random_state, 1)[0])


def partial_fit_update(X: da.Array, candidate: Candidate, spec: InitSpec, params, state: StepwiseState | None,
                       estimator, *, run_id: str) -> tuple[EMResult, StepwiseState, Counter]:
    """One stepwise update from the rows of ``X`` (``partial_fit``): the model starts from ``X`` when it has
    no ``params`` yet (one initialization), then one read of ``X`` and one stepwise M-step, exactly as
    stepwise EM updates after a group of slabs. Returns the result (its objective that of the E-step,
    at the parameters before the update), the new state and the passes over ``X``."""
    state = state or StepwiseState()
    with counting_passes() as passes:
        if params is None:
            with step("init"):
                (starts,) = initial_params(X, [candidate], replace(spec, n_init=1), name=f"{run_id}-init")
            params = starts[0]
        with step("em"):
            (stats,) = em_pass(X, [candidate.family], [EMResult(params, np.nan)], [0], name=f"{run_id}-step",
                               fan_in=spec.fan_in, check_finite=True)
        eta = step_size(state.t, float(estimator.learning_offset), float(estimator.learning_decay))
        new_params, state = stepwise_update(candidate.family, params, state, stats, eta)
    objective = candidate.family.objective(stats)
    return EMResult(new_params, objective, [objective], n_iter=state.t), state, passes


def best_restart(candidate: Candidate, results: Sequence[EMResult]) -> EMResult:
    """The restart its family ranks best (the highest log-likelihood, the lowest inertia)."""
    return results[candidate.family.best([result.objective for result in results])]


def open_checkpoint(value, what: str, params: dict[str, Any], X: da.Array,
                    spec: InitSpec) -> tuple[Checkpoint | None, InitSpec]:
    """The ``checkpoint`` parameter ``value`` (None, a path, or a ``Checkpoint`` its caller owns) opened
    for the fit ``what`` with these ``params`` on ``X``, and ``spec`` with a seed that a resumed fit
    draws again: an int ``random_state`` as it is, otherwise one seed drawn now and saved."""
    if value is None:
        return None, spec
    checkpoint = value if isinstance(value, Checkpoint) else Checkpoint(str(value))
    identity = {"fit": what, **identity_of_array(X),
                **{key: _identity_value(v) for key, v in params.items() if key not in NOT_IDENTITY}}
    checkpoint = checkpoint.with_identity(**identity)
    seed = checkpoint.load(SEED_STAGE)
    if seed is None:
        random_state = spec.random_state
        seed = random_state if isinstance(random_state, (int, np.integer)) else int(
            check_random_state(random_state).randint(np.iinfo(np.int32).max))
        checkpoint.save(SEED_STAGE, int(seed))
    return checkpoint, replace(spec, random_state=int(seed))


def checked_weights(sample_weight, X: da.Array, *, name: str = "sample_weight") -> tuple[da.Array | None, float]:
    """``sample_weight`` as weights chunked like the rows of ``X``, checked in one small compute of
    the weights alone (their minimum and sum), and their sum: the effective number of rows (BIC's N).
    Negative, NaN, infinite, all-zero or misaligned weights fail with one line naming ``name``."""
    weights = sample_weight_blocks(sample_weight, X, name=name)
    if weights is None:
        return None, float(X.shape[0])
    lowest, total = (float(value) for value in compute(weights.min(), weights.sum()))
    check_weight_values(lowest, total, name=name)
    return weights, total


def weighted_params(estimator, weights, total: float) -> dict[str, Any]:
    """The parameters that identify a fit in its checkpoint, with the sum of its row weights if any."""
    params = estimator.get_params(deep=False)
    return params if weights is None else {**params, "sample_weight_sum": total}


def close_checkpoint(value, checkpoint: Checkpoint | None) -> None:
    """Remove the checkpoint of a finished fit, unless it belongs to the caller (``value`` is a
    ``Checkpoint`` object, as the pipeline passes, which removes it once the outputs are written)."""
    if checkpoint is not None and not isinstance(value, Checkpoint):
        checkpoint.remove()


def _identity_value(value: Any) -> Any:
    """A parameter as a comparable JSON value; arrays by their contents' hash."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
        return list(value)
    if isinstance(value, (np.random.RandomState, np.random.Generator)):
        return type(value).__name__  # its draws are saved in the checkpoint instead
    try:
        array = np.ascontiguousarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return repr(value)
    return {"shape": list(array.shape), "sha256": hashlib.sha256(array.tobytes()).hexdigest()[:16]}
