"""Where a slab kernel's time goes: nanoseconds per row of each step of the tile loop, one thread.

    python scripts/profile_kernels.py --rows 62500 --features 32 --components 16

Runs the steps of ``kernels.nearest.hard_chunk_stats``'s GEMM kernel (k-means with more than
``lloyd.COMPILED_COMPONENTS`` centres; the whole kernel timed is the one that runs at
``--components``, the compiled loop up to that number), ``kernels.mixture.gmm_chunk_stats``
(diag, full) through the kernels' own helpers (``CentredRows``, ``PreparedCenters``,
``PreparedMixture``, ``SlabSums``, ``logsumexp_rows``) and times each with the process's CPU
clock, so a busy machine inflates the figures less than a wall clock would. Each kernel runs
``--repeats`` times; the best total is printed, with its steps, next to the whole kernel timed as
it is called. BLAS is limited to one thread, as on a worker with one thread.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402

from daskem.kernels import mixture, nearest  # noqa: E402
from daskem.kernels.covariance import get_covariance_type  # noqa: E402
from daskem.kernels.lloyd import COMPILED_COMPONENTS  # noqa: E402
from daskem.kernels.params import GMMParams  # noqa: E402
from daskem.kernels.tiles import tile_rows, tiles  # noqa: E402


class Steps:
    """CPU seconds per named step, added up over the tiles of one slab."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._last = time.process_time()

    def mark(self, name: str) -> None:
        now = time.process_time()
        self.seconds[name] += now - self._last
        self._last = now

    def finish(self, sums) -> "Steps":
        """The last step: the slab's statistics from the tiles' sums."""
        sums.stats()
        self.mark("slab statistics")
        return self


def kmeans_steps(X, centers) -> Steps:
    steps, prepared = Steps(), nearest.PreparedCenters.of(centers)
    sums = mixture.SlabSums(None, prepared.centred)
    for _, rows in tiles(X, prepared.reference, tile_rows(len(prepared.norms))):
        steps.mark("centre (float64 copy)")
        distances = np.matmul(rows.values, prepared.minus_twice_transposed,
                              out=rows.take("distances", (rows.n_rows, len(prepared.norms))))
        steps.mark("distance GEMM")
        distances += prepared.norms
        steps.mark("+ |c|^2")
        labels = distances.argmin(axis=1)
        steps.mark("argmin")
        nearest_partial = distances[np.arange(rows.n_rows), labels]
        steps.mark("nearest distance")
        sums.add_nearest(rows, labels, nearest_partial)
        steps.mark("counts, inertia, sparse sums")
    return steps.finish(sums)


def mixture_steps(X, params, cov) -> Steps:
    steps, prepared = Steps(), mixture.PreparedMixture.of(params, cov)
    sums = mixture.SlabSums(cov, prepared.centred_means)
    for _, rows in prepared.tiles(X):
        steps.mark("centre (float64 copy)")
        if cov.tile_columns(X.shape[1]) > X.shape[1]:
            rows.packed_outer
            steps.mark("packed outer products")
        weighted = prepared.weighted_log_prob(rows)
        steps.mark("log densities (GEMMs + elementwise)")
        scratch = rows.take("logsumexp", weighted.shape)
        log_norm = mixture.logsumexp_rows(weighted, scratch)
        steps.mark("log-sum-exp and responsibilities")
        sums.add(rows, scratch, log_norm)
        steps.mark("M-step sums (GEMMs)")
    return steps.finish(sums)


def best_of(repeats: int, run) -> dict:
    """The steps of the fastest of ``repeats`` runs."""
    best = None
    for _ in range(repeats):
        steps = run().seconds
        if best is None or sum(steps.values()) < sum(best.values()):
            best = dict(steps)
    return best


def whole_kernel(repeats: int, call) -> float:
    """CPU seconds of the fastest of ``repeats`` calls of the kernel itself."""
    seconds = []
    for _ in range(repeats):
        started = time.process_time()
        call()
        seconds.append(time.process_time() - started)
    return min(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=62_500, help="rows of the slab (the benchmark's chunk)")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--kernels", nargs="*", default=["kmeans", "diag", "full"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features))
    centers = rng.normal(size=(args.components, args.features))
    print(f"slab {args.rows} x {args.features} float64, K = {args.components}, one thread, "
          f"best of {args.repeats}; ns per row")
    for name in args.kernels:
        if name == "kmeans":
            steps = best_of(args.repeats, lambda: kmeans_steps(X, centers))
            whole = whole_kernel(args.repeats, lambda: nearest.hard_chunk_stats(X, centers))
            name = "kmeans (compiled loop)" if args.components <= COMPILED_COMPONENTS else name
        else:
            cov = get_covariance_type(name)
            covariances = {"full": np.tile(np.eye(args.features), (args.components, 1, 1)),
                           "tied": np.eye(args.features), "diag": np.ones((args.components, args.features)),
                           "spherical": np.ones(args.components)}[name]
            params = GMMParams(np.full(args.components, 1 / args.components), centers, covariances,
                               cov.precision_cholesky(covariances))
            steps = best_of(args.repeats, lambda params=params, cov=cov: mixture_steps(X, params, cov))
            whole = whole_kernel(args.repeats, lambda params=params, cov=cov: mixture.gmm_chunk_stats(X, params, cov))
        per_row = 1e9 / args.rows
        steps_of = "the GEMM kernel's steps" if name.endswith("(compiled loop)") else "its steps"
        print(f"\n{name}: whole kernel {whole * per_row:.0f}, {steps_of} {sum(steps.values()) * per_row:.0f}")
        for step, seconds in steps.items():
            print(f"  {step:38s} {seconds * per_row:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
