"""A store larger than memory: write it, measure the disk, fit k-means and a diagonal GMM streaming from it.

    python scripts/bench_bigstore.py --gigabytes 32 --features 32 --components 16 --max-iter 10

Writes (or reuses) a float32 Zarr store of at least ``--gigabytes`` GiB of rows, a Gaussian
mixture written block by block by ``daskem.data.synthetic.make_data`` (chunks of about 32 MiB), and
prints the write rate. Then measures the disk's sequential read rate on the store's own files:
``os.sync()``, ``posix_fadvise(POSIX_FADV_DONTNEED)`` on every file (which drops its clean pages
from the page cache), then one plain read of every file in 16 MiB blocks; ``fincore`` (util-linux)
reports how much of the store the page cache still held before the read. Finally, on a
``LocalCluster`` of ``--workers`` worker processes, fits ``daskem.KMeans`` and
``daskem.GaussianMixture(covariance_type="diag")`` with their default starts, streaming from the
store (nothing persisted; the store's pages are dropped again before each fit), and reports for each
fit its passes over the data, seconds per pass, the rate at which it consumed the store against the
disk's, and every worker's peak memory. Each fit has a cluster of its own, so each peak is its own.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np

READ_BLOCK = 16 * 2**20  # bytes per read() of the disk measurement


def worker_peak_mib() -> float:
    """Peak resident memory of this process, in MiB: ``VmHWM``, which starts afresh at exec; Linux's
    ``ru_maxrss`` carries the high-water mark of the process a worker was spawned from across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def meminfo_mib() -> dict[str, float]:
    """MemTotal, MemAvailable and Cached from ``/proc/meminfo``, in MiB."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable", "Cached"):
            values[name] = int(rest.split()[0]) / 1024
    return values


# ------------------------------------------------------------------------------ the store
def store_files(path: str) -> list[str]:
    """Every file of the store (chunks and metadata), in the order they are listed."""
    return sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)


def ensure_store(args) -> dict:
    """Write the store unless a complete one (its ``.truth/truth.json``, which ``make_data`` writes last) of the
    right shape and dtype is there; the write's figures, if any."""
    import zarr

    from daskem.data.synthetic import make_data

    rows = math.ceil(args.gigabytes * 2**30 / (args.features * 4))
    if Path(args.path.rstrip("/") + ".truth", "truth.json").exists():
        array = zarr.open_group(args.path, mode="r")["X"]
        if array.shape == (rows, args.features) and array.dtype == np.float32:
            print(f"reusing {args.path}: {rows} x {args.features} float32", flush=True)
            return {"rows": rows, "write_seconds": None}
    print(f"writing {rows} x {args.features} float32 rows ({rows * args.features * 4 / 2**30:.1f} GiB) "
          f"to {args.path} ...", flush=True)
    started = time.perf_counter()
    make_data(args.path, n_samples=rows, n_features=args.features, n_components=args.components,
              dtype="float32", seed=0, separation=args.separation, overwrite=True)
    os.sync()  # the write is done when the disk has it, not the page cache
    return {"rows": rows, "write_seconds": time.perf_counter() - started}


def drop_from_page_cache(files: list[str]) -> None:
    """Write out dirty pages, then ask the kernel to drop every file's pages from the page cache."""
    os.sync()
    for name in files:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_bytes(files: list[str]) -> int | None:
    """Bytes of ``files`` resident in the page cache (``fincore``), or None without it."""
    if not shutil.which("fincore"):
        return None
    total = 0
    for start in range(0, len(files), 500):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                              *files[start:start + 500]], check=True, capture_output=True, text=True).stdout
        total += sum(int(value) for value in out.split())
    return total


def disk_read_rate(files: list[str]) -> dict:
    """Seconds and MB/s of one sequential read of every file, from the disk (page cache dropped first)."""
    drop_from_page_cache(files)
    before = cached_bytes(files)
    buffer = bytearray(READ_BLOCK)
    total = 0
    started = time.perf_counter()
    for name in files:
        with open(name, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                total += n
    seconds = time.perf_counter() - started
    return {"bytes": total, "seconds": seconds, "mb_per_s": total / seconds / 1e6, "cached_before": before}


# ------------------------------------------------------------------------------------ fits
def fit_on_cluster(args, store: dict, files: list[str], label: str, make_model) -> dict:
    """One fit on a fresh LocalCluster, streaming from the store; its passes, time and worker peaks."""
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    from daskem.data.slabs import DEFAULT_SLAB_BYTES, slab_bytes_for_cluster
    from daskem.data.stores import open_array
    from daskem.pipeline import worker_settings

    data_bytes = store["rows"] * args.features * 4
    slab_bytes = slab_bytes_for_cluster(data_bytes, DEFAULT_SLAB_BYTES, n_threads=args.workers * args.threads,
                                        smallest_memory=parse_bytes(args.memory_limit))
    with worker_settings.applied(), LocalCluster(  # the embedded cluster's worker settings
            n_workers=args.workers, threads_per_worker=args.threads, memory_limit=args.memory_limit, processes=True,
            dashboard_address=":0") as cluster, Client(cluster) as client:
        _, X = open_array(args.path, array="X", slab_bytes=slab_bytes)
        drop_from_page_cache(files)
        print(f"{label}: {X.numblocks[0]} slabs of up to {max(X.chunks[0])} rows ...", flush=True)
        model = make_model()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X)
        seconds = time.perf_counter() - started
        peaks = sorted(client.run(worker_peak_mib).values())
    passes = model.n_passes_
    return {"label": label, "seconds": seconds, "passes": passes, "n_iter": model.n_iter_,
            "iteration_seconds": float(np.median(model.iteration_seconds_)) if model.iteration_seconds_ else None,
            "worker_peaks_mib": peaks, "cached_after": cached_bytes(files),
            "disk_mb_per_s": store["disk_bytes"] * passes / seconds / 1e6,
            "array_mb_per_s": data_bytes * passes / seconds / 1e6}


