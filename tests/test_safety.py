"""daskem never destroys what it did not write, never leaks a secret, and cleans up after itself.

- ``overwrite`` replaces only an earlier daskem output, never an input, the working or home
  directory, a root or a directory of someone else's files; symlinks and ``..`` do not get around it.
- Secrets of ``storage_options`` are in neither run.json nor the logs nor the error messages.
- Staging directories of runs that died are removed by the next run; those of live runs are not.
- A write pass that fails waits for the writes on workers before its directory is removed.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import cloudpickle
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import cli_env, write_config

from daskem.errors import ConfigError, OutputError
from daskem.models.kmeans import KMeans
from daskem.outputs.model_files import save_model
from daskem.outputs.predictions import store_rows
from daskem.outputs.records import output_format
from daskem.outputs.staging import StagedOutput, is_daskem_output
from daskem.data.credentials import MASK, is_secret_key, redacted, scrub
from daskem.pipeline.config_loading import (
    FromEnv,
    mask_document,
    parse_config,
    secret_values,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker processes run this module's functions


def make_store(path, rows=600, chunk=100):
    data = np.random.default_rng(0).normal(size=(rows, 3))
    zarr.open_group(str(path), mode="w").create_array("X", data=data, chunks=(chunk, 3))
    return data


def earlier_output(path, **extra):
    """A directory as a completed daskem command leaves it."""
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({**output_format(), "complete": True, **extra}))
    return path


def snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def assert_one_error_line(done, *parts):
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert all(part in lines[-1] for part in parts), lines[-1]


# ----------------------------------------------------------------------------- never destroy


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """data/in.zarr (the input) and work/ (the working directory), under tmp_path."""
    make_store(tmp_path / "data" / "in.zarr")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


PLACES = {  # output.path (relative to the working directory) -> the words of the refusal
    "the input": ("../data/in.zarr", "is the input data.path"),
    "a folder holding the input": ("../data", "contains the input data.path"),
    "a folder inside the input": ("../data/in.zarr/X", "is inside the input data.path"),
    "the working directory": (".", "is the working directory"),
    "a folder holding the working directory": ("..", "contains the working directory"),
    "a root": ("/", "is a filesystem root"),
    "a detour through ..": ("../work/../data/in.zarr", "is the input data.path"),
}


@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
def test_overwrite_never_replaces_an_input_or_a_directory_daskem_did_not_write(layout, place):
    path, words = place
    before = snapshot(layout)
    with pytest.raises(OutputError, match=f"output.path {words}.*choose an(other)? output.path"):
        StagedOutput(path, overwrite=True, inputs={"data.path": str(layout / "data" / "in.zarr")}).check()
    assert snapshot(layout) == before


def test_symlinks_are_resolved_before_the_checks(layout):
    (layout / "link").symlink_to(layout / "data" / "in.zarr")
    (layout / "input-link").symlink_to(layout / "data")
    with pytest.raises(OutputError, match="is the input data.path"):
        StagedOutput(layout / "link", overwrite=True, inputs={"data.path": "../data/in.zarr"}).check()
    with pytest.raises(OutputError, match="contains the input data.path"):  # the input named through a link
        StagedOutput(layout / "data", overwrite=True, inputs={"data.path": layout / "input-link" / "in.zarr"}).check()


def test_the_home_directory_is_never_replaced(layout, monkeypatch):
    home = earlier_output(layout / "homes" / "me")  # even if it looks like a daskem output
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputError, match="is the home directory"):
        StagedOutput(home, overwrite=True).check()
    with pytest.raises(OutputError, match="contains the home directory"):
        StagedOutput(layout / "homes", overwrite=True).check()


def test_a_directory_of_other_files_is_refused_even_with_overwrite(layout):
    (layout / "notes").mkdir()
    (layout / "notes" / "thesis.tex").write_text("years of work")
    (layout / "fake").mkdir()
    (layout / "fake" / "run.json").write_text(json.dumps({"complete": True}))  # no daskem format tag
    (layout / "linked").mkdir()
    (layout / "linked" / "run.json").symlink_to(earlier_output(layout / "real") / "run.json")
    for name in ("notes", "fake", "linked"):
        assert not is_daskem_output(layout / name)
        with pytest.raises(OutputError, match="was not written by daskem .* daskem replaces only its own outputs"):
            StagedOutput(layout / name, overwrite=True).check()
    assert (layout / "notes" / "thesis.tex").read_text() == "years of work"


def test_an_empty_directory_and_an_earlier_daskem_output_are_used(layout):
    (layout / "empty").mkdir()
    earlier_output(layout / "old", note="previous")
    for name in ("empty", "old"):
        staged = StagedOutput(layout / name, overwrite=True, inputs={"data.path": "../data/in.zarr"})
        with staged as tmp:
            (tmp / "run.json").write_text(json.dumps({**output_format(), "complete": True}))
            staged.commit()
        assert is_daskem_output(layout / name) and "previous" not in (layout / name / "run.json").read_text()


@pytest.fixture
def cli_layout(tmp_path):
    """An input store, a saved model, and a config whose output is ``out`` (overwrite on)."""
    make_store(tmp_path / "in.zarr")
    save_model(KMeans(2, random_state=0).fit(np.random.default_rng(1).normal(size=(50, 3))), tmp_path / "model")
    config = {"data": {"path": "in.zarr", "array": "X"}, "model": {"kind": "kmeans", "n_components": 2},
              "cluster": {"n_workers": 1, "dashboard": False}, "output": {"path": "out", "overwrite": True}}
    return write_config(tmp_path / "c.yaml", config)


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("output,words", [("in.zarr", "is the input data.path"), (".", "is the working directory")])
def test_run_and_validate_refuse_before_a_cluster_and_touch_nothing(tmp_path, in_process, cli_layout, command, output,
                                                                    words):
    before = snapshot(tmp_path)
    done = in_process(command, cli_layout, "--set", f"output.path={output}", cwd=tmp_path)
    assert_one_error_line(done, f"{tmp_path / output if output != '.' else tmp_path}: output.path {words}",
                          "output.path", "choose an")
    assert "cluster:" not in done.stderr and snapshot(tmp_path) == before


@pytest.mark.parametrize("output,words", [("model", "is the input model_path"),
                                          ("in.zarr/p", "is inside the input data.path")])
def test_predict_refuses_to_write_into_its_model_or_its_input(tmp_path, in_process, cli_layout, output, words):
    before = snapshot(tmp_path)
    done = in_process("predict", "model", "in.zarr", "--array", "X", "-o", output, "--overwrite", cwd=tmp_path)
    assert_one_error_line(done, f"output.path {words}")
    assert "cluster:" not in done.stderr and snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("key,secret", [
    ("key", True), ("secret", True), ("aws_secret_access_key", True), ("Password", True), ("session_token", True),
    ("account_key", True), ("client_secret", True), ("credentials", True), ("sas_token", True),
    ("connection_string", True), ("passwd", True), ("auth", True), ("sas", True),
    ("endpoint_url", False), ("region_name", False), ("anon", False), ("client_kwargs", False), ("auto_mkdir", False),
])
def test_secret_looking_keys(key, secret):
    """One rule for the config's masking, the run record's options and a store's error messages."""
    assert is_secret_key(key) is secret
    value = "v4lue-of-the-option"
    assert redacted({"client_kwargs": {key: value}}) == {"client_kwargs": {key: MASK if secret else value}}
    assert (value in scrub(OSError(f"refused with {value}"), {key: value})) is not secret


