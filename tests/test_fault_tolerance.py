"""A fit survives a worker killed in the middle of a pass, and gives the same model.

Parameters live in the task graph (not only in a worker's memory) and every task is a pure
function of its inputs, so the scheduler recomputes what the dead worker held and the reduction
tree, fixed by the graph, adds the same numbers in the same order.
"""

import logging
import os
import signal
import threading

import numpy as np
import pytest
from distributed import Client, LocalCluster

import daskem
from daskem.data.stores import open_array
from daskem.data.synthetic import make_data


class KillWorkerDuringIteration(logging.Handler):
    """When iteration ``at`` is logged, SIGKILL one worker process shortly after the next pass starts."""

    def __init__(self, pid: int, at: int, delay: float):
        super().__init__()
        self.pid, self.at, self.delay = pid, at, delay
        self.killed = threading.Event()

    def emit(self, record):
        if f"iteration {self.at}:" in record.getMessage() and not self.killed.is_set():
            threading.Timer(self.delay, self._kill).start()

    def _kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self.killed.set()


@pytest.mark.cluster
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gmm_fit_survives_a_killed_worker_and_gives_the_same_model(tmp_path):
    path = str(tmp_path / "data.zarr")
    make_data(path, n_samples=240_000, n_features=16, n_components=6, chunk_rows=10_000, seed=3)
    _, X = open_array(path, array="X", slab_bytes=1)
    start = np.asarray(X[:6].compute())
    settings = dict(covariance_type="full", max_iter=6, tol=0.0, weights_init=np.full(6, 1 / 6), means_init=start,
                    precisions_init=np.tile(np.eye(16), (6, 1, 1)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        reference = daskem.GaussianMixture(6, **settings).fit(X)
        pid = next(iter(client.run(os.getpid).values()))
        killer = KillWorkerDuringIteration(pid, at=2, delay=0.05)
        logger = logging.getLogger("daskem")
        logger.addHandler(killer)
        previous_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            survived = daskem.GaussianMixture(6, **settings).fit(X)
        finally:
            logger.removeHandler(killer)
            logger.setLevel(previous_level)
        assert killer.killed.is_set()
        assert pid not in client.run(os.getpid).values()  # the worker really was replaced
    np.testing.assert_array_equal(survived.means_, reference.means_)
    np.testing.assert_array_equal(survived.covariances_, reference.covariances_)
    assert survived.lower_bound_ == reference.lower_bound_
