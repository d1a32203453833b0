"""Several candidate models in the same passes: same models as alone, one read per chunk per pass."""

import dask
import dask.array as da
import numpy as np
import pytest
from counting import counted_array

import daskem
from daskem.kernels.covariance import COVARIANCE_TYPES
from daskem.models.selection import fit_candidates


def _mixture(n_rows=6000, seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]], dtype=float)
    labels = rng.integers(0, 4, size=n_rows)
    return means[labels] + rng.normal(size=(n_rows, 3)) * np.array([1.0, 0.6, 1.3])


@pytest.fixture
def counted(tmp_path):
    """The mixture in a Zarr store on disk, opened through a counting wrapper, 12 chunks of rows."""
    return counted_array(tmp_path / "data.zarr", _mixture(), chunk_rows=500)


def _start(k, seed=1):
    """Initial weights and means (covariances come from the rows nearest the means: one pass)."""
    rng = np.random.default_rng(seed)
    return dict(weights_init=np.full(k, 1 / k), means_init=_mixture()[rng.choice(6000, k, replace=False)])


def test_each_em_iteration_reads_each_chunk_once_whatever_the_number_of_candidates(counted):
    store, X = counted
    with dask.config.set(scheduler="threads"):
        store.reads.clear()
        alone = daskem.GaussianMixture(4, max_iter=5, tol=0, **_start(4)).fit(X)
        alone.bic(X)
        one_model = dict(store.reads)
        store.reads.clear()
        fit_candidates(X, n_components=[4], covariance_types=list(COVARIANCE_TYPES), max_iter=5,
                       tol=0, **_start(4))
        four_models = dict(store.reads)
    # one model: 1 initialization pass, 5 EM iterations, 1 pass for its BIC; each chunk read once per pass
    assert len(one_model) == 12 and set(one_model.values()) == {1 + 5 + 1}
    # four candidates: the same passes, shared
    assert four_models == one_model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_candidates_fitted_together_equal_candidates_fitted_alone():
    X = da.from_array(_mixture(), chunks=(700, -1))
    common = dict(max_iter=30, tol=1e-6, random_state=3)
    together = fit_candidates(X, n_components=[3, 4, 5], covariance_types=["full", "diag"], **common)
    for row in together.table:
        alone = daskem.GaussianMixture(row.n_components, covariance_type=row.covariance_type, **common).fit(X)
        assert alone.n_iter_ == row.n_iter
        assert alone.score(X) == pytest.approx(row.log_likelihood, rel=1e-10)
        assert alone.bic(X) == pytest.approx(row.bic, rel=1e-10)
    best = together.best
    assert (best.n_components, best.covariance_type) == (together.table[0].n_components,
                                                         together.table[0].covariance_type)
    assert best.bic(X) == pytest.approx(together.table[0].bic, rel=1e-10)


def test_bic_picks_the_true_number_of_components():
    X = da.from_array(_mixture(8000, seed=5), chunks=(1000, -1))
    selection = fit_candidates(X, n_components=[2, 3, 4, 5, 6], covariance_types=["diag"], n_init=2,
                               random_state=0, max_iter=200)
    assert selection.best.n_components == 4
    assert len(selection.table) == 10
    assert [row.bic for row in selection.table] == sorted(row.bic for row in selection.table)


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown criterion 'bics': choose one of 'bic', 'aic', 'loglik'"):
        fit_candidates(_mixture(), n_components=[2], criterion="bics")
