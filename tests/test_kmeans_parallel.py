"""k-means|| initialization: exact draws, independent of chunking and cluster, in rounds + 1 passes."""

import threading
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn import cluster

import daskem
from daskem.kernels import tiles as tiles_module
from daskem.kernels.draws import row_uniforms
from daskem.engine.reduction import row_weights
from daskem.models.initialization.kmeans_parallel import (
    ROUND_STREAM,
    first_center_rows,
    first_centers,
    kmeans_parallel,
)

K, D = 10, 5
SIZES = (40, 60, 100, 150, 250, 400, 600, 800, 1000, 1600)
SEPARATION = 12.0


def separated_blobs(seed=0, sizes=SIZES, spread=SEPARATION):
    """10 unit-variance blobs of unequal sizes whose centres are at least ``spread`` apart, and the
    mean of each blob's rows (the k-means optimum here)."""
    rng = np.random.default_rng(seed)
    centers = []
    while len(centers) < len(sizes):
        candidate = rng.uniform(-30, 30, size=D)
        if all(np.linalg.norm(candidate - c) >= spread for c in centers):
            centers.append(candidate)
    centers = np.array(centers)
    blobs = [c + rng.normal(size=(n, D)) for c, n in zip(centers, sizes)]
    return np.vstack(blobs)[rng.permutation(sum(sizes))], np.array([blob.mean(axis=0) for blob in blobs])


BLOBS, BLOB_MEANS = separated_blobs()


def distance_to_nearest(centers, points):
    """For each of ``centers``, the distance to the nearest of ``points``."""
    return np.linalg.norm(centers[:, None] - points[None], axis=2).min(axis=1)


def run(X, seeds, chunks=(500, -1), **kwargs):
    kwargs.setdefault("fan_in", 4)
    return kmeans_parallel(da.from_array(X, chunks=chunks), kwargs.pop("k", K), seeds, name="test-kmpar", **kwargs)


def test_init_centres_alone_find_every_well_separated_blob_for_19_of_20_seeds():
    # An init centre is the weighted mean of a few candidate rows, and a row of a unit-variance
    # blob in 5-D lies about sqrt(5) = 2.2 from its centre: "found" means a centre within a third
    # of the separation of the blobs. A uniform draw of 10 rows misses the 40-row blob 90% of the time.
    results = run(BLOBS, list(range(20)))
    found = [distance_to_nearest(BLOB_MEANS, r.centers).max() < SEPARATION / 3 for r in results]
    assert sum(found) >= 19, found


def naive_kmeans_parallel_candidates(X, seed, n_clusters, oversampling_factor, n_rounds):
    """The textbook algorithm on the whole array: d^2, phi, then keep u < l d^2 / phi, round by round."""
    candidates = X[first_center_rows(len(X), [seed])]
    for round_ in range(1, n_rounds + 1):
        d2 = ((X[:, None, :] - candidates[None]) ** 2).sum(axis=2).min(axis=1)
        u = 1.0 - row_uniforms(seed, ROUND_STREAM + round_, 0, len(X))[:, 0]
        candidates = np.vstack([candidates, X[u < oversampling_factor * n_clusters * d2 / d2.sum()]])
    labels = ((X[:, None, :] - candidates[None]) ** 2).sum(axis=2).argmin(axis=1)
    return candidates, np.bincount(labels, minlength=len(candidates))


@pytest.mark.parametrize("chunks,fan_in,piece_elements", [((3000, -1), 8, None), ((37, -1), 2, None),
                                                          ((97, -1), 3, None), ((1000, -1), 4, 300)])
def test_tree_pruned_draws_equal_the_textbook_draws_over_the_whole_array(chunks, fan_in, piece_elements, monkeypatch):
    if piece_elements:  # slabs cut into tiles of a few rows, each pruned on its own
        monkeypatch.setattr(tiles_module, "TILE_ELEMENTS", piece_elements)
    X = BLOBS[:3000]
    (result,) = run(X, [5], chunks=chunks, fan_in=fan_in, n_rounds=3, oversampling_factor=1.5)
    candidates, weights = naive_kmeans_parallel_candidates(X, 5, K, 1.5, 3)
    np.testing.assert_array_equal(result.candidates, candidates)
    np.testing.assert_array_equal(result.weights, weights)
    assert result.weights.sum() == len(X)


def uneven_chunks(n_rows):
    sizes, rng = [1, 0, 2, 1, 7], np.random.default_rng(3)
    while sum(sizes) < n_rows:
        sizes.append(int(rng.integers(1, 400)))
    sizes[-1] -= sum(sizes) - n_rows
    return (tuple(sizes), (D,))


