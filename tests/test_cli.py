"""``python -m daskem`` as users run it: real YAML, real Zarr stores, a real embedded cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from conftest import cli_env, write_config

from daskem.cli import main
from daskem.data.stores import open_array
from daskem.kernels.covariance import COVARIANCE_TYPES
from daskem.models.preprocessing import PreprocessedModel
from daskem.outputs.model_files import load_model
from daskem.outputs.records import output_format

N_ROWS, N_FEATURES, K = 6000, 3, 4
RUN_JSON_KEYS = {"complete", "reseeded", "config", "versions", "data", "cluster", "n_iter", "converged", "history",
                 "objective", "final_objective", "timings", "outputs", "started_at", "finished_at"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A float32, Zarr v3 store with 4 true components, made by ``daskem make-data``."""
    folder = tmp_path_factory.mktemp("data")
    done = subprocess.run(
        [sys.executable, "-m", "daskem", "make-data", "blobs.zarr", "--n-samples", str(N_ROWS), "--n-features",
         str(N_FEATURES), "--n-components", str(K), "--chunk-rows", "1000", "--dtype", "float32", "--seed", "1"],
        cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (folder / "blobs.zarr.truth" / "means.npy").is_file()
    return folder / "blobs.zarr"


def config_for(store, output, **model):
    return {
        "data": {"path": str(store), "array": "X"},
        "model": {"kind": "gmm", "n_components": K, "max_iter": 15, "random_state": 0, **model},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB", "dashboard": False},
        "output": {"path": str(output), "report": False},
    }


def stored(path, name):
    return zarr.open_array(str(path / "predictions.zarr"), path=name, mode="r")


def assert_user_error(done, message):
    """Exit status 2 and one ``error: ...`` line holding ``message``, last on stderr; no traceback."""
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in done.stderr, done.stderr
    assert message in errors[0]


@pytest.mark.cluster
# kmeans and full in every run; the other covariance types (fitted through the same CLI path, and
# each checked against scikit-learn in process) with -m slow.
@pytest.mark.parametrize("kind", ["kmeans", "full", *(pytest.param(name, marks=pytest.mark.slow)
                                                     for name in COVARIANCE_TYPES if name != "full")])
def test_run_writes_model_predictions_and_run_json(tmp_path, run_cli, store, kind):
    out = tmp_path / "out"
    if kind == "kmeans":  # also: a file:// URL from ${ENV}, --set, and overwrite of an existing output
        config = config_for("${DASKEM_TEST_STORE}", out, kind="kmeans", n_components=2)
        config["output"]["overwrite"] = True
        out.mkdir()  # an earlier daskem output: overwrite may replace it
        (out / "run.json").write_text(json.dumps({**output_format(), "complete": True}))
        (out / "stale.txt").write_text("old run")
        args = ["--set", f"model.n_components={K}"]
    else:
        config = config_for(store, out, covariance_type=kind)
        config["output"].update(responsibilities=True, log_density=True)
        config["data"].update({"full": {"cache": "memory"}, "tied": {"chunk_rows": 2000}}.get(kind, {}))
        args = []
    done = run_cli("run", write_config(tmp_path / "c.yaml", config), *args, env={"DASKEM_TEST_STORE": f"file://{store}"})
    assert done.returncode == 0, done.stderr
    assert "iteration 1: objective" in done.stderr and done.stdout.strip() == str(out)

    summary = json.loads((out / "run.json").read_text())
    assert RUN_JSON_KEYS <= set(summary) and summary["complete"] is True
    assert summary["data"]["shape"] == [N_ROWS, N_FEATURES] and summary["data"]["dtype"] == "float32"
    assert 1 <= summary["n_iter"] <= len(summary["history"]) and isinstance(summary["converged"], bool)
    assert summary["config"]["model"]["n_components"] == K and summary["timings"]["total"] > 0
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "out"]  # no partial directory left

    model = load_model(out)
    _, X = open_array(str(store), array="X")
    labels = stored(out, "labels")
    rows = 2000 if kind == "tied" else summary["slabs"]["rows"]  # data.chunk_rows, else the planned slabs
    assert labels.dtype == np.int32 and labels.chunks == (rows,) and labels.shape == (N_ROWS,)
    assert ("kept in worker memory" in done.stderr) == (kind == "full")
    np.testing.assert_array_equal(labels[:], model.predict(X).compute())
    if kind != "kmeans":
        resp = stored(out, "responsibilities")
        assert resp.dtype == np.float32 and resp.shape == (N_ROWS, K) and resp.chunks == (rows, K)
        np.testing.assert_allclose(resp[:].sum(axis=1), 1.0, atol=1e-5)
        log_density = stored(out, "log_density")
        assert log_density.dtype == np.float64
        np.testing.assert_allclose(log_density[:], model.score_samples(X).compute(), rtol=1e-12)


