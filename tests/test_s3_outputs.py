"""Outputs in an object store (moto's S3 server on 127.0.0.1), through the real CLI: ``daskem run``
from ``s3://`` to ``s3://`` writes what a run on local disk writes, bit for bit; ``load_model`` and
``daskem predict`` read the model from the bucket; a run killed while writing its outputs leaves a
prefix that no reader accepts, and the same command run again resumes from the checkpoint kept in
the bucket and completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import s3fs
import zarr
from conftest import cli_env, write_config
from s3 import KEY_VARIABLE, SECRET_VARIABLE

from daskem.data.synthetic import make_data
from daskem.errors import OutputError
from daskem.outputs.model_files import load_model

pytestmark = pytest.mark.cluster

MODEL = {"kind": "gmm", "n_components": 3, "covariance_type": "full", "init": "random_from_data", "max_iter": 4,
         "random_state": 0}
CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False}
PER_ROW = {"responsibilities": True, "log_density": True}
ARRAYS = ("labels", "responsibilities", "log_density")
PREFIX = "s3out"


def config(s3, data: str, output: str) -> dict:
    remote = "://" in data
    return {"data": {"path": data, "array": "X", "chunk_rows": 250, **({"storage_options": s3.config_options()}
                                                                      if remote else {})},
            "model": MODEL, "cluster": CLUSTER,
            "output": {"path": output, **PER_ROW, **({"storage_options": s3.config_options()} if remote else {})}}


def cli(*args, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskem", *map(str, args), "--no-progress"], cwd=cwd,
                          env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fs(s3):
    return s3fs.S3FileSystem(**s3.storage_options(), skip_instance_cache=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, s3, fs):
    """One run on local disk and the same run from s3:// to s3://: a dict of their places."""
    folder = tmp_path_factory.mktemp("s3out")
    store = folder / "blobs.zarr"
    make_data(str(store), n_samples=6000, n_features=3, n_components=3, chunk_rows=250, seed=2)
    url = s3.upload(store, f"{PREFIX}/blobs.zarr")
    places = {"folder": folder, "store": store, "url": url, "local": folder / "local",
              "s3": s3.url(f"{PREFIX}/results/run")}
    for name, data in (("local", str(store)), ("s3", url)):
        done = cli("run", write_config(folder / f"{name}.yaml", config(s3, data, str(places[name]))), cwd=folder,
                   env=s3.env(folder))
        assert done.returncode == 0, done.stderr
        places[f"{name}_stderr"] = done.stderr
    yield places
    fs.rm(f"{s3.bucket}/{PREFIX}", recursive=True)


def bucket_path(url: str) -> str:
    return url.removeprefix("s3://")


def listing(fs, url: str) -> list[str]:
    fs.invalidate_cache()
    root = bucket_path(url)
    return sorted(name[len(root) + 1:] for name in fs.find(root))


def predictions(url: str, options=None) -> dict[str, np.ndarray]:
    group = zarr.open_group(url, mode="r", **({"storage_options": options} if options else {}))
    return {name: group[name][:] for name in group.array_keys()}


def test_a_run_from_s3_to_s3_writes_what_a_local_run_writes_bit_for_bit(s3, fs, runs):
    local, remote = runs["local"], runs["s3"]
    names = listing(fs, remote)
    local_model = sorted(str(p.relative_to(local)) for p in (local / "model").rglob("*") if p.is_file())
    assert [n for n in names if n.startswith("model/")] == local_model
    for name in local_model:
        if name.endswith(".npy"):  # model.json differs only in naming its data
            assert fs.cat_file(f"{bucket_path(remote)}/{name}") == (local / name).read_bytes(), name
    there = predictions(f"{remote}/predictions.zarr", s3.storage_options())
    here = predictions(str(local / "predictions.zarr"))
    assert sorted(there) == sorted(ARRAYS) == sorted(here)
    for name in ARRAYS:
        np.testing.assert_array_equal(there[name], here[name])
        assert there[name].dtype == here[name].dtype

    text = fs.cat_file(f"{bucket_path(remote)}/run.json").decode()
    assert s3.secret not in text and s3.key not in text
    record = json.loads(text)
    assert record["complete"] is True and record["format"] == "daskem-output"
    assert record["config"]["output"]["path"] == remote
    assert record["config"]["output"]["storage_options"] == {"endpoint_url": s3.endpoint_url, "key": "***",
                                                              "secret": "***"}
    assert not fs.exists(f"{bucket_path(remote)}.checkpoint.npz")  # removed once the outputs are complete
    assert s3.secret not in runs["s3_stderr"] and "Unclosed" not in runs["s3_stderr"]


