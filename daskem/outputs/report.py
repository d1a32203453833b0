"""A run's report: ``report/index.html`` with the run's summary and PNG figures (``outputs.figures``).

``RowSample`` draws a uniform sample of at most about ``SAMPLE_ROWS`` rows (kept by a draw keyed by
seed and row, so it does not depend on the chunking), in the model's feature space, with their
labels and log-densities, in the pass that writes the per-row outputs or, without them, in one of
its own; it is saved under ``report/sample/`` so that
``daskem report RUN_DIR`` (``regenerate``) draws the report again from the output directory alone:
run.json, model/ and that sample.
"""

from __future__ import annotations

import html
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daskem.engine.reduction import DEFAULT_FAN_IN, map_reduce, new_run_id
from daskem.errors import OutputError
from daskem.kernels.draws import row_uniforms
from daskem.models.preprocessing import transform_rows
from daskem.outputs import figures
from daskem.outputs.model_files import load_model
from daskem.outputs.staging import is_daskem_output

logger = logging.getLogger("daskem")

REPORT_DIR = "report"
SAMPLE_ROWS = 5000
SAMPLE_STREAM = 600  # the random stream of row_uniforms that keeps the report's rows
SAMPLE_ARRAYS = ("rows", "labels", "log_density")


# ----------------------------------------------------------------------------- the sample


@dataclass(frozen=True)
class RowSample:
    """The report's sample as work on each slab: ``apply`` keeps the slab's sampled rows (by a draw
    keyed by seed and row, so the sample does not depend on the chunking) in the model's feature
    space with their outputs; ``combine`` joins the slabs' parts in row order. A pass of its own
    (``report_sample``) or a task's side job in the predictions pass (``write_predictions``)."""

    preprocessing: Any
    kernel: Any
    names: tuple
    seed: int
    fraction: float

    @classmethod
    def of(cls, model, n_rows: int, *, rows: int = SAMPLE_ROWS, seed: int = 0) -> "RowSample":
        """About ``rows`` of ``n_rows`` rows, with their ``labels`` (and ``log_density`` for a mixture)."""
        estimator = getattr(model, "estimator", model)
        names = ("labels", "log_density") if hasattr(estimator, "predict_proba") else ("labels",)
        return cls(getattr(model, "preprocessing", None), estimator.row_kernel(), names, seed,
                   min(1.0, rows / max(1, n_rows)))

    def apply(self, slab: np.ndarray, row_start: int) -> dict[str, np.ndarray]:
        keep = row_uniforms(self.seed, SAMPLE_STREAM, row_start, slab.shape[0])[:, 0] < self.fraction
        rows = np.asarray(slab[keep], dtype=np.float64)
        if self.preprocessing is not None:
            rows = transform_rows(rows, self.preprocessing)
        return {"rows": rows, **self.kernel(rows, self.names)}

    def combine(self, parts: list[dict]) -> dict[str, np.ndarray]:
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _sample_slab(slab: np.ndarray, row_start: int, request: RowSample) -> dict[str, np.ndarray]:
    return request.apply(slab, row_start)


def report_sample(model, X, *, rows: int = SAMPLE_ROWS, seed: int = 0, fan_in: int = DEFAULT_FAN_IN) -> dict:
    """About ``rows`` uniformly sampled rows of the Dask array ``X`` in the model's feature space,
    with their ``labels`` (and ``log_density`` for a mixture): one pass, bounded on the client. A run
    that writes per-row outputs takes the same sample in their pass instead (``RowSample``)."""
    request = RowSample.of(model, X.shape[0], rows=rows, seed=seed)
    return map_reduce(X, _sample_slab, request, name=new_run_id("report-sample"), combine=request.combine,
                      fan_in=fan_in)


# ----------------------------------------------------------------------------- the report


def write_report(directory: Path, summary: dict, model, sample: dict | None) -> Path:
    """Write ``directory`` (report/): the sample's arrays, the figures and index.html."""
    directory.mkdir(parents=True, exist_ok=False)
    if sample is not None:
        (directory / "sample").mkdir()
        for name, values in sample.items():
            np.save(directory / "sample" / f"{name}.npy", values, allow_pickle=False)
    made = _figures(directory, summary, getattr(model, "estimator", model), sample)
    (directory / "index.html").write_text(_page(summary, made))
    return directory


def _figures(directory: Path, summary: dict, estimator, sample: dict | None) -> list[tuple[str, str]]:
    """Draw every figure the run has data for; ``(file name, caption)`` of each."""
    made = []
    candidates = summary.get("candidates")
    if candidates:
        curves = [(f"K={row['n_components']} {row['covariance_type']} r{row['restart']}", row["history"])
                  for row in candidates]
    else:
        curves = [(summary.get("estimator", "model"), summary.get("history", []))]
    figures.objective_figure(directory / "objective.png", curves, summary.get("objective", ""))
    made.append(("objective.png", "The objective at every iteration of the fit."))
    if candidates and len({(row["n_components"], row["covariance_type"]) for row in candidates}) > 1:
        figures.criteria_figure(directory / "criteria.png", candidates)
        made.append(("criteria.png", "BIC and AIC of every candidate, best restart, per covariance type."))
    is_gmm = hasattr(estimator, "weights_")
    means = estimator.means_ if is_gmm else estimator.cluster_centers_
    threshold = (summary.get("outliers") or {}).get("threshold", getattr(estimator, "offset_", None))
    if sample is not None and len(sample["rows"]):
        covariances = None
        if is_gmm:
            from daskem.kernels.covariance import get_covariance_type

            covariances = get_covariance_type(estimator.covariance_type).full_covariances(
                estimator.covariances_, *means.shape)
        figures.clusters_figure(directory / "clusters.png", sample["rows"], sample["labels"], means, covariances)
        made.append(("clusters.png", "A uniform sample of the rows on its first two principal components."))
        if "log_density" in sample:
            figures.log_density_figure(directory / "log_density.png", sample["log_density"], threshold)
            made.append(("log_density.png", "Log-densities of the sampled rows, with the outlier threshold."))
    if is_gmm:
        figures.weights_figure(directory / "weights.png", np.asarray(estimator.weights_), "weight")
        made.append(("weights.png", "The mixture weight of every component."))
    elif sample is not None and len(sample["labels"]):
        shares = np.bincount(sample["labels"], minlength=len(means)) / len(sample["labels"])
        figures.weights_figure(directory / "weights.png", shares, "share")
        made.append(("weights.png", "The share of the sampled rows in every cluster."))
    return made