def test_config_keeps_the_values_and_documents_mask_them(monkeypatch):
    monkeypatch.setenv("DASKEM_TEST_TOKEN", "tok-7c1f")
    monkeypatch.setenv("DASKEM_TEST_ENDPOINT", "http://127.0.0.1:9000")
    config = parse_config({
        "data": {"path": "s3://user:pa55word@bucket/x.zarr", "storage_options": {
            "endpoint_url": "${DASKEM_TEST_ENDPOINT}", "region_name": "eu", "anon": False,
            "client_kwargs": {"aws_secret_access_key": "s3cr3t-value"}, "profile": "${DASKEM_TEST_TOKEN}"}},
        "model": {"kind": "kmeans"}, "output": {"path": "out"}})
    options = config.data.storage_options
    assert options["profile"] == "tok-7c1f" and isinstance(options["profile"], FromEnv)  # the real value
    secrets = secret_values(config)
    assert secrets == {"tok-7c1f", "http://127.0.0.1:9000", "s3cr3t-value", "pa55word"}
    dumped = mask_document(config.model_dump(mode="json"), secrets)["data"]
    assert dumped["path"] == f"s3://user:{MASK}@bucket/x.zarr"
    assert dumped["storage_options"] == {"endpoint_url": MASK, "region_name": "eu", "anon": False,
                                         "client_kwargs": {"aws_secret_access_key": MASK}, "profile": MASK}


