"""Zarr input on a real S3 server (moto's, on 127.0.0.1): ``daskem run`` fits from ``s3://`` with
credentials from the environment, gives the model it gives on a local copy of the same store, reads
a sharded store one task per shard, and turns a bad bucket, key, credential or endpoint into one
line naming the URL and the fix, without printing the secret."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from conftest import write_config
from dask_processes import closed_port
from s3 import KEY_VARIABLE, SECRET_VARIABLE

from daskem.data.credentials import redacted
from daskem.data.stores import open_array
from daskem.data.synthetic import make_data
from daskem.errors import DataError
from daskem.outputs.model_files import load_model
from daskem.pipeline.cluster import tasks_per_pass

# Few passes over the data (seeding from sampled rows, a few iterations): each is a round of requests.
MODEL = {"kind": "gmm", "n_components": 3, "covariance_type": "full", "init": "random_from_data", "max_iter": 5,
         "random_state": 0}
CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False}


@pytest.fixture(scope="module")
def blobs(tmp_path_factory, s3):
    """A local sharded store (8 shards of 750 rows, 3 inner chunks each) and its byte-for-byte copy on
    the S3 server: (local path, s3:// URL)."""
    local = tmp_path_factory.mktemp("blobs") / "blobs.zarr"
    make_data(str(local), n_samples=6000, n_features=3, n_components=3, chunk_rows=250, shard_rows=750, seed=4)
    return local, s3.upload(local, "blobs.zarr")


def config(path: str, output: str, storage_options=None) -> dict:
    data = {"path": path, "array": "X", **({"storage_options": storage_options} if storage_options else {})}
    return {"data": data, "model": MODEL, "cluster": CLUSTER, "output": {"path": output, "report": False}}


@pytest.mark.cluster
def test_run_on_a_sharded_s3_store_gives_the_local_model_and_reads_one_task_per_shard(tmp_path, run_cli, s3, blobs):
    local, url = blobs
    here = run_cli("run", write_config(tmp_path / "local.yaml", config(str(local), "local")))
    assert here.returncode == 0, here.stderr
    there = run_cli("run", write_config(tmp_path / "s3.yaml", config(url, "s3", s3.config_options())),
                    env=s3.env(tmp_path))
    assert there.returncode == 0, there.stderr
    assert s3.secret not in there.stderr + there.stdout
    assert "dashboard:" not in there.stderr  # cluster.dashboard: false, so none is served nor logged

    record = (tmp_path / "s3" / "run.json").read_text()
    assert s3.secret not in record and s3.key not in record
    summary = json.loads(record)
    assert summary["data"]["path"] == url and summary["data"]["store_chunks"] == [750, 3]
    assert summary["slabs"] == {"rows": 750, "count": 8}  # 4 slabs per worker thread: one shard each
    _, X = open_array(url, array="X", storage_options=s3.storage_options(), chunk_rows=750)
    assert summary["tasks_per_pass"] == tasks_per_pass(X) < 8 * 3  # fewer than the store's inner chunks
    assert summary["config"]["data"]["storage_options"] == {"endpoint_url": s3.endpoint_url, "key": "***",
                                                             "secret": "***"}
    a, b = load_model(tmp_path / "local"), load_model(tmp_path / "s3")
    assert a.n_iter_ == b.n_iter_ and a.lower_bound_ == b.lower_bound_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    labels = [zarr.open_array(str(tmp_path / d / "predictions.zarr"), path="labels")[:] for d in ("local", "s3")]
    np.testing.assert_array_equal(*labels)


def test_the_tasks_of_a_pass_over_a_sharded_store_on_s3_do_not_depend_on_its_inner_chunks(tmp_path_factory, s3):
    counts = {}
    for chunk_rows in (250, 50):  # 4 or 20 inner chunks per shard
        local = tmp_path_factory.mktemp("inner") / "sharded.zarr"
        make_data(str(local), n_samples=8000, n_features=3, chunk_rows=chunk_rows, shard_rows=1000, seed=1)
        url = s3.upload(local, f"inner{chunk_rows}.zarr")
        source, X = open_array(url, array="X", storage_options=s3.storage_options(), slab_bytes=1000 * 3 * 8)
        assert source.store_chunks == (1000, 3) and X.chunks[0] == (1000,) * 8
        counts[chunk_rows] = tasks_per_pass(X)
    assert counts[250] == counts[50] < 8 * 4


def bad_input(s3, url: str, case: str) -> tuple[str, dict, str]:
    """(data.path, data.storage_options with the credentials, the start of the message) of a bad input."""
    good = s3.storage_options()
    return {
        "wrong bucket": (url.replace(s3.bucket, "no-such-bucket"), good, "no such bucket"),
        "wrong key": (url, {**good, "key": "AKIAWRONGKEY00000000"}, "access denied"),
        "wrong secret": (url, {**good, "secret": "not-the-secret-" + s3.secret[:8]}, "access denied"),
        "no credentials": (url, {"endpoint_url": s3.endpoint_url}, "no credentials found"),
        "unreachable endpoint": (url, {**good, "endpoint_url": f"http://127.0.0.1:{closed_port()}"}, "cannot connect"),
    }[case]


CASES = ["wrong bucket", "wrong key", "wrong secret", "no credentials", "unreachable endpoint"]


@pytest.mark.parametrize("case", CASES)
def test_bad_object_store_input_is_a_data_error_with_the_url_and_the_fix(tmp_path, monkeypatch, s3, blobs, case):
    for name, value in s3.env(tmp_path).items():  # no credentials but those given, none looked up off this machine
        if name not in (KEY_VARIABLE, SECRET_VARIABLE):
            monkeypatch.setenv(name, value)
    path, options, words = bad_input(s3, blobs[1], case)
    with pytest.raises(DataError) as raised:
        open_array(path, array="X", storage_options=options)
    message = str(raised.value)
    assert message.startswith(f"{path}: {words}") and "\n" not in message
    assert "data.storage_options" in message or "data.path" in message
    assert s3.secret not in message and options.get("secret", s3.secret) not in message


@pytest.mark.parametrize("case", ["wrong secret", "unreachable endpoint"])
def test_the_cli_prints_a_bad_object_store_as_one_line_and_exits_2(tmp_path, in_process, s3, blobs, case):
    path, options, words = bad_input(s3, blobs[1], case)
    env = {**s3.env(tmp_path), SECRET_VARIABLE: options["secret"]}
    storage_options = {**s3.config_options(), "endpoint_url": options["endpoint_url"]}
    done = in_process("run", write_config(tmp_path / "c.yaml", config(path, "out", storage_options)), env=env,
                      cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {words}"), done.stderr
    assert options["secret"] not in done.stderr + done.stdout and s3.secret not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()


def test_a_credential_variable_that_is_not_set_names_the_key_and_the_variable(tmp_path, in_process, s3, blobs):
    env = {name: value for name, value in s3.env(tmp_path).items() if name != SECRET_VARIABLE}
    done = in_process("run", write_config(tmp_path / "c.yaml", config(blobs[1], "out", s3.config_options())),
                      env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert f"data.storage_options.secret: environment variable {SECRET_VARIABLE} is not set" in done.stderr


def test_every_credential_of_the_storage_options_is_hidden_in_records_nested_ones_too():
    options = {"endpoint_url": "http://127.0.0.1:9000", "anon": False, "key": "AKIA1", "secret": "s3cr3t",
               "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "t0k3n"},
               "account_name": "acct", "account_key": "k3y", "sas_token": "sas", "password": "pw"}
    assert redacted(options) == {
        "endpoint_url": "http://127.0.0.1:9000", "anon": False, "key": "***", "secret": "***",
        "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "***"},
        "account_name": "acct", "account_key": "***", "sas_token": "***", "password": "***"}
