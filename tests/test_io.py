"""Opening Zarr stores (v2/v3, group/root, sharded, file:// URLs) and writing synthetic ones."""

from __future__ import annotations

import json
import logging

import dask.array as da
import numpy as np
import pytest
import zarr

from daskem.data.stores import open_array, open_data
from daskem.data.synthetic import load_truth, make_data, make_mixture, sample_block
from daskem.errors import DataError
from daskem.pipeline.config import DataConfig


def write(path, data, *, name="X", zarr_format=3, chunks=None, shards=None):
    """A store holding ``data`` in a group under ``name`` (None: at the root)."""
    chunks = chunks or data.shape
    kwargs = dict(shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards)
    if name is None:
        target = zarr.create_array(str(path), zarr_format=zarr_format, **kwargs)
    else:
        target = zarr.open_group(str(path), mode="w", zarr_format=zarr_format).create_array(name, **kwargs)
    target[...] = data
    return path


@pytest.fixture
def rows():
    return np.random.default_rng(0).normal(size=(1000, 3))

# A target slab size smaller than any chunk: one task per stored chunk (or shard), as stored.
ONE_CHUNK = 1


def test_small_chunks_are_grouped_into_slabs_of_the_target_size(tmp_path, rows):
    write(tmp_path / "s.zarr", rows, chunks=(100, 3))
    source, x = open_array(str(tmp_path / "s.zarr"), array="X", slab_bytes=300 * 3 * 8)
    assert x.chunks[0] == (300, 300, 300, 100) and source.store_chunks == (100, 3)
    np.testing.assert_array_equal(x.compute(), rows)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("name", ["X", None, "nested/deep/X"], ids=["group", "root", "nested"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_store_opens_as_row_chunked_dask_array(tmp_path, rows, zarr_format, name, dtype):
    data = rows.astype(dtype)
    path = write(tmp_path / "s.zarr", data, name=name, zarr_format=zarr_format, chunks=(300, 3))
    source, x = open_array(str(path), array=name, slab_bytes=ONE_CHUNK)
    assert isinstance(x, da.Array) and x.dtype == np.dtype(dtype)
    assert x.chunks == ((300, 300, 300, 100), (3,))
    described = (source.shape, source.dtype, source.zarr_format, source.store_chunks)
    assert described == ((1000, 3), dtype, zarr_format, (300, 3))
    np.testing.assert_array_equal(x.compute(), data)


def test_file_url_opens(tmp_path, rows):
    write(tmp_path / "s.zarr", rows, chunks=(250, 3))
    source, x = open_array(f"file://{tmp_path}/s.zarr", array="X", slab_bytes=ONE_CHUNK)
    assert source.path.startswith("file://") and x.numblocks == (4, 1)
    np.testing.assert_array_equal(x.compute(), rows)


def test_storage_options_turn_a_local_path_into_fsspec(tmp_path, rows):
    write(tmp_path / "s.zarr", rows)
    config = DataConfig(path=str(tmp_path / "s.zarr"), array="X", storage_options={"auto_mkdir": False})
    _, x = open_data(config)
    np.testing.assert_array_equal(x.compute(), rows)


def test_sharded_store_is_read_by_whole_shards(tmp_path, rows):
    write(tmp_path / "s.zarr", rows, chunks=(50, 3), shards=(500, 3))
    source, x = open_array(str(tmp_path / "s.zarr"), array="X", slab_bytes=ONE_CHUNK)
    assert x.chunks[0] == (500, 500) and source.store_chunks == (500, 3)


def test_column_chunks_are_merged_into_whole_rows(tmp_path, rows):
    write(tmp_path / "s.zarr", rows, chunks=(200, 1))
    _, x = open_array(str(tmp_path / "s.zarr"), array="X", slab_bytes=ONE_CHUNK)
    assert x.chunks == ((200,) * 5, (3,))


def test_chunk_rows_overrides_the_store(tmp_path, rows, caplog):
    write(tmp_path / "s.zarr", rows, chunks=(100, 3))
    source, x = open_array(str(tmp_path / "s.zarr"), array="X", chunk_rows=400)
    assert x.chunks[0] == (400, 400, 200) and source.row_chunks == (400, 400, 200)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="daskem"):
        open_array(str(tmp_path / "s.zarr"), array="X", chunk_rows=150)
    assert "not a multiple of the store's 100-row chunks" in caplog.text


def test_integers_are_read_as_float64(tmp_path):
    data = np.arange(20, dtype="int16").reshape(10, 2)
    write(tmp_path / "s.zarr", data)
    source, x = open_array(str(tmp_path / "s.zarr"), array="X")
    assert source.dtype == "int16" and x.dtype == np.float64
    np.testing.assert_array_equal(x.compute(), data)


def test_source_json_is_small(tmp_path, rows):
    write(tmp_path / "s.zarr", rows, chunks=(10, 3))
    source, _ = open_array(str(tmp_path / "s.zarr"), array="X", slab_bytes=ONE_CHUNK)
    described = source.to_json()
    assert described["n_chunks"] == 100 and described["row_chunks"] == [10]
    json.dumps(described)


# ----------------------------------------------------------------------------- errors


def test_missing_store(tmp_path):
    with pytest.raises(DataError, match="nope.zarr: no such file or directory; check data.path"):
        open_array(str(tmp_path / "nope.zarr"))


def test_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="plain: not a Zarr store"):
        open_array(str(tmp_path / "plain"))


