"""The fit skeleton every estimator shares: start every candidate, run EM on all restarts in the same
passes, and keep the best restart of each candidate."""

from __future__ import annotations

from typing import Sequence

import dask.array as da

from daskem.engine.em import EMResult, run_em
from daskem.models.initialization import Candidate, InitSpec, initial_params


def fit_restarts(
    X: da.Array,
    candidates: Sequence[Candidate],
    spec: InitSpec,
    *,
    labels: Sequence[str],
    max_iter: int,
    tol: float,
    run_id: str,
) -> list[list[EMResult]]:
    """EM results of every restart of every candidate (one list per candidate), all advancing in the
    same passes over ``X``. ``labels`` name the candidates in the log ("K=4 full restart 1")."""
    starts = initial_params(X, candidates, spec, name=f"{run_id}-init")
    families, initial, restart_labels, owners = [], [], [], []
    for index, (candidate, label, candidate_starts) in enumerate(zip(candidates, labels, starts, strict=True)):
        for restart, start in enumerate(candidate_starts):
            families.append(candidate.family)
            initial.append(start)
            restart_labels.append(f"{label} restart {restart}" if len(candidate_starts) > 1 else label)
            owners.append(index)
    results = run_em(X, families, initial, max_iter=max_iter, tol=tol, run_id=run_id, fan_in=spec.fan_in,
                     labels=restart_labels)
    grouped: list[list[EMResult]] = [[] for _ in candidates]
    for owner, result in zip(owners, results):
        grouped[owner].append(result)
    return grouped


def best_restart(candidate: Candidate, results: Sequence[EMResult]) -> EMResult:
    """The restart its family ranks best (the highest log-likelihood, the lowest inertia)."""
    return results[candidate.family.best([result.objective for result in results])]
