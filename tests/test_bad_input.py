"""Every bad input fails with a ValueError that names the problem and the fix; the user errors
among them are ``DaskemUserError`` subclasses, raised where the problem is found."""

import os

import dask.array as da
import numpy as np
import pytest

import daskem
from daskem.errors import DaskemUserError, DataError, FitError


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(200, 3))


def test_nan_rows_are_named_with_their_chunk(X):
    X = X.copy()
    X[57, 1] = np.nan
    X[80, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 row\(s\) of the chunk holding rows 50-99, "
                                         r"first at row 57: drop or impute"):
        daskem.KMeans(2, random_state=0).fit(da.from_array(X, chunks=(50, -1)))


def test_nan_rows_are_found_with_explicit_initial_parameters(X):
    X = X.copy()
    X[3] = np.nan
    with pytest.raises(ValueError, match="first at row 3"):
        daskem.GaussianMixture(2, weights_init=[0.5, 0.5], means_init=X[[10, 20]],
                               precisions_init=np.tile(np.eye(3), (2, 1, 1))).fit(X)


@pytest.mark.parametrize("shape,fix", [((200,), r"X.reshape\(-1, 1\)"), ((10, 4, 5), "rows x features")])
def test_wrong_number_of_dimensions(shape, fix):
    with pytest.raises(ValueError, match=rf"X must be 2-D .*{fix}"):
        daskem.GaussianMixture(2).fit(np.zeros(shape))


def test_non_numeric_data_names_the_dtype():
    with pytest.raises(ValueError, match=r"X must hold real numbers, got dtype <U1: convert it"):
        daskem.KMeans(2).fit(np.array([["a", "b"], ["c", "d"]]))


def test_fewer_rows_than_components(X):
    with pytest.raises(ValueError, match=r"X has 200 rows but n_components=201: .* lower n_components"):
        daskem.GaussianMixture(201).fit(X)
    with pytest.raises(ValueError, match=r"X has 200 rows but n_clusters=300"):
        daskem.KMeans(300).fit(X)


def test_chunks_split_along_features_ask_for_a_rechunk(X):
    with pytest.raises(ValueError, match=r"split into 3 chunks along the feature axis.*X.rechunk\(\{1: -1\}\)"):
        daskem.GaussianMixture(2).fit(da.from_array(X, chunks=(50, 1)))


def test_unknown_covariance_type_lists_the_choices(X):
    with pytest.raises(ValueError, match=r"unknown covariance_type 'fulll': choose one of 'full', 'tied', 'diag', 'spherical'"):
        daskem.GaussianMixture(2, covariance_type="fulll").fit(X)


@pytest.mark.parametrize("param,value", [("tol", -1.0), ("reg_covar", -1e-6), ("n_components", 0),
                                         ("max_iter", 0), ("n_init", 0), ("fan_in", 1)])
def test_invalid_numbers_name_the_parameter_and_the_valid_range(X, param, value):
    with pytest.raises(ValueError, match=rf"The '{param}' parameter of GaussianMixture must be .* Got {value}"):
        daskem.GaussianMixture(**{"n_components": 2, param: value}).fit(X)


def test_kmeans_invalid_tol(X):
    with pytest.raises(ValueError, match=r"The 'tol' parameter of KMeans must be a float in the range \[0.0, inf\)"):
        daskem.KMeans(2, tol=-0.1).fit(X)


def test_covariance_that_is_not_positive_definite_names_component_and_reg_covar():
    X = np.vstack([np.zeros((50, 2)), np.random.default_rng(0).normal(5, 1, size=(50, 2))])
    with pytest.raises(ValueError, match=r"component 0 .*not positive definite.*increase reg_covar \(now 0"):
        daskem.GaussianMixture(2, reg_covar=0.0, weights_init=[0.5, 0.5], means_init=[[0, 0], [5, 5]],
                               precisions_init=np.tile(np.eye(2), (2, 1, 1)), max_iter=3).fit(X)


