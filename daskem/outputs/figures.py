"""The figures of a run's report, drawn with matplotlib (Agg, no display) from plain arrays.

Each function draws one figure into a PNG file and returns nothing; every figure has a title,
labelled axes (with units) and a legend where colours mean something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

DPI = 100
SIZE = (7.0, 4.4)  # inches: 700 x 440 pixels
# A legend lists at most this many entries; more candidates or components share colours unnamed.
LEGEND_MAX = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)  # margins fitted to the labels
    _pyplot().close(fig)


def objective_figure(path: Path, curves: Sequence[tuple[str, Sequence[float]]], objective: str) -> None:
    """The objective at every EM (or Lloyd) iteration, one line per candidate ``(label, history)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    for label, history in curves:
        ax.plot(np.arange(1, len(history) + 1), history, marker="o", markersize=3, label=label)
    kmeans = objective == "inertia"
    ax.set_title("Objective per iteration" + (" (every candidate)" if len(curves) > 1 else ""))
    ax.set_xlabel("iteration")
    ax.set_ylabel("inertia (sum of squared distances)" if kmeans else "mean log-likelihood per row (nats)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(curves) <= LEGEND_MAX:
        ax.legend(title="candidate" if len(curves) > 1 else None, fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def criteria_figure(path: Path, candidates: Sequence[dict]) -> None:
    """BIC and AIC against the number of components, one line per covariance type (best restart)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(SIZE[0] * 1.3, SIZE[1]))
    types = list(dict.fromkeys(row["covariance_type"] for row in candidates))
    for ax, criterion in zip(axes, ("bic", "aic")):
        for covariance_type in types:
            best: dict[int, float] = {}
            for row in candidates:
                if row["covariance_type"] == covariance_type:
                    k = int(row["n_components"])
                    best[k] = min(best.get(k, np.inf), float(row[criterion]))
            ks = sorted(best)
            ax.plot(ks, [best[k] for k in ks], marker="o", label=covariance_type)
        ax.set_title(f"{criterion.upper()} against the number of components")
        ax.set_xlabel("number of components K")
        ax.set_ylabel(f"{criterion.upper()} (lower is better)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(title="covariance type", fontsize="small")
        ax.grid(alpha=0.3)
    _save(fig, path)


def principal_axes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centre of ``rows`` and its first two principal axes as a (D, 2) matrix (a zero column
    for one feature)."""
    centre = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - centre, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:
        axes = np.hstack([axes, np.zeros((axes.shape[0], 2 - axes.shape[1]))])
    return centre, axes


def clusters_figure(path: Path, rows: np.ndarray, labels: np.ndarray, means: np.ndarray,
                    covariances: np.ndarray | None) -> None:
    """The sampled rows on their first two principal components, coloured by component, with each
    component's mean and, given its (K, D, D) covariances, its 2-sigma ellipse projected."""
    plt = _pyplot()
    from matplotlib.patches import Ellipse

    centre, axes = principal_axes(rows)
    projected, centres = (rows - centre) @ axes, (means - centre) @ axes
    colours = plt.get_cmap("tab10" if len(means) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(SIZE[0], SIZE[1] * 1.25))
    for k in range(len(means)):
        mine = labels == k
        ax.scatter(projected[mine, 0], projected[mine, 1], s=4, alpha=0.4, color=colours(k % colours.N),
                   label=f"component {k}" if k < LEGEND_MAX else None, rasterized=True)
    ax.plot(centres[:, 0], centres[:, 1], marker="X", markersize=9, color="black", markeredgecolor="white",
            linestyle="none", zorder=4, label="component mean")
    for k in range(len(means) if covariances is not None else 0):
        values, vectors = np.linalg.eigh(axes.T @ covariances[k] @ axes)
        values = np.clip(values, 0.0, None)
        angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
        ax.add_patch(Ellipse(centres[k], 4 * np.sqrt(values[1]), 4 * np.sqrt(values[0]), angle=angle, fill=False,
                             edgecolor="black", linestyle="--", linewidth=1.5, zorder=3,
                             label="2-sigma ellipse" if k == 0 else None))
    what = "with each component's 2-sigma ellipse" if covariances is not None else "with each cluster's centre"
    ax.set_title(f"Clusters of {len(rows):,} sampled rows on the first two principal components\n{what}")
    ax.set_xlabel("principal component 1 (feature units)")
    ax.set_ylabel("principal component 2 (feature units)")
    ax.set_aspect("equal", adjustable="datalim")
    legend = ax.legend(title="most probable component", fontsize="small", loc="best")
    for handle in legend.legend_handles[: min(len(means), LEGEND_MAX)]:
        handle.set_sizes([30])  # the scatter's dots, readable in the legend
    ax.grid(alpha=0.3)
    _save(fig, path)


def log_density_figure(path: Path, log_density: np.ndarray, threshold: float | None) -> None:
    """The histogram of the sampled rows' log-densities, with the outlier threshold when set."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    finite = log_density[np.isfinite(log_density)]
    ax.hist(finite, bins=min(100, max(10, len(finite) // 20)), color="tab:blue", alpha=0.8, label="sampled rows")
    if threshold is not None:
        flagged = np.count_nonzero(finite < threshold)
        ax.axvline(threshold, color="tab:red", linewidth=2,
                   label=f"outlier threshold {threshold:.3g} ({flagged:,} sampled rows below)")
    ax.set_yscale("log")
    ax.set_title(f"Log-density of {len(finite):,} sampled rows under the model")
    ax.set_xlabel("log-density (nats)")
    ax.set_ylabel("rows (log scale)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def weights_figure(path: Path, weights: np.ndarray, what: str) -> None:
    """One bar per component: its mixture weight (gmm) or its share of the sampled rows (kmeans)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    colours = plt.get_cmap("tab10" if len(weights) <= 10 else "tab20")
    ks = np.arange(len(weights))
    ax.bar(ks, weights, color=[colours(k % colours.N) for k in ks])
    ax.set_title("Component weights" if what == "weight" else "Cluster sizes")
    ax.set_xlabel("component" if what == "weight" else "cluster")
    ax.set_ylabel("mixture weight (fraction of rows)" if what == "weight" else "share of the sampled rows")
    ax.set_xticks(ks if len(ks) <= 30 else ks[:: max(1, len(ks) // 30)])
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
