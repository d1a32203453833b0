"""The chunk-kernel stage: pure NumPy functions of one slab and the parameters, returning sufficient statistics.

Nothing here imports Dask: every function runs inside one task on a worker (or directly on a NumPy array).
"""