@pytest.mark.parametrize("chunks", [(len(BLOBS), -1), uneven_chunks(len(BLOBS))], ids=["one-block", "uneven-tiny"])
def test_same_seed_gives_same_centres_whatever_the_chunking(chunks):
    reference = run(BLOBS, [1, 2, 3], chunks=(500, -1))
    other = run(BLOBS, [1, 2, 3], chunks=chunks, fan_in=3)
    for a, b in zip(reference, other):
        np.testing.assert_array_equal(a.candidates, b.candidates)
        np.testing.assert_allclose(a.centers, b.centers, rtol=1e-10, atol=1e-10)


def test_same_seed_gives_same_centres_on_one_or_four_threads():
    with dask.config.set(scheduler="threads", num_workers=1):
        one = run(BLOBS, [7, 8], chunks=(300, -1))
    with dask.config.set(scheduler="threads", num_workers=4):
        four = run(BLOBS, [7, 8], chunks=(300, -1))
    for a, b in zip(one, four):
        np.testing.assert_allclose(a.centers, b.centers, rtol=1e-10, atol=1e-10)


@pytest.fixture
def client():
    """A real cluster: two worker processes on this machine."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with Client(local) as client:
            yield client


@pytest.mark.cluster
def test_same_seed_gives_same_centres_on_a_cluster_of_worker_processes(client):
    on_cluster = run(BLOBS, [7, 8], chunks=(300, -1))
    with dask.config.set(scheduler="sync"):  # the local scheduler, in this process
        local = run(BLOBS, [7, 8], chunks=(700, -1))
    for a, b in zip(on_cluster, local):
        np.testing.assert_allclose(a.centers, b.centers, rtol=1e-10, atol=1e-10)


def test_each_round_draws_about_oversampling_factor_times_k_candidates():
    for factor in (1.0, 2.0, 4.0):
        results = run(BLOBS, [1, 2, 3, 4], oversampling_factor=factor, n_rounds=4)
        mean = np.mean([r.round_sizes for r in results])
        assert factor * K / 2 <= mean <= factor * K * 2, (factor, mean)
        assert all(len(r.round_sizes) == 4 for r in results)


class CountingArray:
    """A NumPy array that counts the reads of each row block (what a pass over a store costs)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads, self._lock = Counter(), threading.Lock()

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        if isinstance(rows, slice) and (rows.stop or 0) > (rows.start or 0):
            with self._lock:
                self.reads[rows.start or 0] += 1
        return self.array[key]


