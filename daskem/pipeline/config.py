"""The run configuration: YAML validated by typed, frozen pydantic models.

``load_config(path, overrides)`` reads a YAML file, applies ``--set section.key=value`` overrides,
expands ``${ENV_VAR}`` (and ``${ENV_VAR:-default}``) in string values, and validates the result
into one frozen ``DaskemConfig``. Unknown keys are refused with the closest valid key suggested;
every problem becomes a ``ConfigError`` whose one-line message names the key and the fix.
Relative paths are relative to the current directory, not to the YAML file.

The ``model`` section writes down no rule and no default of the estimators: its keys are the
parameters of the kind's estimator (``CONFIG_KEYS``), its defaults their ``__init__`` defaults,
its value rules their ``_parameter_constraints``, its covariance types the registry's; pydantic
checks only the types.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Optional

from pydantic import (
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sklearn.utils._param_validation import InvalidParameterError

from daskem.kernels.covariance import COVARIANCE_TYPES
from daskem.models.gaussian_mixture import INIT_PARAMS, GaussianMixture
from daskem.models.kmeans import INIT_METHODS, KMeans
from daskem.models.parameters import ALGORITHMS
from daskem.models.selection import CRITERIA, fit_candidates
from daskem.pipeline.config_sections import (  # noqa: F401  (the sections, also importable from here)
    LOCAL_PROTOCOLS,
    PROCESS_PROTOCOLS,
    ClusterConfig,
    OutliersConfig,
    OutputConfig,
    TLSConfig,
    _Section,
    check_scheduler_address,
    tls_mismatch,
)

ESTIMATORS = {"gmm": GaussianMixture, "kmeans": KMeans}
INITS = {"gmm": INIT_PARAMS, "kmeans": INIT_METHODS}
# Config keys spelled otherwise than the estimator parameter they set.
RENAMED = {"gmm": {"init": "init_params"}, "kmeans": {"n_components": "n_clusters"}}
# Estimator parameters without a config key: explicit initial arrays (K x D numbers and more) are
# given in Python, a config chooses an initialization by name; a run keeps its own checkpoint beside
# its output (daskem.pipeline.resume), and fits once, so there is no earlier fit to warm-start from.
RUN_MANAGED = ("warm_start", "checkpoint")
PYTHON_ONLY = {"gmm": ("weights_init", "means_init", "precisions_init", *RUN_MANAGED), "kmeans": RUN_MANAGED}
# Keys of the pipeline itself, which set no estimator parameter.
PIPELINE_KEYS = ("kind", "criterion")
# The one pipeline default that differs from the estimators': a run can be repeated unless it asks
# for a fresh seed (the estimators, like scikit-learn's, default to one).
PIPELINE_DEFAULTS = {"random_state": 0}
# A list of these keys fits several candidates in the same passes (daskem.models.selection fits mixtures).
SELECTION_KIND = "gmm"
SELECTION_KEYS = ("n_components", "covariance_type")


def _config_keys(kind: str) -> dict[str, str]:
    """Config key -> estimator parameter, for every parameter of ``kind``'s estimator but the Python-only ones."""
    key_of = {param: key for key, param in RENAMED[kind].items()}
    return {key_of.get(param, param): param for param in ESTIMATORS[kind]().get_params(deep=False)
            if param not in PYTHON_ONLY[kind]}


CONFIG_KEYS = {kind: _config_keys(kind) for kind in ESTIMATORS}
DEFAULTS = {  # per kind, the default of every key that sets a parameter: the estimator's own
    kind: {key: PIPELINE_DEFAULTS.get(key, ESTIMATORS[kind]().get_params(deep=False)[param])
           for key, param in keys.items()}
    for kind, keys in CONFIG_KEYS.items()
}
CRITERION_DEFAULT = inspect.signature(fit_candidates).parameters["criterion"].default

Kind = Literal[tuple(ESTIMATORS)]
CovarianceName = Literal[tuple(COVARIANCE_TYPES)]
Criterion = Literal[CRITERIA]