def test_a_config_error_does_not_show_a_value_from_the_environment(monkeypatch):
    monkeypatch.setenv("DASKEM_TEST_OPTIONS", "hunter2-f00d")
    with pytest.raises(ConfigError, match=r"data.storage_options: Input should be a valid dictionary \(got \*\*\*\)") \
            as info:
        parse_config({"data": {"path": "x.zarr", "storage_options": "${DASKEM_TEST_OPTIONS}"},
                      "model": {"kind": "kmeans"}, "output": {"path": "out"}})
    assert "hunter2" not in str(info.value)


@pytest.mark.cluster
def test_a_secret_from_the_environment_is_in_neither_run_json_nor_the_logs(tmp_path, run_cli, in_process):
    make_store(tmp_path / "in.zarr")
    config = {
        "data": {"path": f"file://{tmp_path / 'in.zarr'}", "array": "X",
                 "storage_options": {"client_label": "${DASKEM_TEST_SECRET}", "password": "literal-pw-42"}},
        "model": {"kind": "kmeans", "n_components": 2, "max_iter": 3},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB", "dashboard": False},
        "output": {"path": str(tmp_path / "out")},
    }
    done = run_cli("run", write_config(tmp_path / "c.yaml", config), "-v", "--no-progress",
                   env={"DASKEM_TEST_SECRET": "sw0rdf1sh-9d2e"})
    assert done.returncode == 0, done.stderr
    written = [(tmp_path / "out" / name).read_text() for name in ("run.json", "model/model.json", "report/index.html")]
    for secret in ("sw0rdf1sh-9d2e", "literal-pw-42"):
        assert all(secret not in text for text in written) and secret not in done.stderr + done.stdout
    options = json.loads(written[0])["config"]["data"]["storage_options"]
    assert options == {"client_label": MASK, "password": MASK}

    config["data"]["path"] = f"file://user:sw0rdf1sh-9d2e@{tmp_path / 'nowhere.zarr'}"  # a password in a URL
    done = in_process("validate", write_config(tmp_path / "c.yaml", config), env={"DASKEM_TEST_SECRET": "x"})
    assert_one_error_line(done, f"file://user:{MASK}@")
    assert "sw0rdf1sh" not in done.stderr


@pytest.mark.cluster
def test_a_secret_that_is_a_word_of_daskem_s_own_text_leaves_the_output_replaceable(tmp_path, run_cli):
    """A credential such as the access key ``daskem`` is masked inside text, but never in the format
    tag of run.json: with it masked, the next run would not know the output as its own to replace."""
    make_store(tmp_path / "in.zarr")
    config = {
        "data": {"path": "in.zarr", "array": "X", "storage_options": {"token": "${DASKEM_TEST_SECRET}"}},
        "model": {"kind": "kmeans", "n_components": 2, "max_iter": 3},
        "cluster": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False},
        "output": {"path": "out", "overwrite": True, "report": False},
    }
    path = write_config(tmp_path / "c.yaml", config)
    for _ in range(2):
        done = run_cli("run", path, "--no-progress", env={"DASKEM_TEST_SECRET": "daskem"})
        assert done.returncode == 0, done.stderr
        summary = json.loads((tmp_path / "out" / "run.json").read_text())
        assert summary["format"] == "daskem-output" and summary["config"]["data"]["storage_options"]["token"] == MASK


# ----------------------------------------------------------------------------- leftovers

ENTER_STAGING = "import sys; from daskem.outputs.staging import StagedOutput; StagedOutput(sys.argv[1]).__enter__(); "


def leftovers_of_a_killed_process(final, count=1):
    """``count`` staging directories beside ``final`` of a process killed (SIGKILL) while writing."""
    code = ENTER_STAGING * count + "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    done = subprocess.run([sys.executable, "-c", code, str(final)], env=cli_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -9, done.stderr