def test_a_run_in_the_test_process_leaves_its_signal_handlers_and_log_levels_behind(tmp_path, in_process):
    """The in-process runs of the other tests must not change how this process logs or stops."""
    import logging
    import signal

    from daskem.pipeline.progress import LIBRARY_LOGGERS

    before = ([signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)],
              [logging.getLogger(name).level for name in LIBRARY_LOGGERS + ("daskem",)])
    done = in_process("validate", write_config(tmp_path / "c.yaml", {"model": {"kind": "kmeans"}}), "-vv")
    assert done.returncode == 2
    assert before == ([signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)],
                      [logging.getLogger(name).level for name in LIBRARY_LOGGERS + ("daskem",)])


@pytest.mark.cluster
def test_asking_a_scheduler_without_a_dashboard_for_its_page_logs_nothing(caplog):
    """daskem asks for the page to know whether there is a dashboard: the 404 of an embedded
    scheduler (served from this process) is no warning for the user."""
    import logging

    from distributed import Client, LocalCluster

    from daskem.pipeline.cluster import dashboard_link

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client, \
            caplog.at_level(logging.WARNING, logger="tornado.access"):  # as the command line leaves it by default
        assert "dashboard" in client.scheduler_info()["services"]
        assert [dashboard_link(client) for _ in range(20)] == [None] * 20  # tornado logs after it answers:
        time.sleep(0.2)  # the last line, if any, is written by now
    assert [record for record in caplog.records if record.name.startswith("tornado")] == []


@pytest.mark.cluster
def test_preprocessed_model_reloads_and_predict_applies_it(tmp_path, run_cli, store):
    out = tmp_path / "out"
    config = config_for(store, out, covariance_type="diag")
    config["preprocess"] = {"standardize": True, "pca": {"n_components": 2}}
    config["cluster"]["dashboard"] = True
    done = run_cli("run", write_config(tmp_path / "c.yaml", config))
    assert done.returncode == 0, done.stderr
    assert "dashboard: http://" in done.stderr or "dashboard: not served, bokeh is not installed" in done.stderr
    assert json.loads((out / "run.json").read_text())["preprocessing"]["steps"] == ["standardize", "pca"]

    model = load_model(out)
    assert isinstance(model, PreprocessedModel) and model.means_.shape == (K, 2)
    raw = zarr.open_array(str(store), path="X")[:]
    np.testing.assert_array_equal(model.predict(raw), stored(out, "labels")[:])

    other = tmp_path / "other.zarr"  # the same rows as a Zarr v2 root array in other chunks
    zarr.create_array(str(other), data=raw.astype(np.float64), chunks=(2500, N_FEATURES), zarr_format=2)
    done = run_cli("predict", out, other, "-o", tmp_path / "pred", "--responsibilities", "--n-workers", 1)
    assert done.returncode == 0, done.stderr
    predicted = json.loads((tmp_path / "pred" / "run.json").read_text())
    assert stored(tmp_path / "pred", "labels").chunks == (predicted["slabs"]["rows"],)
    np.testing.assert_array_equal(stored(tmp_path / "pred", "labels")[:], stored(out, "labels")[:])
    assert predicted["command"] == "predict"


