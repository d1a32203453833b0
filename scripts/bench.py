"""Benchmark daskem against the tools users would pick instead, on one Zarr store, in one run.

    python scripts/bench.py --rows 1000000 --features 32 --components 16 --iterations 5

Creates (or reuses) a Zarr store of the size given, then measures seconds per EM iteration, on
the same data and from the same initial parameters: daskem k-means and GMM (every covariance
type) streaming from Zarr on a LocalCluster, and with the data cached in cluster memory;
scikit-learn's GaussianMixture and KMeans in memory; dask-ml's KMeans on the same store and
cluster, streamed and persisted. It also measures the floor: one read of the store, and the
E-step/M-step arithmetic at the GEMM rate measured on a worker. Each case runs in a child process
so its peak memory is its own. Per-iteration times are steady-state: daskem's median iteration,
and for the others (time of n iterations - time of 1) / (n - 1), so set-up and final passes do
not count against anyone. ``--rounds N`` runs every case N times, all cases in turn each round, and
reports each case's median round, so a drift of the machine's speed weighs on every case alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- data and start
def ensure_store(args) -> None:
    """Write the store unless one of the right shape is there already."""
    import zarr

    from daskem.data.synthetic import make_data

    if Path(args.store).exists():
        array = zarr.open_group(args.store, mode="r")["X"]
        if array.shape == (args.rows, args.features):
            return
    print(f"writing {args.rows} x {args.features} float64 rows to {args.store} ...", flush=True)
    make_data(args.store, n_samples=args.rows, n_features=args.features, n_components=args.components,
              chunk_rows=args.chunk_rows, seed=0, separation=args.separation, overwrite=True)


def initial_parameters(args) -> dict[str, np.ndarray]:
    """Start for every competitor: K rows drawn at random as means, equal weights, unit-variance-scaled precisions."""
    import zarr

    array = zarr.open_group(args.store, mode="r")["X"]
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(args.rows, args.components, replace=False))
    means = np.stack([np.asarray(array[int(row)], dtype=np.float64) for row in rows])
    sample = np.asarray(array[: min(args.rows, 20_000)], dtype=np.float64)
    precision = 1.0 / sample.var(axis=0).mean()
    return {"means": means, "precision": precision}


def precisions_init(covariance_type: str, start, n_components: int, n_features: int) -> np.ndarray:
    p = start["precision"]
    return {
        "full": np.tile(np.eye(n_features) * p, (n_components, 1, 1)),
        "tied": np.eye(n_features) * p,
        "diag": np.full((n_components, n_features), p),
        "spherical": np.full(n_components, p),
    }[covariance_type]


def gmm_init(covariance_type, start, args) -> dict:
    return dict(weights_init=np.full(args.components, 1 / args.components), means_init=start["means"],
                precisions_init=precisions_init(covariance_type, start, args.components, args.features))


# ------------------------------------------------------------------------------------ cases
def open_store(args):
    """The store as daskem's pipeline opens it for this cluster (slabs planned for the workers)."""
    from dask.utils import parse_bytes

    from daskem.data.slabs import DEFAULT_SLAB_BYTES, slab_bytes_for_cluster
    from daskem.data.stores import open_array

    if args.slab_rows:
        return open_array(args.store, array="X", chunk_rows=args.slab_rows)[1]
    slab_bytes = slab_bytes_for_cluster(args.rows * args.features * 8, DEFAULT_SLAB_BYTES, n_threads=args.workers,
                                        smallest_memory=parse_bytes(args.memory_limit))
    return open_array(args.store, array="X", slab_bytes=slab_bytes)[1]


@contextmanager
def cluster_and_store(args, cache: bool):
    """A LocalCluster like the pipeline's embedded one (its workers' settings too, unless
    ``--allocator distributed``), a client, and the store opened for it (persisted on the workers
    when ``cache``)."""
    from contextlib import nullcontext

    from distributed import Client, LocalCluster, wait

    from daskem.pipeline import worker_settings

    settings = worker_settings.applied() if args.allocator == "daskem" else nullcontext()
    with settings, LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit,
                      processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        X = open_store(args)
        if cache:
            X = X.persist()
            wait(X)
        yield client, X


