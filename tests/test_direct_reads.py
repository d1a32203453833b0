"""Slabs decoded straight into the result hold exactly what zarr reads, for every layout and region."""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from daskem.data.chunks import SlabReader
from daskem.data.direct_reads import DirectDecoder, decoded_size
from daskem.data.stores import open_array
from daskem.errors import DataError

ROWS, FEATURES, CHUNK = 1030, 5, 100  # the last chunk holds 30 rows


def values(dtype):
    data = np.random.default_rng(1).normal(size=(ROWS, FEATURES)) * 100
    return data.astype(dtype)


def write(path, dtype="float64", *, zarr_format=3, compressors="auto", chunks=(CHUNK, FEATURES), **kwargs):
    array = zarr.create_array(str(path), shape=(ROWS, FEATURES), dtype=dtype, chunks=chunks,
                              zarr_format=zarr_format, compressors=compressors, **kwargs)
    array[...] = values(dtype)
    return array


DIRECT = {
    "v3-zstd": dict(compressors=ZstdCodec()),
    "v3-zstd-checksum": dict(compressors=ZstdCodec(level=3, checksum=True)),
    "v3-blosc": dict(compressors=BloscCodec(cname="lz4", shuffle="bitshuffle")),
    "v3-gzip": dict(compressors=GzipCodec()),
    "v3-uncompressed": dict(compressors=None),
    "v2-blosc": dict(zarr_format=2, compressors=numcodecs.Blosc()),
    "v2-zstd": dict(zarr_format=2, compressors=numcodecs.Zstd()),
    "v2-zlib": dict(zarr_format=2, compressors=numcodecs.Zlib()),
    "v2-uncompressed": dict(zarr_format=2, compressors=None),
}
THROUGH_ZARR = {
    "v3-sharded": dict(chunks=(50, FEATURES), shards=(CHUNK, FEATURES)),
    "v3-column-chunks": dict(chunks=(CHUNK, 2)),
    "v3-big-endian": dict(serializer=zarr.codecs.BytesCodec(endian="big")),
    "v2-filtered": dict(zarr_format=2, filters=[numcodecs.Delta(dtype="f8")]),
    "v2-fortran-order": dict(zarr_format=2, order="F"),
}
REGIONS = [(0, ROWS), (0, CHUNK), (200, 500), (900, ROWS), (1000, ROWS), (150, 450), (0, 1), (1029, ROWS)]


@pytest.mark.parametrize("dtype", ["float64", "float32", "int16"])
@pytest.mark.parametrize("layout", DIRECT.values(), ids=DIRECT.keys())
def test_direct_slabs_are_zarrs_bit_for_bit(tmp_path, layout, dtype):
    array = write(tmp_path / "s.zarr", dtype, **layout)
    reader = SlabReader(array, "s.zarr")
    assert reader.decoder is not None
    for start, stop in REGIONS:
        region = (slice(start, stop), slice(0, FEATURES))
        slab = reader[region]
        expected = array[start:stop]
        assert slab.dtype == expected.dtype and slab.flags.c_contiguous
        np.testing.assert_array_equal(slab, expected)
        aligned = start % CHUNK == 0 and (stop % CHUNK == 0 or stop == ROWS)
        assert (reader.decoder.read(region) is not None) == aligned  # the others read through zarr


@pytest.mark.parametrize("layout", THROUGH_ZARR.values(), ids=THROUGH_ZARR.keys())
def test_other_layouts_read_through_zarr(tmp_path, layout):
    array = write(tmp_path / "s.zarr", **layout)
    assert DirectDecoder.of(array) is None
    reader = SlabReader(array, "s.zarr")
    np.testing.assert_array_equal(reader[(slice(100, 300), slice(0, FEATURES))], array[100:300])


def test_a_column_subset_reads_through_zarr(tmp_path):
    array = write(tmp_path / "s.zarr")
    reader = SlabReader(array, "s.zarr")
    region = (slice(0, 200), slice(1, 3))
    assert reader.decoder.read(region) is None
    np.testing.assert_array_equal(reader[region], array[0:200, 1:3])


def test_a_missing_chunk_reads_as_zarrs_fill_value(tmp_path):
    array = write(tmp_path / "s.zarr", fill_value=-7.5)
    (tmp_path / "s.zarr" / "c" / "3" / "0").unlink()
    slab = SlabReader(array, "s.zarr")[(slice(200, 500), slice(0, FEATURES))]
    np.testing.assert_array_equal(slab, array[200:500])
    assert (slab[100:200] == -7.5).all()


