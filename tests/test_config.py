"""The YAML config: typed sections, defaults per model kind, overrides, ${VAR}, one-line errors."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pydantic
import pytest
from conftest import write_config

from daskem.data.stores import DataSource
from daskem.errors import ConfigError
from daskem.models.gaussian_mixture import GaussianMixture
from daskem.models.kmeans import KMeans
from daskem.pipeline.config import (
    ClusterConfig,
    DaskemConfig,
    DataConfig,
    ModelConfig,
    OutputConfig,
    PCAConfig,
    PredictConfig,
    PreprocessConfig,
)
from daskem.pipeline.config_loading import (
    apply_override,
    expand_env,
    load_config,
    parse_config,
)
from daskem.pipeline.run import build_estimator, check_config_against_data

ALL_MODELS = [DaskemConfig, DataConfig, ModelConfig, ClusterConfig, PreprocessConfig, PCAConfig, OutputConfig,
              PredictConfig]


def minimal(**model):
    return {"data": {"path": "data/blobs.zarr", "array": "X"}, "model": {"kind": "gmm", **model},
            "output": {"path": "results/blobs"}}


def test_issue_example_loads_with_every_key(tmp_path):
    example = {
        "data": {"path": "data/blobs.zarr", "array": "X", "storage_options": {}},
        "model": {"kind": "gmm", "n_components": 8, "covariance_type": "full", "max_iter": 100, "tol": "1.0e-3",
                  "reg_covar": 1.0e-6, "init": "kmeans", "random_state": 0},
        "cluster": {"address": None, "n_workers": 2, "threads_per_worker": 1, "memory_limit": "4GiB"},
        "output": {"path": "results/blobs", "labels": True, "responsibilities": False, "log_density": False,
                   "overwrite": False},
    }
    config = load_config(write_config(tmp_path / "c.yaml", example))
    assert config.model.tol == 1e-3 and config.cluster.memory_limit == "4GiB"
    assert config.output.local_path == (tmp_path.cwd() / "results/blobs").absolute()


def test_gmm_defaults_are_filled_in():
    model = parse_config(minimal()).model
    assert (model.covariance_type, model.tol, model.reg_covar, model.init) == ("full", 1e-3, 1e-6, "kmeans")


def test_kmeans_defaults_are_filled_in():
    model = parse_config(minimal(kind="kmeans")).model
    assert (model.covariance_type, model.tol, model.reg_covar, model.init) == (None, 1e-4, None, "k-means||")


def test_config_is_frozen():
    config = parse_config(minimal())
    with pytest.raises(pydantic.ValidationError):
        config.model.n_components = 3


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_description(model):
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert missing == []


@pytest.mark.parametrize(
    ("raw_key", "expected"),
    [
        (("model", "n_component"), "unknown key 'model.n_component'; did you mean 'model.n_components'?"),
        (("outptu",), "unknown key 'outptu'; did you mean 'output'?"),
        (("cluster", "workers"), "did you mean 'cluster.n_workers'?"),
    ],
)
def test_unknown_key_suggests_the_closest(raw_key, expected):
    raw = minimal()
    node = raw
    for part in raw_key[:-1]:
        node = node.setdefault(part, {})
    node[raw_key[-1]] = 1
    with pytest.raises(ConfigError, match=expected.replace("?", r"\?").replace(".", r"\.")):
        parse_config(raw, source="c.yaml")


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(n_components="eight"), source="c.yaml")
    message = str(info.value)
    assert message.startswith("c.yaml: model.n_components:") and "'eight'" in message and "\n" not in message


def test_missing_required_key_is_named():
    raw = minimal()
    del raw["output"]
    with pytest.raises(ConfigError, match="output: required key is missing"):
        parse_config(raw)


@pytest.mark.parametrize("key", ["covariance_type", "reg_covar"])
def test_gmm_only_keys_are_refused_for_kmeans(key):
    with pytest.raises(ConfigError, match=f"model: {key} applies only to kind: gmm"):
        parse_config(minimal(kind="kmeans", **{key: "full" if key == "covariance_type" else 1e-3}))


KMEANS_INITS = "one of 'k-means||', 'k-means++', 'random' or an array-like"
GMM_INITS = "one of 'kmeans', 'lloyd', 'k-means||', 'k-means++', 'random', 'random_from_data'"


@pytest.mark.parametrize(("kind", "init", "choices"), [("kmeans", "kmeans", KMEANS_INITS), ("gmm", "kmeans++", GMM_INITS),
                                                       ("kmeans", "random_from_data", KMEANS_INITS)])
def test_init_must_be_one_of_the_kind(kind, init, choices):
    expected = f"c.yaml: model.init: must be {choices} for kind: {kind} (got '{init}')"
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(kind=kind, init=init), source="c.yaml")
    assert str(info.value) == expected


@pytest.mark.parametrize("key", ["responsibilities", "log_density"])
def test_probabilistic_outputs_are_refused_for_kmeans(key):
    raw = minimal(kind="kmeans")
    raw["output"][key] = True
    with pytest.raises(ConfigError, match=f"output.{key} is only for kind: gmm"):
        parse_config(raw)


ESTIMATORS = {"gmm": GaussianMixture, "kmeans": KMeans}
# Constructor parameters a YAML file cannot set: explicit initial arrays (KMeans' init array goes
# through the init key, which takes a name in YAML); the run's checkpoint, which the pipeline keeps
# beside its output, and warm_start, which needs an earlier fit.
RUN_MANAGED = {"warm_start", "checkpoint"}
PYTHON_ONLY = {"gmm": {"weights_init", "means_init", "precisions_init"} | RUN_MANAGED, "kmeans": RUN_MANAGED}
# A valid value other than the default for every model key (gmm, kmeans where they differ).
OTHER_VALUES = {"n_components": 3, "covariance_type": "diag", "tol": 0.25, "reg_covar": 0.5, "max_iter": 7,
                "n_init": 2, "init": "random", "random_state": 11, "fan_in": 3, "init_sample_size": 123,
                "oversampling_factor": 1.5, "init_rounds": 2, "algorithm": "stepwise", "max_passes": 4,
                "steps_per_pass": 5, "learning_offset": 3.0, "learning_decay": 0.9}
RENAMED = {"gmm": {"init": "init_params"}, "kmeans": {"n_components": "n_clusters"}}


@pytest.mark.parametrize("kind", ESTIMATORS)
def test_every_estimator_parameter_is_set_from_yaml(kind):
    parameters = set(inspect.signature(ESTIMATORS[kind]).parameters)
    keys = {key: value for key, value in OTHER_VALUES.items()
            if RENAMED[kind].get(key, key) in parameters}
    assert parameters - {RENAMED[kind].get(key, key) for key in keys} == PYTHON_ONLY[kind]
    estimator = build_estimator(parse_config(minimal(kind=kind, **keys)).model)
    assert type(estimator) is ESTIMATORS[kind]
    assert {RENAMED[kind].get(key, key): value for key, value in keys.items()} == {
        name: value for name, value in estimator.get_params().items() if name not in PYTHON_ONLY[kind]}


@pytest.mark.parametrize("kind", ESTIMATORS)
def test_defaults_are_the_estimators_but_the_seed(kind):
    built = build_estimator(parse_config(minimal(kind=kind)).model).get_params()
    own = ESTIMATORS[kind]().get_params()
    assert built.pop("random_state") == 0 and own.pop("random_state") is None  # a run can be repeated
    assert built == own


def test_kmeans_max_iter_default_is_kmeans_own():
    assert parse_config(minimal(kind="kmeans")).model.max_iter == KMeans().max_iter == 300
    assert parse_config(minimal()).model.max_iter == GaussianMixture().max_iter == 100


def test_init_sample_size_is_set_from_yaml(tmp_path):
    raw = minimal(init="k-means++", init_sample_size=5000)
    config = load_config(write_config(tmp_path / "c.yaml", raw), ["model.init_sample_size=2000"])
    assert build_estimator(config.model).init_sample_size == 2000


def test_null_random_state_asks_for_a_fresh_seed():
    assert parse_config(minimal(random_state=None)).model.random_state is None


@pytest.mark.parametrize(("kind", "key", "value", "rule"), [
    ("gmm", "tol", -1.0, "a float in the range [0.0, inf)"),
    ("kmeans", "tol", -0.5, "a float in the range [0.0, inf)"),
    ("gmm", "reg_covar", -1e-06, "a float in the range [0.0, inf)"),
    ("kmeans", "max_iter", 0, "an int in the range [1, inf)"),
    ("gmm", "n_init", 0, "an int in the range [1, inf)"),
    ("kmeans", "n_components", 0, "an int in the range [1, inf)"),
    ("gmm", "n_components", 0, "an int in the range [1, inf)"),
    ("gmm", "fan_in", 1, "an int in the range [2, inf)"),
    ("kmeans", "oversampling_factor", 0.0, "a float in the range (0.0, inf)"),
    ("gmm", "init_sample_size", 0, "an int in the range [1, inf)"),
    ("kmeans", "init_rounds", 0, "an int in the range [1, inf)"),
])
def test_values_obey_the_estimators_rules(kind, key, value, rule):
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(kind=kind, **{key: value}), source="c.yaml")
    assert str(info.value) == f"c.yaml: model.{key}: must be {rule} for kind: {kind} (got {value!r})"
    with pytest.raises(ValueError, match=re.escape(f"must be {rule}")):  # the estimator's own rule, the same
        ESTIMATORS[kind](**{RENAMED[kind].get(key, key): value})._validate_params()


def test_each_item_of_a_list_obeys_the_rules():
    with pytest.raises(ConfigError, match=re.escape("model.n_components: must be an int in the range [1, inf) "
                                                    "for kind: gmm (got 0)")):
        parse_config(minimal(n_components=[2, 0]))


def test_covariance_types_are_the_registrys():
    from daskem.kernels.covariance import COVARIANCE_TYPES

    for name in COVARIANCE_TYPES:
        assert parse_config(minimal(covariance_type=name)).model.covariance_type == name


def test_unknown_covariance_type_lists_the_choices():
    expected = "model.covariance_type: should be 'full', 'tied', 'diag' or 'spherical' or a valid list"
    with pytest.raises(ConfigError, match=expected):
        parse_config(minimal(covariance_type="fulll"))


@pytest.mark.parametrize(
    ("value", "ok"), [("4GiB", True), ("512MB", True), ("auto", True), (2**30, True), ("lots", False)]
)
def test_memory_limit_must_be_a_size(value, ok):
    raw = {**minimal(), "cluster": {"memory_limit": value}}
    if ok:
        assert parse_config(raw).cluster.memory_limit == str(value)
    else:
        with pytest.raises(ConfigError, match="cluster.memory_limit: 'lots' is not a size"):
            parse_config(raw)


def test_output_path_is_a_local_directory_or_an_object_store_url_but_not_a_process_s_memory():
    raw = minimal()
    raw["output"]["path"] = "s3://bucket/results/"
    output = parse_config(raw).output
    assert not output.is_local and output.location == "s3://bucket/results"
    raw["output"]["path"] = "memory://results"
    with pytest.raises(ConfigError, match="output.path: 'memory://results': a memory:// filesystem lives in one"):
        parse_config(raw)
    raw["output"]["path"] = "file:///tmp/results"
    assert parse_config(raw).output.path == "/tmp/results" and parse_config(raw).output.is_local


def test_overrides_set_nested_values_parsed_as_yaml():
    raw = apply_override(minimal(), "model.n_components=12")
    raw = apply_override(raw, "preprocess.pca.n_components=2")
    raw = apply_override(raw, "cluster.address=tcp://127.0.0.1:8786")
    config = parse_config(raw)
    assert config.model.n_components == 12
    assert config.preprocess.pca.n_components == 2 and config.preprocess.enabled
    assert config.cluster.address == "tcp://127.0.0.1:8786"


def test_override_does_not_change_its_input():
    raw = minimal()
    apply_override(raw, "model.n_components=12")
    assert "n_components" not in raw["model"]


@pytest.mark.parametrize(("override", "message"), [
    ("model.n_components", "write it as section.key=value"),
    ("model..tol=1", "write it as section.key=value"),
    ("model.kind.x=1", "model.kind is a value, not a section"),
])
def test_bad_override_is_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_override(minimal(), override)


def test_override_of_an_unknown_key_is_refused_like_in_yaml():
    with pytest.raises(ConfigError, match="did you mean 'model.max_iter'"):
        parse_config(minimal(), overrides=["model.max_iters=3"])


def test_a_problem_is_named_by_where_it_was_written_the_file_or_the_flag():
    with pytest.raises(ConfigError) as raised:
        parse_config(minimal(tol=-1), source="c.yaml", overrides=["model.max_iters=3", "modl.x=1", "model.n_init=0"])
    message = str(raised.value)
    assert message.startswith("c.yaml: model.tol: ")  # the file's own problem stays the file's
    assert "--set 'model.max_iters=***': unknown key 'model.max_iters'; did you mean 'model.max_iter'?" in message
    assert "--set 'modl.x=***': unknown key 'modl'; did you mean 'model'?" in message
    assert "--set 'model.n_init=***': model.n_init: " in message
    assert "c.yaml: unknown" not in message and message.count("c.yaml") == 1


def test_env_vars_are_expanded(monkeypatch):
    monkeypatch.setenv("DASKEM_DATA", "/data")
    monkeypatch.setenv("DASKEM_K", "5")
    raw = minimal(n_components="${DASKEM_K}")
    raw["data"]["path"] = "${DASKEM_DATA}/blobs.zarr"
    raw["output"]["path"] = "${DASKEM_UNSET_OUT:-results}/x"
    config = parse_config(raw)
    assert config.data.path == "/data/blobs.zarr"
    assert config.model.n_components == 5
    assert config.output.path == "results/x"


def test_missing_env_var_names_the_key(monkeypatch):
    monkeypatch.delenv("DASKEM_NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"data.path: environment variable DASKEM_NOPE is not set"):
        expand_env({"data": {"path": "${DASKEM_NOPE}/x"}})


def test_env_vars_in_overrides_are_expanded(monkeypatch):
    monkeypatch.setenv("DASKEM_K", "7")
    assert parse_config(minimal(), overrides=["model.n_components=${DASKEM_K}"]).model.n_components == 7


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+: not valid YAML"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(path)


def source(rows=100, features=3):
    return DataSource("x.zarr", "X", (rows, features), "float64", (10, features), (10,) * (rows // 10), 3)


def test_more_components_than_rows_is_refused():
    expected = r"x.zarr \(array X\) has 100 rows but model.n_components=200: .*; lower model.n_components or add data"
    with pytest.raises(ConfigError, match=expected):
        check_config_against_data(parse_config(minimal(n_components=200)), source())


def test_more_pca_components_than_features_is_refused():
    raw = {**minimal(n_components=2), "preprocess": {"pca": {"n_components": 4}}}
    with pytest.raises(ConfigError, match="preprocess.pca.n_components=4 is larger than the 3 features"):
        check_config_against_data(parse_config(raw), source())


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    config = load_config(path)
    assert config.output.path and config.data.array == "X"


def test_examples_cover_every_kind_and_covariance_type():
    configs = [load_config(path) for path in EXAMPLES]
    kinds = {(c.model.kind, c.model.covariance_type) for c in configs}
    assert {("kmeans", None), *(("gmm", cov) for cov in ("full", "tied", "diag", "spherical"))} <= kinds
    assert any(c.cluster.address for c in configs) and any(c.preprocess for c in configs)


def test_lists_of_components_and_covariance_types_are_for_gmm_only():
    from daskem.errors import ConfigError
    from daskem.pipeline.config_loading import parse_config

    base = {"data": {"path": "x.zarr"}, "output": {"path": "out"}}
    config = parse_config({**base, "model": {"kind": "gmm", "n_components": [2, 3], "covariance_type": ["full", "diag"]}})
    assert config.model.n_components_list == [2, 3] and config.model.covariance_types == ["full", "diag"]
    assert config.model.is_selection and config.model.criterion == "bic"
    with pytest.raises(ConfigError, match=r"a list of n_components is for kind: gmm"):
        parse_config({**base, "model": {"kind": "kmeans", "n_components": [2, 3]}})
    with pytest.raises(ConfigError, match=r"n_components: give a non-empty list of distinct values"):
        parse_config({**base, "model": {"kind": "gmm", "n_components": [2, 2]}})
    with pytest.raises(ConfigError, match=r"model.criterion"):
        parse_config({**base, "model": {"kind": "gmm", "criterion": "bics"}})


USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"
MODEL_TABLE_HEADER = "| key | gmm default | kmeans default | what it sets |"


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row; ``\\|`` is a pipe inside a cell."""
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _documented(cell: str):
    text = cell.strip("`")
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return None if text == "null" else text