def _summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The run's summary as (name, value) pairs for the page."""
    config = summary.get("config", {})
    model, data = config.get("model", {}), summary.get("data", {})
    rows = [
        ("command", summary.get("command")),
        ("started / finished", f"{summary.get('started_at')} / {summary.get('finished_at')}"),
        ("data", f"{data.get('name', data.get('path'))}: {' x '.join(map(str, data.get('shape', [])))} "
                 f"{data.get('dtype', '')}"),
        ("estimator", f"{summary.get('estimator')} ({model.get('kind')}), n_components {model.get('n_components')}"
                      + (f", covariance_type {model.get('covariance_type')}" if model.get("kind") == "gmm" else "")),
        ("iterations", f"{summary.get('n_iter')} (converged: {summary.get('converged')})"),
        (f"final objective ({summary.get('objective')})", summary.get("final_objective")),
        ("passes over the data", json.dumps(summary.get("passes"))),
        ("timings (s)", json.dumps(summary.get("timings"))),
    ]
    if summary.get("candidates"):
        best = summary["candidates"][0]
        rows.insert(4, ("chosen model", f"{best['n_components']} components, {best['covariance_type']} covariances, "
                                        f"restart {best['restart']} (of {len(summary['candidates'])} candidates)"))
    outliers = summary.get("outliers")
    if outliers:
        rows.append(("outliers", f"{outliers['count']:,} of {outliers['rows']:,} rows below log-density "
                                 f"{outliers['threshold']:.6g} (contamination {outliers['contamination']})"))
    return [(name, "" if value is None else str(value)) for name, value in rows]


def _page(summary: dict, made: list[tuple[str, str]]) -> str:
    """index.html: the summary table, the candidates' table of a selection run, the figures."""
    esc = html.escape
    table = "\n".join(f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in _summary_rows(summary))
    candidates = ""
    if summary.get("candidates"):
        head = ("K", "covariance", "restart", "loglik/row", "BIC", "AIC", "iterations", "converged")
        body = "\n".join(
            "<tr>" + "".join(f"<td>{esc(str(value))}</td>" for value in (
                row["n_components"], row["covariance_type"], row["restart"], f"{row['log_likelihood']:.6f}",
                f"{row['bic']:.2f}", f"{row['aic']:.2f}", row["n_iter"], row["converged"])) + "</tr>"
            for row in summary["candidates"])
        candidates = (f"<h2>Candidates, best first by {esc(str(summary['config']['model'].get('criterion')))}</h2>\n"
                      f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>\n{body}</table>")
    images = "\n".join(f'<figure><img src="{esc(name)}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
                       "</figcaption></figure>" for name, caption in made)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>daskem run report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>daskem run report</h1>
<table>
{table}
</table>
{candidates}
<h2>Figures</h2>
{images}
</body></html>
"""


# ----------------------------------------------------------------------------- again, from a run directory


def regenerate(run_dir: str | os.PathLike) -> Path:
    """Draw ``RUN_DIR/report/`` again from run.json, model/ and the saved sample, and swap it into place;
    without a saved sample (a run with ``output.report: false``) the sample's figures are left out."""
    run_dir = Path(run_dir).expanduser().absolute()
    if not is_daskem_output(run_dir):
        raise OutputError(f"{run_dir}: not the output directory of a complete daskem run (no run.json of one); "
                          "give the directory that daskem run wrote")
    summary = json.loads((run_dir / "run.json").read_text())
    if summary.get("command") != "run":
        raise OutputError(f"{run_dir}: written by daskem {summary.get('command')}, not run; a report is made of a run")
    model = load_model(run_dir / "model")
    old = run_dir / REPORT_DIR
    sample = None
    if all((old / "sample" / f"{name}.npy").is_file() for name in SAMPLE_ARRAYS[:2]):
        sample = {name: np.load(old / "sample" / f"{name}.npy", allow_pickle=False)
                  for name in SAMPLE_ARRAYS if (old / "sample" / f"{name}.npy").is_file()}
    else:
        logger.warning("%s: no saved sample of rows (output.report was false): the clusters and log-density "
                       "figures are left out", run_dir)
    token = secrets.token_hex(4)
    new, retired = run_dir / f".{REPORT_DIR}.partial-{token}", run_dir / f".{REPORT_DIR}.old-{token}"
    try:
        write_report(new, summary, model, sample)
        if old.exists():
            os.replace(old, retired)
        os.replace(new, old)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return old / "index.html"