def test_group_without_array_lists_the_arrays(tmp_path, rows):
    write(tmp_path / "s.zarr", rows)
    zarr.open_group(str(tmp_path / "s.zarr"), mode="a").create_array("sub/Y", shape=(3,), dtype="f8")
    with pytest.raises(DataError, match="the store is a group; set data.array to one of its arrays: X, sub/Y"):
        open_array(str(tmp_path / "s.zarr"))


def test_missing_array_lists_the_arrays(tmp_path, rows):
    write(tmp_path / "s.zarr", rows)
    with pytest.raises(DataError, match="no array 'Y' in the store; arrays present: X"):
        open_array(str(tmp_path / "s.zarr"), array="Y")


def test_array_name_for_a_root_array_is_refused(tmp_path, rows):
    write(tmp_path / "s.zarr", rows, name=None)
    with pytest.raises(DataError, match="the store is an array, not a group; remove data.array"):
        open_array(str(tmp_path / "s.zarr"), array="X")


@pytest.mark.parametrize("shape", [(10,), (4, 5, 2)])
def test_array_must_be_2d(tmp_path, shape):
    write(tmp_path / "s.zarr", np.zeros(shape))
    with pytest.raises(DataError, match=f"the array has {len(shape)} dimension"):
        open_array(str(tmp_path / "s.zarr"), array="X")


@pytest.mark.parametrize(("dtype", "zarr_format"), [("complex128", 3), ("U4", 2)])
def test_array_must_be_real_numbers(tmp_path, dtype, zarr_format):
    write(tmp_path / "s.zarr", np.zeros((4, 2), dtype=dtype), zarr_format=zarr_format)
    with pytest.raises(DataError, match="dtype .* is not numeric"):
        open_array(str(tmp_path / "s.zarr"), array="X")


def test_empty_array_is_refused(tmp_path):
    write(tmp_path / "s.zarr", np.zeros((0, 2)), chunks=(1, 2))
    with pytest.raises(DataError, match="the array is empty"):
        open_array(str(tmp_path / "s.zarr"), array="X")


# ----------------------------------------------------------------------------- make-data


def test_make_data_writes_store_and_truth(tmp_path):
    path = str(tmp_path / "blobs.zarr")
    summary = make_data(path, n_samples=5000, n_features=3, n_components=4, chunk_rows=500, shard_rows=1000,
                        dtype="float32", seed=3)
    array = zarr.open_array(path, path="X", mode="r")
    assert (array.shape, array.dtype, array.chunks, array.shards) == ((5000, 3), np.float32, (500, 3), (1000, 3))
    truth = load_truth(path)
    assert truth.means.shape == (4, 3) and truth.covariances.shape == (4, 3, 3)
    assert np.isclose(truth.weights.sum(), 1.0)
    document = json.loads((tmp_path / "blobs.zarr.truth" / "truth.json").read_text())
    assert document["means"] == truth.means.tolist() and summary["shard_rows"] == 1000


