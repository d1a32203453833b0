"""A store's stamps: the digest ``check_chunks`` returns changes when a chunk is rewritten in place, and
only then, on local files, over HTTP and on S3; a run's checkpoint keeps it, so a resume on a store
rewritten under the same path, shape and dtype is refused instead of mixing two datasets."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import zarr
from conftest import cli_env, write_config

from daskem.data.stores import check_chunks
from daskem.data.synthetic import make_data
from daskem.engine.checkpoint import Checkpoint, CheckpointMismatch, differences
from daskem.pipeline.config import DataConfig


def data(path, **more) -> DataConfig:
    return DataConfig(path=str(path), array="X", **more)


def chunk_file(store, index: int, array: str = "X"):
    node = zarr.open_group(str(store), mode="r")[array]
    return store.joinpath(node.path, *node.metadata.encode_chunk_key((index, 0)).split("/"))


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "d.zarr"
    make_data(str(path), n_samples=400, n_features=3, chunk_rows=50, seed=1)
    return path


def rewrite_rows(store, rows: slice, seed: int = 7, **storage_options) -> None:
    """Write other values into ``rows`` of the store's array, as a user's script would, in place."""
    options = {"storage_options": storage_options} if storage_options else {}
    array = zarr.open_group(str(store), mode="r+", **options)["X"]
    array[rows] = np.random.default_rng(seed).normal(size=(rows.stop - rows.start, array.shape[1]))


def test_the_digest_is_stable_and_changes_when_any_chunk_is_rewritten(store):
    first = check_chunks(data(store))
    assert check_chunks(data(store)) == first  # listing again changes nothing
    zarr.open_group(str(store), mode="r+")["X"].attrs["note"] = "an edit of the attributes changes no row"
    assert check_chunks(data(store)) == first
    rewrite_rows(store, slice(300, 350))  # one chunk of eight, neither first nor last
    assert check_chunks(data(store)) != first


def test_a_chunk_rewritten_with_the_same_size_changes_the_digest_by_its_time(store):
    first = check_chunks(data(store))
    chunk = chunk_file(store, 3)
    stat = chunk.stat()
    chunk.write_bytes(bytes(reversed(chunk.read_bytes())))  # same size, other bytes
    os.utime(chunk, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert check_chunks(data(store)) != first


def test_the_weights_array_counts_too(tmp_path):
    path = tmp_path / "w.zarr"
    make_data(str(path), n_samples=200, n_features=2, chunk_rows=50, seed=2)
    group = zarr.open_group(str(path), mode="r+")
    weights = group.create_array("w", shape=(200,), chunks=(50,), dtype="f8")
    weights[:] = 1.0
    first = check_chunks(data(path, weights="w"))
    assert check_chunks(data(path)) != first  # the rows alone are another identity
    weights[100:150] = 2.0
    assert check_chunks(data(path, weights="w")) != first


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """``tmp_path`` over HTTP on 127.0.0.1: index pages that list names only, and each file's
    Last-Modified (to the second) in its HEAD."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_over_http_a_sample_of_chunks_is_asked_for_its_stamps(store, served):
    first = check_chunks(data(f"{served}/d.zarr"))
    assert check_chunks(data(f"{served}/d.zarr")) == first
    last = chunk_file(store, 7)  # the last chunk is always among those asked
    later = last.stat().st_mtime + 5
    os.utime(last, (later, later))
    assert check_chunks(data(f"{served}/d.zarr")) != first


def test_on_s3_a_rewritten_object_changes_the_digest(tmp_path, s3):
    local = tmp_path / "d.zarr"
    make_data(str(local), n_samples=400, n_features=3, chunk_rows=50, seed=1)
    url = s3.upload(local, "stamps.zarr")
    config = data(url, storage_options=s3.storage_options())
    first = check_chunks(config)
    assert check_chunks(config) == first
    rewrite_rows(url, slice(100, 150), **s3.storage_options())
    assert check_chunks(config) != first


# ----------------------------------------------------------------------------- the checkpoint
def test_an_entry_an_earlier_checkpoint_lacks_is_no_difference(tmp_path):
    path = str(tmp_path / "c.npz")
    Checkpoint(path, {"data": {"path": "d.zarr", "shape": [4, 2]}}).save("stage", {"iteration": 3})
    grown = {"data": {"path": "d.zarr", "shape": [4, 2], "path_sha256": "ab"}, "store_contents": "cd"}
    assert Checkpoint(path, grown).load("stage") == {"iteration": 3}
    with pytest.raises(CheckpointMismatch, match=r"different data\.shape\).*--restart"):
        Checkpoint(path, {"data": {"path": "d.zarr", "shape": [5, 2]}})
    assert differences({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "d": 4, "e": 6}) == ["a.c", "d"]


def run_config(store, output):
    return {"data": {"path": str(store), "array": "X"},
            "model": {"kind": "gmm", "n_components": 3, "max_iter": 8, "tol": 0, "random_state": 0},
            "cluster": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "dashboard": False},
            "output": {"path": str(output), "report": False}}


@pytest.mark.cluster
def test_a_run_on_a_store_rewritten_since_its_checkpoint_is_refused_and_restart_starts_afresh(tmp_path, store):
    from test_checkpoint import kill_when

    output = tmp_path / "out"
    config = write_config(tmp_path / "run.yaml", run_config(store, output))
    kill_when(config, tmp_path, "gmm iteration 2:")
    checkpoint = tmp_path / "out.checkpoint.npz"
    assert checkpoint.is_file()
    rewrite_rows(store, slice(0, 400))  # same path, shape, dtype and chunks: other rows

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "daskem", "run", str(config), "--no-progress", *flags],
                              cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240)

    refused = run()
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr
    assert "different store_contents" in errors[0] and "--restart" in errors[0]
    assert checkpoint.is_file() and not output.exists()
    restarted = run("--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "resuming" not in restarted.stderr and not checkpoint.exists()
