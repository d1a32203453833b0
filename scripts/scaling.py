"""The per-task costs that bound one EM iteration at scale, measured on this machine, and a model
of one iteration on 1 TB of float32 rows on 10, 100 and 1,000 workers built from them.

    python scripts/scaling.py --kernel-seconds 0.5 --tasks 250,1000,3000

Printed, nothing written: (1) kernel CPU seconds per row, daskem's slab kernels called directly on
one float32 slab on one core; (2) the seconds of one ``SuffStats + SuffStats`` and the pickled sizes
a reduction task receives and the client gathers; (3) a real ``LocalCluster`` computing daskem's
own pass graph (``engine.reduction.reduction_graph``) with no-op kernels, so only dask's overhead
is timed; (4) the model. See docs/scaling.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # per-core rates: set before NumPy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import math
import pickle
import statistics
import time

import numpy as np

from daskem.data.slabs import DEFAULT_SLAB_BYTES, TASKS_PER_THREAD, slab_bytes_for_cluster
from daskem.engine.reduction import DEFAULT_FAN_IN
from daskem.kernels import mixture, nearest
from daskem.kernels.covariance import get_covariance_type
from daskem.kernels.params import GMMParams
from daskem.kernels.tiles import TILE_ROWS

FEATURES = (32, 128)
COMPONENTS = (16, 256)
MODELS = ("full", "diag", "kmeans")
FLOAT32 = 4
TB = 10**12
MiB = 2**20


# ---------------------------------------------------------------------------- 1. kernels
def slab_and_params(model: str, n_rows: int, n_features: int, n_components: int, seed: int = 0):
    """A float32 slab and a kernel over it: the model's parameters built from statistics of the slab
    (every component sees every row, so every covariance is well conditioned whatever D and K)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    centers = X[rng.choice(n_rows, n_components, replace=False)].astype(np.float64)
    if model == "kmeans":
        return X, lambda rows: nearest.hard_chunk_stats(rows, centers), centers
    cov = get_covariance_type(model)
    sample = X[: min(n_rows, TILE_ROWS)]
    uniform = np.full((len(sample), n_components), 1.0 / n_components)
    stats = mixture.resp_chunk_stats(sample, uniform, centers, cov)
    nk = stats.nk
    covariances = cov.covariances_from_stats(nk, stats.s1 / nk[:, None], stats.s2, 1e-6)
    params = GMMParams(np.full(n_components, 1.0 / n_components), centers, covariances,
                       cov.precision_cholesky(covariances, reg_covar=1e-6))
    return X, lambda rows: mixture.gmm_chunk_stats(rows, params, cov), params


def cpu_seconds(function, *args) -> tuple[float, float, object]:
    """(CPU seconds of this thread, wall seconds, result) of one call."""
    cpu, wall = time.thread_time(), time.perf_counter()
    result = function(*args)
    return time.thread_time() - cpu, time.perf_counter() - wall, result