def _shown(value: Any) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _defaults(key: str) -> str:
    """``key``'s default for each kind that has it, for a field's description."""
    kinds = [kind for kind in ESTIMATORS if key in DEFAULTS[kind]]
    values = {_shown(DEFAULTS[kind][key]) for kind in kinds}
    if len(values) == 1:
        return f"default {values.pop()}"
    return "default " + ", ".join(f"{kind}: {_shown(DEFAULTS[kind][key])}" for kind in kinds)


def check_parameter(kind: str, key: str, value: Any) -> None:
    """Check a config value by the rules of the estimator parameter it sets (its
    ``_parameter_constraints``); a ValueError says what the value must be."""
    estimator, param = ESTIMATORS[kind], CONFIG_KEYS[kind][key]
    try:
        estimator(**{param: value})._validate_params()
    except InvalidParameterError as exc:
        text = str(exc)  # "The 'tol' parameter of KMeans must be <rule>. Got -1 instead."
        prefix, suffix = f"The {param!r} parameter of {estimator.__name__} must be ", f". Got {value!r} instead."
        if text.startswith(prefix) and text.endswith(suffix):
            text = "must be " + text[len(prefix) : -len(suffix)]
        raise ValueError(f"{text} for kind: {kind} (got {value!r})") from None


class DataConfig(_Section):
    """Where the rows to cluster live."""

    path: str = Field(description="Zarr store: a local path or an fsspec URL (file://, s3://, ...).")
    array: Optional[str] = Field(
        None, description="Path of the array inside the store's group; leave out when the store is an array."
    )
    weights: Optional[str] = Field(
        None,
        description="Path of a 1-D array of row weights in the same group as data.array, one non-negative "
        "value per row: each row counts that many times in every pass of the fit (an integer weight is the "
        "row repeated); leave out to count every row once.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to fsspec for a URL (credentials, endpoint, ...)."
    )
    chunk_rows: Optional[PositiveInt] = Field(
        None,
        description="Rows per task; default: the store's row chunk (its shard when sharded). "
        "A multiple of the store's row chunk avoids reading a chunk twice.",
    )
    slab_mib: PositiveInt = Field(
        128,
        description="Target size of one task's rows in MiB when chunk_rows is not given: whole store "
        "chunks (or shards) are grouped up to this size, so a task does real work.",
    )
    cache: Literal["none", "memory", "auto"] = Field(
        "none",
        description="none: stream from the store every pass; memory: keep the (preprocessed) rows in "
        "the workers' memory; auto: keep them when they fit in half of the cluster's memory.",
    )
    allow_missing_chunks: bool = Field(
        False,
        description="Read chunks (or shards) missing from the store as the array's fill value, with a "
        "warning; by default a missing chunk stops the run before fitting, since it would be fitted as zeros.",
    )


