"""Counter-based random numbers keyed by (seed, stream, global row index).

A row's draw depends only on the seed, the purpose of the draw (the stream) and the row's index
in the whole array: the same rows are sampled whatever the chunking or the number of workers,
and a task recomputed after a lost worker draws the same numbers.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MAX_SEED = np.iinfo(np.int32).max


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-mixing hash of 64-bit integers."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: int) -> np.uint64:
    """One 64-bit key per (seed, stream) pair."""
    mixed = _splitmix64(np.array([seed], dtype=np.uint64))
    return _splitmix64(mixed ^ np.array([stream], dtype=np.uint64))[0]


def row_uniforms(seed: int, stream: int, row_start: int, n_rows: int, n_columns: int = 1) -> np.ndarray:
    """Uniform draws in [0, 1) for rows ``row_start .. row_start + n_rows - 1``, shape (n_rows, n_columns)."""
    counters = np.arange(row_start * n_columns, (row_start + n_rows) * n_columns, dtype=np.uint64)
    bits = _splitmix64(counters ^ stream_key(seed, stream))
    return ((bits >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(n_rows, n_columns)


def seeds_from(random_state, count: int) -> list[int]:
    """``count`` integer seeds from a scikit-learn ``random_state`` (None, int or RandomState)."""
    from sklearn.utils import check_random_state  # on the client only: the workers' kernels need no scikit-learn

    generator = check_random_state(random_state)
    return [int(seed) for seed in generator.randint(_MAX_SEED, size=count)]
