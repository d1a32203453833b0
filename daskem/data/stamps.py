"""What a store's stored chunks look like from outside, as one digest: each object's name, size and
modification stamp (an ETag, a checksum or a modification time), never its bytes.

``check_chunks`` lists every array's objects before a run anyway; the same listing, with details,
gives the digest. A run's checkpoint keeps it, so a store rewritten in place (the same path, shape,
dtype and chunks, other rows) is refused on resume instead of resumed into a mix of two datasets.
The metadata documents are left out: the checkpoint holds the shape, dtype and chunks on their own,
and an edit of the attributes changes no row.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Mapping

# Fields of an fsspec listing or ``info`` that change when an object is rewritten, best first: a
# content tag (S3's and Azure's ETag, GCS's md5Hash, an HTTP server's ETag, Content-MD5 or Digest),
# else a version (GCS's generation), else a modification time (local files, HTTP's Last-Modified).
STAMP_FIELDS = ("ETag", "etag", "md5Hash", "Content-MD5", "Digest", "generation", "mtime", "LastModified",
                "last_modified", "Last-Modified", "updated")
# Objects of an array that hold no rows (Zarr v2 and v3 metadata, consolidated metadata).
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
# Chunks asked one by one when a listing gives no stamps (an HTTP server's index pages), spread over the rows.
SAMPLED_CHUNKS = 16


def stamp(info: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(size, stamp)`` of one object's listing entry or ``info``: the first of ``STAMP_FIELDS`` it has."""
    found = next((info[name] for name in STAMP_FIELDS if info.get(name) not in (None, "")), None)
    return info.get("size"), None if found is None else str(found)


def array_entries(listed: Mapping[str, Mapping[str, Any]], prefix: str) -> dict[str, tuple[Any, Any]]:
    """The stamps of the objects ``listed`` (an fsspec ``find(..., detail=True)``) under the array's
    ``prefix``, by their key in the array; its metadata documents left out."""
    prefix = prefix.rstrip("/") + "/"
    entries = {}
    for path, info in listed.items():
        key = path[len(prefix):] if path.startswith(prefix) else path
        if info.get("type", "file") == "file" and key.rsplit("/", 1)[-1] not in METADATA_NAMES:
            entries[key] = stamp(info)
    return entries


def sampled_keys(node) -> list[str]:
    """The keys of up to ``SAMPLED_CHUNKS`` chunks (shards when sharded) spread over the rows of
    ``node``, first and last among them, in its first column chunk."""
    from daskem.data.chunks import stored_chunk_shape

    grid = [math.ceil(size / chunk) for size, chunk in zip(node.shape, stored_chunk_shape(node))]
    count = min(grid[0], SAMPLED_CHUNKS)
    rows = sorted({round(i * (grid[0] - 1) / max(1, count - 1)) for i in range(count)})
    return [node.metadata.encode_chunk_key((row, *([0] * (len(grid) - 1)))) for row in rows]


def asked_entries(fs, prefix: str, keys: Iterable[str]) -> dict[str, tuple[Any, Any]]:
    """The stamps of ``keys`` under ``prefix`` asked one by one (``fs.info``); an absent one is None."""
    entries = {}
    for key in keys:
        try:
            entries[key] = stamp(fs.info(f"{prefix.rstrip('/')}/{key}"))
        except FileNotFoundError:
            entries[key] = None
    return entries


def has_stamps(entries: Mapping[str, tuple[Any, Any] | None]) -> bool:
    """Whether any entry has a modification stamp (an HTTP index page, say, gives none)."""
    return any(entry is not None and entry[1] is not None for entry in entries.values())


def digest(arrays: Mapping[str, Mapping[str, tuple[Any, Any] | None]]) -> str:
    """SHA-256 of the stamps of every array's objects (``{array: {key: (size, stamp)}}``), in key order."""
    lines = [f"{array}\t{key}\t{entry!r}" for array, entries in sorted(arrays.items())
             for key, entry in sorted(entries.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