@pytest.mark.cluster
def test_error_during_fit_exits_2_and_leaves_no_output(tmp_path, run_cli):
    data = np.random.default_rng(0).normal(size=(400, 2))
    data[123, 1] = np.nan
    zarr.create_array(str(tmp_path / "nan.zarr"), data=data, chunks=(100, 2))
    config = config_for(tmp_path / "nan.zarr", tmp_path / "results" / "out", n_components=2)
    del config["data"]["array"]
    done = run_cli("run", write_config(tmp_path / "c.yaml", config))
    assert_user_error(done, "NaN or infinite values")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "nan.zarr"]


@pytest.mark.cluster
def test_collapsed_component_during_fit_exits_2_with_one_line(tmp_path, run_cli):
    data = np.vstack([np.zeros((200, 2)), np.random.default_rng(0).normal(5, 1, size=(200, 2))])
    # every chunk written, the all-zero ones too (zarr leaves those out by default: a gap daskem refuses)
    zarr.create_array(str(tmp_path / "collapse.zarr"), data=data, chunks=(100, 2),
                      config={"write_empty_chunks": True})
    config = config_for(tmp_path / "collapse.zarr", tmp_path / "out", n_components=2, reg_covar=0.0)
    del config["data"]["array"]
    done = run_cli("run", write_config(tmp_path / "c.yaml", config))
    assert_user_error(done, "collapse.zarr: fitting failed: covariance of component")
    assert "is not positive definite" in done.stderr and "increase reg_covar (now 0)" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "collapse.zarr"]


