"""Starting parameters for every candidate model: explicit values, seeded centres, or random responsibilities.

A candidate is a family (a covariance type and ``reg_covar``, or k-means) with a number of
components. Explicit initial values are validated once, when the ``ExplicitStart`` is built. Centres
are seeded from one summary of the data for every number of components and restart seed at once,
and shared by all candidates of that size; a single pass then computes, for every candidate and
restart at once, the statistics its start needs (the rows nearest its centres, or random
responsibilities), so a grid of candidates costs the passes of one seeding plus one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import dask.array as da
import numpy as np

from daskem.data.checks import check_shape, check_weights
from daskem.engine.checkpoint import Checkpoint
from daskem.engine.reduction import compute, map_reduce
from daskem.kernels.draws import row_uniforms, seeds_from
from daskem.kernels.mixture import resp_chunk_stats
from daskem.kernels.params import GMMParams
from daskem.kernels.stats import SuffStats, merge_candidates
from daskem.kernels.tiles import check_finite_block
from daskem.models.initialization.seeding import SeedingSpec, seed_centers

logger = logging.getLogger("daskem")

RANDOM_RESPONSIBILITY_STREAM = 2
# The checkpoint stage of the starting parameters (its seedings are saved as sub-stages of it).
STAGE = "init"
# The start that draws responsibilities instead of seeding centres (scikit-learn's init_params="random").
RANDOM_RESPONSIBILITIES = "random_responsibilities"


@dataclass(frozen=True)
class ExplicitStart:
    """Initial values given by the user (each may be None), validated once by :meth:`of`."""

    weights: np.ndarray | None = None
    means: np.ndarray | None = None
    precisions_cholesky: np.ndarray | None = None
    covariances: np.ndarray | None = None  # from the precisions, when they are given

    @classmethod
    def of(cls, n_components: int, n_features: int, *, weights=None, means=None, precisions=None,
           covariance=None, means_name: str = "means_init") -> "ExplicitStart":
        """Check the given values against (n_components, n_features) and the covariance type."""
        if weights is not None:
            weights = check_weights(weights, n_components)
        if means is not None:
            means = check_shape(means, (n_components, n_features), means_name)
        precisions_cholesky = covariances = None
        if precisions is not None:
            precisions = covariance.check_precisions(precisions, n_components, n_features)
            precisions_cholesky = covariance.precision_cholesky_from_precisions(precisions)
            covariances = covariance.covariances_from_precision_cholesky(precisions_cholesky)
        return cls(weights, means, precisions_cholesky, covariances)

    @property
    def complete(self) -> bool:
        """Every mixture parameter is given: no pass over the data is needed."""
        return self.weights is not None and self.means is not None and self.precisions_cholesky is not None

    def params(self) -> GMMParams:
        return GMMParams(self.weights, self.means, self.covariances, self.precisions_cholesky)

    def overlay(self, start):
        """``start`` with the given values put in place of its own (mixture parameters only)."""
        if not isinstance(start, GMMParams):
            return start
        if self.precisions_cholesky is not None:
            start = replace(start, covariances=self.covariances, precisions_cholesky=self.precisions_cholesky)
        if self.weights is not None:
            start = replace(start, weights=self.weights)
        if self.means is not None:
            start = replace(start, means=self.means)
        return start


@dataclass(frozen=True)
class InitSpec:
    """How every candidate starts: a method (a key of ``seeding.SEEDINGS`` or ``RANDOM_RESPONSIBILITIES``),
    the restart seeds (a scikit-learn ``random_state`` and ``n_init``), and the seedings' settings."""

    method: str | None  # None when every candidate is given its centres
    random_state: Any
    n_init: int
    sample_size: int
    oversampling_factor: float
    n_rounds: int
    fan_in: int

    def seeding(self) -> SeedingSpec:
        return SeedingSpec(self.method, self.sample_size, self.oversampling_factor, self.n_rounds, self.fan_in)


@dataclass(frozen=True)
class Candidate:
    """One model to start: its family, its number of components and any explicit initial values."""

    family: Any
    n_components: int
    explicit: ExplicitStart = field(default_factory=ExplicitStart)


@dataclass(frozen=True)
class StartRequest:
    """What one start needs from the data: the statistics of the rows nearest ``centers``, or (when
    ``centers`` is None) of responsibilities drawn from ``seed``, shifted by ``shift``."""

    family: Any
    centers: np.ndarray | None = None
    seed: int | None = None
    shift: np.ndarray | None = None


