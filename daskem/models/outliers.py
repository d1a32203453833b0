"""Anomaly flags of a fitted mixture: rows whose log-density lies below a threshold.

A threshold is given as a log-density, or as a ``contamination``: the fraction of rows to flag.
The quantile behind a contamination is found out of core, exactly, with nothing growing with N
on the client. A mixture's log-density is bounded above (by ``log sum_k w_k N(mu_k; mu_k,
Sigma_k)``), so a first histogram pass needs no range: ``BINS`` bins log-spaced below the bound,
fine near it and coarse in the far tail. Further histogram passes (linear bins) narrow the bin
holding the wanted rank while it holds more than ``GATHER_LIMIT`` rows, and one pass gathers the
values of that bin and picks the rank among them. That is usually two passes, and exactly
``round(contamination * N)`` rows fall below the threshold (ties aside).

Conventions are scikit-learn's outlier detectors' (``IsolationForest``, ``EllipticEnvelope``):
``offset_`` is the threshold on ``score_samples``, ``decision_function = score_samples -
offset_`` is negative for outliers, and ``predict_outliers`` gives -1 for an outlier, +1 otherwise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.exceptions import NotFittedError

from daskem.engine.reduction import DEFAULT_FAN_IN, map_reduce, new_run_id

logger = logging.getLogger("daskem")

# The largest contamination accepted: flagging more than half the rows would flag the typical ones.
CONTAMINATION_MAX = 0.5
# Bins of each histogram pass, and the most values a last pass may gather to the client.
BINS = 4096
GATHER_LIMIT = 1 << 16
# The first histogram's bins span this many nats below the bound of the log-densities.
SPAN = 1e12


def check_outlier_rule(contamination: float | None, threshold: float | None) -> None:
    """Raise a ValueError unless exactly one of ``contamination`` (in (0, 0.5]) and a finite
    ``threshold`` is given."""
    if (contamination is None) == (threshold is None):
        raise ValueError("give one of contamination (the fraction of rows to flag) and threshold (a log-density)")
    if contamination is not None and not 0 < contamination <= CONTAMINATION_MAX:
        raise ValueError(f"contamination must be in (0, {CONTAMINATION_MAX}], got {contamination!r}")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite log-density, got {threshold!r}")


def check_offset(offset) -> None:
    """A fitted model's ``offset_`` (read back from a file): None or a finite float."""
    if offset is not None and not (isinstance(offset, float) and np.isfinite(offset)):
        raise ValueError(f"offset_ (the outlier threshold) must be a finite number, got {offset!r}")


def has_outlier_threshold(model) -> bool:
    """Whether the outlier methods exist: until a threshold is set, a ``NotFittedError`` (an
    ``AttributeError``) with the fix, so that ``hasattr(model, "decision_function")`` is False as
    scikit-learn's tools expect."""
    if getattr(model, "offset_", None) is None:
        raise NotFittedError(f"this {type(model).__name__} has no outlier threshold: call set_outlier_threshold("
                             "X, contamination=...) or set_outlier_threshold(threshold=...)")
    return True


def log_density_bound(params, covariance, n_features: int) -> float:
    """An upper bound of a mixture's log-density: ``log sum_k w_k N(mu_k; mu_k, Sigma_k)``, its density
    if every component peaked at the same point (where the first histogram's bins start)."""
    with np.errstate(divide="ignore"):  # a zero weight adds nothing
        log_weights = np.log(params.weights)
    peaks = log_weights + covariance.log_det_cholesky(params.precisions_cholesky, n_features)
    return float(logsumexp(peaks) - 0.5 * n_features * np.log(2 * np.pi))


def outlier_rows(kernel, offset: float, rows: np.ndarray, names) -> dict[str, np.ndarray]:
    """``kernel``'s per-row outputs ``names``, where ``outlier`` (bool) is ``log_density < offset``;
    all from the one E-step of ``kernel``."""
    names = tuple(names)
    if "outlier" not in names:
        return kernel(rows, names)
    inner = tuple(dict.fromkeys([name for name in names if name != "outlier"] + ["log_density"]))
    values = dict(kernel(rows, inner))
    values["outlier"] = values["log_density"] < offset
    return {name: values[name] for name in names}


# ----------------------------------------------------------------------------- the quantile


