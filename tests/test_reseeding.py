"""Collapsed mixture components and empty k-means clusters are re-seeded by splitting the heaviest
one: a fit that used to keep a dead component now uses all K, the same way every time."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest

import daskem
from daskem.kernels.covariance import COVARIANCE_TYPES


@pytest.fixture(scope="module")
def three_blobs():
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(centre, 1.0, (150, 2)) for centre in ([0, 0], [8, 8], [0, 8])])


# The third start lies far from every row: without re-seeding it keeps weight ~0 for ever.
DEAD_START = [[0.0, 0.0], [8.0, 8.0], [100.0, 100.0]]


@pytest.mark.parametrize("covariance_type", list(COVARIANCE_TYPES))
def test_a_dead_mixture_component_is_reseeded_and_every_component_is_used(three_blobs, covariance_type, caplog):
    X = da.from_array(three_blobs, chunks=(100, -1))
    with caplog.at_level(logging.WARNING, logger="daskem"):
        fitted = daskem.GaussianMixture(3, covariance_type=covariance_type, means_init=DEAD_START,
                                        max_iter=200).fit(X)
    assert fitted.n_reseeded_ == 1 and fitted.converged_
    assert "component 2 kept 0 effective rows, below the floor of 3 (n_features + 1): re-seeded by splitting" \
        in caplog.text
    effective_rows = np.asarray(fitted.predict_proba(three_blobs)).sum(axis=0)
    assert effective_rows.min() >= 3 and np.bincount(fitted.predict(three_blobs), minlength=3).min() > 100
    gaps = np.linalg.norm(fitted.means_[:, None, :] - np.array([[0, 0], [8, 8], [0, 8]])[None], axis=2)
    assert gaps.min(axis=0).max() < 0.3  # one mean at each blob's centre
    again = daskem.GaussianMixture(3, covariance_type=covariance_type, means_init=DEAD_START, max_iter=200).fit(X)
    np.testing.assert_array_equal(again.means_, fitted.means_)  # deterministic


def test_an_empty_kmeans_cluster_is_reseeded_and_every_cluster_is_used(three_blobs, caplog):
    init = np.array(DEAD_START)
    with caplog.at_level(logging.WARNING, logger="daskem"):
        fitted = daskem.KMeans(3, init=init).fit(three_blobs)
    assert fitted.n_reseeded_ == 1
    assert "cluster 2 is empty: re-seeded by splitting cluster 0" in caplog.text
    np.testing.assert_array_equal(np.bincount(fitted.labels_, minlength=3), [150, 150, 150])
    np.testing.assert_array_equal(daskem.KMeans(3, init=init).fit(three_blobs).cluster_centers_,
                                  fitted.cluster_centers_)


def test_a_healthy_fit_is_not_reseeded(three_blobs):
    assert daskem.GaussianMixture(3, random_state=0).fit(three_blobs).n_reseeded_ == 0
    assert daskem.KMeans(3, random_state=0).fit(three_blobs).n_reseeded_ == 0


def test_reseeding_stops_after_one_per_component_when_the_data_has_fewer_groups():
    X = np.random.default_rng(1).normal(size=(40, 2))
    X[:, 1] = 0.0  # rows on a line: extra components keep collapsing
    fitted = daskem.GaussianMixture(8, covariance_type="diag", reg_covar=1e-3, max_iter=60, random_state=0).fit(X)
    assert fitted.n_reseeded_ <= 8


def test_copy_component_gives_the_target_the_sources_covariance_or_keeps_a_shared_one(cov):
    shape = cov.covariances_shape(3, 2)
    covariances = np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape)
    copied = cov.copy_component(covariances, source=0, target=2)
    if shape == cov.covariances_shape(1, 2):  # one covariance shared by every component
        np.testing.assert_array_equal(copied, covariances)
    else:
        np.testing.assert_array_equal(copied[2], covariances[0])
        np.testing.assert_array_equal(copied[:2], covariances[:2])
    assert copied is not covariances