@pytest.mark.parametrize("param,value,message", [
    ("means_init", np.zeros((3, 3)), r"means_init has shape \(3, 3\), expected \(2, 3\)"),
    ("weights_init", [0.2, 0.3, 0.5], r"weights_init has shape \(3,\), expected \(2,\)"),
    ("weights_init", [0.7, 0.7], r"weights_init must sum to 1, but it sums to 1.4"),
    ("weights_init", [1.5, -0.5], r"weights_init must be non-negative, but its minimum is -0.5"),
    ("precisions_init", np.ones((2, 3)), r"precisions_init"),
])
def test_mismatched_initial_parameters(X, param, value, message):
    with pytest.raises(ValueError, match=message):
        daskem.GaussianMixture(2, **{param: value}).fit(X)


def test_kmeans_initial_centres_of_the_wrong_shape(X):
    with pytest.raises(ValueError, match=r"init has shape \(2, 2\), expected \(2, 3\)"):
        daskem.KMeans(2, init=np.zeros((2, 2))).fit(X)


def test_predicting_with_other_features_is_refused(X):
    fitted = daskem.KMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 4 features, but KMeans is expecting 3 features as input"):
        fitted.predict(np.zeros((5, 4)))


def _nan_row(X):
    X = X.copy()
    X[57, 1] = np.nan
    return daskem.KMeans(2, random_state=0).fit(da.from_array(X, chunks=(50, -1)))


def _collapse(X):
    X = np.vstack([np.zeros((50, 2)), np.random.default_rng(0).normal(5, 1, size=(50, 2))])
    return daskem.GaussianMixture(2, reg_covar=0.0, weights_init=[0.5, 0.5], means_init=[[0, 0], [5, 5]],
                                  precisions_init=np.tile(np.eye(2), (2, 1, 1)), max_iter=3).fit(X)


USER_ERRORS = [
    (_nan_row, DataError, "NaN or infinite values"),
    (lambda X: daskem.GaussianMixture(201).fit(X), DataError, "X has 200 rows but n_components=201"),
    (lambda X: daskem.KMeans(2).fit(X[:, 0]), DataError, "X must be 2-D"),
    (lambda X: daskem.KMeans(2, random_state=0).fit(X).predict(X[:, :2]), DataError, "KMeans is expecting 3 features"),
    (lambda X: daskem.KMeans(2, init=np.zeros((2, 2))).fit(X), FitError, "init has shape"),
    (lambda X: daskem.GaussianMixture(2, weights_init=[0.7, 0.7]).fit(X), FitError, "must sum to 1"),
    (lambda X: daskem.GaussianMixture(2, precisions_init=-np.ones((2, 3, 3))).fit(X), FitError, "precisions_init is"),
    (lambda X: daskem.GaussianMixture(2, covariance_type="diag", precisions_init=-np.ones((2, 3))).fit(X),
     FitError, "precisions_init is invalid"),
    (_collapse, FitError, "not positive definite"),
]


USER_ERROR_IDS = ["nan-row", "too-few-rows", "1-d", "other-features", "init-shape", "weights-sum",
                  "precisions-full", "precisions-diag", "collapse"]


@pytest.mark.parametrize(("fit", "error", "message"), USER_ERRORS, ids=USER_ERROR_IDS)
def test_user_errors_are_typed_and_still_value_errors(X, fit, error, message):
    with pytest.raises(error, match=message) as info:
        fit(X)
    assert isinstance(info.value, DaskemUserError) and isinstance(info.value, ValueError)


def test_a_parameter_outside_its_range_is_scikit_learns_error_not_a_user_error_class(X):
    with pytest.raises(ValueError) as info:
        daskem.KMeans(2, tol=-1.0).fit(X)
    assert not isinstance(info.value, DaskemUserError)  # the estimator API keeps scikit-learn's contract


@pytest.mark.cluster
def test_a_user_error_raised_in_a_worker_process_reaches_the_client_with_its_class(X):
    from distributed import Client, LocalCluster

    from daskem.kernels.tiles import check_finite_block

    X = X.copy()
    X[57, 1] = np.nan
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        (worker_pid,) = client.run(os.getpid).values()
        assert worker_pid != os.getpid()
        future = client.submit(check_finite_block, X[50:100], 50)
        with pytest.raises(DataError, match="first at row 57"):
            future.result()
        assert future.status == "error"
        with pytest.raises(DataError, match=r"rows 50-99, first at row 57: drop or impute"):
            daskem.GaussianMixture(2, random_state=0).fit(da.from_array(X, chunks=(50, -1)))