def initial_params(X: da.Array, candidates: Sequence[Candidate], spec: InitSpec, *, name: str,
                   checkpoint: Checkpoint | None = None) -> list[list]:
    """Starting parameters of every candidate, one per restart, in as few passes as possible.

    A candidate with every parameter given starts from them; one with ``means`` given starts from
    those centres; otherwise its centres come from ``spec`` (shared by all candidates with the same
    number of components), or its responsibilities are drawn at random. Explicit values replace the
    computed ones in every start. With a ``checkpoint``, every seeding and the starts themselves are
    saved, so a resumed run repeats none of their passes.
    """
    saved = checkpoint.load(STAGE) if checkpoint is not None else None
    if saved is not None:
        return saved
    seeds = seeds_from(spec.random_state, spec.n_init)
    seeded = [c for c in candidates if not c.explicit.complete and c.explicit.means is None]
    centers_by_size: dict[int, list[np.ndarray]] = {}
    if seeded and spec.method != RANDOM_RESPONSIBILITIES:  # one summary of the data for every size
        sizes = [c.n_components for c in seeded]
        centers_by_size = seed_centers(X, sizes, seeds, spec.seeding(), name=f"{name}-{max(sizes)}",
                                       checkpoint=checkpoint, stage=f"{STAGE}/centers")
    plans: list[list] = []  # per candidate: a start, or a StartRequest to fill in from the data
    first_row = None
    for candidate in candidates:
        k, family = candidate.n_components, candidate.family
        if candidate.explicit.complete:
            plans.append([candidate.explicit.params()])
            continue
        if candidate.explicit.means is not None:
            centers = [candidate.explicit.means]
        elif spec.method == RANDOM_RESPONSIBILITIES:
            first_row = _first_row(X) if first_row is None else first_row
            shift = np.tile(first_row, (k, 1))
            plans.append([StartRequest(family, seed=seed, shift=shift) for seed in seeds])
            continue
        else:
            centers = centers_by_size[k]
        if family.starts_from_center_stats:
            plans.append([StartRequest(family, centers=c) for c in centers])
        else:
            plans.append([family.from_centers(c) for c in centers])
    plans = _fill_from_data(X, plans, name=f"{name}-assign", fan_in=spec.fan_in)
    starts = [[candidate.explicit.overlay(start) for start in starts] for candidate, starts in zip(candidates, plans)]
    if checkpoint is not None:
        checkpoint.save(STAGE, starts)
    return starts


def _fill_from_data(X, plans: list[list], *, name: str, fan_in: int) -> list[list]:
    """Replace every ``StartRequest`` of ``plans`` by its parameters, all in one pass (none if there is none)."""
    requests = tuple(item for starts in plans for item in starts if isinstance(item, StartRequest))
    if not requests:
        return plans
    stats = iter(map_reduce(X, _start_stats, requests, name=name, combine=merge_candidates, fan_in=fan_in))
    logger.info("init: starting parameters of %d restart(s) from one pass", len(requests))
    filled = []
    for starts in plans:
        filled.append([_start_from(item, next(stats)) if isinstance(item, StartRequest) else item for item in starts])
    return filled


def _start_from(request: StartRequest, stats: SuffStats):
    if request.centers is not None:
        return request.family.from_centers(request.centers, stats)
    return request.family.m_step(stats, request.shift)


def _start_stats(slab: np.ndarray, row_start: int, requests: tuple[StartRequest, ...],
                 weights=None) -> tuple[SuffStats, ...]:
    """The statistics every start request needs from one slab (its rows weighted when given)."""
    check_finite_block(slab, row_start)
    return tuple(_request_stats(slab, row_start, request, weights) for request in requests)


def _request_stats(slab: np.ndarray, row_start: int, request: StartRequest, weights=None) -> SuffStats:
    if request.centers is not None:
        return request.family.center_stats(slab, request.centers, weights)
    n_components = request.shift.shape[0]
    resp = row_uniforms(request.seed, RANDOM_RESPONSIBILITY_STREAM, row_start, slab.shape[0], n_components)
    resp /= resp.sum(axis=1, keepdims=True)
    return resp_chunk_stats(slab, resp, request.shift, request.family.covariance, weights)


def _first_row(X: da.Array) -> np.ndarray:
    """The first row, in float64: the shift of statistics under random responsibilities."""
    (first,) = compute(X[:1])
    return np.asarray(first, dtype=np.float64)[0]