def run_daskem(args, kind: str, covariance_type: str | None, cache: bool) -> dict:
    """daskem from the Zarr store on a LocalCluster; median seconds of the EM iterations."""
    import daskem

    start = initial_parameters(args)
    with cluster_and_store(args, cache) as (client, X):
        if kind == "gmm":
            model = daskem.GaussianMixture(args.components, covariance_type=covariance_type, max_iter=args.iterations,
                                           tol=0.0, **gmm_init(covariance_type, start, args))
        else:
            model = daskem.KMeans(args.components, init=start["means"], max_iter=args.iterations, tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X)
        worker_peak = max(client.run(peak_rss_mb).values())
    seconds = model.iteration_seconds_
    return {"seconds": float(np.median(seconds)), "iterations": len(seconds), "worker_peak_mb": worker_peak}


def marginal_seconds(fit, n_iter_of) -> tuple[float, int]:
    """(T(n) - T(1)) / (n_iter(n) - n_iter(1)): the cost of one more iteration, set-up excluded.

    A first, untimed fit warms up what runs once per process (JIT compilation, thread pools).
    """
    fit(1)
    timed = []
    for iterations in (1, None):
        started = time.perf_counter()
        fitted = fit(iterations)
        timed.append((time.perf_counter() - started, n_iter_of(fitted)))
    (t1, n1), (tn, nn) = timed
    return (tn - t1) / max(nn - n1, 1), nn


def run_sklearn(args, kind: str, covariance_type: str | None) -> dict:
    """scikit-learn in memory, with the machine's BLAS threads."""
    import zarr
    from sklearn import cluster, mixture

    X = np.asarray(zarr.open_group(args.store, mode="r")["X"][:], dtype=np.float64)
    start = initial_parameters(args)

    def fit(iterations):
        iterations = iterations or args.iterations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "gmm":
                return mixture.GaussianMixture(args.components, covariance_type=covariance_type, tol=0.0,
                                               max_iter=iterations, **gmm_init(covariance_type, start, args)).fit(X)
            return cluster.KMeans(args.components, init=start["means"], n_init=1, algorithm="lloyd",
                                  max_iter=iterations, tol=0.0).fit(X)

    seconds, n_iter = marginal_seconds(fit, lambda fitted: fitted.n_iter_)
    return {"seconds": seconds, "iterations": n_iter}