@pytest.mark.parametrize("layout", ["v3-zstd", "v3-blosc", "v3-uncompressed", "v2-zlib"])
def test_a_chunk_of_the_wrong_size_fails_naming_it_instead_of_leaving_rows_unset(tmp_path, layout):
    """A chunk that decodes cleanly to fewer bytes than the chunk holds (a chunk from another array
    written over it) is an error, as in zarr, never a slab with rows left uninitialized."""
    options = DIRECT[layout]
    array = write(tmp_path / "s.zarr", **options)
    small = write(tmp_path / "small.zarr", chunks=(CHUNK // 2, FEATURES), **options)
    key = array.metadata.encode_chunk_key((4, 0))
    target = tmp_path / "s.zarr" / key
    target.write_bytes((tmp_path / "small.zarr" / small.metadata.encode_chunk_key((0, 0))).read_bytes())
    reader = SlabReader(array, "s.zarr")
    with pytest.raises(DataError, match=rf"chunk {key} \(index \(4, 0\), rows 400-499\) cannot be read or decoded"):
        reader[(slice(300, 600), slice(0, FEATURES))]


def test_a_pass_over_a_store_reads_the_same_rows_as_zarr(tmp_path):
    array = write(tmp_path / "s.zarr", "float32")
    _, x = open_array(str(tmp_path / "s.zarr"), slab_bytes=3 * CHUNK * FEATURES * 8)
    assert x.numblocks[0] > 1
    np.testing.assert_array_equal(x.compute(), array[...].astype(np.float64))


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65791, 2**20 + 3])
def test_the_frame_headers_state_the_decoded_size(size):
    data = np.random.default_rng(0).integers(0, 4, size).astype(np.uint8)
    for codec in (numcodecs.Zstd(), numcodecs.Zstd(level=9, checksum=True), numcodecs.Blosc(),
                  numcodecs.Blosc(cname="zstd", shuffle=numcodecs.Blosc.BITSHUFFLE)):
        assert decoded_size(codec, np.frombuffer(codec.encode(data), np.uint8)) == size
    assert decoded_size(numcodecs.Zlib(), np.frombuffer(numcodecs.Zlib().encode(data), np.uint8)) is None


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_chunks_wider_than_the_array_read_through_zarr(tmp_path, zarr_format):
    array = zarr.create_array(str(tmp_path / "s.zarr"), shape=(10, 3), chunks=(4, 5), dtype="f8", zarr_format=zarr_format)
    array[...] = np.arange(30.0).reshape(10, 3)
    assert DirectDecoder.of(array) is None
    np.testing.assert_array_equal(SlabReader(array, "s.zarr")[(slice(0, 8), slice(0, 3))], array[0:8])


@pytest.mark.parametrize("dtype", ["f8", "i8"])
def test_a_missing_chunk_of_a_null_fill_value_reads_as_zarrs_zeros(tmp_path, dtype):
    array = zarr.create_array(str(tmp_path / "s.zarr"), shape=(8, 2), chunks=(4, 2), dtype=dtype, zarr_format=2,
                              fill_value=None)
    array[4:] = 1
    assert array.fill_value is None and DirectDecoder.of(array) is not None
    slab = SlabReader(array, "s.zarr")[(slice(0, 8), slice(0, 2))]
    np.testing.assert_array_equal(slab, array[:])
    assert slab.dtype == array[:].dtype


@pytest.mark.parametrize("region", [(slice(0, 4),), slice(0, 4), (3, slice(None)), (Ellipsis,), (), (slice(None), slice(None)),
                                    (slice(-4, None), slice(0, 5, 2))])
def test_any_index_zarr_takes_gives_zarrs_rows(tmp_path, region):
    array = write(tmp_path / "s.zarr")
    np.testing.assert_array_equal(SlabReader(array, "s.zarr")[region], array[region])


def test_a_corrupt_chunk_is_named_whatever_the_index(tmp_path):
    array = write(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "c" / "2" / "0").write_bytes(b"\x07" * 64)
    with pytest.raises(DataError, match=r"chunk c/2/0 \(index \(2, 0\), rows 200-299\) cannot be read"):
        SlabReader(array, "s.zarr")[(slice(None), slice(None))]
