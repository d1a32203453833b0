"""Where the layers meet: config -> data -> (preprocessing) -> estimator on a cluster -> outputs.

``run(config)`` fits and writes ``model/``, ``predictions.zarr`` and ``run.json``;
``validate(config)`` opens the data and checks the config against it without fitting;
``predict(config)`` applies a saved model to another store. Everything that can be checked
without a cluster (config, data and every chunk of it, output directory) is checked before one is
started; the output (a directory, or an object-store prefix) is marked complete only at the end,
and replaces only an earlier daskem output, never an input (see ``outputs.locations``). Secrets of
the config are masked in run.json, in the logs and in error messages (see
``config_loading.masking_secrets``).
"""

from __future__ import annotations

import errno
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from daskem.data.checks import check_enough_rows
from daskem.data.credentials import redacted
from daskem.data.stores import DataSource, check_chunks, open_data, open_weights
from daskem.engine.reduction import DEFAULT_FAN_IN, counting_passes, pass_count, step
from daskem.errors import ConfigError, DaskemUserError, DataError, OutputError
from daskem.models.fitting import checked_weights
from daskem.models.preprocessing import PreprocessedModel, check_pca_width
from daskem.outputs.locations import output_location
from daskem.outputs.model_files import read_model, save_model
from daskem.outputs.predictions import prediction_bytes, write_predictions
from daskem.outputs.records import output_format, package_versions
from daskem.outputs.report import REPORT_DIR, RowSample, report_sample, write_report
from daskem.pipeline.cluster import (
    cluster_summary,
    connect,
    fit_slabs_to_workers,
    maybe_cache,
    tasks_per_pass,
)
from daskem.pipeline.config import ESTIMATORS, DaskemConfig, PredictConfig
from daskem.pipeline.config_loading import mask_document, masking_secrets, secret_values
from daskem.pipeline.progress import ProgressBars
from daskem.pipeline.resume import (
    dropped_if_futile,
    resume_preprocessing,
    resume_slabs,
    run_checkpoint,
)
from daskem.pipeline.watchdog import watched

logger = logging.getLogger("daskem")

# The steps whose passes over the data run.json counts (see ``daskem.engine.reduction.step``).
PASS_STEPS = ("init", "em", "scoring", "outliers", "outputs", "report")


@dataclass(frozen=True)
class RunResult:
    """What a run or a prediction produced: the output (a local path or a URL) and the contents of run.json."""

    output: Any
    source: DataSource
    model: Any
    summary: dict[str, Any]


# ----------------------------------------------------------------------------- checks


def check_config_against_data(config: DaskemConfig, source: DataSource) -> None:
    """Rules that need the data's shape, before any cluster starts: enough rows for the components,
    enough features for the PCA (each rule lives with the code it protects)."""
    n_rows, n_features = source.shape
    check_enough_rows(n_rows, max(config.model.n_components_list), key="model.n_components", data=source.name,
                      error=ConfigError)
    pca = config.preprocess.pca if config.preprocess else None
    if pca is not None:
        check_pca_width(pca.n_components, n_features, data=source.name)


@masking_secrets
def validate(config: DaskemConfig) -> DataSource:
    """Open the data and check its chunks, the config and the output directory; no cluster, no fitting."""
    source, _ = open_data(config.data)
    check_config_against_data(config, source)
    check_chunks(config.data)
    output_of(config).check()
    logger.info("data: %s, %d rows x %d features, %s, %d chunks of up to %d rows", source.name,
                *source.shape, source.dtype, len(source.row_chunks), max(source.row_chunks))
    return source


def output_of(config):
    """The output location of a run or prediction config, which must leave its inputs alone."""
    inputs = {key: path for key, (path, _) in config.stores().items() if key != "output.path"}
    return output_location(config.output.location, config.output.storage_options,
                           overwrite=config.output.overwrite, inputs=inputs)


def build_estimator(model):
    """The estimator a ``ModelConfig`` of one model describes, built from its parameters."""
    return ESTIMATORS[model.kind](**model.estimator_parameters())


