"""k-means|| initialization (Bahmani et al. 2012) in a number of passes over the data constant in N.

k-means++ needs k sequential passes; k-means|| draws about ``l = oversampling_factor * k``
candidates per pass for a fixed number of rounds, weights each candidate by the number of rows
nearest it, and reduces the weighted candidates to k centres on the client (weighted k-means++,
then weighted Lloyd). Passes over the data, for any number of seeds (``n_init`` restarts advance
in the same passes):

* the first centre, one uniformly drawn row per seed: its global index comes from the seed and N
  alone, so one task per seed reads just the slab that holds it (at most ``n_init`` slabs); with
  row weights, the row is drawn with probability proportional to its weight, from the seed and the
  weights' running sum (one compute over the weights, not the rows, finds the slab);
* round 1 .. ``n_rounds``: one pass each; round 1 also checks every row for NaN and infinity;
* one counting pass for the candidate weights.

So ``n_rounds + 1`` passes (the textbook ``n_rounds + 2`` spends a whole pass on the first centre),
fewer when every row already equals a candidate (phi = 0: later rounds would draw nothing) or when
no seed needs weights (at most k candidates and all rows covered). Picking the first centre inside
round 1's graph would save even the few slab reads, but every map task would then wait on it and
a distributed scheduler would load all slabs into memory meanwhile.

One pass per round, exactly: a row is kept in round r iff ``u < l d^2 / phi``, i.e.
``d^2 / u > phi / l``, with ``d^2`` its squared distance to the candidates, ``u`` a uniform draw
keyed by (seed, round, global row index) and ``phi`` the sum of ``d^2`` over all rows. ``phi`` is
unknown inside a slab, but ``phi >= phi_slab``: a slab keeps only rows with
``d^2 / u > phi_slab / l`` (at most about ``l`` in expectation) with its partial ``phi``; every
merge of the tree adds the partial phis and prunes again; the root applies the exact threshold.
The draws depend on nothing but the seed, the round and the global row index, so the centres are
the same on any chunking and any cluster.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Sequence

import dask
import dask.array as da
import numpy as np

from daskem.engine.checkpoint import Checkpoint
from daskem.engine.reduction import DEFAULT_FAN_IN, compute, map_reduce, slab_row_starts, weights_of
from daskem.kernels.draws import row_uniforms
from daskem.kernels.nearest import nearest_tiles
from daskem.kernels.tiles import check_finite_block, tile_rows

logger = logging.getLogger("daskem")

# Random streams of rng.row_uniforms (init.py uses 1 and 2): round r draws from ROUND_STREAM + r.
FIRST_CENTER_STREAM = 1000
FALLBACK_STREAM = 1001
ROUND_STREAM = 1100


@dataclass(frozen=True)
class KMeansParallelResult:
    """One seed's outcome: the centres and how they were found (for logs and tests)."""

    centers: np.ndarray  # (k, D)
    candidates: np.ndarray  # (m, D) distinct rows: the first centre, then each round's draws by row index
    weights: np.ndarray  # (m,) rows nearest each candidate; empty when the counting pass was skipped
    round_sizes: tuple[int, ...]  # distinct new candidates per round run
    costs: tuple[float, ...]  # phi before each round run


class RoundDraws(NamedTuple):
    """Rows still in the running for one seed, with the partial phi of the rows they came from."""

    phi: float
    keys: np.ndarray
    index: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class RoundRequest:
    seeds: tuple[int, ...]
    candidates: tuple[np.ndarray, ...]
    round: int


@dataclass(frozen=True)
class WeightRequest:
    seeds: tuple[int, ...]
    candidates: tuple[np.ndarray, ...]
    fallback_sizes: tuple[int, ...]  # distinct uncovered rows to sample, per seed (0: none)


def _check_finite(slab, row_start: int) -> None:
    """``check_finite_block``'s error, without its (rows x features) temporary on clean slabs."""
    step = tile_rows(slab.shape[1])
    if not all(np.isfinite(slab[start : start + step]).all() for start in range(0, slab.shape[0], step)):
        check_finite_block(slab, row_start)