@pytest.mark.parametrize("n_rounds,seeds", [(5, [1]), (3, [1, 2, 3])])
def test_every_block_is_read_rounds_plus_one_times_for_any_number_of_seeds(n_rounds, seeds):
    source = CountingArray(BLOBS)
    X = da.from_array(source, chunks=(400, -1), asarray=True)
    results = kmeans_parallel(X, K, seeds, n_rounds=n_rounds, name="test-passes", fan_in=4)
    assert all(len(r.candidates) > K for r in results)  # the counting pass is needed
    # one pass per round and the counting pass; plus one read of each block holding a first centre
    first_blocks = {row // 400 * 400 for row in first_center_rows(len(BLOBS), seeds)}
    expected = {start: n_rounds + 1 + (start in first_blocks) for start in range(0, len(BLOBS), 400)}
    assert dict(source.reads) == expected


def test_rounds_stop_once_every_row_is_a_candidate():
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 1.0], [9.0, -3.0]]), 200, axis=0)
    source = CountingArray(X)
    (result,) = kmeans_parallel(da.from_array(source, chunks=(100, -1), asarray=True), 3, [4],
                                n_rounds=5, name="test-phi0", fan_in=4)
    assert result.costs[-1] == 0 and len(result.round_sizes) < 5
    first_block = first_center_rows(len(X), [4])[0] // 100 * 100
    expected = {start: len(result.round_sizes) + (start == first_block) for start in range(0, len(X), 100)}
    assert dict(source.reads) == expected  # and no counting pass is needed
    np.testing.assert_array_equal(np.unique(result.centers, axis=0), np.unique(X, axis=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_equal_to_the_number_of_distinct_rows_returns_each_row_once(seed):
    distinct = np.random.default_rng(seed).normal(size=(12, 3))
    X = np.vstack([distinct, distinct[:4], distinct[:4]])
    (result,) = run(X, [seed], chunks=(5, -1), k=12)
    np.testing.assert_array_equal(np.unique(result.centers, axis=0), np.unique(distinct, axis=0))


@pytest.mark.parametrize("seed", range(5))
def test_heavily_duplicated_rows_still_give_distinct_centres(seed):
    rare = np.arange(15, dtype=np.float64).reshape(5, 3) + 1.0
    X = np.vstack([np.zeros((2000, 3)), rare])[np.random.default_rng(seed).permutation(2005)]
    (result,) = run(X, [seed], chunks=(300, -1), k=4, oversampling_factor=0.05, n_rounds=1)
    assert len(result.candidates) < 4  # k-means|| alone fell short: the uncovered-row sample filled in
    assert len(np.unique(result.centers, axis=0)) == 4


def test_fewer_distinct_rows_than_k_repeats_centres_with_a_warning():
    X = np.repeat(np.eye(3), 50, axis=0)
    with pytest.warns(UserWarning, match=r"X has only 3 distinct rows but n_clusters=5"):
        (result,) = run(X, [0], chunks=(40, -1), k=5)
    np.testing.assert_array_equal(np.unique(result.centers, axis=0), np.eye(3)[::-1])


@pytest.mark.parametrize("bad_row", [57, "first centre"])
def test_nan_rows_are_named_with_their_chunk(bad_row):
    X = BLOBS[:200].copy()
    row = first_center_rows(len(X), [3])[0] if bad_row == "first centre" else bad_row
    X[row, 2] = np.nan
    start = row // 50 * 50
    with pytest.raises(ValueError, match=rf"NaN or infinite values in 1 row\(s\) of the chunk holding rows "
                                         rf"{start}-{start + 49}, first at row {row}: drop or impute"):
        run(X, [3], chunks=(50, -1))


def test_kmeans_defaults_to_k_means_parallel_and_fits_the_blobs():
    assert daskem.KMeans().init == "k-means||"
    fitted = daskem.KMeans(K, random_state=0).fit(da.from_array(BLOBS, chunks=(700, -1)))
    best = cluster.KMeans(K, n_init=10, random_state=0).fit(BLOBS)
    assert fitted.inertia_ == pytest.approx(best.inertia_, rel=1e-10)
    assert distance_to_nearest(BLOB_MEANS, fitted.cluster_centers_).max() < 1e-10


def test_kmeans_rejects_a_non_positive_oversampling_factor():
    message = r"The 'oversampling_factor' parameter of KMeans must be a float in the range \(0.0, inf\)"
    with pytest.raises(ValueError, match=message):
        daskem.KMeans(2, oversampling_factor=0).fit(BLOBS[:100])


@pytest.mark.parametrize("init_params", ["kmeans", "k-means||"])
def test_gaussian_mixture_started_by_k_means_parallel_finds_the_blobs(init_params):
    fitted = daskem.GaussianMixture(K, covariance_type="diag", init_params=init_params, random_state=0,
                                    init_rounds=3, oversampling_factor=3.0).fit(da.from_array(BLOBS, chunks=(900, -1)))
    assert distance_to_nearest(BLOB_MEANS, fitted.means_).max() < 1e-6
    assert sorted(np.bincount(fitted.predict(BLOBS), minlength=K)) == list(SIZES)


def test_with_row_weights_the_first_centre_is_drawn_in_proportion_to_them():
    """Only rows of positive weight can be the first centre, each as often as its share of the weight,
    however the rows are chunked (slabs of zero weight included)."""
    X = np.arange(3000.0).reshape(1000, 3)
    weights = np.zeros(len(X))
    weights[[37, 512, 513, 998]] = [1.0, 0.5, 0.5, 2.0]  # rows of slabs 0, 5 and 9 at 100 rows a slab
    seeds = list(range(400))
    for chunk in (100, 333, 1000):
        rows, w = da.from_array(X, chunks=(chunk, -1)), da.from_array(weights, chunks=chunk)
        with row_weights(rows, w):
            picked = [int(centre[0, 0]) // 3 for centre in first_centers(rows, seeds, name=f"test-first-{chunk}")]
        if chunk == 100:
            first = picked
        assert picked == first  # the same draws on any chunking
    counts = Counter(picked)
    assert set(counts) <= {37, 512, 513, 998}
    for row, share in ((37, 0.25), (512, 0.125), (513, 0.125), (998, 0.5)):
        assert abs(counts[row] / len(seeds) - share) < 4 * np.sqrt(share * (1 - share) / len(seeds)), counts