def select_estimator(model, X, checkpoint=None, sample_weight=None) -> tuple[Any, list[dict]]:
    """Fit every candidate of a selection config in shared passes; the best estimator and the table."""
    from daskem.models.selection import fit_candidates

    parameters = model.estimator_parameters()
    del parameters["n_components"], parameters["covariance_type"]
    selection = fit_candidates(X, n_components=model.n_components_list, covariance_types=model.covariance_types,
                               criterion=model.criterion, checkpoint=checkpoint, sample_weight=sample_weight,
                               **parameters)
    return selection.best, selection.table_records()


# ----------------------------------------------------------------------------- cluster












# ----------------------------------------------------------------------------- commands


@masking_secrets
def run(config: DaskemConfig, *, progress: bool = True, restart: bool = False) -> RunResult:
    """Fit the configured model on the configured data and write the outputs; see the module doc.

    The run keeps a checkpoint beside the output (see ``daskem.pipeline.resume``): run again after an
    interruption, it resumes; ``restart`` discards a checkpoint of an earlier run instead."""
    started_at, t0 = _now(), time.perf_counter()
    timings: dict[str, float] = {}
    source, X = open_data(config.data)
    check_config_against_data(config, source)
    store_contents = check_chunks(config.data)
    location = output_of(config)
    location.check()
    secrets = secret_values(config)
    logger.info("data: %s, %d rows x %d features, %s, %d chunks of up to %d rows", source.name,
                *source.shape, source.dtype, len(source.row_chunks), max(source.row_chunks))
    checkpoint = run_checkpoint(config, source, store_contents, restart=restart)
    timings["open"] = time.perf_counter() - t0

    with connect(config.cluster) as client, ProgressBars(client, enabled=progress), counting_passes() as passes, \
            watched(client, config.cluster.timeout, memory_hint=memory_hint(config)), dropped_if_futile(checkpoint):
        cluster = cluster_summary(client, config.cluster.embedded)
        X = resume_slabs(checkpoint, config.data, fit_slabs_to_workers(config.data, X, source, cluster))
        model, estimator, prep, candidates = _fit_configured(config, X, source, checkpoint, client, timings)

        t = time.perf_counter()
        logger.info("writing the model and predictions to %s", location.url)
        with location as out, disk_full_named(location.url, X.shape[0], model, config.output):
            set_outliers(model, X, config.output.outliers)
            save_model(model, out.join("model"), metadata={"data": mask_document(source.to_json(), secrets)},
                       storage_options=out.storage_options)
            seed = config.model.random_state or 0
            sampling = RowSample.of(model, X.shape[0], seed=seed) if config.output.report else None
            with step("outputs"):  # the report's sample in the same tasks: no pass of its own
                written, sample = write_per_row(model, X, out, config.output, alongside=sampling)
            if sampling is not None and not written:  # no per-row outputs: the sample takes a pass of its own
                with step("report"):
                    sample = report_sample(model, X, seed=seed, fan_in=config.model.fan_in)
            timings["outputs"] = time.perf_counter() - t
            timings["total"] = time.perf_counter() - t0
            summary = {**output_format(), **mask_document({  # the format tag is never masked: readers need it
                **run_record("run", config, started_at, source, X, cluster),
                "preprocessing": prep.to_json() if prep is not None else None,
                **fit_summary(estimator),
                "candidates": candidates,
                "outliers": outlier_record(model, written),
                "outputs": {"model": "model", "predictions": "predictions.zarr" if written else None,
                            "arrays": written, "report": f"{REPORT_DIR}/index.html" if config.output.report else None},
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "passes": {**{name: pass_count(passes.get(name, 0)) for name in PASS_STEPS},
                           "total": pass_count(sum(passes.values()))},
            }, secrets)}
            if config.output.report:
                with out.written_here(REPORT_DIR) as report:
                    write_report(report, summary, model, sample)
            final = location.commit(summary)
    checkpoint.remove()
    logger.info("passes over the data: %s", ", ".join(f"{k} {v}" for k, v in summary["passes"].items()))
    logger.info("done in %.1f s: %s (n_iter %d, converged %s)", timings["total"], final,
                summary["n_iter"], summary["converged"])
    return RunResult(final, source, model, summary)