def _empty(n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros((0, n_features))


def _prune(selection: RoundDraws, oversampling: float) -> RoundDraws:
    """Drop the rows whose key cannot beat phi / l: ``phi`` here never exceeds the total."""
    keep = selection.keys > selection.phi / oversampling
    return RoundDraws(selection.phi, selection.keys[keep], selection.index[keep], selection.rows[keep])


def _round_slab(slab, row_start: int, request: RoundRequest, weights=None, *, oversampling: float) -> list[RoundDraws]:
    """One slab of a round: per seed, its rows with ``d^2 / u > phi_slab / l`` and ``phi_slab``.
    The slab is pruned tile by tile first (a tile's phi is a lower bound too), so memory
    holds one tile's temporaries, not the slab's. With row weights, ``d^2`` is ``w d^2`` throughout
    (a row is drawn with probability proportional to its weighted cost)."""
    if request.round == 1:
        _check_finite(slab, row_start)
    selections = []
    for seed, centers in zip(request.seeds, request.candidates):
        kept = RoundDraws(0.0, *_empty(slab.shape[1]))
        for offset, _, d2 in nearest_tiles(slab, centers):
            rows = slab[offset : offset + len(d2)]
            d2 = d2 if weights is None else d2 * _tile_weights(weights, offset, len(d2))
            u = 1.0 - row_uniforms(seed, ROUND_STREAM + request.round, row_start + offset, len(rows))[:, 0]  # (0, 1]
            keys = d2 / u
            keep = np.flatnonzero(keys > d2.sum() / oversampling)
            tile = RoundDraws(float(d2.sum()), keys[keep], row_start + offset + keep,
                              np.asarray(rows[keep], dtype=np.float64))
            (kept,) = _merge_selections([[kept], [tile]], oversampling)  # about l rows kept, not l per tile
        selections.append(kept)
    return selections


def _merge_selections(parts: list[list[RoundDraws]], oversampling: float) -> list[RoundDraws]:
    """Add the partial phis (a sum of non-negative terms never decreases) and prune again."""
    merged = []
    for per_seed in zip(*parts, strict=True):
        phi = float(np.sum([part.phi for part in per_seed]))
        columns = (np.concatenate(column) for column in zip(*(part[1:] for part in per_seed)))
        merged.append(_prune(RoundDraws(phi, *columns), oversampling))
    return merged


def _pick_row(slab, row_start: int, offset: int) -> np.ndarray:
    """Row ``row_start + offset``, as float64, after the same finite check as every pass."""
    check_finite_block(slab, row_start)
    return np.asarray(slab[offset], dtype=np.float64)[None, :]


def _pick_weighted_row(slab, row_start: int, weights, target: float) -> np.ndarray:
    """The row of ``slab`` where the running sum of its ``weights`` first exceeds ``target`` (so a row
    of weight zero is never picked); the last row of positive weight if rounding overshoots."""
    running = np.cumsum(np.asarray(weights, dtype=np.float64))
    offset = int(np.searchsorted(running, target, side="right"))
    if offset >= len(running):
        offset = int(np.flatnonzero(np.asarray(weights) > 0)[-1])
    return _pick_row(slab, row_start, offset)


def first_center_rows(n_rows: int, seeds: Sequence[int]) -> list[int]:
    """The global index of each seed's first centre: uniform over the rows, keyed by the seed alone."""
    return [min(int(_first_uniform(seed) * n_rows), n_rows - 1) for seed in seeds]


def _first_uniform(seed: int) -> float:
    return float(row_uniforms(seed, FIRST_CENTER_STREAM, 0, 1)[0, 0])


def first_centers(X: da.Array, seeds: Sequence[int], *, name: str) -> list[np.ndarray]:
    """Each seed's first centre, (1, D), read by one task per seed from the slab that holds it:
    one compute that reads at most ``len(seeds)`` slabs, and sends only the rows to the client.
    With row weights, the centre is drawn in proportion to the weights (see the module doc)."""
    starts = slab_row_starts(X)
    slabs = X.to_delayed(optimize_graph=False).ravel()
    weights = weights_of(X)
    picks = []
    if weights is None:
        for number, row in enumerate(first_center_rows(X.shape[0], seeds)):
            slab = int(np.searchsorted(starts, row, side="right")) - 1  # the last slab starting at or before row
            picks.append(dask.delayed(_pick_row, pure=True)(slabs[slab], starts[slab], row - starts[slab],
                                                           dask_key_name=(name, number)))
        return list(compute(*picks))
    blocks = weights.to_delayed(optimize_graph=False).ravel()
    running = np.cumsum(compute(*(dask.delayed(np.sum, pure=True)(block, dtype=np.float64) for block in blocks)))
    for number, seed in enumerate(seeds):
        target = _first_uniform(seed) * running[-1]
        slab = int(np.searchsorted(running, target, side="right"))  # the first slab whose sum passes target
        if slab == len(running):  # rounding: target reached the total; the last slab of positive weight
            slab = int(np.flatnonzero(np.diff(running, prepend=0.0) > 0)[-1])
        before = running[slab - 1] if slab else 0.0
        picks.append(dask.delayed(_pick_weighted_row, pure=True)(slabs[slab], starts[slab], blocks[slab], target - before,
                                                                dask_key_name=(name, number)))
    return list(compute(*picks))


def _distinct(rows: np.ndarray) -> np.ndarray:
    """``rows`` without repeated values, each kept at its first position."""
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def _best_distinct(keys, index, rows, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``size`` distinct row values of smallest key (ties by row index), each with its best key."""
    order = np.lexsort((index, keys))
    taken = size
    while True:  # grow the prefix until it holds ``size`` distinct values or everything
        prefix = order[:taken]
        _, first = np.unique(rows[prefix], axis=0, return_index=True)
        if first.size >= size or taken >= order.size:
            chosen = prefix[np.sort(first)][:size]
            return keys[chosen], index[chosen], rows[chosen]
        taken *= 2


def _weight_slab(slab, row_start: int, request: WeightRequest, weights=None) -> list[tuple]:
    """Per seed: rows nearest each candidate, phi, and (if asked) a D^2-weighted sample of uncovered rows.

    The sample keeps the smallest keys ``-log(u) / d^2`` (Efraimidis-Spirakis): weighted sampling
    without replacement, mergeable, no phi needed. Rows equal to a candidate (d^2 = 0) never enter.
    With row weights, counts are summed weights and ``d^2`` is ``w d^2``.
    """
    out = []
    for seed, centers, size in zip(request.seeds, request.candidates, request.fallback_sizes):
        counts = np.zeros(len(centers), dtype=np.int64 if weights is None else np.float64)
        phi, samples = 0.0, [_empty(slab.shape[1])]
        for offset, labels, d2 in nearest_tiles(slab, centers):
            rows = slab[offset : offset + len(d2)]
            tile = None if weights is None else _tile_weights(weights, offset, len(d2))
            counts += np.bincount(labels, weights=tile, minlength=len(centers)).astype(counts.dtype, copy=False)
            d2 = d2 if tile is None else d2 * tile
            phi += float(d2.sum())
            if size:
                uncovered = np.flatnonzero(d2 > 0)
                u = 1.0 - row_uniforms(seed, FALLBACK_STREAM, row_start + offset, len(rows))[uncovered, 0]
                samples.append(_best_distinct(-np.log(u) / d2[uncovered], row_start + offset + uncovered,
                                              np.asarray(rows[uncovered], dtype=np.float64), size))
        fallback = _best_distinct(*(np.concatenate(c) for c in zip(*samples)), size) if size else None
        out.append((counts, phi, fallback))
    return out


def _tile_weights(weights, offset: int, n_rows: int) -> np.ndarray:
    return np.asarray(weights[offset : offset + n_rows], dtype=np.float64)


def _merge_weights(parts: list[list[tuple]], sizes: tuple[int, ...]) -> list[tuple]:
    merged = []
    for per_seed, size in zip(zip(*parts, strict=True), sizes):
        counts, phis, fallbacks = zip(*per_seed)
        fallback = None
        if size:
            fallback = _best_distinct(*(np.concatenate(column) for column in zip(*fallbacks)), size)
        merged.append((np.sum(counts, axis=0), float(np.sum(phis)), fallback))
    return merged


def reduce_candidates(candidates: np.ndarray, weights: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k centres from more than k weighted candidates: weighted k-means++, then weighted Lloyd to a
    fixed point (tol=0). Each candidate is a data row, so it counts for at least itself: a weight of 0
    (rounding between nearly equal candidates) is raised to 1 so k-means++ never repeats a centre."""
    from sklearn.cluster import KMeans as LocalKMeans, kmeans_plusplus  # client only (see seeding._local_kmeans)

    weights = np.maximum(np.asarray(weights, dtype=np.float64), 1.0)
    start, _ = kmeans_plusplus(candidates, n_clusters, sample_weight=weights, random_state=seed)
    lloyd = LocalKMeans(n_clusters, init=start, n_init=1, tol=0.0, random_state=seed, algorithm="lloyd")
    return lloyd.fit(candidates, sample_weight=weights).cluster_centers_


def kmeans_parallel(
    X: da.Array,
    n_clusters: int,
    seeds: Sequence[int],
    *,
    oversampling_factor: float = 2.0,
    n_rounds: int = 5,
    name: str,
    fan_in: int = DEFAULT_FAN_IN,
    checkpoint: Checkpoint | None = None,
    stage: str = "k-means||",
    smallest: int | None = None,
) -> list[KMeansParallelResult]:
    """k-means|| for each seed, all seeds in the same ``n_rounds + 1`` passes (see the module doc).

    With fewer than k distinct candidates, the missing centres are the distinct rows of a
    D^2-weighted sample of the rows no candidate covers (drawn in the counting pass); only if X has
    fewer than k distinct rows are centres repeated, with a warning. ``oversampling_factor`` and
    ``n_rounds`` are the estimators' validated parameters (``SHARED_PARAMETER_CONSTRAINTS``). When
    fewer centres will also be taken from the same candidates (``smallest``, see :func:`centers_for`),
    the candidates are weighted whenever there are more than ``smallest`` of them. With a
    ``checkpoint``, the candidates are saved after every round and the result at the end, and a saved
    state is resumed.
    """
    seeds = [int(seed) for seed in seeds]
    state = checkpoint.load(stage) if checkpoint is not None else None
    if state is not None and "results" in state:
        return state["results"]
    if state is None:
        state = {"round": 0, "candidates": first_centers(X, seeds, name=f"{name}-first"),
                 "sizes": [[] for _ in seeds], "costs": [[] for _ in seeds], "active": list(range(len(seeds)))}
        _save(checkpoint, stage, state)
    else:
        logger.info("%s: resuming after round %d of %d", stage, state["round"], n_rounds)
    oversampling = float(oversampling_factor) * n_clusters
    while state["round"] < n_rounds and state["active"]:
        _round(X, seeds, state, oversampling, n_rounds, name=name, fan_in=fan_in)
        _save(checkpoint, stage, state)
    candidates, sizes, costs = state["candidates"], state["sizes"], state["costs"]
    covered = {i for i in range(len(seeds)) if costs[i][-1] == 0}
    reduced = n_clusters if smallest is None else min(smallest, n_clusters)
    needs = [i for i in range(len(seeds)) if len(candidates[i]) > reduced
             or (len(candidates[i]) < n_clusters and i not in covered)]
    counted = {}
    if needs:
        fallback_sizes = tuple(max(0, n_clusters - len(candidates[i])) for i in needs)
        request = WeightRequest(tuple(seeds[i] for i in needs), tuple(candidates[i] for i in needs), fallback_sizes)
        counted = dict(zip(needs, map_reduce(X, _weight_slab, request, name=f"{name}-weights", fan_in=fan_in,
                                             combine=partial(_merge_weights, sizes=fallback_sizes))))
        logger.info("k-means|| weights: candidates %s, their cost %s", [len(candidates[i]) for i in needs],
                    [float(f"{counted[i][1]:.6g}") for i in needs])
    results = []
    for i, seed in enumerate(seeds):
        weights, _, fallback = counted.get(i, (np.zeros(0, dtype=np.int64), None, None))
        centers = _final_centers(candidates[i], weights, fallback, n_clusters, seed)
        results.append(KMeansParallelResult(centers, candidates[i], weights, tuple(sizes[i]), tuple(costs[i])))
    _save(checkpoint, stage, {"results": results})
    return results


def _round(X, seeds, state: dict, oversampling: float, n_rounds: int, *, name: str, fan_in: int) -> None:
    """One round of draws for the seeds still active: one pass; ``state`` is updated in place."""
    round_ = state["round"] + 1
    candidates, active = state["candidates"], state["active"]
    request = RoundRequest(tuple(seeds[i] for i in active), tuple(candidates[i] for i in active), round_)
    selections = map_reduce(X, partial(_round_slab, oversampling=oversampling), request,
                            name=f"{name}-round{round_}", fan_in=fan_in,
                            combine=partial(_merge_selections, oversampling=oversampling))
    ran = list(active)
    for i, selection in zip(ran, selections):
        before = len(candidates[i])
        candidates[i] = _distinct(np.vstack([candidates[i], selection.rows[np.argsort(selection.index)]]))
        state["sizes"][i].append(len(candidates[i]) - before)
        state["costs"][i].append(selection.phi)
        if selection.phi == 0:  # every row equals a candidate: later rounds would draw nothing
            active.remove(i)
    state["round"] = round_
    logger.info("k-means|| round %d/%d: %s new candidates (l = %.1f)", round_, n_rounds,
                [state["sizes"][i][-1] for i in ran], oversampling)


def _save(checkpoint, stage: str, state: dict) -> None:
    if checkpoint is not None:
        checkpoint.save(stage, state)


def _final_centers(candidates, weights, fallback, n_clusters: int, seed: int) -> np.ndarray:
    """k centres: reduced from more than k candidates, else the candidates and the fallback rows."""
    if len(candidates) > n_clusters:
        return reduce_candidates(candidates, weights, n_clusters, seed)
    centers = candidates if fallback is None else np.vstack([candidates, fallback[2]])
    if len(centers) < n_clusters:
        warnings.warn(f"X has only {len(centers)} distinct rows but n_clusters={n_clusters}: "
                      "some initial centres are repeated; lower n_clusters", stacklevel=3)
        centers = centers[np.arange(n_clusters) % len(centers)]
    return centers


def centers_for(result: KMeansParallelResult, n_clusters: int, seed: int) -> np.ndarray:
    """``n_clusters`` centres (at most the number ``result`` was drawn for) from its weighted
    candidates: so one k-means|| summary, drawn for the largest size, serves every smaller one."""
    if n_clusters == len(result.centers):
        return result.centers
    if len(result.candidates) > n_clusters:
        return reduce_candidates(result.candidates, result.weights, n_clusters, seed)
    return result.centers[:n_clusters]