def run_fits(args, store: dict, files: list[str], disk: dict) -> list[dict]:
    """The fits named by ``--fits``, each printed as its table row as soon as it ends."""
    import daskem

    k = args.components
    fits = {"kmeans": ("KMeans", lambda: daskem.KMeans(k, max_iter=args.max_iter, random_state=args.seed)),
            "gmm-diag": ("GaussianMixture diag", lambda: daskem.GaussianMixture(
                k, covariance_type="diag", max_iter=args.max_iter, random_state=args.seed))}
    results = []
    for name in args.fits:
        label, make_model = fits[name]
        started = time.strftime("%H:%M:%S")
        results.append(fit_on_cluster(args, store, files, label, make_model))
        print(f"{label} (started {started}): {results[-1]['passes']} passes\n{table_row(results[-1], disk)}", flush=True)
    return results


# ---------------------------------------------------------------------------------- report
def _mib(value) -> str:
    return "n/a (no fincore)" if value is None else f"{value / 2**20:,.0f} MiB"


def summary(args, store: dict, disk: dict, results: list[dict], memory: dict) -> str:
    """The block for docs/benchmarks.md."""
    gib = 2**30
    array_bytes = store["rows"] * args.features * 4
    write = ("reused (not written by this run)" if store["write_seconds"] is None else
             f"{store['write_seconds']:.0f} s, {array_bytes / store['write_seconds'] / 1e6:.0f} MB/s of rows "
             f"({store['disk_bytes'] / store['write_seconds'] / 1e6:.0f} MB/s to disk; drawing, compressing "
             "and writing, on the client's threads)")
    lines = [
        (f"store: {store['rows']:,} x {args.features} float32, K = {args.components} (separation "
         f"{args.separation}), {array_bytes / gib:.2f} GiB of rows, {store['disk_bytes'] / gib:.2f} GiB on disk "
         f"in {store['n_files']} files"),
        (f"memory: {memory['MemTotal'] / 1024:.1f} GiB total, {memory['MemAvailable'] / 1024:.1f} GiB available "
         f"before the fits; store on disk / total memory = {store['disk_bytes'] / 2**20 / memory['MemTotal']:.2f}"),
        f"write: {write}",
        (f"disk: one sequential read of the store's files after POSIX_FADV_DONTNEED: {disk['seconds']:.1f} s, "
         f"{disk['mb_per_s']:.0f} MB/s (page cache held {_mib(disk['cached_before'])} of the store before it)"),
        (f"cluster: {args.workers} workers x {args.threads} thread(s), {args.memory_limit} each; "
         f"max_iter {args.max_iter}, default starts, streaming (no persist)"),
        "",
        ("| fit | passes | iterations | seconds | s / pass | median EM iteration, s | disk MB/s (x passes) "
         "| / disk rate | rows MB/s | peak worker MiB | store in page cache after |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines.extend(table_row(r, disk) for r in results)
    return "\n".join(lines)


def table_row(r: dict, disk: dict) -> str:
    """One fit's row of the table in ``summary``."""
    iteration = "n/a" if r["iteration_seconds"] is None else f"{r['iteration_seconds']:.1f}"
    return (f"| {r['label']} | {r['passes']} | {r['n_iter']} | {r['seconds']:.1f} | {r['seconds'] / r['passes']:.1f} "
            f"| {iteration} | {r['disk_mb_per_s']:.0f} | {r['disk_mb_per_s'] / disk['mb_per_s']:.2f} "
            f"| {r['array_mb_per_s']:.0f} | {' / '.join(f'{p:.0f}' for p in r['worker_peaks_mib'])} "
            f"| {_mib(r['cached_after'])} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=32, help="GiB of float32 rows in the store (default 32)")
    parser.add_argument("--path", default="bench-data/bigstore.zarr", help="Zarr store, made if missing")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--components", type=int, default=16, help="components of the data and of the fits")
    parser.add_argument("--separation", type=float, default=2.0, help="cluster separation of a new store")
    parser.add_argument("--max-iter", type=int, default=10, help="EM iterations per fit at most")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--memory-limit", default="6GiB", help="per worker")
    parser.add_argument("--seed", type=int, default=0, help="random_state of the fits")
    parser.add_argument("--fits", nargs="+", choices=("kmeans", "gmm-diag"), default=["kmeans", "gmm-diag"],
                        help="which fits to run, in order (default both)")
    args = parser.parse_args(argv)

    store = ensure_store(args)
    files = store_files(args.path)
    store.update(n_files=len(files), disk_bytes=sum(os.path.getsize(name) for name in files))
    disk = disk_read_rate(files)
    print(f"disk: {disk['bytes'] / 1e6:.0f} MB in {disk['seconds']:.1f} s = {disk['mb_per_s']:.0f} MB/s", flush=True)
    memory = meminfo_mib()
    if store["disk_bytes"] / 2**20 < memory["MemTotal"]:
        print(f"note: the store ({store['disk_bytes'] / 2**30:.1f} GiB on disk) fits in this machine's "
              f"{memory['MemTotal'] / 1024:.1f} GiB: the page cache can hold it between passes", flush=True)
    results = run_fits(args, store, files, disk)
    print()
    print(summary(args, store, disk, results, memory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
