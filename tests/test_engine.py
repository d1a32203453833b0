"""The distributed loop: graph shape, parameters placed once, real worker processes."""

import logging
import pickle
import re

import dask
import dask.array as da
import numpy as np
import pytest
from counting import counted_array, loaded_modules, recorded_gathers
from distributed import Client, LocalCluster, wait
from sklearn.datasets import make_blobs

import daskem
from daskem.engine.em import SlabPayload, candidate_stats, run_em
from daskem.engine import reduction
from daskem.engine.reduction import INLINED_PAYLOAD_BYTES, map_reduce, pickled_bytes, reduction_graph
from daskem.kernels.covariance import get_covariance_type
from daskem.kernels.stats import merge_candidates
from daskem.models.families import (
    GaussianMixtureFamily,
    GMMParams,
    KMeansFamily,
    KMeansParams,
)


@pytest.fixture(scope="module")
def client():
    """A real cluster: two worker processes on this machine."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def _blobs(n_rows=4000, n_features=6, centers=4, seed=0):
    return make_blobs(n_rows, n_features=n_features, centers=centers, random_state=seed)[0]


def _big_gmm_payload(n_components=16, n_features=40):
    """Parameters large enough (about 200 kB) that copying them into each task would show."""
    rng = np.random.default_rng(0)
    cov = get_covariance_type("full")
    covariances = np.tile(np.eye(n_features), (n_components, 1, 1))
    params = GMMParams(np.full(n_components, 1 / n_components), rng.normal(size=(n_components, n_features)),
                       covariances, cov.precision_cholesky(covariances))
    return SlabPayload((GaussianMixtureFamily(cov, 1e-6),), (params,)), params


@pytest.mark.parametrize("n_blocks,fan_in", [(1, 4), (7, 2), (50, 8), (200, 16)])
def test_one_iteration_graph_has_a_task_per_block_plus_a_bounded_tree(n_blocks, fan_in):
    X = da.zeros((n_blocks * 10, 40), chunks=(10, 40))
    payload, _ = _big_gmm_payload()
    graph = dict(reduction_graph(X, candidate_stats, payload, name="run-iter1", combine=merge_candidates,
                                 fan_in=fan_in).__dask_graph__())
    map_tasks = [k for k in graph if isinstance(k, tuple) and k[0] == "run-iter1-map"]
    reduce_tasks = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("run-iter1-reduce")]
    assert len(map_tasks) == n_blocks
    assert len(reduce_tasks) <= max(1, 2 * n_blocks // (fan_in - 1) + 1)
    # blocks + map tasks + reductions + the payload when it has its own key: O(number of blocks)
    assert len(graph) == 2 * n_blocks + len(reduce_tasks) + ("run-iter1-payload" in graph)
    for key in reduce_tasks:
        assert len(graph[key].dependencies) <= fan_in


def test_parameters_are_in_the_graph_once_not_in_every_task():
    n_blocks = 60
    X = da.zeros((n_blocks * 10, 40), chunks=(10, 40))
    payload, params = _big_gmm_payload()
    graph = dict(reduction_graph(X, candidate_stats, payload, name="run-iter1", combine=merge_candidates,
                                 fan_in=8).__dask_graph__())
    params_bytes = len(pickle.dumps(params))
    graph_bytes = len(pickle.dumps(graph))
    assert params_bytes > 100_000
    assert graph_bytes < 2 * params_bytes  # 60 copies would be 60x
    assert "run-iter1-payload" in graph
    map_task = graph[("run-iter1-map", 0)]
    assert "run-iter1-payload" in map_task.dependencies


def test_task_keys_carry_run_id_and_iteration():
    X = da.from_array(_blobs(), chunks=(1000, -1))
    centers = _blobs()[:4]
    root = reduction_graph(X, candidate_stats, SlabPayload((KMeansFamily(),), (KMeansParams(centers),)),
                           name="daskem-kmeans-abc-iter3", combine=merge_candidates)
    keys = {k[0] if isinstance(k, tuple) else k for k in root.__dask_graph__()}
    assert {"daskem-kmeans-abc-iter3-map", "daskem-kmeans-abc-iter3-reduce0"} <= keys
    big, _ = _big_gmm_payload()
    root = reduction_graph(da.zeros((600, 40), chunks=(10, 40)), candidate_stats, big,
                           name="daskem-gmm-abc-iter3", combine=merge_candidates)
    assert "daskem-gmm-abc-iter3-payload" in root.__dask_graph__()


def test_a_payload_is_sized_as_its_pickle_without_copying_its_arrays():
    import pickle

    for payload in (_big_gmm_payload()[0], SlabPayload((KMeansFamily(),), (KMeansParams(_blobs()[:4]),))):
        whole = len(pickle.dumps(payload, protocol=5))
        assert whole - 64 * 20 <= pickled_bytes(payload) <= whole  # only the arrays' few frame headers apart
    assert pickled_bytes(lambda rows: rows) is None  # for distributed's pickler alone


def test_a_small_payload_is_copied_into_the_tasks_a_large_one_is_keyed_once():
    """Copies of small parameters save each pass a hop through the scheduler; large ones, or many
    copies of small ones, would swell the graph, so they keep one key."""
    X = da.from_array(_blobs(), chunks=(500, -1))
    small = SlabPayload((KMeansFamily(),), (KMeansParams(_blobs()[:4]),))
    graph = dict(reduction_graph(X, candidate_stats, small, name="small", combine=merge_candidates).__dask_graph__())
    assert "small-payload" not in graph
    for index in range(X.numblocks[0]):  # each map task needs only its slab
        assert graph[("small-map", index)].dependencies == {(X.name, index, 0)}
    copies = INLINED_PAYLOAD_BYTES // pickled_bytes(small) + 1
    many_slabs = da.zeros((copies * 2, 6), chunks=(2, 6))
    big, _ = _big_gmm_payload()
    for name, payload, rows in (("big", big, X), ("many", small, many_slabs)):
        graph = dict(reduction_graph(rows, candidate_stats, payload, name=name, combine=merge_candidates).__dask_graph__())
        assert f"{name}-payload" in graph and f"{name}-payload" in graph[(f"{name}-map", 0)].dependencies
    (inlined,) = map_reduce(X, candidate_stats, small, name="small-pass", combine=merge_candidates, fan_in=4)
    with pytest.MonkeyPatch.context() as patch:  # the same pass with the payload under its key
        patch.setattr(reduction, "INLINED_PAYLOAD_BYTES", 0)
        (keyed,) = map_reduce(X, candidate_stats, small, name="keyed-pass", combine=merge_candidates, fan_in=4)
    np.testing.assert_array_equal(keyed.s1, inlined.s1)
    assert keyed.objective == inlined.objective


def test_fit_on_local_cluster_with_worker_processes_equals_local_scheduler(client):
    X = _blobs()
    chunked = da.from_array(X, chunks=(333, -1))
    on_cluster = daskem.GaussianMixture(4, covariance_type="full", random_state=1).fit(chunked)
    with dask.config.set(scheduler="threads"):  # the client stays active; this fit ignores it
        local = daskem.GaussianMixture(4, covariance_type="full", random_state=1).fit(chunked)
    np.testing.assert_allclose(on_cluster.means_, local.means_, rtol=1e-12)
    assert on_cluster.lower_bound_ == pytest.approx(local.lower_bound_, rel=1e-12)
    labels = on_cluster.predict(chunked).compute()
    assert labels.shape == (len(X),)


def test_kmeans_on_local_cluster_gathers_only_the_statistics(client):
    block_bytes = {}
    iteration_root_bytes = {}
    for n_rows in (8_000, 32_000):
        chunked = da.from_array(_blobs(n_rows), chunks=(2000, -1))
        with recorded_gathers(client) as record:
            fitted = daskem.KMeans(4, random_state=0).fit(chunked)
        assert fitted.converged_ and fitted.cluster_centers_.shape == (4, 6)
        names = {key[0] for key in record["submitted"] if isinstance(key, tuple)}
        block_bytes[n_rows] = record["sizes"][chunked.__dask_keys__()[0][0]]
        for key in record["wanted"]:
            name, index = key
            # only the root of each reduction tree (no level above it), or the first centre's row
            tree = re.fullmatch(r"(.+-reduce)(\d+)", name)
            assert re.search(r"-init-\d+-first$", name) or (tree and f"{tree[1]}{int(tree[2]) + 1}" not in names), key
            assert index == 0 and record["sizes"][key] < block_bytes[n_rows] / 10, (key, record["sizes"][key])
        iteration_roots = [key for key in record["wanted"] if re.search(r"-iter\d+-reduce", key[0])]
        assert len(iteration_roots) == fitted.n_iter_ + 1  # converged: the last pass only confirms
        iteration_root_bytes[n_rows] = {record["sizes"][key] for key in iteration_roots}
    # four times the rows, the same statistics: the gathered roots do not grow with N
    assert iteration_root_bytes[8_000] == iteration_root_bytes[32_000] and len(iteration_root_bytes[8_000]) == 1
    assert block_bytes[8_000] == block_bytes[32_000] > 90_000  # a 2000 x 6 float64 block: 96 kB


def test_each_iteration_is_logged_with_objective_change_and_seconds(caplog):
    X = da.from_array(_blobs(), chunks=(500, -1))
    with caplog.at_level(logging.INFO, logger="daskem"):
        daskem.KMeans(4, random_state=0, max_iter=5).fit(X)
    lines = [r.getMessage() for r in caplog.records if re.search(r"iteration \d+:", r.getMessage())]
    assert len(lines) >= 2
    for line in lines:
        assert re.fullmatch(r"k-means iteration \d+: objective [-+.\de]+, change [-+.\dena]+, \d+\.\d\d s", line), line


def test_several_candidates_advance_in_one_pass_and_match_separate_fits(tmp_path):
    store, X = counted_array(tmp_path / "blobs.zarr", _blobs(), chunk_rows=700)
    starts = [_blobs()[i : i + 4] for i in (0, 10, 20)]
    with dask.config.set(scheduler="threads"):  # reads in this process, where they are counted
        together = run_em(X, [KMeansFamily()] * 3, [KMeansParams(c) for c in starts], max_iter=50, tol=0,
                          run_id="together")
        reads_together = dict(store.reads)
        passes_alone = []
        for start, result in zip(starts, together, strict=True):
            store.reads.clear()
            (alone,) = run_em(X, [KMeansFamily()], [KMeansParams(start)], max_iter=50, tol=0, run_id="alone")
            np.testing.assert_array_equal(result.params.centers, alone.params.centers)
            assert result.objective == alone.objective and result.n_iter == alone.n_iter
            # every chunk read once per pass: one per iteration, plus one to score unconverged centres
            assert len(store.reads) == X.numblocks[0] and len(set(store.reads.values())) == 1
            passes_alone.append(store.reads.most_common(1)[0][1])
            assert passes_alone[-1] == len(alone.history) + (not alone.converged)
    assert len(set(passes_alone)) > 1  # the candidates stop at different passes
    # together: each chunk read once per pass of the longest candidate, not once per candidate and pass
    assert reads_together == {key: max(passes_alone) for key in store.reads}


def test_map_reduce_refuses_a_fan_in_below_two():
    with pytest.raises(ValueError, match="fan_in must be at least 2"):
        map_reduce(da.zeros((4, 2), chunks=2), lambda b, r, p: b, None, name="x", combine=list, fan_in=1)


def test_the_workers_run_every_pass_of_a_fit_and_its_outputs_without_importing_scikit_learn(client):
    """scikit-learn (and scipy.stats under it) costs every worker seconds to import; it runs only on the client."""
    X = da.from_array(_blobs(), chunks=500)
    kmeans = daskem.KMeans(4, random_state=0, max_iter=5).fit(X)
    gmm = daskem.GaussianMixture(4, random_state=0, max_iter=5).fit(X)
    dask.compute(kmeans.predict(X), kmeans.transform(X), gmm.predict_proba(X), gmm.score_samples(X))
    assert set(map(tuple, client.run(loaded_modules, ["sklearn", "scipy.stats", "matplotlib"]).values())) == {()}


def test_a_pass_over_persisted_rows_is_one_task_per_worker_thread_with_the_same_bits(client):
    """On rows held in worker memory, small statistics come from one task per worker thread over the
    slabs it holds, merged in the per-slab graph's tree: fewer tasks, not other numbers."""
    X = _blobs(24_000)
    streamed = da.from_array(X, chunks=(1000, -1))
    persisted = streamed.persist()
    wait(persisted)
    centers = X[:4].copy()
    payload = SlabPayload((KMeansFamily(),), (KMeansParams(centers),))
    kwargs = dict(combine=merge_candidates, fan_in=4, gather_bytes=10_000)
    grouped = dict(reduction_graph(persisted, candidate_stats, payload, name="cached", **kwargs).__dask_graph__())
    per_slab = dict(reduction_graph(streamed, candidate_stats, payload, name="streamed", **kwargs).__dask_graph__())
    map_tasks = [key for key in grouped if isinstance(key, tuple) and key[0] == "cached-map"]
    assert len(map_tasks) == sum(client.nthreads().values()) == 2
    assert len([key for key in per_slab if isinstance(key, tuple) and key[0] == "streamed-map"]) == 24
    big = dict(reduction_graph(persisted, candidate_stats, payload, name="big", combine=merge_candidates,
                               fan_in=4, gather_bytes=2**40).__dask_graph__())
    assert len([key for key in big if isinstance(key, tuple) and key[0] == "big-map"]) == 24
    (cached,) = map_reduce(persisted, candidate_stats, payload, name="cached-pass", combine=merge_candidates,
                           fan_in=4, result_bytes=400)
    (plain,) = map_reduce(streamed, candidate_stats, payload, name="streamed-pass", combine=merge_candidates, fan_in=4)
    for field in ("nk", "s1"):
        np.testing.assert_array_equal(getattr(cached, field), getattr(plain, field))
    assert cached.objective == plain.objective and cached.n_samples == plain.n_samples == 24_000
    some = [17, 3, 9, 0, 22, 5]  # a stepwise group: some slabs, in its own order
    (cached,) = map_reduce(persisted, candidate_stats, payload, name="cached-some", combine=merge_candidates,
                           fan_in=4, slabs=some, result_bytes=400)
    (plain,) = map_reduce(streamed, candidate_stats, payload, name="streamed-some", combine=merge_candidates,
                          fan_in=4, slabs=some)
    np.testing.assert_array_equal(cached.s1, plain.s1)
    assert cached.objective == plain.objective and cached.n_samples == 6_000
    weights = np.random.default_rng(1).integers(1, 4, len(X)).astype(float)
    weighted = [daskem.KMeans(4, init=centers, max_iter=3, tol=0).fit(data, sample_weight=weights)
                for data in (persisted, streamed)]
    np.testing.assert_array_equal(weighted[0].cluster_centers_, weighted[1].cluster_centers_)
    assert weighted[0].inertia_ == weighted[1].inertia_
    with recorded_gathers(client) as record:
        in_memory = daskem.KMeans(4, init=centers, max_iter=5, tol=0).fit(persisted)
    iteration_tasks = [key for key in record["submitted"] if isinstance(key, tuple) and "-iter1-" in key[0]]
    assert len(iteration_tasks) == 2, iteration_tasks  # two workers' slabs, merged on the client
    from_blocks = daskem.KMeans(4, init=centers, max_iter=5, tol=0).fit(streamed)
    np.testing.assert_array_equal(in_memory.cluster_centers_, from_blocks.cluster_centers_)
    assert in_memory.inertia_ == from_blocks.inertia_