def measure_kernels(args) -> list[dict]:
    """Kernel CPU seconds per row for every (model, D, K), on one slab each."""
    cases = []
    for n_features in FEATURES:
        slab_rows = args.slab_mib * MiB // (FLOAT32 * n_features)
        for n_components in COMPONENTS:
            for model in MODELS:
                X, kernel, params = slab_and_params(model, slab_rows, n_features, n_components)
                trial, _, _ = cpu_seconds(kernel, X[: 2 * TILE_ROWS])  # also warms up BLAS and buffers
                affordable = int(args.kernel_seconds / max(trial / (2 * TILE_ROWS), 1e-12))
                rows = min(slab_rows, max(2 * TILE_ROWS, affordable // TILE_ROWS * TILE_ROWS))
                cpu, wall, stats = cpu_seconds(kernel, X[:rows])
                cases.append(dict(model=model, D=n_features, K=n_components, rows=rows, slab_rows=slab_rows,
                                  cpu=cpu, wall=wall, per_row=cpu / rows, stats=stats, params=params))
                del X
    return cases


def print_kernels(cases: list[dict], args) -> None:
    print(f"1. kernel CPU seconds per row, one core, float32 slabs of at most {args.slab_mib} MiB "
          f"(fewer rows when one call would exceed {args.kernel_seconds:g} s)")
    print(f"{'model':8} {'D':>4} {'K':>4} {'rows timed':>11} {'slab rows':>10} {'cpu s':>8} {'wall s':>8} "
          f"{'s/row':>10} {'s per 64 MiB':>13}")
    for c in cases:
        per_64 = c["per_row"] * 64 * MiB / (FLOAT32 * c["D"])
        print(f"{c['model']:8} {c['D']:4d} {c['K']:4d} {c['rows']:11,d} {c['slab_rows']:10,d} {c['cpu']:8.3f} "
              f"{c['wall']:8.3f} {c['per_row']:10.3e} {per_64:13.2f}")
    print()


# -------------------------------------------------------------------------- 2. reduction
def measure_reduction(cases: list[dict], repeats_seconds: float = 0.2) -> None:
    """Seconds per ``SuffStats + SuffStats`` (median of repeats) and pickled sizes, into each case."""
    for c in cases:
        stats = c["stats"]
        times = []
        started = time.perf_counter()
        while time.perf_counter() - started < repeats_seconds or len(times) < 5:
            cpu, _, _ = cpu_seconds(stats.__add__, stats)
            times.append(cpu)
        c["add"] = statistics.median(times)
        c["stats_bytes"] = len(pickle.dumps(stats, protocol=5))
        c["payload_bytes"] = len(pickle.dumps(c["params"], protocol=5))


def print_reduction(cases: list[dict], fan_in: int) -> None:
    print(f"2. reduction: one SuffStats + SuffStats, pickled sizes; a reduction task of fan-in {fan_in} "
          f"receives {fan_in} values and adds {fan_in - 1}")
    print(f"{'model':8} {'D':>4} {'K':>4} {'add s':>10} {'stats bytes':>12} {'task in bytes':>14} "
          f"{'task add s':>11} {'payload bytes':>14}")
    for c in cases:
        print(f"{c['model']:8} {c['D']:4d} {c['K']:4d} {c['add']:10.2e} {c['stats_bytes']:12,d} "
              f"{fan_in * c['stats_bytes']:14,d} {(fan_in - 1) * c['add']:11.2e} {c['payload_bytes']:14,d}")
    print()


# -------------------------------------------------------------------------- 3. scheduler
def noop_kernel(slab, row_start, payload):
    """A map task of no work returning a small array, like a kernel's statistics but empty."""
    return np.zeros(4)


def add_all(values):
    """A reduction task of no real work: the sum of its inputs."""
    return sum(values)


def pass_graph(n_slabs: int, fan_in: int):
    """daskem's pass graph over ``n_slabs`` one-row slabs: the array's read tasks, one map task per
    slab, the tree of ``fan_in`` reductions, the payload; built by the engine's own function."""
    import dask.array as da

    from daskem.engine.reduction import reduction_graph

    X = da.from_array(np.zeros((n_slabs, 4), dtype=np.float32), chunks=(1, 4))
    return reduction_graph(X, noop_kernel, None, name=f"sim-{n_slabs}", combine=add_all, fan_in=fan_in)


def children_cpu(process) -> float:
    """User + system CPU seconds of every process below ``process`` (nannies and workers)."""
    total = 0.0
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except Exception:  # a process that ended between the listing and the reading
            pass
    return total


def measure_scheduler(args) -> list[dict]:
    """Wall and CPU seconds of one pass graph per size, on a real LocalCluster."""
    import dask
    import psutil
    from distributed import Client, LocalCluster

    me = psutil.Process()
    runs = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit="2GiB") as cluster, Client(cluster):
        dask.compute(pass_graph(200, args.fan_in))  # warm up: imports, connections, function caches
        idle = idle_rates(me, seconds=3.0)
        for n_slabs in args.tasks:
            build_cpu, build_wall = time.process_time(), time.perf_counter()
            root = pass_graph(n_slabs, args.fan_in)
            n_tasks = len(root.__dask_graph__())
            build_cpu, build_wall = time.process_time() - build_cpu, time.perf_counter() - build_wall
            workers_before, cpu, wall = children_cpu(me), time.process_time(), time.perf_counter()
            dask.compute(root)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            runs.append(dict(slabs=n_slabs, tasks=n_tasks, build=build_cpu, build_wall=build_wall, wall=wall,
                             scheduler=cpu - idle[0] * wall, idle=idle,
                             workers=children_cpu(me) - workers_before - idle[1] * wall))
    return runs


def idle_rates(me, seconds: float) -> tuple[float, float]:
    """CPU seconds per second of this process and of the workers while no task runs (heartbeats,
    the workers' sampling profiler): subtracted from the runs, as it grows with time, not tasks."""
    workers, cpu, wall = children_cpu(me), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - wall
    return (time.process_time() - cpu) / wall, (children_cpu(me) - workers) / wall


def print_scheduler(runs: list[dict], args) -> tuple[float, float]:
    """Print the runs; return the per-task costs the model uses: serial (client build + scheduler
    CPU) and on a worker (its CPU per task it runs), medians over the runs."""
    print(f"3. scheduler: daskem's pass graph of no-op tasks (fan-in {args.fan_in}) on a LocalCluster of "
          f"{args.workers} worker processes x 1 thread")
    idle = runs[0]["idle"] if runs else (0.0, 0.0)
    print("   'client+sched cpu' is this process during the compute (the in-process scheduler and the client),")
    print(f"   'workers cpu' the nannies and workers; both less their idle CPU ({idle[0]:.3f} and {idle[1]:.3f} "
          "cores, measured for 3 s before the runs) times the wall time;")
    print("   'serial/task' = (graph build + client+scheduler cpu) / tasks, the part no number of workers divides")
    print(f"{'slabs':>7} {'tasks':>7} {'build s':>8} {'compute wall s':>15} {'client+sched cpu':>17} "
          f"{'workers cpu':>12} {'wall/task':>10} {'serial/task':>12} {'workers/task':>13}")
    for r in runs:
        r["serial_per_task"] = (r["build"] + r["scheduler"]) / r["tasks"]
        print(f"{r['slabs']:7,d} {r['tasks']:7,d} {r['build']:8.2f} {r['wall']:15.2f} {r['scheduler']:17.2f} "
              f"{r['workers']:12.2f} {r['wall'] / r['tasks']:10.2e} {r['serial_per_task']:12.2e} "
              f"{r['workers'] / r['tasks']:13.2e}")
    tasks = np.array([r["tasks"] for r in runs], dtype=float)
    serial = np.array([r["build"] + r["scheduler"] for r in runs])
    walls = np.array([r["wall"] + r["build_wall"] for r in runs])
    per_task = float(np.median(serial / tasks))
    worker = float(np.median([r["workers"] / r["tasks"] for r in runs]))
    if len(runs) >= 2:
        slope, intercept = np.polyfit(tasks, walls, 1)
        print(f"   linearity: build + compute wall = {intercept:.3f} s + {slope:.3e} s x tasks (least squares); "
              f"serial/task from {min(serial / tasks):.2e} to {max(serial / tasks):.2e}")
    print(f"   model's costs per task: the medians, serial {per_task:.3e} s, on a worker {worker:.3e} s")
    print("   check of the model's scheduler figure (tasks x cost per task) against the simulation:")
    for r, predicted, measured in zip(runs, tasks * per_task, walls):
        print(f"     {r['tasks']:7,d} tasks: model {predicted:7.2f} s, simulated build + compute wall {measured:7.2f} s "
              f"(ratio {measured / predicted:.2f}), serial cpu {r['build'] + r['scheduler']:7.2f} s")
    print()
    return per_task, worker


# ------------------------------------------------------------------------------ 4. model
def reduction_tasks(n: int, fan_in: int) -> tuple[int, int]:
    """(tasks, depth) of the tree ``engine.reduction.reduction_graph`` builds over ``n`` map results."""
    tasks = depth = 0
    while n > 1 or depth == 0:
        n = math.ceil(n / fan_in)
        tasks, depth = tasks + n, depth + 1
    return tasks, depth


def pass_tasks(n_slabs: int, fan_in: int) -> tuple[int, int]:
    """(tasks, depth) of one pass: a read and a map task per slab, the tree, the payload and the array."""
    tree, depth = reduction_tasks(n_slabs, fan_in)
    return 2 * n_slabs + tree + 2, depth


def model_pass(case: dict, n_workers: int, costs: tuple[float, float], args, slab_bytes: int | None = None) -> dict:
    """Seconds of one pass over ``--data-tb`` TB for one kernel case on ``n_workers`` workers, with
    ``costs`` = (serial, worker) seconds per task; slabs as daskem plans them unless ``slab_bytes``."""
    data = int(args.data_tb * TB)
    row_bytes = FLOAT32 * case["D"]
    rows = data // row_bytes
    cores = n_workers * args.cores
    if slab_bytes is None:
        slab_bytes = slab_bytes_for_cluster(data, DEFAULT_SLAB_BYTES, n_threads=cores,
                                            smallest_memory=args.worker_memory_gib * 2**30)
    slab_rows = max(1, slab_bytes // row_bytes)
    slabs = math.ceil(rows / slab_rows)
    tasks, depth = pass_tasks(slabs, args.fan_in)
    net = args.net_mb_s * 1e6
    serial, worker = costs
    scheduler = tasks * serial
    # Equal slabs run in waves of one per thread; each slab also costs its tasks' worker-side overhead.
    compute = math.ceil(slabs / cores) * (slab_rows * case["per_row"] + tasks / slabs * worker)
    read = math.ceil(slabs / n_workers) * slab_rows * row_bytes / (args.read_mb_s * 1e6)
    tree = depth * (args.fan_in * case["stats_bytes"] / net + (args.fan_in - 1) * case["add"])
    broadcast = case["payload_bytes"] / net * (1 + math.ceil(math.log2(max(2, n_workers))))
    tail = tree + case["stats_bytes"] / net + broadcast
    work = max(compute, read)
    bound = max(("compute", compute), ("read", read), ("scheduler", scheduler), key=lambda item: item[1])[0]
    return dict(rows=rows, slab_bytes=slab_rows * row_bytes, slabs=slabs, tasks=tasks, depth=depth,
                gathered=case["stats_bytes"], payload=case["payload_bytes"], scheduler=scheduler, compute=compute,
                read=read, tail=tail, expected=max(work, scheduler) + tail, pessimistic=work + scheduler + tail,
                bound=bound)


def break_even_slab(case: dict, n_workers: int, per_task: float, args) -> float:
    """Slab bytes above which the scheduler no longer bounds a pass: tasks per slab x cost per task
    x the bytes per second all workers consume (the read or the compute, whichever is slower)."""
    per_core = FLOAT32 * case["D"] / case["per_row"]
    per_worker = min(args.read_mb_s * 1e6, args.cores * per_core)
    tasks_per_slab = 2 + 1 / (args.fan_in - 1)
    return tasks_per_slab * per_task * n_workers * per_worker


def print_model(cases: list[dict], costs: tuple[float, float], args) -> None:
    per_task = costs[0]
    print(f"4. model: one pass (one EM iteration, one candidate) over {args.data_tb:g} TB of float32 rows")
    print(f"   a worker = {args.cores} cores (one thread each, one-core kernel rates of table 1), "
          f"{args.worker_memory_gib} GiB, reads {args.read_mb_s:g} MB/s from object storage, "
          f"moves {args.net_mb_s:g} MB/s between workers;")
    print(f"   slabs as daskem plans them (slab_bytes_for_cluster: at most {DEFAULT_SLAB_BYTES // MiB} MiB, "
          f"at least {TASKS_PER_THREAD} slabs per thread, at most 1/8 of a worker's memory);")
    print(f"   scheduler = tasks x {per_task:.2e} s (serial/task of table 3); compute = waves of one slab per "
          f"thread x (slab rows x s/row + tasks per slab x {costs[1]:.2e} s, workers/task of table 3);")
    print("   read = slabs per worker x slab bytes / read rate;")
    print("   tail = reduction tree (depth x (fan-in x stats bytes / net + (fan-in - 1) x add s)) + gather + "
          "payload broadcast (payload / net x (1 + log2 workers));")
    print("   expected = max(compute, read, scheduler) + tail (dispatch overlaps the workers' work); "
          "no-overlap = max(compute, read) + scheduler + tail")
    header = (f"{'model':7} {'D':>4} {'K':>4} {'workers':>7} {'rows':>10} {'slab MiB':>8} {'slabs':>8} {'tasks':>8} "
              f"{'depth':>5} {'gathered B':>11} {'payload B':>11} {'sched s':>8} {'compute s':>9} {'read s':>7} "
              f"{'tail s':>7} {'expected s':>10} {'no-overlap':>10}  bound")
    print(header)
    for c in cases:
        for n_workers in args.model_workers:
            m = model_pass(c, n_workers, costs, args)
            print(f"{c['model']:7} {c['D']:4d} {c['K']:4d} {n_workers:7,d} {m['rows']:10.3g} "
                  f"{m['slab_bytes'] / MiB:8.1f} {m['slabs']:8,d} {m['tasks']:8,d} {m['depth']:5d} "
                  f"{m['gathered']:11,d} {m['payload']:11,d} {m['scheduler']:8.2f} {m['compute']:9.2f} "
                  f"{m['read']:7.2f} {m['tail']:7.2f} {m['expected']:10.2f} {m['pessimistic']:10.2f}  {m['bound']}")
    print()
    print_break_even(cases, costs, args)
    print_best_slabs(cases, costs, args)


# dask.distributed's documentation: "Each task suffers about 1ms of overhead."
DOCUMENTED_PER_TASK = 1e-3


def print_per_cluster(cases: list[dict], costs: tuple[float, float], args, cell, width: int) -> None:
    """One table per serial cost per task (measured, then documented): a row per case, a column per
    cluster size, each cell ``cell(case, n_workers, (serial, worker))``."""
    for label, serial in ((f"measured {costs[0]:.2e} s", costs[0]), ("documented 1 ms", DOCUMENTED_PER_TASK)):
        print(f"   per task: {label}")
        print(f"{'model':7} {'D':>4} {'K':>4} " + " ".join(f"{f'{w:,d} workers':>{width}}" for w in args.model_workers))
        for c in cases:
            cells = (cell(c, n_workers, (serial, costs[1])) for n_workers in args.model_workers)
            print(f"{c['model']:7} {c['D']:4d} {c['K']:4d} " + " ".join(f"{text:>{width}}" for text in cells))
    print()


def print_break_even(cases: list[dict], costs: tuple[float, float], args) -> None:
    """For each case and cluster, the slab size below which the scheduler bounds a pass, against
    the slab daskem plans; at the measured cost per task and at dask's documented one."""
    print("   where the scheduler bounds a pass: below the slab size at which dispatch takes as long as the")
    print("   workers' work, (2 + 1/(fan-in - 1)) tasks per slab x cost per task x workers x bytes/s per worker;")
    print("   each cell: needed slab MiB / planned slab MiB, slabs per worker at the needed size, and")
    print("   ok (planned >= needed), 'larger' (raise the slab size) or '<threads' (the needed slab leaves a")
    print(f"   worker fewer slabs than its {args.cores} threads)")

    def cell(case, n_workers, pair):
        need = break_even_slab(case, n_workers, pair[0], args)
        planned = model_pass(case, n_workers, pair, args)["slab_bytes"]
        per_worker = args.data_tb * TB / (n_workers * need)
        flag = "ok" if planned >= need else ("larger" if per_worker >= args.cores else "<threads")
        return f"{need / MiB:7.1f} / {planned / MiB:5.1f} {per_worker:9.1f}/w {flag:>8}"

    print_per_cluster(cases, costs, args, cell, 34)


def print_best_slabs(cases: list[dict], costs: tuple[float, float], args) -> None:
    """The slab size (a power of two MiB, up to 1/8 of a worker's memory) with the shortest expected
    pass, against the planned one, at the measured and at the documented cost per task."""
    sizes = [2**k * MiB for k in range(3, 20) if 2**k * MiB <= args.worker_memory_gib * 2**30 // 8]
    print("   the best slab size: the shortest expected pass over power-of-two slab sizes (same model),")
    print("   each cell: best slab MiB, its expected s / the expected s of the planned slab")

    def cell(case, n_workers, pair):
        planned = model_pass(case, n_workers, pair, args)["expected"]
        seconds, size = min((model_pass(case, n_workers, pair, args, size)["expected"], size) for size in sizes)
        return f"{size / MiB:6.0f} {seconds:8.2f} / {planned:8.2f}"

    print_per_cluster(cases, costs, args, cell, 26)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slab-mib", type=int, default=64, help="largest float32 slab a kernel is timed on")
    parser.add_argument("--kernel-seconds", type=float, default=1.0,
                        help="fewer rows than a slab when one kernel call would take longer")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated numbers of slabs (map tasks) to simulate; default 1000, 4000, "
                             "1 TB at the default slab size, 16000 (minutes of CPU)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each) of the simulation")
    parser.add_argument("--fan-in", type=int, default=DEFAULT_FAN_IN)
    parser.add_argument("--data-tb", type=float, default=1.0, help="data size of the model, in TB (1e12 bytes)")
    parser.add_argument("--model-workers", default="10,100,1000")
    parser.add_argument("--cores", type=int, default=8, help="cores (threads) per modelled worker")
    parser.add_argument("--worker-memory-gib", type=int, default=32)
    parser.add_argument("--read-mb-s", type=float, default=500.0, help="per-worker read rate from object storage")
    parser.add_argument("--net-mb-s", type=float, default=1000.0, help="per-worker network rate between workers")
    parser.add_argument("--skip-scheduler", default=None, metavar="SERIAL[,WORKER]",
                        help="no simulation: take these seconds per task (serial, and on a worker) instead")
    args = parser.parse_args(argv)
    default_tasks = [1000, 4000, math.ceil(args.data_tb * TB / DEFAULT_SLAB_BYTES), 16000]
    args.tasks = sorted(set(default_tasks if args.tasks is None else (int(t) for t in args.tasks.split(","))))
    args.model_workers = [int(w) for w in args.model_workers.split(",")]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"numpy {np.__version__}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}, "
          f"{os.cpu_count()} cores here, load average {os.getloadavg()[0]:.2f} at start")
    print(f"1 TB = 1e12 bytes = {math.ceil(args.data_tb * TB / DEFAULT_SLAB_BYTES):,d} slabs of the default "
          f"{DEFAULT_SLAB_BYTES // MiB} MiB\n")
    cases = measure_kernels(args)
    print_kernels(cases, args)
    measure_reduction(cases)
    print_reduction(cases, args.fan_in)
    if args.skip_scheduler is None:
        costs = print_scheduler(measure_scheduler(args), args)
    else:
        given = [float(value) for value in args.skip_scheduler.split(",")]
        costs = (given[0], given[1] if len(given) > 1 else 0.0)
        print(f"3. scheduler: not simulated; given {costs[0]:.2e} s per task serial, {costs[1]:.2e} s on a worker\n")
    print_model(cases, costs, args)


if __name__ == "__main__":
    main()
