"""Where the layers meet: config -> data -> (preprocessing) -> estimator on a cluster -> outputs.

``run(config)`` fits and writes ``model/``, ``predictions.zarr`` and ``run.json``;
``validate(config)`` opens the data and checks the config against it without fitting;
``predict(config)`` applies a saved model to another store. Everything that can be checked
without a cluster (config, data, output directory) is checked before one is started, and the
output directory appears only once complete (see ``outputs.StagedOutput``).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daskem.data.stores import DataSource, open_data, redacted
from daskem.engine.reduction import DEFAULT_FAN_IN
from daskem.errors import ConfigError, DataError
from daskem.models.preprocessing import PreprocessedModel, fit_preprocessing
from daskem.outputs.model_files import load_model, save_model
from daskem.outputs.predictions import write_predictions
from daskem.outputs.records import package_versions, write_json
from daskem.outputs.staging import StagedOutput
from daskem.pipeline.cluster import (
    cluster_summary,
    connect,
    fit_slabs_to_workers,
    maybe_cache,
    tasks_per_pass,
)
from daskem.pipeline.config import DaskemConfig, PredictConfig
from daskem.pipeline.progress import ProgressBars

logger = logging.getLogger("daskem")


@dataclass(frozen=True)
class RunResult:
    """What a run or a prediction produced: the output directory and the contents of run.json."""

    output: Path
    source: DataSource
    model: Any
    summary: dict[str, Any]


# ----------------------------------------------------------------------------- checks


def check_config_against_data(config: DaskemConfig, source: DataSource) -> None:
    """Rules that need the data's shape: enough rows for the components, enough features for PCA."""
    n_rows, n_features = source.shape
    if max(config.model.n_components_list) > n_rows:
        raise ConfigError(
            f"model.n_components={config.model.n_components} is larger than the {n_rows} rows of "
            f"{source.name}; lower model.n_components or use more data"
        )
    pca = config.preprocess.pca if config.preprocess else None
    if pca is not None and pca.n_components > n_features:
        raise ConfigError(
            f"preprocess.pca.n_components={pca.n_components} is larger than the {n_features} features of "
            f"{source.name}; lower it"
        )


def validate(config: DaskemConfig) -> DataSource:
    """Open the data and check the config and the output directory; no cluster, no fitting."""
    source, _ = open_data(config.data)
    check_config_against_data(config, source)
    StagedOutput(config.output.local_path, overwrite=config.output.overwrite).check()
    logger.info("data: %s, %d rows x %d features, %s, %d chunks of up to %d rows", source.name,
                *source.shape, source.dtype, len(source.row_chunks), max(source.row_chunks))
    return source


def gmm_parameters(model) -> dict[str, Any]:
    """The GaussianMixture parameters a ``ModelConfig`` sets, but for n_components and covariance_type."""
    return dict(tol=model.tol, reg_covar=model.reg_covar, max_iter=model.max_iter, n_init=model.n_init,
                init_params=model.init, random_state=model.random_state, fan_in=model.fan_in,
                oversampling_factor=model.oversampling_factor, init_rounds=model.init_rounds)


def build_estimator(model):
    """The estimator a ``ModelConfig`` of one model describes."""
    from daskem.models.gaussian_mixture import GaussianMixture
    from daskem.models.kmeans import KMeans

    if model.kind == "gmm":
        return GaussianMixture(model.n_components, covariance_type=model.covariance_type, **gmm_parameters(model))
    return KMeans(
        model.n_components, init=model.init, n_init=model.n_init, max_iter=model.max_iter, tol=model.tol,
        random_state=model.random_state, fan_in=model.fan_in, oversampling_factor=model.oversampling_factor,
        init_rounds=model.init_rounds,
    )


def select_estimator(model, X) -> tuple[Any, list[dict]]:
    """Fit every candidate of a selection config in shared passes; the best estimator and the table."""
    from daskem.models.selection import fit_candidates

    parameters = gmm_parameters(model)
    n_init = parameters.pop("n_init")
    selection = fit_candidates(X, n_components=model.n_components_list, covariance_types=model.covariance_types,
                               n_init=n_init, criterion=model.criterion, **parameters)
    return selection.best, selection.table_records()


# ----------------------------------------------------------------------------- cluster












# ----------------------------------------------------------------------------- commands


