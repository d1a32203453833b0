"""Slab planning: how many rows one task reads, from the store's chunks and the cluster's workers."""

from __future__ import annotations

# Default target size of the rows one task reads: large enough that per-task overhead (about a
# millisecond) is negligible, small enough for a worker to hold a few at once.
DEFAULT_SLAB_BYTES = 128 * 2**20



# Slabs per worker thread at least, when the data allows: with one slab per thread, the thread
# that finishes first idles while the other works.
TASKS_PER_THREAD = 4



def plan_slab_rows(store_rows: int, row_bytes: int, slab_bytes: int) -> int:
    """Rows per task: as many whole store chunks (or shards) of ``store_rows`` rows as fit in
    ``slab_bytes`` (at least one), so each chunk is read by exactly one task and a task does real work."""
    return store_rows * max(1, slab_bytes // max(1, store_rows * row_bytes))



def slab_bytes_for_cluster(data_bytes: int, target_bytes: int, *, n_threads: int, smallest_memory: int) -> int:
    """The target slab size for a cluster: at most ``target_bytes``, at most 1/8 of the smallest
    worker's memory limit (a worker holds about two slabs at once, plus their float64 copies), and
    small enough that every worker thread gets at least ``TASKS_PER_THREAD`` slabs to balance."""
    limits = [target_bytes, data_bytes // max(1, TASKS_PER_THREAD * n_threads)]
    if smallest_memory:
        limits.append(smallest_memory // 8)
    return max(1, min(limits))