class ModelConfig(_Section):
    """Which model to fit and how: every key but ``kind`` and ``criterion`` sets the parameter of the
    kind's estimator named in ``CONFIG_KEYS``; left out (or null), it takes that estimator's default."""

    kind: Kind = Field(description="gmm: Gaussian mixture (daskem.GaussianMixture); kmeans: k-means (daskem.KMeans).")
    n_components: Optional[int | list[int]] = Field(
        None,
        description=f"Number of mixture components or clusters (KMeans' n_clusters), {_defaults('n_components')}; "
        "gmm: a list fits one candidate per value in the same passes over the data and keeps the best by "
        "model.criterion.",
    )
    covariance_type: Optional[CovarianceName | list[CovarianceName]] = Field(
        None,
        description=f"gmm only: {' | '.join(COVARIANCE_TYPES)}, {_defaults('covariance_type')}; a list fits a "
        "candidate per type.",
    )
    criterion: Criterion = Field(
        CRITERION_DEFAULT,
        description="gmm: how candidates (lists of n_components or covariance_type, restarts) are ranked: "
        "bic or aic (lower is better) or loglik (the mean log-likelihood, higher is better); "
        f"default {CRITERION_DEFAULT}.",
    )
    max_iter: Optional[int] = Field(
        None, description=f"Maximum number of EM (or Lloyd) iterations, {_defaults('max_iter')}."
    )
    tol: Optional[float] = Field(
        None,
        description="Convergence threshold: change of the mean log-likelihood per row (gmm) or relative "
        f"change of the inertia (kmeans), {_defaults('tol')}.",
    )
    reg_covar: Optional[float] = Field(
        None, description=f"gmm only: added to the covariance diagonals, {_defaults('reg_covar')}."
    )
    init: Optional[str] = Field(
        None,
        description=f"Initialization by name (GaussianMixture's init_params): gmm: {' | '.join(INIT_PARAMS)}; "
        f"kmeans: {' | '.join(INIT_METHODS)}; {_defaults('init')}. Explicit initial centres or parameters "
        "(KMeans' init array, weights_init, means_init, precisions_init) are given in Python only.",
    )
    n_init: Optional[int] = Field(
        None, description=f"Number of initializations; the best fit is kept; {_defaults('n_init')}."
    )
    random_state: Optional[int] = Field(
        PIPELINE_DEFAULTS["random_state"],
        description=f"Seed of the initialization, default {PIPELINE_DEFAULTS['random_state']} so that a run "
        "can be repeated; null: a fresh seed (the estimators' default).",
    )
    fan_in: Optional[int] = Field(
        None, description=f"Fan-in of the tree that merges per-chunk statistics, {_defaults('fan_in')}."
    )
    init_sample_size: Optional[int] = Field(
        None, description=f"k-means++ initialization: rows sampled to seed it, {_defaults('init_sample_size')}."
    )
    oversampling_factor: Optional[float] = Field(
        None,
        description="k-means|| initialization: candidates drawn per round, per component, "
        f"{_defaults('oversampling_factor')}.",
    )
    init_rounds: Optional[int] = Field(
        None, description=f"k-means|| initialization: rounds of candidate draws, {_defaults('init_rounds')}."
    )
    algorithm: Optional[str] = Field(
        None,
        description=f"{' | '.join(ALGORITHMS)}: batch EM (an M-step after every pass) or stepwise EM (an M-step "
        f"after every group of slabs, a few passes in all), {_defaults('algorithm')}.",
    )
    max_passes: Optional[int] = Field(
        None, description=f"Stepwise: passes over the data before the scoring pass, {_defaults('max_passes')}."
    )
    steps_per_pass: Optional[int] = Field(
        None, description=f"Stepwise: groups of slabs (M-steps) per pass, {_defaults('steps_per_pass')}."
    )
    learning_offset: Optional[float] = Field(
        None,
        description="Stepwise: the t-th group weighs (t + learning_offset) ** -learning_decay in the running "
        f"statistics (the last of several passes averages its groups by rows); at least 1, "
        f"{_defaults('learning_offset')}.",
    )
    learning_decay: Optional[float] = Field(
        None, description=f"Stepwise: see learning_offset; in (0.5, 1], {_defaults('learning_decay')}."
    )

    @property
    def n_components_list(self) -> list[int]:
        """``n_components`` as a list (one value for a single model)."""
        return list(self.n_components) if isinstance(self.n_components, list) else [self.n_components]

    @property
    def covariance_types(self) -> list[str]:
        """``covariance_type`` as a list (gmm)."""
        return list(self.covariance_type) if isinstance(self.covariance_type, list) else [self.covariance_type]

    @property
    def is_selection(self) -> bool:
        """Several candidate models (beyond restarts): a list of components or of covariance types."""
        return len(self.n_components_list) > 1 or len(self.covariance_types) > 1

    def estimator_parameters(self) -> dict[str, Any]:
        """The parameters of the kind's estimator that this config sets, by the estimator's names."""
        return {param: getattr(self, key) for key, param in CONFIG_KEYS[self.kind].items()}

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        """Refuse keys of another kind and misplaced lists, then fill in the kind's estimator defaults."""
        if not isinstance(data, dict) or data.get("kind") not in ESTIMATORS:
            return data
        kind = data["kind"]
        foreign = [key for key in cls.model_fields
                   if key not in PIPELINE_KEYS and key not in CONFIG_KEYS[kind] and data.get(key) is not None]
        if foreign:
            owners = [other for other in ESTIMATORS if all(key in CONFIG_KEYS[other] for key in foreign)]
            raise ValueError(f"{', '.join(foreign)} applies only to kind: {' | '.join(owners)}; "
                             f"remove it for kind: {kind}")
        for key in SELECTION_KEYS:
            value = data.get(key)
            if isinstance(value, list):
                if kind != SELECTION_KIND:
                    raise ValueError(f"a list of {key} is for kind: {SELECTION_KIND} (model selection by BIC); "
                                     "give one value")
                if not value or any(item in value[:i] for i, item in enumerate(value)):
                    raise ValueError(f"{key}: give a non-empty list of distinct values, got {value}")
        filled = dict(data)
        for key, default in DEFAULTS[kind].items():
            if key not in PIPELINE_DEFAULTS and filled.get(key) is None:
                filled[key] = default
        return filled

    @field_validator(*sorted({key for keys in CONFIG_KEYS.values() for key in keys}))
    @classmethod
    def _estimator_rules(cls, value: Any, info: ValidationInfo) -> Any:
        """Each value (each item of a list) obeys the rules of the parameter it sets."""
        kind = info.data.get("kind")
        if kind is not None and value is not None and info.field_name in CONFIG_KEYS[kind]:
            for item in value if isinstance(value, list) else [value]:
                check_parameter(kind, info.field_name, item)
        return value