def _fit_configured(config, X, source, checkpoint, client, timings: dict[str, float]):
    """Preprocess (or resume the preprocessing), cache, and fit the configured model or selection;
    ``(model, estimator, preprocessing, candidate table)``."""
    prep, features = None, X
    if config.preprocess is not None and config.preprocess.enabled:
        t = time.perf_counter()
        prep = resume_preprocessing(checkpoint, X, config)
        features = prep.transform(X)
        timings["preprocess"] = time.perf_counter() - t
    features = maybe_cache(features, config.data.cache, client)
    weights, _ = checked_weights(open_weights(config.data, features), features,
                                     name=f"data.weights ({config.data.weights})")
    t = time.perf_counter()
    candidates = None
    if config.model.is_selection:
        logger.info("fit: %d candidate models in the same passes", len(config.model.n_components_list)
                    * len(config.model.covariance_types) * config.model.n_init)
        estimator, candidates = fit(lambda X: select_estimator(config.model, X, checkpoint=checkpoint,
                                                               sample_weight=weights), features, source)
    else:
        estimator = build_estimator(config.model)
        logger.info("fit: %r", estimator)
        fit(lambda X: estimator.set_params(checkpoint=checkpoint).fit(X, sample_weight=weights), features, source)
    estimator.set_params(checkpoint=None)  # the run's file, not a parameter of the saved model
    timings["fit"] = time.perf_counter() - t
    return (estimator if prep is None else PreprocessedModel(estimator, prep)), estimator, prep, candidates


def write_per_row(model, X, out, outputs, alongside=None) -> tuple[dict[str, Any], Any]:
    """The per-row outputs that ``outputs`` (an ``OutputConfig``) asks for, written by the workers under
    ``out``, and the result of ``alongside`` run in the same pass (see ``write_predictions``)."""
    flagged = outputs.outliers is not None
    return write_predictions(model, X, out.join("predictions.zarr"), labels=outputs.labels,
                             responsibilities=outputs.responsibilities, log_density=outputs.log_density or flagged,
                             outlier=flagged, storage_options=out.storage_options, alongside=alongside)


@contextmanager
def disk_full_named(output: str, n_rows: int, model, outputs) -> Iterator[None]:
    """A full disk while writing outputs becomes one line: the path, the bytes the outputs need, the fix."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        needed = prediction_bytes(n_rows, getattr(model, "n_components", None), outputs)
        raise OutputError(
            f"{output}: no space left on the device while writing the outputs (the predictions need about "
            f"{needed / 2**20:.0f} MiB): free some space or choose another output.path"
        ) from None


@masking_secrets
def predict(config: PredictConfig, *, progress: bool = True) -> RunResult:
    """Apply the saved model at ``config.model_path`` to ``config.data``; write predictions.zarr and run.json."""
    started_at, t0 = _now(), time.perf_counter()
    model = read_model(config.model_path, config.model_storage_options, options_key="model_storage_options")
    estimator = getattr(model, "estimator", model)
    source, X = open_data(config.data)
    check_chunks(config.data)
    if source.shape[1] != model.n_features_in_:
        raise DataError(f"{source.name}: has {source.shape[1]} features, but the model was fitted on "
                        f"{model.n_features_in_}; predict on data with the same columns")
    for key in ("responsibilities", "log_density", "outliers"):
        if getattr(config.output, key) and not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"output.{key} needs a gmm model, but {config.model_path} holds a {type(estimator).__name__}"
            )
    rule = config.output.outliers
    if rule is not None and not rule.given and getattr(estimator, "offset_", None) is None:
        raise ConfigError(f"--outliers: {config.model_path} has no saved outlier threshold (its run had no "
                          "output.outliers); give --contamination or --outlier-threshold instead")
    location = output_of(config)
    location.check()
    with connect(config.cluster) as client, ProgressBars(client, enabled=progress), \
            watched(client, config.cluster.timeout, memory_hint=memory_hint(config)):
        cluster = cluster_summary(client, config.cluster.embedded)
        X = fit_slabs_to_workers(config.data, X, source, cluster)
        with location as out, disk_full_named(location.url, X.shape[0], model, config.output):
            set_outliers(model, X, config.output.outliers)
            written, _ = write_per_row(model, X, out, config.output)
            summary = {**output_format(), **mask_document({
                **run_record("predict", config, started_at, source, X, cluster),
                "model_path": config.model_path if "://" in config.model_path else os.path.abspath(config.model_path),
                "outliers": outlier_record(model, written),
                "outputs": {"predictions": "predictions.zarr" if written else None, "arrays": written},
                "timings": {"total": round(time.perf_counter() - t0, 3)},
            }, secret_values(config))}
            final = location.commit(summary)
    logger.info("predictions of %s written to %s", source.name, final)
    return RunResult(final, source, model, summary)


def set_outliers(model, X, rule) -> None:
    """Set the model's outlier threshold by ``output.outliers`` (its passes counted as step outliers):
    a contamination of ``X``'s rows or a log-density; left out (predict), the threshold saved with the model."""
    if rule is None:
        return
    if rule.given:
        with step("outliers"):
            model.set_outlier_threshold(X, contamination=rule.contamination, threshold=rule.threshold)
    logger.info("outliers: rows with a log-density below %.6g are flagged", model.offset_)