def test_usage_documents_every_model_key_with_the_codes_defaults():
    from daskem.models.selection import fit_candidates

    lines = USAGE.read_text().splitlines()
    start = lines.index(MODEL_TABLE_HEADER) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        key, gmm, kmeans, _ = _cells(line)
        rows[key.strip("`")] = {"gmm": gmm, "kmeans": kmeans}
    assert list(rows) == list(ModelConfig.model_fields)
    criterion = inspect.signature(fit_candidates).parameters["criterion"].default
    for key, documented in rows.items():
        for kind, cell in documented.items():
            if key == "kind":
                assert cell == "—"
            elif key == "criterion":
                assert _documented(cell) == criterion
            else:
                model = parse_config(minimal(kind=kind)).model
                expected = getattr(model, key)
                assert (cell == "—") == (expected is None), (key, kind)
                if expected is not None:
                    assert _documented(cell) == expected and type(_documented(cell)) is type(expected), (key, kind)


@pytest.mark.parametrize("section", [DataConfig, ClusterConfig, PreprocessConfig, OutputConfig],
                         ids=lambda m: m.__name__)
def test_usage_names_every_key_of_each_section(section):
    name = {DataConfig: "data", ClusterConfig: "cluster", PreprocessConfig: "preprocess", OutputConfig: "output"}
    row = next(line for line in USAGE.read_text().splitlines() if line.startswith(f"| `{name[section]}` |"))
    assert [key for key in section.model_fields if f"`{key}`" not in row and f"{key}:" not in row] == []
