"""Passes over the data, counted as chunk reads of a real Zarr store: initialization in a constant
number of passes shared by every candidate, stepwise EM near batch EM's optimum in a few passes,
and ``partial_fit`` as stepwise EM's update."""

import dask.array as da
import numpy as np
import pytest
from counting import counted_array

import daskem
from daskem.engine.stepwise import slab_groups
from daskem.kernels.covariance import COVARIANCE_TYPES
from daskem.kernels.draws import seeds_from

CHUNK_ROWS = 1000
# Two data sets of four 3-D Gaussians of different shapes: overlapping, and well separated.
SPREADS = {"overlapping": 4.0, "separated": 12.0}
# Passes of the default start: a sample, then the initial parameters from the rows nearest the centres.
DEFAULT_INIT_PASSES = 2


def _mixture(spread: float, n_rows: int = 10_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float) * spread
    scales = np.array([[1.0, 0.6, 1.3], [0.5, 1.0, 0.8], [1.2, 1.2, 0.4], [0.7, 0.7, 0.7]])
    labels = rng.integers(0, 4, size=n_rows)
    return means[labels] + rng.normal(size=(n_rows, 3)) * scales[labels]


@pytest.fixture(scope="module", params=list(SPREADS))
def counted(request, tmp_path_factory):
    """A data set in a Zarr store on disk, read through a counting wrapper, 10 chunks of rows."""
    path = tmp_path_factory.mktemp(request.param) / "data.zarr"
    return counted_array(path, _mixture(SPREADS[request.param]), chunk_rows=CHUNK_ROWS)


def _reads_of(counted, fit):
    """``fit(X)``'s result and how many times it read each chunk (the same for every chunk)."""
    store, X = counted
    store.reads.clear()
    fitted = fit(X)
    counts = set(store.reads.values())
    assert len(store.reads) == X.numblocks[0] and len(counts) == 1, store.reads
    return fitted, counts.pop()


def test_a_default_mixture_fit_reads_the_data_n_iter_plus_two_times_as_n_passes_says(counted):
    model, reads = _reads_of(counted, daskem.GaussianMixture(4, random_state=0).fit)
    assert reads == model.n_passes_ == model.n_iter_ + DEFAULT_INIT_PASSES


@pytest.mark.parametrize("seed", range(5))
def test_the_default_start_ends_within_1e_3_per_row_of_the_full_data_lloyd_start(counted, seed):
    _, X = counted
    X = da.from_array(np.asarray(X), chunks=(CHUNK_ROWS, -1))  # the same rows, read from memory
    default = daskem.GaussianMixture(4, random_state=seed).fit(X)
    lloyd = daskem.GaussianMixture(4, random_state=seed, init_params="lloyd").fit(X)
    assert default.n_passes_ <= default.n_iter_ + 4 < lloyd.n_passes_
    assert default.score(X) >= lloyd.score(X) - 1e-3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_selection_over_sizes_and_covariance_types_reads_the_data_at_most_max_n_iter_plus_5_times(tmp_path):
    counted = counted_array(tmp_path / "data.zarr", _mixture(SPREADS["separated"], n_rows=6000), chunk_rows=500)
    selection, reads = _reads_of(counted, lambda X: daskem.fit_candidates(
        X, n_components=[4, 8, 16], covariance_types=list(COVARIANCE_TYPES), n_init=2, random_state=0, max_iter=10))
    max_n_iter = max(row.n_iter for row in selection.table)
    assert len(selection.table) == 24
    # one sample and one pass of initial parameters for all 24 restarts, the EM passes, one scoring pass
    assert reads == selection.best.n_passes_ == max_n_iter + DEFAULT_INIT_PASSES + 1 <= max_n_iter + 5


@pytest.mark.parametrize("covariance_type", list(COVARIANCE_TYPES))
def test_stepwise_em_reaches_batch_em_within_1e_3_per_row_in_3_passes(counted, covariance_type):
    X = counted[1]
    batch = daskem.GaussianMixture(4, covariance_type=covariance_type, random_state=0, tol=1e-6,
                                   max_iter=1000).fit(X)
    stepwise, reads = _reads_of(counted, daskem.GaussianMixture(
        4, covariance_type=covariance_type, random_state=0, algorithm="stepwise").fit)
    assert reads == stepwise.n_passes_ <= DEFAULT_INIT_PASSES + 3  # the same start, then at most 3 passes
    assert stepwise.lower_bound_ == pytest.approx(stepwise.score(X), rel=1e-12)  # of the returned parameters
    assert stepwise.lower_bound_ >= batch.score(X) - 1e-3