BROKEN_ENGINE = """
import sys

import daskem.engine.em


def em_pass(*args, **kwargs):
    raise ValueError("an invariant of the engine broke")


daskem.engine.em.em_pass = em_pass  # a bug in our own code, raised during the fit
from daskem.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.cluster
def test_a_bug_during_fit_exits_1_with_its_traceback(tmp_path, store):
    config = write_config(tmp_path / "c.yaml", config_for(store, tmp_path / "out"))
    done = subprocess.run([sys.executable, "-c", BROKEN_ENGINE, "run", str(config), "--no-progress"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr and "in em_pass" in done.stderr
    assert done.stderr.rstrip().endswith("ValueError: an invariant of the engine broke")
    assert not any(line.startswith("error: ") for line in done.stderr.splitlines())
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- user errors


def _write(path, data, name="X", zarr_format=3):
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array(name, data=data)


def _case_missing_store(tmp_path, config):
    config["data"]["path"] = str(tmp_path / "missing.zarr")
    return "missing.zarr: no such file or directory"


def _case_not_a_store(tmp_path, config):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    config["data"]["path"] = str(tmp_path / "plain")
    return "plain: not a Zarr store"


def _case_missing_array(tmp_path, config):
    config["data"]["array"] = "Y"
    return "no array 'Y' in the store; arrays present: X"


def _case_1d(tmp_path, config):
    _write(tmp_path / "one.zarr", np.zeros(10))
    config["data"]["path"] = str(tmp_path / "one.zarr")
    return "the array has 1 dimension(s)"


def _case_3d(tmp_path, config):
    _write(tmp_path / "three.zarr", np.zeros((4, 3, 2)))
    config["data"]["path"] = str(tmp_path / "three.zarr")
    return "the array has 3 dimension(s)"


def _case_strings(tmp_path, config):
    _write(tmp_path / "s.zarr", np.array([["a", "b"], ["c", "d"]]), zarr_format=2)
    config["data"]["path"] = str(tmp_path / "s.zarr")
    return "dtype <U1 is not numeric"


def _case_unknown_key(tmp_path, config):
    config["model"]["n_component"] = 3
    return "unknown key 'model.n_component'; did you mean 'model.n_components'?"


def _case_wrong_type(tmp_path, config):
    config["model"]["n_components"] = "eight"
    return "model.n_components: should be a valid integer"


def _case_too_many_components(tmp_path, config):
    _write(tmp_path / "small.zarr", np.zeros((50, 2)))
    config["data"]["path"] = str(tmp_path / "small.zarr")
    config["model"]["n_components"] = 60
    return "has 50 rows but model.n_components=60: there must be at least as many rows as components"


def _case_output_exists(tmp_path, config):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text(json.dumps({**output_format(), "complete": True}))
    return "output directory already exists; set output.overwrite: true"


BAD_INPUTS = [_case_missing_store, _case_not_a_store, _case_missing_array, _case_1d, _case_3d, _case_strings,
              _case_unknown_key, _case_wrong_type, _case_too_many_components, _case_output_exists]


def snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture
def bad_input(tmp_path):
    """``bad_input(case)`` -> (config path, expected message): a valid config broken by ``case``."""

    def make(case):
        _write(tmp_path / "good.zarr", np.random.default_rng(0).normal(size=(100, 2)))
        config = config_for(tmp_path / "good.zarr", tmp_path / "out", n_components=2)
        message = case(tmp_path, config)
        return write_config(tmp_path / "c.yaml", config), message

    return make


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.__name__.removeprefix("_case_"))
def test_bad_input_exits_2_with_one_line_and_leaves_output_as_it_was(tmp_path, in_process, bad_input, case):
    path, message = bad_input(case)
    before = snapshot(tmp_path)
    assert_user_error(in_process("run", path), message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", [_case_unknown_key, _case_missing_array], ids=["config", "data"])
def test_bad_input_in_a_real_process_has_no_traceback(tmp_path, run_cli, bad_input, case):
    path, message = bad_input(case)
    before = snapshot(tmp_path)
    assert_user_error(run_cli("run", path), message)
    assert snapshot(tmp_path) == before


def test_validate_checks_without_fitting(tmp_path, in_process, store):
    config = config_for(store, tmp_path / "out")
    done = in_process("validate", write_config(tmp_path / "c.yaml", config), "--set", "model.covariance_type=tied",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ") and f"{N_ROWS} rows x {N_FEATURES} features, float32" in done.stdout
    assert "tied covariances" in done.stdout and not (tmp_path / "out").exists()


def test_make_data_refuses_an_existing_store(in_process, store):
    done = in_process("make-data", store, "--n-samples", 10)
    assert_user_error(done, "already exists; pass --overwrite")


def test_module_help(run_cli):
    done = run_cli("--help")
    assert done.returncode == 0 and all(c in done.stdout for c in ("run", "validate", "predict", "make-data"))


@pytest.mark.parametrize("command", ["run", "validate", "predict", "sample", "report", "make-data"])
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and f"usage: daskem {command}" in capsys.readouterr().out


@pytest.mark.cluster
def test_progress_events_count_the_chunks_of_each_pass():
    import dask.array as da
    from distributed import Client, LocalCluster

    from daskem.pipeline.progress import TOPIC, ProgressBars

    events = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, ProgressBars(client, enabled=True) as bars:
        assert bars.registered
        client.subscribe_topic(TOPIC, lambda event: events.append(event[1]))
        da.ones((100, 2), chunks=(10, 2)).map_blocks(lambda b: b * 2).sum().compute()
        deadline = time.monotonic() + 10
        while not any(e["done"] == e["total"] for e in events) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert events and events[-1]["total"] == 10 and events[-1]["done"] == 10


@pytest.mark.cluster
def test_run_with_a_list_of_components_selects_by_bic_and_records_every_candidate(tmp_path, run_cli, store):
    config = config_for(store, tmp_path / "out", n_components=[2, 4, 6], covariance_type=["full", "diag"],
                        max_iter=40)
    done = run_cli("run", write_config(tmp_path / "select.yaml", config), "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    table = summary["candidates"]
    assert len(table) == 6
    assert {(row["n_components"], row["covariance_type"]) for row in table} == {
        (k, t) for k in (2, 4, 6) for t in ("full", "diag")}
    assert [row["bic"] for row in table] == sorted(row["bic"] for row in table)
    assert table[0]["n_components"] == K  # the data has 4 true components
    model = load_model(tmp_path / "out")
    assert (model.n_components, model.covariance_type) == (table[0]["n_components"], table[0]["covariance_type"])
    assert "candidates ranked by bic" in done.stderr
