"""Several Gaussian mixtures fitted in the same passes over the data, then one chosen by BIC or AIC.

Out of core, reading the data dominates, so every candidate (a number of components, a covariance
type, a restart) advances in the same pass: each slab is read once per iteration for all of them,
the task looping over candidates one at a time to bound memory, and a converged candidate drops
out of later passes. One last pass scores every candidate's final parameters (unless stepwise EM
has), so the criteria are computed from the parameters returned, as scikit-learn's ``bic(X)`` and
``aic(X)`` do.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

from daskem.data.checks import as_row_blocks
from daskem.engine.em import em_pass
from daskem.engine.reduction import counting_passes, new_run_id, pass_count, row_weights, step
from daskem.models.families import information_criteria
from daskem.models.fitting import checked_weights, close_checkpoint, fit_restarts, open_checkpoint, stepwise_spec
from daskem.models.gaussian_mixture import GaussianMixture, mixture_start, set_fitted

logger = logging.getLogger("daskem")

CRITERIA = ("bic", "aic", "loglik")
# The checkpoint stage of the scoring pass.
SCORE_STAGE = "score"


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
    history: list[float]  # the objective at every iteration


@dataclass
class SelectionResult:
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
    checkpoint=None,
    sample_weight=None,
    **params,
) -> SelectionResult:
    """Fit a mixture for every (n_components, covariance type, restart) in shared passes; pick the best.

    ``params`` are the other :class:`daskem.GaussianMixture` parameters, common to all candidates.
    Initial centres are computed once per number of components and one pass turns them into
    initial parameters for every candidate; the EM iterations and the final scoring pass are
    shared by all candidates. ``checkpoint`` (a path) saves every pass and resumes a fit killed midway.
    ``sample_weight`` weighs the rows in every pass, scoring included; BIC's N is then their sum.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(map(repr, CRITERIA))}")
    if not n_components or not covariance_types:
        raise ValueError("give at least one value of n_components and one covariance type")
    X = as_row_blocks(X, min_rows=max(n_components))
    weights, n_rows = checked_weights(sample_weight, X)
    estimators = [GaussianMixture(k, covariance_type=covariance_type, n_init=n_init, **params)
                  for k in n_components for covariance_type in covariance_types]
    starts = [mixture_start(estimator, X.shape[1]) for estimator in estimators]
    candidates = [candidate for candidate, _ in starts]
    first, spec = estimators[0], starts[0][1]  # the parameters but n_components and covariance_type are shared
    grid = dict(n_components=list(n_components), covariance_types=list(covariance_types), n_init=n_init,
                criterion=criterion, **params)
    if weights is not None:
        grid["sample_weight_sum"] = n_rows
    checkpoint_file, spec = open_checkpoint(checkpoint, "fit_candidates", grid, X, spec)
    run_id = new_run_id("select")
    outcome = fit_restarts(X, candidates, spec, max_iter=first.max_iter, tol=first.tol, run_id=run_id,
                           labels=[f"K={e.n_components} {e.covariance_type}" for e in estimators],
                           checkpoint=checkpoint_file, weights=weights,
                           stepwise=stepwise_spec(first, spec.random_state))
    owners = [(estimator, candidate, restart, result) for estimator, candidate, results in
              zip(estimators, candidates, outcome.results) for restart, result in enumerate(results)]
    with counting_passes() as scoring, step("scoring"), row_weights(X, weights):
        log_likelihoods = _scores(X, owners, name=f"{run_id}-score", fan_in=first.fan_in, checkpoint=checkpoint_file)
    table = []
    for (estimator, candidate, restart, result), log_likelihood in zip(owners, log_likelihoods):
        n_parameters = candidate.family.n_parameters(X.shape[1], result.params)
        bic, aic = information_criteria(log_likelihood, n_rows, n_parameters)
        table.append(CandidateSummary(estimator.n_components, estimator.covariance_type, restart, log_likelihood,
                                      bic=bic, aic=aic, n_iter=result.n_iter, converged=result.converged,
                                      history=[float(value) for value in result.history]))
    order = sorted(range(len(table)), key=lambda i: _score(table[i], criterion))
    best_estimator, _, _, best_result = owners[order[0]]
    set_fitted(best_estimator, best_result, X.shape[1])
    best_estimator.n_passes_ = pass_count(sum(outcome.passes.values()) + sum(scoring.values()))
    ranked = [table[i] for i in order]
    _log_table(ranked, criterion)
    close_checkpoint(checkpoint, checkpoint_file)
    return SelectionResult(best_estimator, criterion, ranked)


def _scores(X, owners, *, name: str, fan_in: int, checkpoint) -> list[float]:
    """The mean log-likelihood of every restart's returned parameters: one pass for all (saved)."""
    saved = checkpoint.load(SCORE_STAGE) if checkpoint is not None else None
    if saved is not None:
        return saved
    families = [candidate.family for _, candidate, _, _ in owners]
    results = [result for *_, result in owners]
    unscored = [i for i, result in enumerate(results) if not result.objective_of_params]
    scores = [result.objective for result in results]
    if unscored:
        final = em_pass(X, families, results, unscored, name=name, fan_in=fan_in)
        for index, stats in zip(unscored, final):
            scores[index] = families[index].objective(stats)
        logger.info("scoring: the returned parameters of %d candidate(s) in one pass", len(unscored))
    if checkpoint is not None:
        checkpoint.save(SCORE_STAGE, scores)
    return scores


def _log_table(table: list[CandidateSummary], criterion: str) -> None:
    logger.info("candidates ranked by %s:", criterion)
    logger.info("%5s %-10s %7s %14s %16s %16s %6s %9s", "K", "covariance", "restart", "loglik/row", "BIC", "AIC",
                "iters", "converged")
    for row in table:
        logger.info("%5d %-10s %7d %14.6f %16.2f %16.2f %6d %9s", row.n_components, row.covariance_type, row.restart,
                    row.log_likelihood, row.bic, row.aic, row.n_iter, row.converged)
