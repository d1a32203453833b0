"""What glibc's malloc settings cost a read: one chunk of a Zarr store read, decoded and read by zarr,
in a plain process under each setting a worker may start with.

    python scripts/profile_reads.py --store bench-data/bench.zarr/X

Each setting runs in a process of its own (glibc reads its ``MALLOC_*`` variables once, at start):
glibc's defaults, distributed's (``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes the mmap
threshold at 128 KiB, so every large buffer is a fresh mapping) and daskem's workers'
(``daskem/pipeline/dask_config/workers.yaml``). Prints the best of ``--repeats`` milliseconds for:
reading the first chunk's file, decoding it into a new buffer with the array's own codecs
(``bytes`` then one compressor), zarr reading that chunk, zarr reading the whole array (with its
own threads), and a slab of the first two chunks read by zarr and by daskem's ``SlabReader``.
Needs a Zarr v3 array with one compressor and no sharding, such as ``bench.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(store: str, repeats: int) -> dict[str, float]:
    """The four timings, in milliseconds, in this process."""
    import numcodecs
    import zarr

    array = zarr.open_array(store, mode="r")
    rows = array.chunks[0]
    compressor = array.metadata.codecs[-1]
    codec = numcodecs.get_codec({"id": compressor.to_dict()["name"], **compressor.to_dict().get("configuration", {})})
    chunk_file = os.path.join(store, *array.metadata.encode_chunk_key((0,) * array.ndim).split("/"))

    def read_file():
        with open(chunk_file, "rb") as file:
            return file.read()

    raw = read_file()

    def best(step) -> float:
        step()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return 1e3 * min(times)

    from daskem.data.chunks import SlabReader

    reader = SlabReader(array, store)  # decodes straight into the slab (daskem.data.direct_reads)
    slab = (slice(0, min(2 * rows, array.shape[0])), slice(0, array.shape[1]))
    return {"read the chunk's file": best(read_file), "decode it into a new buffer": best(lambda: codec.decode(raw)),
            "zarr, one chunk": best(lambda: array[:rows]), "zarr, the whole array": best(lambda: array[:]),
            "zarr, a slab of 2 chunks": best(lambda: array[slab]), "daskem, a slab of 2 chunks": best(lambda: reader[slab])}


SETTINGS = {
    "glibc's defaults": {},
    "distributed's": {"MALLOC_TRIM_THRESHOLD_": "65536"},
}


def daskem_settings() -> dict[str, str]:
    from daskem.pipeline.worker_settings import worker_environment

    return {name: str(value) for name, value in worker_environment().items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="bench-data/bench.zarr/X", help="a Zarr v3 array")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # in this process, print JSON
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.store, args.repeats)))
        return 0
    results = {}
    for label, environ in {**SETTINGS, "daskem's workers'": daskem_settings()}.items():
        env = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
        output = subprocess.run([sys.executable, __file__, "--store", args.store, "--repeats", str(args.repeats),
                                 "--measure"], env={**env, **environ}, check=True, capture_output=True, text=True)
        results[label] = json.loads(output.stdout.strip().splitlines()[-1])
        described = ", ".join(f"{name}={value}" for name, value in environ.items()) or "none set"
        print(f"{label}: {described}", flush=True)
    steps = list(next(iter(results.values())))
    print("\n" + f"{f'ms, best of {args.repeats}':30s}" + "".join(f"{label:>28s}" for label in results))
    for step in steps:
        print(f"{step:30s}" + "".join(f"{result[step]:28.1f}" for result in results.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