@dataclass(frozen=True)
class _Window:
    """What a histogram pass needs: the row kernel and the bin edges of the current window."""

    kernel: Any
    edges: np.ndarray


def _log_density(kernel, slab: np.ndarray) -> np.ndarray:
    return kernel(slab, ("log_density",))["log_density"]


def _range_slab(slab: np.ndarray, row_start: int, kernel) -> np.ndarray:
    values = _log_density(kernel, slab)
    return np.array([values.min(), values.max()]) if values.size else np.array([np.inf, -np.inf])


def _range_combine(parts: list[np.ndarray]) -> np.ndarray:
    return np.array([min(p[0] for p in parts), max(p[1] for p in parts)])


def _histogram_slab(slab: np.ndarray, row_start: int, window: _Window) -> np.ndarray:
    """Counts: [below the window, one per bin (edges[j] <= v < edges[j+1])]."""
    values = _log_density(window.kernel, slab)
    bins = np.searchsorted(window.edges, values, side="right")  # 0: below; j + 1: bin j; len(edges): above
    return np.bincount(bins, minlength=len(window.edges) + 1)[: len(window.edges)].astype(np.int64)


def _gather_slab(slab: np.ndarray, row_start: int, window: _Window) -> np.ndarray:
    values = _log_density(window.kernel, slab)
    return values[(values >= window.edges[0]) & (values < window.edges[-1])]


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts)


def _first_edges(upper: float) -> np.ndarray:
    """Bin edges of the first histogram: log-spaced below ``upper`` (a bound of every log-density),
    from ``SPAN`` nats below it, fine where the typical rows lie and coarse in the far tail."""
    top = upper + 1e-9 * max(1.0, abs(upper))  # above every row, rounding included
    return top - np.expm1(np.linspace(np.log1p(SPAN), 0.0, BINS + 1))


def log_density_at_rank(X, kernel, rank: int, *, upper: float, fan_in: int = DEFAULT_FAN_IN) -> float:
    """The log-density of rank ``rank`` (0 = the lowest) among the rows of the Dask array ``X``,
    under the row kernel ``kernel`` whose log-densities are at most ``upper``; exact, in two passes
    when the bin holding the rank is small (see the module doc)."""
    name = new_run_id("outliers")
    edges, below, passes = _first_edges(upper), 0, 0
    while True:
        counts = map_reduce(X, _histogram_slab, _Window(kernel, edges), name=f"{name}-histogram{passes}",
                            combine=sum, fan_in=fan_in)
        passes += 1
        if rank < counts[0]:  # first pass only: the rank lies SPAN nats below the bound, far from every component
            low = map_reduce(X, _range_slab, kernel, name=f"{name}-range", combine=_range_combine, fan_in=fan_in)[0]
            passes += 1
            window = (float(low), float(edges[0]))
        else:
            cumulative = counts[0] + np.cumsum(counts[1:])  # rows below the end of each bin
            j = min(int(np.searchsorted(cumulative, rank, side="right")), len(cumulative) - 1)  # the rank's bin
            window, below = (float(edges[j]), float(edges[j + 1])), int(cumulative[j - 1]) if j else int(counts[0])
            if counts[j + 1] <= GATHER_LIMIT:
                break
        edges = np.unique(np.linspace(*window, BINS + 1))
        edges[-1] = window[1]
        if len(edges) < 3:  # the window holds one or two neighbouring floats: no bin narrows it
            break
    values = np.sort(map_reduce(X, _gather_slab, _Window(kernel, np.array(window)), name=f"{name}-gather",
                                combine=_concatenate, fan_in=fan_in))
    passes += 1
    logger.info("outliers: the log-density of rank %d of %d found in %d passes", rank, X.shape[0], passes)
    return float(values[min(rank - below, len(values) - 1)]) if len(values) else window[0]


def contamination_threshold(X, kernel, contamination: float, *, upper: float, fan_in: int = DEFAULT_FAN_IN) -> float:
    """The log-density below which ``round(contamination * N)`` rows of ``X`` lie: the value of that
    rank (rows strictly below it are flagged); ``upper`` bounds every log-density."""
    rank = min(int(round(contamination * X.shape[0])), X.shape[0] - 1)
    return log_density_at_rank(X, kernel, rank, upper=upper, fan_in=fan_in)