def run_dask_ml(args, cache: bool) -> dict:
    """dask-ml's KMeans on the same store and the same kind of cluster."""
    import dask_ml.cluster

    start = initial_parameters(args)
    with cluster_and_store(args, cache) as (client, X):

        def fit(iterations):
            model = dask_ml.cluster.KMeans(n_clusters=args.components, init=start["means"],
                                           max_iter=iterations or args.iterations, tol=0.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return model.fit(X)

        seconds, n_iter = marginal_seconds(fit, lambda fitted: fitted.n_iter_)
        worker_peak = max(client.run(peak_rss_mb).values())
    return {"seconds": seconds, "iterations": n_iter, "worker_peak_mb": worker_peak}


def _gemm_rate() -> float:
    """Floating-point operations per second of one core on the products a full-covariance slab does."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    n, d, k = 4096, 32, 16
    a, b = rng.normal(size=(n, d)), rng.normal(size=(d, k * d))
    with threadpool_limits(1):
        a @ b
        started = time.perf_counter()
        for _ in range(20):
            a @ b
        elapsed = time.perf_counter() - started
    return 20 * 2 * n * d * k * d / elapsed


def _touch(block):
    return np.array([[block.shape[0]]])


def _decode_share(store: str, share: int, shares: int) -> float:
    """Seconds for zarr alone to decode this worker's share of the store's chunks, whole chunks in
    one call, with zarr's own concurrency: the fastest way a worker reads its part."""
    import zarr

    array = zarr.open_group(store, mode="r")["X"]
    rows = array.chunks[0]
    chunks = -(-array.shape[0] // rows)
    first, last = share * chunks // shares, (share + 1) * chunks // shares
    started = time.perf_counter()
    array[first * rows : min(array.shape[0], last * rows)]
    return time.perf_counter() - started


def run_floor(args) -> dict:
    """One read of the store on the cluster through Dask (median of 3); the fastest decode on the
    same workers, each decoding its share with zarr alone, all at once (median of 3); each worker's
    GEMM rate."""
    from daskem.pipeline.cluster import blas_kernels

    with cluster_and_store(args, cache=False) as (client, X):
        reads, decodes = [], []
        workers = sorted(client.scheduler_info()["workers"])
        for _ in range(3):
            started = time.perf_counter()
            X.map_blocks(_touch, chunks=((1,) * X.numblocks[0], (1,)), dtype=int).sum().compute()
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.gather([client.submit(_decode_share, args.store, share, len(workers), workers=[worker],
                                         pure=False) for share, worker in enumerate(workers)])
            decodes.append(time.perf_counter() - started)
        rates = list(client.run(_gemm_rate).values())
        kernels = sorted({name for found in client.run(blas_kernels).values() for name in found})
    return {"read_seconds": float(np.median(reads)), "decode_seconds": float(np.median(decodes)),
            "gemm_flops_per_core": float(np.median(rates)), "cores": len(rates),
            "blas_kernels": {"workers": kernels, "client": sorted(set(blas_kernels()))}}


def run_case(args, case: str) -> dict:
    kind, _, rest = case.partition(":")
    if kind == "floor":
        result = run_floor(args)
    elif kind.startswith("daskem"):
        model, _, mode = rest.partition("@")
        family, _, covariance_type = model.partition("-")
        result = run_daskem(args, family, covariance_type or None, cache=mode == "memory")
    elif kind == "sklearn":
        family, _, covariance_type = rest.partition("-")
        result = run_sklearn(args, family, covariance_type or None)
    else:  # dask-ml
        result = run_dask_ml(args, cache=rest == "memory")
    result["client_peak_mb"] = peak_rss_mb()
    return result


def all_cases() -> list[str]:
    cases = ["floor"]
    for covariance_type in COVARIANCE_TYPES:
        cases += [f"daskem:gmm-{covariance_type}@zarr", f"daskem:gmm-{covariance_type}@memory",
                  f"sklearn:gmm-{covariance_type}"]
    return cases + ["daskem:kmeans@zarr", "daskem:kmeans@memory", "sklearn:kmeans", "dask-ml:zarr", "dask-ml:memory"]


# ---------------------------------------------------------------------------------- report
def median_round(found: list[dict], key: str) -> dict:
    """The round whose ``key`` is the median of the rounds (the lower middle one of an even count),
    with every round's ``key`` in ``rounds``; a floor keeps its median read and decode each."""
    ordered = sorted(found, key=lambda result: result[key])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [result[key] for result in found]
    if key == "decode_seconds":
        for name in ("read_seconds", "decode_seconds"):
            chosen[name] = float(np.median([result[name] for result in found]))
    return chosen


def fastest_decode(floor: dict) -> float:
    """The store decoded once the fastest way measured: through Dask's per-slab tasks, as a pass reads
    it, or by zarr alone reading each worker's share in one call (faster under distributed's own
    malloc settings, slower under the embedded cluster's, whose per-slab reads then reuse buffers)."""
    return min(floor["read_seconds"], floor["decode_seconds"])


def report(args, results: dict[str, dict]) -> str:
    floor = results["floor"]
    n, d, k = args.rows, args.features, args.components
    rate = floor["gemm_flops_per_core"] * floor["cores"]
    classic_flops = 4 * n * k * d * d  # whitening product + weighted outer products, D x D per component
    arithmetic = classic_flops / rate
    lines = [
        f"data: {n} x {d} float64, K = {k}, {args.workers} workers x 1 thread, slab rows {args.slab_rows or 'planned'}, "
        f"workers' malloc settings: {args.allocator}'s, "
        + (f"each case's median of {args.rounds} rounds, run in turn, " if args.rounds > 1 else "")
        + "OpenBLAS kernels: "
        + "; ".join(f"{who} {'/'.join(kernels) or 'none'}" for who, kernels in floor["blas_kernels"].items())
        + (f" (OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']})" if "OPENBLAS_CORETYPE" in os.environ else ""),
        f"floor: read the store once {floor['read_seconds']:.3f} s; full-covariance arithmetic "
        f"{classic_flops:.2e} flop at {rate / 1e9:.1f} GFLOP/s = {arithmetic:.3f} s; "
        f"floor for full/tied = {floor['read_seconds'] + arithmetic:.3f} s; zarr alone decoding each worker's "
        f"share in one call {floor['decode_seconds']:.3f} s; fastest decode of the store {fastest_decode(floor):.3f} s",
        "",
        f"{'case':28s} {'s/iter':>9s} {'iters':>5s} {'client MiB':>10s} {'worker MiB':>10s}"
        + (f"  {'rounds (s/iter)':s}" if args.rounds > 1 else ""),
    ]
    for case, result in results.items():
        if case == "floor":
            continue
        lines.append(f"{case:28s} {result['seconds']:9.3f} {result['iterations']:5d} "
                     f"{result['client_peak_mb']:10.0f} {result.get('worker_peak_mb', float('nan')):10.0f}"
                     + ("  " + " ".join(f"{value:.3f}" for value in result["rounds"]) if args.rounds > 1 else ""))
    lines += ["", "targets:"]
    seconds = {case: result["seconds"] for case, result in results.items() if case != "floor"}

    def target(text, value, limit):
        verdict = "met" if value <= limit else f"MISSED by {value / limit:.2f}x"
        lines.append(f"  {text}: {value:.3f} vs limit {limit:.3f} -> {verdict}")

    shares = {"full": 6, "tied": 8, "diag": 3, "spherical": 3}  # the targets: at most 1/share of scikit-learn
    for covariance_type in COVARIANCE_TYPES:
        ours, theirs = seconds[f"daskem:gmm-{covariance_type}@zarr"], seconds[f"sklearn:gmm-{covariance_type}"]
        share = shares[covariance_type]
        lines.append(f"  gmm {covariance_type}: daskem/sklearn = {ours / theirs:.3f} (1/{theirs / ours:.1f})")
        target(f"gmm {covariance_type} from zarr <= sklearn/{share}", ours, theirs / share)
    kmeans, kmeans_cached = seconds["daskem:kmeans@zarr"], seconds["daskem:kmeans@memory"]
    target("kmeans from zarr <= 1.15 x the fastest decode", kmeans, 1.15 * fastest_decode(floor))
    target("kmeans from zarr <= dask-ml (zarr) / 2", kmeans, seconds["dask-ml:zarr"] / 2)
    target("kmeans cached <= 2 x sklearn in memory", kmeans_cached, 2 * seconds["sklearn:kmeans"])
    target("kmeans cached <= dask-ml (persisted) / 3", kmeans_cached, seconds["dask-ml:memory"] / 3)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=5, help="EM iterations per fit")
    parser.add_argument("--store", default="bench-data/bench.zarr", help="Zarr store, made if missing")
    parser.add_argument("--chunk-rows", type=int, default=62_500, help="rows per chunk of a new store")
    parser.add_argument("--slab-rows", type=int, default=None,
                        help="rows per task (default: planned for the cluster, as the pipeline does)")
    parser.add_argument("--separation", type=float, default=2.0, help="cluster separation of a new store")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GiB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allocator", choices=["daskem", "distributed"], default="daskem",
                        help="the workers' malloc thresholds: daskem's (its embedded cluster's) or distributed's defaults")
    parser.add_argument("--reads", choices=["daskem", "zarr"], default="daskem",
                        help="how slabs are read: daskem's (decoded straight into the slab where the layout allows) "
                             "or zarr's own reads for every slab, to compare the two")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every case this many times, all cases in turn each round, and report each "
                             "case's median round (on a machine whose speed drifts, a fairer comparison)")
    parser.add_argument("--cases", nargs="*", default=None, help="subset of cases (default: all)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # run one case in this process, print JSON
    args = parser.parse_args(argv)
    if args.case:
        if args.reads == "zarr":  # every SlabReader made in this process, and pickled to the workers, reads through zarr
            from daskem.data.direct_reads import DirectDecoder

            DirectDecoder.of = classmethod(lambda cls, node: None)
        print(json.dumps(run_case(args, args.case)))
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    ensure_store(args)
    forwarded = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                 if value is not None and name not in ("cases", "case", "rounds")]
    cases = ["floor", *(args.cases or all_cases()[1:])]
    rounds: dict[str, list[dict]] = {case: [] for case in cases}
    for round_number in range(args.rounds):
        for case in cases:
            started = time.perf_counter()
            output = subprocess.run([sys.executable, __file__, *forwarded, "--case", case], check=True,
                                    capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            rounds[case].append(json.loads(output.stdout.strip().splitlines()[-1]))
            print(f"{case:28s} {rounds[case][-1].get('seconds', 0):8.3f} s/iter  "
                  f"({time.perf_counter() - started:.0f} s{f', round {round_number + 1}' if args.rounds > 1 else ''})",
                  flush=True)
    results = {case: median_round(found, "decode_seconds" if case == "floor" else "seconds")
               for case, found in rounds.items()}
    print()
    print(report(args, results) if args.cases is None else json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