class PCAConfig(_Section):
    """Principal component projection (dask-ml's PCA)."""

    n_components: PositiveInt = Field(description="Number of principal components kept.")
    whiten: bool = Field(False, description="Scale the projected features to unit variance.")


class PreprocessConfig(_Section):
    """Feature transforms fitted on the data before clustering, saved with the model."""

    standardize: bool = Field(False, description="Center each feature and scale it to unit variance.")
    pca: Optional[PCAConfig] = Field(None, description="Project onto principal components (after standardizing).")

    @property
    def enabled(self) -> bool:
        return self.standardize or self.pca is not None


class DaskemConfig(_Section):
    """A whole run: data -> (preprocess) -> model on a cluster -> outputs."""

    data: DataConfig = Field(description="The input Zarr store.")
    model: ModelConfig = Field(description="The estimator and its parameters.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The Dask cluster.")
    preprocess: Optional[PreprocessConfig] = Field(None, description="Optional feature transforms.")
    output: OutputConfig = Field(description="Where the model and per-row results go.")

    def stores(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every store the run names, by the config key of its path: (path or URL, its storage options)."""
        return {"data.path": (self.data.path, self.data.storage_options),
                "output.path": (self.output.path, self.output.storage_options)}

    @model_validator(mode="after")
    def _per_row_outputs_exist_for_kind(self) -> "DaskemConfig":
        """Responsibilities, log-densities and outlier flags need an estimator with ``predict_proba``;
        a run's outlier rule must be given."""
        if self.output.outliers is not None and not self.output.outliers.given:
            raise ValueError("output.outliers: give contamination (e.g. 0.01) or threshold (a log-density)")
        if not hasattr(ESTIMATORS[self.model.kind], "predict_proba"):
            bad = [key for key in ("responsibilities", "log_density", "outliers") if getattr(self.output, key)]
            if bad:
                owners = " | ".join(kind for kind, estimator in ESTIMATORS.items() if hasattr(estimator, "predict_proba"))
                raise ValueError(
                    f"output.{bad[0]} is only for kind: {owners} ({self.model.kind} has no probabilities); "
                    "set it to false"
                )
        return self


class PredictConfig(_Section):
    """``daskem predict``: a saved model applied to another store."""

    model_path: str = Field(description="A run's output directory or its model/ directory: a local path or an fsspec URL.")
    model_storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to fsspec for a model_path URL (credentials, endpoint, ...)."
    )
    data: DataConfig = Field(description="The input Zarr store.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The Dask cluster.")
    output: OutputConfig = Field(description="Where the per-row results go.")

    def stores(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every store the prediction names, by the config key of its path: (path or URL, its storage options)."""
        return {"model_path": (self.model_path, self.model_storage_options),
                "data.path": (self.data.path, self.data.storage_options),
                "output.path": (self.output.path, self.output.storage_options)}