def test_load_model_reads_a_run_s_model_from_s3(s3, runs):
    here = load_model(runs["local"])
    for url in (runs["s3"], f"{runs['s3']}/model"):
        there = load_model(url, storage_options=s3.storage_options())
        assert there.n_iter_ == here.n_iter_ and there.lower_bound_ == here.lower_bound_
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            np.testing.assert_array_equal(getattr(there, name), getattr(here, name))


def remote_options(flag: str, s3) -> list[str]:
    """``flag KEY=VALUE`` pairs that reach the server, the credentials as ${VAR} expanded by daskem."""
    pairs = [f"endpoint_url={s3.endpoint_url}", f"key=${{{KEY_VARIABLE}}}", f"secret=${{{SECRET_VARIABLE}}}"]
    return [part for pair in pairs for part in (flag, pair)]


def test_predict_applies_a_model_in_s3_to_s3_data_and_writes_the_predictions_to_s3(s3, fs, runs, tmp_path):
    out = s3.url(f"{PREFIX}/predicted")
    done = cli("predict", runs["s3"], runs["url"], "-o", out, "--array", "X", "--chunk-rows", "250",
               "--responsibilities", "--log-density", "--n-workers", "2", "--memory-limit", "1GiB",
               *remote_options("--model-storage-option", s3), *remote_options("--storage-option", s3),
               *remote_options("--output-storage-option", s3), cwd=tmp_path, env=s3.env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == out and s3.secret not in done.stderr
    there = predictions(f"{out}/predictions.zarr", s3.storage_options())
    here = predictions(str(runs["local"] / "predictions.zarr"))
    for name in ARRAYS:
        np.testing.assert_array_equal(there[name], here[name])
    text = fs.cat_file(f"{bucket_path(out)}/run.json").decode()
    record = json.loads(text)
    assert record["complete"] is True and record["model_path"] == runs["s3"] and s3.secret not in text
    assert record["config"]["model_storage_options"]["secret"] == "***"
    assert list(tmp_path.iterdir()) == []  # nothing local


def test_a_run_killed_while_writing_its_outputs_leaves_nothing_readers_accept_and_the_rerun_completes_it(
        s3, fs, runs, tmp_path):
    out = s3.url(f"{PREFIX}/results/killed")
    path = write_config(tmp_path / "run.yaml", config(s3, runs["url"], out))
    process = subprocess.Popen([sys.executable, "-m", "daskem", "run", str(path), "--no-progress"], cwd=tmp_path,
                               env=cli_env(**s3.env(tmp_path)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any("/c/" in name for name in listing(fs, f"{out}/predictions.zarr")):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before writing predictions"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its embedded cluster, while the workers write
        process.wait()
    record = json.loads(fs.cat_file(f"{bucket_path(out)}/run.json"))
    assert record["complete"] is False and record["writer"].startswith(f"{process.pid}@")
    assert fs.exists(f"{bucket_path(out)}.checkpoint.npz")

    for url in (out, f"{out}/model"):
        with pytest.raises(OutputError) as refused:
            load_model(url, storage_options=s3.storage_options())
        assert str(refused.value).startswith(f"{url}: an incomplete daskem output") and "\n" not in str(refused.value)
    predicted = s3.url(f"{PREFIX}/from-killed")
    done = cli("predict", out, runs["url"], "-o", predicted, "--array", "X",
               *remote_options("--model-storage-option", s3), *remote_options("--storage-option", s3),
               *remote_options("--output-storage-option", s3), cwd=tmp_path, env=s3.env(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: an incomplete daskem output"), done.stderr
    assert listing(fs, predicted) == []

    done = cli("run", path, cwd=tmp_path, env=s3.env(tmp_path))  # the same command again
    assert done.returncode == 0, done.stderr
    assert "resuming from checkpoint" in done.stderr and "replacing the incomplete output" in done.stderr
    resumed, reference = (load_model(url, storage_options=s3.storage_options()) for url in (out, runs["s3"]))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name))
    for name, values in predictions(f"{out}/predictions.zarr", s3.storage_options()).items():
        np.testing.assert_array_equal(values, predictions(f"{runs['s3']}/predictions.zarr", s3.storage_options())[name])
    assert not fs.exists(f"{bucket_path(out)}.checkpoint.npz")