@pytest.mark.parametrize("covariance_type", list(COVARIANCE_TYPES))
def test_stepwise_em_s_last_pass_averages_every_row_so_it_ends_at_batch_em_s_optimum(covariance_type):
    """16 slabs in 10 groups of 1 or 2: were the last pass weighted by the step size, as the first is,
    its last M-step would see mostly the last groups (1e-3 to 1e-4 per row short here); averaged by
    rows, it sees every row once."""
    X = da.from_array(_mixture(SPREADS["separated"], n_rows=16_000, seed=3), chunks=(CHUNK_ROWS, -1))
    batch = daskem.GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    stepwise = daskem.GaussianMixture(4, covariance_type=covariance_type, random_state=0, algorithm="stepwise",
                                      max_passes=2, steps_per_pass=10).fit(X)
    assert stepwise.score(X) == pytest.approx(batch.score(X), abs=1e-5)


def test_stepwise_kmeans_reaches_an_inertia_within_1_percent_of_lloyds(counted):
    X = counted[1]
    lloyd = daskem.KMeans(4, random_state=0, tol=0).fit(X)
    stepwise, reads = _reads_of(counted, daskem.KMeans(4, random_state=0, algorithm="stepwise", init="k-means++").fit)
    assert reads == stepwise.n_passes_ <= 1 + 3  # one sample to seed, then at most 3 passes
    assert stepwise.inertia_ == pytest.approx(-stepwise.score(X), rel=1e-10)
    assert stepwise.inertia_ <= 1.01 * lloyd.inertia_


def _explicit_gmm(X, covariance_type):
    """A start given in full (no pass over the data): a short batch fit's parameters, moved off its optimum."""
    start = daskem.GaussianMixture(4, covariance_type=covariance_type, random_state=1, max_iter=2).fit(X)
    return dict(weights_init=start.weights_, means_init=start.means_ + 0.3, precisions_init=start.precisions_)


def _in_groups(X, seed, steps_per_pass):
    """The mini-batches of stepwise EM's first pass: its groups of slabs, in its order."""
    groups = slab_groups(X.numblocks[0], seeds_from(seed, 1)[0], 0, steps_per_pass)
    return [da.concatenate([X.blocks[int(index)] for index in group]) for group in groups]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_partial_fit_over_the_slabs_in_order_equals_one_stepwise_pass(covariance_type):
    X = da.from_array(_mixture(SPREADS["overlapping"], n_rows=6000), chunks=(500, -1))
    common = dict(covariance_type=covariance_type, random_state=3, steps_per_pass=5, **_explicit_gmm(X, covariance_type))
    fitted = daskem.GaussianMixture(4, algorithm="stepwise", max_passes=1, **common).fit(X)
    online = daskem.GaussianMixture(4, **common)
    for batch in _in_groups(X, 3, 5):
        online.partial_fit(batch)
    assert online.n_iter_ == fitted.n_iter_ == 5
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(online, name), getattr(fitted, name), err_msg=name)


def test_kmeans_partial_fit_over_the_slabs_in_order_equals_one_stepwise_pass():
    X = da.from_array(_mixture(SPREADS["overlapping"], n_rows=6000), chunks=(500, -1))
    init = np.asarray(X[[0, 1500, 3000, 4500]])
    fitted = daskem.KMeans(4, init=init, algorithm="stepwise", max_passes=1, random_state=5, steps_per_pass=4).fit(X)
    online = daskem.KMeans(4, init=init, random_state=5)
    for batch in _in_groups(X, 5, 4):
        online.partial_fit(batch)
    assert online.n_iter_ == fitted.n_iter_ == 4
    np.testing.assert_array_equal(online.cluster_centers_, fitted.cluster_centers_)


def test_partial_fit_starts_from_its_first_batch_and_counts_its_reads(tmp_path):
    store, X = counted_array(tmp_path / "data.zarr", _mixture(SPREADS["separated"], n_rows=4000), chunk_rows=500)
    model = daskem.GaussianMixture(4, random_state=0)
    model.partial_fit(X[:2000])
    assert model.n_passes_ == DEFAULT_INIT_PASSES + 1 and model.n_iter_ == 1
    store.reads.clear()
    model.partial_fit(X[2000:])
    assert model.n_passes_ == 1 and model.n_iter_ == 2 and len(model.history_) == 2
    assert sorted(int(key.split("/")[-2]) for key in store.reads) == [4, 5, 6, 7]  # the rows given, once
    assert set(store.reads.values()) == {1}
    assert model.score(X) >= daskem.GaussianMixture(4, random_state=0).fit(X).score(X) - 0.05


def test_stepwise_visits_every_slab_once_per_pass_in_a_seeded_order_of_its_own():
    """(That a fit is the same bits for the same seed: tests/test_checkpoint.py resumes stepwise fits.)"""
    assert [list(group) for group in slab_groups(12, 7, 0, 5)] == [list(g) for g in slab_groups(12, 7, 0, 5)]
    assert [len(group) for group in slab_groups(12, 7, 0, 5)] == [3, 3, 2, 2, 2]
    assert len(slab_groups(3, 7, 0, 5)) == 3  # at most one group per slab
    orders = [np.concatenate(slab_groups(12, 7, pass_index, 5)) for pass_index in (0, 1)]
    assert all(sorted(order) == list(range(12)) for order in orders)  # every slab once per pass
    assert list(orders[0]) != list(orders[1])  # in another order each pass
