"""Cost of the outlier threshold and of sampling, against one E-step pass over the same rows.

    python scripts/bench_outputs.py --rows 1000000 --features 8 --components 6

Fits a mixture on synthetic rows held as a Dask array (Dask's threaded scheduler, in this process),
then measures: one E-step pass (the mean log-likelihood of every row), ``set_outlier_threshold``
with a contamination (its passes counted, its threshold checked against a full sort), and
``daskem sample``'s writer drawing as many rows into a Zarr group. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=6)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--contamination", type=float, default=0.01)
    args = parser.parse_args()

    from daskem import GaussianMixture
    from daskem.engine.reduction import counting_passes
    from daskem.pipeline.sampling import write_samples

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, size=(args.components, args.features))
    X = centres[rng.integers(args.components, size=args.rows)] + rng.normal(size=(args.rows, args.features))
    lazy = da.from_array(X, chunks=(args.chunk_rows, args.features))
    model = GaussianMixture(args.components, random_state=0, max_iter=10).fit(lazy)

    t = time.perf_counter()
    model.score(lazy)
    e_step = time.perf_counter() - t

    t = time.perf_counter()
    with counting_passes() as passes:
        model.set_outlier_threshold(lazy, contamination=args.contamination)
    threshold = time.perf_counter() - t
    exact = np.sort(model.score_samples(X))[round(args.contamination * args.rows)]

    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        write_samples(model, Path(folder) / "s.zarr", args.rows, seed=1, chunk_rows=args.chunk_rows)
        sampling = time.perf_counter() - t

    print(json.dumps({
        "rows": args.rows, "features": args.features, "components": args.components,
        "e_step_pass_s": round(e_step, 3),
        "threshold_s": round(threshold, 3), "threshold_passes": sum(passes.values()),
        "threshold_is_exact": bool(model.offset_ == exact),
        "sample_s": round(sampling, 3), "sample_rows_per_s": round(args.rows / sampling),
    }))


if __name__ == "__main__":
    main()