@pytest.fixture
def live_staging(tmp_path):
    """``live_staging(final)``: a staging directory beside ``final`` of a process that is still running."""
    started = []

    def start(final):
        code = ENTER_STAGING + "print('in', flush=True); sys.stdin.read()"
        process = subprocess.Popen([sys.executable, "-c", code, str(final)], env=cli_env(), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline() == "in\n"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def staging_directories(final):
    return sorted(p.name for p in final.parent.iterdir() if p.name.startswith(f".{final.name}."))


def test_staging_directories_of_dead_runs_are_removed_and_those_of_live_runs_kept(tmp_path, live_staging, caplog):
    final = tmp_path / "out"
    live = live_staging(final)
    kept = staging_directories(final)
    leftovers_of_a_killed_process(final, count=2)  # a process's staging removes none but those of dead ones
    dead = sorted(set(staging_directories(final)) - set(kept))
    assert len(dead) == 2 and len(kept) == 1 and f".out.partial-{live.pid}@" in kept[0]
    staged = StagedOutput(final)
    with caplog.at_level(logging.INFO, logger="daskem"), staged as tmp:
        (tmp / "run.json").write_text("{}")
        staged.commit()
    assert staging_directories(final) == kept
    removed = [record.getMessage() for record in caplog.records if "removed" in record.getMessage()]
    assert len(removed) == 1 and "removed 2 staging directories" in removed[0] and all(d in removed[0] for d in dead)


@pytest.mark.cluster
def test_the_next_run_removes_the_leftover_of_a_killed_run_and_says_so(tmp_path, run_cli, live_staging):
    make_store(tmp_path / "in.zarr")
    save_model(KMeans(2, random_state=0).fit(np.random.default_rng(1).normal(size=(50, 3))), tmp_path / "model")
    final = tmp_path / "pred"
    live_staging(final)
    kept = staging_directories(final)
    leftovers_of_a_killed_process(final)
    dead = sorted(set(staging_directories(final)) - set(kept))
    done = run_cli("predict", "model", "in.zarr", "--array", "X", "-o", "pred", "--n-workers", 1, "--no-progress")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "staging director" in line]
    assert len(said) == 1 and said[0].endswith(f"removed 1 staging directory left beside {final} by interrupted "
                                               f"runs: {dead[0]}")
    assert staging_directories(final) == kept and is_daskem_output(final)


# ----------------------------------------------------------------------------- the write race


def wait_until(condition, limit=60.0):
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def marks_of(marks, kind):
    return sorted(int(p.name.split("-")[1]) for p in marks.glob(f"{kind}-*"))


class FailingDisk:
    """A Zarr array behind a disk that fills up: the write of rows 0.. fails (no space left) while the
    first other write to start is still under way, which waits for that failure and then takes 2 s.
    Every write marks its start and its end in ``marks``."""

    def __init__(self, array, marks):
        self.array, self.marks = array, marks
        self.dtype = array.dtype

    def __setitem__(self, region, values):
        marks = self.marks
        if region.start == 0:
            (marks / "failing").touch()
            wait_until(lambda: set(marks_of(marks, "started")) - set(marks_of(marks, "done")))
            raise OSError(28, "No space left on device")
        (marks / f"started-{region.start}").touch()
        try:
            (marks / "first").open("x").close()  # only the first write to start gets here
        except FileExistsError:
            pass
        else:
            wait_until((marks / "failing").exists)
            time.sleep(2.0)
        self.array[region] = values
        (marks / f"done-{region.start}").touch()


def _rows(slab, names):
    return {"x": slab}


def _rows_and_double(slab, names):
    return {"x": slab, "twice": 2 * slab}


@pytest.mark.cluster
def test_a_failed_write_pass_returns_only_once_no_write_runs_on_a_worker(tmp_path):
    from distributed import Client, LocalCluster

    marks = tmp_path / "marks"
    marks.mkdir()
    X = da.from_array(np.arange(160.0).reshape(80, 2), chunks=(10, 2))
    target = zarr.create_array(str(tmp_path / "p.zarr"), shape=(80, 2), chunks=(10, 2), dtype="f8")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        with pytest.raises(OSError, match="No space left on device"):
            store_rows(X, _rows, {"x": FailingDisk(target, marks)})
        started, done = marks_of(marks, "started"), marks_of(marks, "done")
        assert started and started == done  # every write that began had ended when the error came back
        wait_until(lambda: not any(client.processing().values()))
        idle = client.run(lambda dask_worker: len(dask_worker.state.executing))
    assert marks_of(marks, "started") == started  # and none began after it
    assert all(count == 0 for count in idle.values())


def test_write_pass_without_a_cluster_writes_every_slab(tmp_path):
    X = da.from_array(np.arange(80.0).reshape(40, 2), chunks=(10, 2))
    target = zarr.create_array(str(tmp_path / "p.zarr"), shape=(40, 2), chunks=(10, 2), dtype="f8")
    doubled = zarr.create_array(str(tmp_path / "q.zarr"), shape=(40, 2), chunks=(10, 2), dtype="f8")
    assert store_rows(X, _rows_and_double, {"x": target, "twice": doubled})["rows"] == 40
    np.testing.assert_array_equal(target[:], X.compute())
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "q.zarr"))[:], 2 * X.compute())