def run(config: DaskemConfig, *, progress: bool = True) -> RunResult:
    """Fit the configured model on the configured data and write the outputs; see the module doc."""
    started_at, t0 = _now(), time.perf_counter()
    timings: dict[str, float] = {}
    source, X = open_data(config.data)
    check_config_against_data(config, source)
    staged = StagedOutput(config.output.local_path, overwrite=config.output.overwrite)
    staged.check()
    logger.info("data: %s, %d rows x %d features, %s, %d chunks of up to %d rows", source.name,
                *source.shape, source.dtype, len(source.row_chunks), max(source.row_chunks))
    timings["open"] = time.perf_counter() - t0

    with connect(config.cluster) as client, ProgressBars(client, enabled=progress):
        cluster = cluster_summary(client, config.cluster.embedded)
        X = fit_slabs_to_workers(config.data, X, source, cluster)
        prep = None
        features = X
        if config.preprocess is not None and config.preprocess.enabled:
            t = time.perf_counter()
            prep = fit_preprocessing(X, config.preprocess, random_state=config.model.random_state)
            features = prep.transform(X)
            timings["preprocess"] = time.perf_counter() - t
        features = maybe_cache(features, config.data.cache, client)

        t = time.perf_counter()
        candidates = None
        if config.model.is_selection:
            logger.info("fit: %d candidate models in the same passes", len(config.model.n_components_list)
                        * len(config.model.covariance_types) * config.model.n_init)
            estimator, candidates = fit(lambda X: select_estimator(config.model, X), features, source)
        else:
            estimator = build_estimator(config.model)
            logger.info("fit: %r", estimator)
            fit(estimator.fit, features, source)
        timings["fit"] = time.perf_counter() - t
        model = estimator if prep is None else PreprocessedModel(estimator, prep)

        t = time.perf_counter()
        with staged as tmp:
            save_model(model, tmp / "model", metadata={"data": source.to_json()})
            written = write_predictions(model, X, tmp / "predictions.zarr", labels=config.output.labels,
                                        responsibilities=config.output.responsibilities,
                                        log_density=config.output.log_density)
            timings["outputs"] = time.perf_counter() - t
            timings["total"] = time.perf_counter() - t0
            summary = {
                **run_record("run", config, started_at, source, X, cluster),
                "preprocessing": prep.to_json() if prep is not None else None,
                **fit_summary(estimator),
                "candidates": candidates,
                "outputs": {"model": "model", "predictions": "predictions.zarr" if written else None,
                            "arrays": written},
                "timings": {k: round(v, 3) for k, v in timings.items()},
            }
            write_json(tmp / "run.json", summary)
            final = staged.commit()
    logger.info("done in %.1f s: %s (n_iter %d, converged %s)", timings["total"], final,
                summary["n_iter"], summary["converged"])
    return RunResult(final, source, model, summary)


def predict(config: PredictConfig, *, progress: bool = True) -> RunResult:
    """Apply the saved model at ``config.model_path`` to ``config.data``; write predictions.zarr and run.json."""
    started_at, t0 = _now(), time.perf_counter()
    model = load_model(config.model_path)
    estimator = getattr(model, "estimator", model)
    source, X = open_data(config.data)
    if source.shape[1] != model.n_features_in_:
        raise DataError(f"{source.name}: has {source.shape[1]} features, but the model was fitted on "
                        f"{model.n_features_in_}; predict on data with the same columns")
    for key in ("responsibilities", "log_density"):
        if getattr(config.output, key) and not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"output.{key} needs a gmm model, but {config.model_path} holds a {type(estimator).__name__}"
            )
    staged = StagedOutput(config.output.local_path, overwrite=config.output.overwrite)
    staged.check()
    with connect(config.cluster) as client, ProgressBars(client, enabled=progress):
        cluster = cluster_summary(client, config.cluster.embedded)
        X = fit_slabs_to_workers(config.data, X, source, cluster)
        with staged as tmp:
            written = write_predictions(model, X, tmp / "predictions.zarr", labels=config.output.labels,
                                        responsibilities=config.output.responsibilities,
                                        log_density=config.output.log_density)
            summary = {
                **run_record("predict", config, started_at, source, X, cluster),
                "model_path": str(Path(config.model_path).absolute()),
                "outputs": {"predictions": "predictions.zarr" if written else None, "arrays": written},
                "timings": {"total": round(time.perf_counter() - t0, 3)},
            }
            write_json(tmp / "run.json", summary)
            final = staged.commit()
    logger.info("predictions of %s written to %s", source.name, final)
    return RunResult(final, source, model, summary)


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
    """``fitting(X)``; a ``ValueError`` raised by the data (NaN rows, singular covariances) becomes a ``DataError``."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the engine logs it already
        try:
            return fitting(X)
        except ValueError as exc:
            raise DataError(f"{source.name}: fitting failed: {exc}") from None


def fit_summary(estimator) -> dict[str, Any]:
    """The convergence record of a fitted estimator for run.json."""
    is_gmm = hasattr(estimator, "lower_bound_")
    return {
        "estimator": type(estimator).__name__,
        "n_iter": int(estimator.n_iter_),
        "converged": bool(estimator.converged_),
        "objective": "mean log-likelihood per row" if is_gmm else "inertia",
        "final_objective": float(estimator.lower_bound_ if is_gmm else estimator.inertia_),
        "history": [float(v) for v in estimator.history_],
        "iteration_seconds": [round(float(v), 4) for v in estimator.iteration_seconds_],
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
