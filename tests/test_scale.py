"""Bounded memory: a store several times larger than the workers' memory is fitted by streaming.

The CI-sized case uses a store four times one worker's ``memory_limit`` (twice the cluster's);
the ``slow`` case a store four times the whole cluster's. Either way no worker may pause or
restart: no worker logs a pause, the peak memory its monitor sampled stays below the pause
threshold (80% of its limit), and the workers at the end are the workers of the start.
"""

import numpy as np
import pytest
from distributed import Client, LocalCluster

import daskem
from daskem.data.stores import open_array
from daskem.data.synthetic import make_data

PAUSE_FRACTION = 0.8  # distributed's default worker.memory.pause


def _peak_sampled_memory(dask_worker) -> int:
    """The highest process memory the worker's own monitor sampled (what pausing is decided on).

    Not ``getrusage``: Linux carries ``ru_maxrss`` across exec, so a worker spawned from a large
    pytest process would report its parent's high-water mark.
    """
    return max(dask_worker.monitor.quantities["memory"])


def _pause_messages(client) -> list[str]:
    return [message for logs in client.get_worker_logs().values() for _, message in logs
            if "Pausing worker" in message]


def _fit_larger_than_memory(tmp_path, *, memory_limit_mib: int, store_mib: int, n_workers: int = 2):
    n_features = 16
    n_rows = store_mib * 2**20 // (n_features * 8)
    path = str(tmp_path / "big.zarr")
    make_data(path, n_samples=n_rows, n_features=n_features, n_components=6, chunk_rows=65_536, seed=1)
    limit = memory_limit_mib * 2**20
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, memory_limit=limit, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        workers_before = set(client.scheduler_info()["workers"])
        # A worker holds a few slabs at once (one computing, some read ahead, more on a busy
        # machine) besides its own ~300 MiB of Python and libraries: slabs of limit / 32 keep it
        # under the pause line.
        _, X = open_array(path, array="X", slab_bytes=limit // 32)
        assert X.nbytes >= 4 * limit
        kmeans = daskem.KMeans(6, random_state=0, max_iter=4, init_rounds=2).fit(X)
        gmm = daskem.GaussianMixture(6, covariance_type="diag", max_iter=3,
                                     means_init=kmeans.cluster_centers_, random_state=0).fit(X)
        peaks = client.run(_peak_sampled_memory)
        paused = _pause_messages(client)
        workers_after = set(client.scheduler_info()["workers"])
        statuses = {info.get("status", "running") for info in client.scheduler_info()["workers"].values()}
    assert workers_after == workers_before, "a worker was restarted during the fit"
    assert statuses <= {"running"}
    assert not paused, paused
    for address, peak in peaks.items():
        assert peak < PAUSE_FRACTION * limit, f"worker {address} peaked at {peak / 2**20:.0f} MiB"
    assert np.isfinite(gmm.lower_bound_)
    print(f"store {X.nbytes / 2**20:.0f} MiB, {n_workers} workers x {memory_limit_mib} MiB, "
          f"peak worker memory {max(peaks.values()) / 2**20:.0f} MiB")
    return max(peaks.values()), X.nbytes


@pytest.mark.slow
@pytest.mark.cluster
def test_fit_streams_a_store_four_times_a_workers_memory_limit(tmp_path):
    _fit_larger_than_memory(tmp_path, memory_limit_mib=500, store_mib=2048)


@pytest.mark.slow
@pytest.mark.cluster
def test_fit_streams_a_store_four_times_the_whole_clusters_memory(tmp_path):
    _fit_larger_than_memory(tmp_path, memory_limit_mib=500, store_mib=4096)