def test_make_data_is_reproducible_and_follows_the_mixture(tmp_path):
    first = make_data(str(tmp_path / "a.zarr"), n_samples=20000, n_features=2, n_components=2, chunk_rows=3000, seed=1)
    make_data(str(tmp_path / "b.zarr"), n_samples=20000, n_features=2, n_components=2, chunk_rows=3000, seed=1)
    a = zarr.open_array(str(tmp_path / "a.zarr"), path="X")[:]
    np.testing.assert_array_equal(a, zarr.open_array(str(tmp_path / "b.zarr"), path="X")[:])
    truth = load_truth(first["path"])
    assert np.allclose(a.mean(axis=0), truth.weights @ truth.means, atol=0.2)


def test_make_data_root_array_v2_and_url(tmp_path):
    make_data(f"file://{tmp_path}/r.zarr", n_samples=100, n_features=2, chunk_rows=30, array=None, zarr_format=2)
    source, x = open_array(str(tmp_path / "r.zarr"), slab_bytes=ONE_CHUNK)
    assert source.zarr_format == 2 and x.chunks[0] == (30, 30, 30, 10)
    assert (tmp_path / "r.zarr.truth" / "means.npy").is_file()


def test_make_data_refuses_to_overwrite(tmp_path):
    make_data(str(tmp_path / "a.zarr"), n_samples=10, chunk_rows=5)
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        make_data(str(tmp_path / "a.zarr"), n_samples=10)
    make_data(str(tmp_path / "a.zarr"), n_samples=20, chunk_rows=5, overwrite=True)
    assert zarr.open_array(str(tmp_path / "a.zarr"), path="X").shape == (20, 2)


def test_make_data_overwrite_never_replaces_what_it_did_not_write(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(DataError, match="was not written by 'daskem make-data'"):
        make_data(str(precious), n_samples=10, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(dtype="int32"), "choose float32 or float64"),
    (dict(n_components=20), "larger than --n-samples"),
    (dict(chunk_rows=3, shard_rows=10), "must be a multiple of --chunk-rows"),
    (dict(zarr_format=2, shard_rows=10), "needs --zarr-format 3"),
])
def test_make_data_checks_its_arguments(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        make_data(str(tmp_path / "a.zarr"), n_samples=10, **kwargs)
    assert not (tmp_path / "a.zarr").exists()


def test_blocks_depend_only_on_seed_and_block_index():
    mixture = make_mixture(3, 2, seed=0)
    one = sample_block(100, mixture, 0, 5, np.float64)
    np.testing.assert_array_equal(one, sample_block(100, mixture, 0, 5, np.float64))
    assert not np.array_equal(one, sample_block(100, mixture, 0, 6, np.float64))


@pytest.mark.parametrize("store_rows,row_bytes,slab_bytes,expected", [
    (1000, 8 * 32, 128 * 2**20, 524_000),  # 524 whole chunks of 256 kB fit in 128 MiB
    (62_500, 8 * 32, 128 * 2**20, 500_000),
    (500_000, 8 * 32, 64 * 2**20, 500_000),  # one chunk larger than the target: still one whole chunk
    (7, 8, 1, 7),
])
def test_slabs_are_whole_store_chunks_up_to_the_target_size(store_rows, row_bytes, slab_bytes, expected):
    from daskem.data.slabs import plan_slab_rows

    rows = plan_slab_rows(store_rows, row_bytes, slab_bytes)
    assert rows == expected and rows % store_rows == 0


def test_slabs_for_a_cluster_fit_the_workers_memory_and_keep_every_thread_busy():
    from daskem.data.slabs import slab_bytes_for_cluster

    MiB, GiB = 2**20, 2**30
    # plenty of data and memory: the target size
    assert slab_bytes_for_cluster(100 * GiB, 128 * MiB, n_threads=8, smallest_memory=4 * GiB) == 128 * MiB
    # 256 MiB on 2 threads: 4 slabs per thread
    assert slab_bytes_for_cluster(256 * MiB, 128 * MiB, n_threads=2, smallest_memory=4 * GiB) == 32 * MiB
    # small workers: 1/8 of their memory
    assert slab_bytes_for_cluster(100 * GiB, 128 * MiB, n_threads=2, smallest_memory=512 * MiB) == 64 * MiB
    # memory unknown (no limit): only the other two rules
    assert slab_bytes_for_cluster(100 * GiB, 128 * MiB, n_threads=2, smallest_memory=0) == 128 * MiB
