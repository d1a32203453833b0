"""An output prefix in an object store (moto's S3 server on 127.0.0.1), without a cluster: it looks
complete only once its run.json says so, it replaces only a daskem output and only with overwrite,
it never deletes what daskem did not write, and a store it cannot reach, a wrong credential or a
missing bucket is one line naming the URL and the fix, with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import s3fs
from conftest import write_config
from dask_processes import closed_port
from s3 import KEY_VARIABLE, SECRET_VARIABLE

from daskem.data.synthetic import make_data
from daskem.errors import ConfigError, OutputError
from daskem.models.kmeans import KMeans
from daskem.outputs.locations import output_location
from daskem.outputs.model_files import load_model, save_model
from daskem.outputs.records import output_format
from daskem.outputs.staging import _host
from daskem.pipeline.config import PredictConfig
from daskem.pipeline.config_loading import parse_config, secret_values


@pytest.fixture
def fs(s3):
    return s3fs.S3FileSystem(**s3.storage_options(), skip_instance_cache=True)


@pytest.fixture
def prefix(s3, fs, request):
    """A fresh prefix of this test in the bucket: (URL, bucket path); removed afterwards."""
    name = f"prefix/{request.node.name.replace('[', '-').replace(']', '')}"
    yield s3.url(name), f"{s3.bucket}/{name}"
    fs.rm(f"{s3.bucket}/prefix", recursive=True) if fs.exists(f"{s3.bucket}/prefix") else None


def objects(fs, path: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(name[len(path) + 1:] for name in fs.find(path))


def record(fs, path: str) -> dict:
    fs.invalidate_cache()
    return json.loads(fs.cat_file(f"{path}/run.json"))


def write_output(s3, url: str, *, overwrite: bool = False, fail: bool = False):
    """Write a small daskem output (a model, one more object, run.json) to ``url`` through the location."""
    location = output_location(url, s3.storage_options(), overwrite=overwrite)
    model = KMeans(2, random_state=0).fit(np.arange(40.0).reshape(20, 2))
    with location as out:
        save_model(model, out.join("model"), storage_options=out.storage_options)
        if fail:
            raise RuntimeError("crash while writing")
        return location.commit({**output_format(), "complete": True, "command": "test"})


def test_a_prefix_is_marked_incomplete_while_written_and_complete_only_by_its_last_object(s3, fs, prefix):
    url, path = prefix
    location = output_location(url, s3.storage_options())
    with location as out:
        save_model(KMeans(2, random_state=0).fit(np.arange(40.0).reshape(20, 2)), out.join("model"),
                   storage_options=out.storage_options)
        marker = record(fs, path)
        assert marker["complete"] is False and marker["format"] == "daskem-output"
        with pytest.raises(OutputError) as refused:
            load_model(url, storage_options=s3.storage_options())
        message = str(refused.value)
        assert message.startswith(f"{url}: an incomplete daskem output") and "\n" not in message
        with pytest.raises(OutputError, match="incomplete daskem output"):
            load_model(f"{url}/model", storage_options=s3.storage_options())  # its model/ too
        location.commit({**output_format(), "complete": True})
    assert record(fs, path)["complete"] is True
    assert isinstance(load_model(url, storage_options=s3.storage_options()), KMeans)


def test_an_error_while_writing_removes_what_was_written(s3, fs, prefix):
    url, path = prefix
    with pytest.raises(RuntimeError, match="crash"):
        write_output(s3, url, fail=True)
    assert objects(fs, path) == []


def test_a_complete_output_is_replaced_only_with_overwrite_and_an_error_then_leaves_no_complete_output(
        s3, fs, prefix):
    url, path = prefix
    write_output(s3, url)
    with pytest.raises(OutputError, match="output already exists; set output.overwrite: true"):
        write_output(s3, url)
    assert record(fs, path)["complete"] is True
    write_output(s3, url, overwrite=True)
    assert record(fs, path)["complete"] is True and "model/model.json" in objects(fs, path)
    with pytest.raises(RuntimeError):
        write_output(s3, url, overwrite=True, fail=True)
    assert objects(fs, path) == []  # the old output was deleted once the marker said incomplete; no mixture left


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_prefix_with_objects_daskem_did_not_write_is_never_deleted(s3, fs, prefix, overwrite):
    url, path = prefix
    fs.pipe_file(f"{path}/notes.txt", b"mine")
    fs.pipe_file(f"{path}/data/part-0", b"mine too")
    with pytest.raises(OutputError) as refused:
        write_output(s3, url, overwrite=overwrite)
    message = str(refused.value)
    assert message.startswith(f"{url}: the prefix holds 2 object(s) daskem did not write (data/part-0, notes.txt)")
    assert objects(fs, path) == ["data/part-0", "notes.txt"]


def test_a_daskem_output_with_a_foreign_object_inside_is_not_replaced(s3, fs, prefix):
    url, path = prefix
    write_output(s3, url)
    fs.pipe_file(f"{path}/README", b"someone's")
    before = objects(fs, path)
    with pytest.raises(OutputError, match=r"holds 1 object\(s\) daskem did not write \(README\)"):
        write_output(s3, url, overwrite=True)
    assert objects(fs, path) == before


def dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_the_incomplete_output_of_a_dead_run_is_replaced_and_a_live_one_only_with_overwrite(s3, fs, prefix, caplog):
    url, path = prefix
    incomplete = {**output_format(), "complete": False, "started_at": "2026-01-01T00:00:00+00:00"}
    fs.pipe_file(f"{path}/run.json", json.dumps({**incomplete, "writer": f"{dead_pid()}@{_host()}"}).encode())
    fs.pipe_file(f"{path}/model/weights_.npy", b"half")
    with caplog.at_level("INFO", logger="daskem"):
        write_output(s3, url)
    assert any("replacing the incomplete output" in r.getMessage() for r in caplog.records)
    assert record(fs, path)["complete"] is True

    fs.pipe_file(f"{path}/run.json", json.dumps({**incomplete, "writer": f"1@{_host()}-elsewhere"}).encode())
    with pytest.raises(OutputError, match=r"an incomplete daskem output, being written by 1@.* if no run is writing "
                                          "it, set output.overwrite: true"):
        write_output(s3, url)
    write_output(s3, url, overwrite=True)
    assert record(fs, path)["complete"] is True


def test_a_bucket_root_and_a_prefix_inside_an_input_are_refused(s3):
    with pytest.raises(OutputError, match="is the root of a bucket"):
        output_location(f"s3://{s3.bucket}", s3.storage_options()).check()
    inputs = {"data.path": s3.url("blobs.zarr")}
    with pytest.raises(OutputError, match=r"output.path is inside the input data.path"):
        output_location(s3.url("blobs.zarr/out"), s3.storage_options(), inputs=inputs).check()
    with pytest.raises(OutputError, match=r"output.path contains the input data.path"):
        output_location(s3.url("a"), s3.storage_options(), inputs={"data.path": s3.url("a/b.zarr")}).check()


def bad_output(s3, case: str) -> tuple[str, dict, str, str]:
    """(output.path, its storage options, the start of the message, the fix) of a bad output."""
    good = s3.storage_options()
    return {
        "missing bucket": ("s3://no-such-bucket/results/run", good, "no such bucket", "create it first"),
        "wrong secret": (s3.url("results/bad"), {**good, "secret": "not-the-secret-" + s3.secret[:8]},
                         "access denied", "check the credentials in output.storage_options"),
        "unreachable endpoint": (s3.url("results/bad"), {**good, "endpoint_url": f"http://127.0.0.1:{closed_port()}"},
                                 "cannot connect", "check output.storage_options.endpoint_url"),
    }[case]


BAD = ["missing bucket", "wrong secret", "unreachable endpoint"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_output_store_is_one_output_error_with_the_url_and_the_fix(s3, fs, case):
    url, options, words, fix = bad_output(s3, case)
    before = objects(fs, s3.bucket)
    with pytest.raises(OutputError) as refused:
        output_location(url, options).check()
    message = str(refused.value)
    assert message.startswith(f"{url}: {words}") and fix in message and "\n" not in message
    assert s3.secret not in message and options["secret"] not in message
    assert objects(fs, s3.bucket) == before


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "in.zarr"
    make_data(str(path), n_samples=200, n_features=2, chunk_rows=100)
    return path


def test_the_cli_refuses_a_bad_output_store_in_one_line_exit_2_writing_nothing(tmp_path, in_process, s3, fs,
                                                                               small_store):
    url, options, words, fix = bad_output(s3, "wrong secret")  # the other cases raise the same OutputError
    output = {"path": url, "storage_options": {**s3.config_options(), "endpoint_url": options["endpoint_url"]}}
    config = {"data": {"path": str(small_store), "array": "X"}, "model": {"kind": "kmeans", "n_components": 2},
              "output": output}
    before = objects(fs, s3.bucket)
    done = in_process("run", write_config(tmp_path / "c.yaml", config),
                      env={**s3.env(tmp_path), SECRET_VARIABLE: options["secret"]}, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: {words}") and fix in lines[0], done.stderr
    assert options["secret"] not in done.stderr and s3.key not in done.stderr
    assert objects(fs, s3.bucket) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no checkpoint, nothing local


def test_output_storage_options_are_for_urls_and_a_process_memory_filesystem_is_refused(monkeypatch):
    base = {"data": {"path": "in.zarr"}, "model": {"kind": "kmeans"}}
    with pytest.raises(ConfigError, match="output: storage_options are for an fsspec URL path"):
        parse_config({**base, "output": {"path": "out", "storage_options": {"anon": True}}})
    with pytest.raises(ConfigError, match="a memory:// filesystem lives in one process"):
        parse_config({**base, "output": {"path": "memory://out"}})
    monkeypatch.setenv(KEY_VARIABLE, "AKIA-FROM-ENV")
    config = parse_config({"model_path": "s3://b/run", "model_storage_options": {"key": f"${{{KEY_VARIABLE}}}"},
                           "data": {"path": "in.zarr"}, "output": {"path": "s3://b/predicted"}}, model=PredictConfig)
    assert config.output.location == "s3://b/predicted" and "AKIA-FROM-ENV" in secret_values(config)