def outlier_record(model, written: dict) -> dict[str, Any] | None:
    """run.json's ``outliers``: the threshold, the contamination it was set for, the rows flagged."""
    if "outlier" not in written:
        return None
    count, rows = written["outlier"]["true"], written["outlier"]["shape"][0]
    return {"threshold": model.offset_, "contamination": model.contamination_, "count": count, "rows": rows,
            "fraction": count / rows if rows else 0.0}


def memory_hint(config) -> str:
    """The fix for work that does not fit the workers' memory, in this config's terms."""
    slabs = f"lower data.slab_mib (now {config.data.slab_mib})" if not config.data.chunk_rows else \
        f"lower data.chunk_rows (now {config.data.chunk_rows})"
    if config.cluster.address is None:
        return f"raise cluster.memory_limit (now {config.cluster.memory_limit}) or {slabs}"
    return f"give the workers more memory or {slabs}"


def run_record(command: str, config, started_at: str, source: DataSource, X, cluster: dict[str, Any]) -> dict:
    """What run.json says of every command: what ran, on what data, slabs and cluster, with which
    versions; the credentials of ``data.storage_options`` are left out."""
    dumped = config.model_dump(mode="json")
    dumped["data"]["storage_options"] = redacted(config.data.storage_options)
    return {
        "complete": True,
        "command": command,
        "started_at": started_at,
        "finished_at": _now(),
        "config": dumped,
        "versions": package_versions(),
        "data": source.to_json(),
        "slabs": {"rows": max(X.chunks[0]), "count": len(X.chunks[0])},
        "tasks_per_pass": tasks_per_pass(X, config.model.fan_in if isinstance(config, DaskemConfig) else DEFAULT_FAN_IN),
        "cluster": cluster,
    }


def fit(fitting, X, source: DataSource):
    """``fitting(X)``; a user error (NaN rows, a collapsed component) gets the data's name, keeps its
    class; anything else is a bug and goes up unchanged, traceback and all."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the engine logs it already
        try:
            return fitting(X)
        except DaskemUserError as exc:
            raise type(exc)(f"{source.name}: fitting failed: {exc}") from None


def fit_summary(estimator) -> dict[str, Any]:
    """The convergence record of a fitted estimator for run.json."""
    is_gmm = hasattr(estimator, "lower_bound_")
    return {
        "estimator": type(estimator).__name__,
        "n_iter": int(estimator.n_iter_),
        "converged": bool(estimator.converged_),
        "reseeded": int(getattr(estimator, "n_reseeded_", 0)),
        "objective": "mean log-likelihood per row" if is_gmm else "inertia",
        "final_objective": float(estimator.lower_bound_ if is_gmm else estimator.inertia_),
        "history": [float(v) for v in estimator.history_],
        "iteration_seconds": [round(float(v), 4) for v in estimator.iteration_seconds_],
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
