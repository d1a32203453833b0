"""Several Gaussian mixtures fitted in the same passes over the data, then one chosen by BIC or AIC.

Out of core, reading the data dominates, so every candidate (a number of components, a covariance
type, a restart) advances in the same pass: each slab is read once per iteration for all of them,
the task looping over candidates one at a time to bound memory, and a converged candidate drops
out of later passes. One last pass scores every candidate's final parameters, so the criteria are
computed from the parameters returned, as scikit-learn's ``bic(X)`` and ``aic(X)`` do.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from daskem.data.checks import as_row_blocks
from daskem.engine.em import em_pass, run_em
from daskem.kernels.covariance import get_covariance_type
from daskem.kernels.draws import seeds_from
from daskem.models.families import GaussianMixtureFamily
from daskem.models.gaussian_mixture import GaussianMixture
from daskem.models.initialization.seeding import gmm_params_from_centers
from daskem.models.parameters import new_run_id

logger = logging.getLogger("daskem")

CRITERIA = ("bic", "aic", "loglik")


@dataclass(frozen=True)
class CandidateSummary:
    """One row of the selection table."""

    n_components: int
    covariance_type: str
    restart: int
    log_likelihood: float  # mean per row, of the returned parameters
    bic: float
    aic: float
    n_iter: int
    converged: bool


@dataclass
class Selection:
    """The chosen model and the table of every candidate, best first by the criterion."""

    best: GaussianMixture
    criterion: str
    table: list[CandidateSummary]

    def table_records(self) -> list[dict]:
        return [asdict(row) for row in self.table]


def _score(row: CandidateSummary, criterion: str) -> float:
    """Lower is better for every criterion."""
    return -row.log_likelihood if criterion == "loglik" else getattr(row, criterion)


def fit_candidates(
    X,
    *,
    n_components: Sequence[int],
    covariance_types: Sequence[str] = ("full",),
    n_init: int = 1,
    criterion: str = "bic",
    **params,
) -> Selection:
    """Fit a mixture for every (n_components, covariance type, restart) in shared passes; pick the best.

    ``params`` are the other :class:`daskem.GaussianMixture` parameters, common to all candidates.
    Initial centres are computed once per number of components and one pass turns them into
    initial parameters for every candidate; the EM iterations and the final scoring pass are
    shared by all candidates.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(map(repr, CRITERIA))}")
    if not n_components or not covariance_types:
        raise ValueError("give at least one value of n_components and one covariance type")
    X = as_row_blocks(X, min_rows=max(n_components))
    run_id = new_run_id("select")
    candidates = []
    for k in n_components:
        for covariance_type in covariance_types:
            estimator = GaussianMixture(k, covariance_type=covariance_type, n_init=n_init, **params)
            estimator._validate_params()
            candidates.append((estimator, GaussianMixtureFamily(get_covariance_type(covariance_type),
                                                                float(estimator.reg_covar))))
    starts = _initial_params(X, candidates, run_id)
    estimators, families, initial, labels = [], [], [], []
    for (estimator, family), candidate_starts in zip(candidates, starts):
        for restart, start in enumerate(candidate_starts):
            estimators.append((estimator, restart))
            families.append(family)
            initial.append(start)
            labels.append(f"K={estimator.n_components} {estimator.covariance_type} restart {restart}")
    results = run_em(X, families, initial, max_iter=estimators[0][0].max_iter, tol=estimators[0][0].tol,
                     run_id=run_id, fan_in=estimators[0][0].fan_in, labels=labels)
    final = em_pass(X, families, results, list(range(len(results))), name=f"{run_id}-score",
                    fan_in=estimators[0][0].fan_in)
    n_rows, n_features = X.shape
    table = []
    for (estimator, restart), family, result, stats in zip(estimators, families, results, final):
        log_likelihood = family.objective(stats)
        n_parameters = family.n_parameters(n_features, result.params)
        table.append(CandidateSummary(
            estimator.n_components, estimator.covariance_type, restart, log_likelihood,
            bic=-2 * log_likelihood * n_rows + n_parameters * np.log(n_rows),
            aic=-2 * log_likelihood * n_rows + 2 * n_parameters,
            n_iter=result.n_iter, converged=result.converged,
        ))
    order = sorted(range(len(table)), key=lambda i: _score(table[i], criterion))
    best_index = order[0]
    best_estimator, _ = estimators[best_index]
    best_estimator._set_fit(results[best_index], n_features)
    ranked = [table[i] for i in order]
    _log_table(ranked, criterion)
    return Selection(best_estimator, criterion, ranked)


def _initial_params(X, candidates, run_id) -> list[list]:
    """Initial parameters of every candidate, restarts included, in as few passes as possible.

    Centres are computed once per number of components and shared by its covariance types; one
    pass then gathers the statistics of the rows nearest them for every candidate at once.
    Candidates started from random responsibilities, or given all their parameters, do alone.
    """
    n_features = X.shape[1]
    starts: list[list | None] = [None] * len(candidates)
    centers_by_k: dict[int, list | None] = {}
    pairs, owners = [], []
    for index, (estimator, family) in enumerate(candidates):
        if all(part is not None for part in estimator._explicit_start(family.covariance, n_features)):
            starts[index] = estimator._initial_params(X, family, run_id)
            continue
        k = estimator.n_components
        if k not in centers_by_k:
            seeds = seeds_from(estimator.random_state, estimator.n_init)
            centers_by_k[k] = estimator._start_centers(X, seeds, f"{run_id}-init-{k}")
        if centers_by_k[k] is None:  # init_params="random"
            starts[index] = estimator._initial_params(X, family, f"{run_id}-{index}")
            continue
        starts[index] = []
        for centers in centers_by_k[k]:
            pairs.append((family, centers))
            owners.append(index)
    if pairs:
        shared = gmm_params_from_centers(X, pairs, name=f"{run_id}-assign", fan_in=candidates[0][0].fan_in)
        for index, start in zip(owners, shared):
            estimator, family = candidates[index]
            starts[index].append(estimator._with_explicit(start, family.covariance, n_features))
    return starts


def _log_table(table: list[CandidateSummary], criterion: str) -> None:
    logger.info("candidates ranked by %s:", criterion)
    logger.info("%5s %-10s %7s %14s %16s %16s %6s %9s", "K", "covariance", "restart", "loglik/row", "BIC", "AIC",
                "iters", "converged")
    for row in table:
        logger.info("%5d %-10s %7d %14.6f %16.2f %16.2f %6d %9s", row.n_components, row.covariance_type, row.restart,
                    row.log_likelihood, row.bic, row.aic, row.n_iter, row.converged)
