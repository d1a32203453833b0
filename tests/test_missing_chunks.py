"""Missing data is never read as zeros, and corrupt data never gives an anonymous traceback.

Zarr reads a chunk missing from the store as the fill value: daskem refuses such a store before
fitting or predicting (unless ``data.allow_missing_chunks``), and a chunk whose bytes cannot be
decoded fails the task that reads it with one line naming the chunk and its rows.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import zarr
from conftest import write_config

from daskem.data.stores import check_chunks, open_array
from daskem.errors import DataError
from daskem.models.kmeans import KMeans
from daskem.outputs.model_files import save_model
from daskem.pipeline.config import DataConfig

ROWS, FEATURES, CHUNK = 1000, 3, 100


def make_store(path, *, zarr_format=3, chunks=(CHUNK, FEATURES), shards=None, name="X"):
    """A store of random rows in a group (or at the root when ``name`` is None); returns the zarr array."""
    data = np.random.default_rng(0).normal(size=(ROWS, FEATURES))
    if name is None:
        array = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards,
                                  zarr_format=zarr_format)
    else:
        group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
        array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards)
    array[...] = data
    return array


def chunk_file(store, array, index):
    """The file that holds the stored chunk (or shard) ``index`` of ``array`` in the local ``store``."""
    return store.joinpath(array.path, *array.metadata.encode_chunk_key(index).split("/"))


def corrupt(path):
    path.write_bytes(b"\x07" * path.stat().st_size)


LAYOUTS = {
    "v3": dict(zarr_format=3),
    "v2": dict(zarr_format=2),
    "v3-sharded": dict(zarr_format=3, chunks=(50, FEATURES), shards=(CHUNK, FEATURES)),
    "v3-root-array": dict(zarr_format=3, name=None),
    "v2-column-chunks": dict(zarr_format=2, chunks=(CHUNK, 1)),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_a_deleted_chunk_is_named_with_its_rows(tmp_path, layout):
    store = tmp_path / "s.zarr"
    array = make_store(store, **layout)
    name = layout.get("name", "X")
    config = DataConfig(path=str(store), array=name)
    check_chunks(config)  # complete: nothing to say
    chunk_file(store, array, (4, 0)).unlink()
    key = array.metadata.encode_chunk_key((4, 0))
    kind = "shard" if layout.get("shards") else "chunk"
    with pytest.raises(DataError, match=rf"{kind} {key} \(index \(4, 0\), rows 400-499\) is missing from the store"
                                        r".*set data.allow_missing_chunks: true"):
        check_chunks(config)


def test_the_last_partial_chunk_names_its_rows_and_the_first_missing_is_named_with_a_count(tmp_path):
    store = tmp_path / "s.zarr"
    array = make_store(store, chunks=(300, FEATURES))
    config = DataConfig(path=str(store), array="X")
    chunk_file(store, array, (3, 0)).unlink()
    with pytest.raises(DataError, match=r"chunk c/3/0 \(index \(3, 0\), rows 900-999\) is missing"):
        check_chunks(config)
    chunk_file(store, array, (1, 0)).unlink()
    with pytest.raises(DataError, match=r"chunk c/1/0 \(index \(1, 0\), rows 300-599\) \(and 1 more\) is missing"):
        check_chunks(config)


def test_a_file_url_store_is_listed_through_fsspec(tmp_path):
    store = tmp_path / "s.zarr"
    array = make_store(store)
    chunk_file(store, array, (9, 0)).unlink()
    with pytest.raises(DataError, match=r"chunk c/9/0 \(index \(9, 0\), rows 900-999\) is missing"):
        check_chunks(DataConfig(path=f"file://{store}", array="X", storage_options={"auto_mkdir": False}))


def test_allowed_gaps_are_read_as_the_fill_value_with_a_warning(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    array = make_store(store)
    chunk_file(store, array, (2, 0)).unlink()
    with caplog.at_level(logging.WARNING, logger="daskem"):
        check_chunks(DataConfig(path=str(store), array="X", allow_missing_chunks=True))
    assert "data.allow_missing_chunks: 1 chunk(s) missing" in caplog.text and "rows 200-299" in caplog.text
    _, x = open_array(str(store), array="X")
    values = x.compute()
    assert not values[200:300].any() and values[300:].all()


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_a_corrupt_chunk_fails_its_task_with_the_chunk_and_its_rows(tmp_path, layout):
    store = tmp_path / "s.zarr"
    array = make_store(store, **layout)
    corrupt(chunk_file(store, array, (6, 0)))
    key = array.metadata.encode_chunk_key((6, 0))
    _, x = open_array(str(store), array=layout.get("name", "X"))  # slabs of several chunks
    assert x.numblocks[0] < ROWS // CHUNK
    with pytest.raises(DataError, match=rf"{key} \(index \(6, 0\), rows 600-699\) cannot be read or decoded "
                                        r"\(\w+: .*\); it is corrupt: rewrite it"):
        x.sum().compute()
    _, by_chunk = open_array(str(store), array=layout.get("name", "X"), slab_bytes=1)  # a task per chunk
    np.testing.assert_array_equal(by_chunk[:600].compute(), array[:600])  # the other chunks still read


# ----------------------------------------------------------------------------- the command line


def assert_one_error_line(done, *parts):
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert all(part in lines[-1] for part in parts), lines[-1]


def snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def run_config(tmp_path, store, **data):
    return write_config(tmp_path / "c.yaml", {
        "data": {"path": str(store), "array": "X", **data},
        "model": {"kind": "kmeans", "n_components": 3, "max_iter": 5, "random_state": 0},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB", "dashboard": False},
        "output": {"path": str(tmp_path / "out"), "report": False},
    })


def test_run_validate_and_predict_refuse_a_missing_chunk_before_a_cluster(tmp_path, in_process):
    store = tmp_path / "s.zarr"
    array = make_store(store)
    save_model(KMeans(3, random_state=0).fit(array[:]), tmp_path / "model")
    chunk_file(store, array, (5, 0)).unlink()
    config = run_config(tmp_path, store)
    before = snapshot(tmp_path)
    for args in (["run", config], ["validate", config], ["predict", tmp_path / "model", store, "--array", "X",
                                                          "-o", tmp_path / "out"]):
        done = in_process(*args, cwd=tmp_path)
        assert_one_error_line(done, "s.zarr, array 'X': chunk c/5/0 (index (5, 0), rows 500-599) is missing",
                              "data.allow_missing_chunks: true")
        assert "cluster:" not in done.stderr
        assert snapshot(tmp_path) == before
    done = in_process("validate", config, "--set", "data.allow_missing_chunks=true", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("ok: ") and "1 chunk(s) missing" in done.stderr


@pytest.mark.cluster
def test_run_on_a_corrupt_chunk_exits_2_naming_it_and_writes_nothing(tmp_path, run_cli):
    store = tmp_path / "s.zarr"
    array = make_store(store)
    corrupt(chunk_file(store, array, (3, 0)))
    config = run_config(tmp_path, store)
    before = snapshot(tmp_path)
    done = run_cli("run", config, "--no-progress")
    assert_one_error_line(done, "s.zarr, array 'X': chunk c/3/0 (index (3, 0), rows 300-399) cannot be read",
                          "it is corrupt")
    assert snapshot(tmp_path) == before  # no output, no staging directory


@pytest.mark.cluster
def test_predict_on_a_corrupt_chunk_stops_its_writes_and_leaves_nothing(tmp_path, run_cli):
    store = tmp_path / "s.zarr"
    array = make_store(store, chunks=(20, FEATURES))  # 50 slabs written while one fails
    save_model(KMeans(3, random_state=0).fit(array[:]), tmp_path / "model")
    corrupt(chunk_file(store, array, (31, 0)))
    before = snapshot(tmp_path)
    done = run_cli("predict", tmp_path / "model", store, "--array", "X", "-o", tmp_path / "pred", "--chunk-rows", 20,
                   "--n-workers", 2, "--memory-limit", "1GiB", "--no-progress")
    assert_one_error_line(done, "chunk c/31/0 (index (31, 0), rows 620-639) cannot be read")
    assert snapshot(tmp_path) == before
    assert json.loads((tmp_path / "model" / "model.json").read_text())["estimator"] == "KMeans"
