"""Outlier thresholds of a fitted mixture: exact out-of-core quantiles, scikit-learn's outlier-detector
conventions, planted outliers found, thresholds saved with the model, config rules."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from daskem import GaussianMixture
from daskem.engine.reduction import counting_passes
from daskem.errors import ConfigError
from daskem.models import outliers
from daskem.outputs.model_files import load_model, save_model
from daskem.outputs.predictions import write_predictions
from daskem.pipeline.config_loading import parse_config

N_INLIERS, N_PLANTED, D = 30_000, 300, 3


def planted_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs and, at the end, uniform rows far around them: (X, is_planted)."""
    rng = np.random.default_rng(seed)
    inliers = np.vstack([rng.normal(0.0, 1.0, size=(N_INLIERS // 2, D)),
                         rng.normal(6.0, 0.5, size=(N_INLIERS // 2, D))])
    planted = rng.uniform(-25.0, 30.0, size=(N_PLANTED, D))
    return np.vstack([inliers, planted]), np.r_[np.zeros(N_INLIERS, bool), np.ones(N_PLANTED, bool)]


@pytest.fixture(scope="module")
def fitted():
    X, planted = planted_data()
    model = GaussianMixture(2, covariance_type="diag", random_state=0, max_iter=50).fit(X)
    return model, X, planted


@pytest.mark.parametrize("contamination", [0.001, 0.01, 0.2])
@pytest.mark.parametrize("chunk_rows", [4_000, 7_777])
def test_contamination_threshold_is_the_exact_rank_whatever_the_chunking(fitted, contamination, chunk_rows):
    model, X, _ = fitted
    with counting_passes() as passes:
        model.set_outlier_threshold(da.from_array(X, chunks=(chunk_rows, D)), contamination=contamination)
    scores = model.score_samples(X)
    rank = round(contamination * len(X))
    assert model.offset_ == np.sort(scores)[rank]
    flagged = np.count_nonzero(scores < model.offset_)
    assert abs(flagged - contamination * len(X)) <= 0.001 * contamination * len(X) + 0.5
    assert sum(passes.values()) == 2  # one histogram, then the bracketing bin


def test_a_crowded_bin_is_split_by_more_histogram_passes(fitted, monkeypatch):
    model, X, _ = fitted
    monkeypatch.setattr(outliers, "BINS", 8)
    monkeypatch.setattr(outliers, "GATHER_LIMIT", 50)
    with counting_passes() as passes:
        model.set_outlier_threshold(da.from_array(X, chunks=(5_000, D)), contamination=0.3)
    assert model.offset_ == np.sort(model.score_samples(X))[round(0.3 * len(X))]
    assert sum(passes.values()) > 2


def test_a_rank_below_the_first_histogram_is_found_from_the_range(fitted, monkeypatch):
    model, X, _ = fitted
    monkeypatch.setattr(outliers, "SPAN", 2.0)  # the first bins cover only 2 nats below the bound
    with counting_passes() as passes:
        model.set_outlier_threshold(da.from_array(X, chunks=(5_000, D)), contamination=0.05)
    assert model.offset_ == np.sort(model.score_samples(X))[round(0.05 * len(X))]
    assert sum(passes.values()) >= 4  # histogram, range, histogram(s), the bracketing bin


def test_the_log_density_bound_holds_for_every_covariance_type():
    from daskem.kernels.covariance import COVARIANCE_TYPES

    X, _ = planted_data(1)
    for covariance_type in COVARIANCE_TYPES:
        model = GaussianMixture(2, covariance_type=covariance_type, random_state=0, max_iter=5).fit(X[::10])
        peaks = model.score_samples(model.means_)
        bound = outliers.log_density_bound(model._fitted(), model._family().covariance, model.n_features_in_)
        assert peaks.max() <= bound < peaks.max() + np.log(2) + 1e-9, covariance_type


def test_planted_outliers_are_found_at_the_matching_contamination(fitted):
    model, X, planted = fitted
    model.set_outlier_threshold(X, contamination=N_PLANTED / len(X))
    flagged = model.predict_outliers(X) == -1
    assert np.count_nonzero(flagged & planted) >= 0.95 * N_PLANTED
    assert np.count_nonzero(flagged) == N_PLANTED


def test_decision_function_and_predict_outliers_follow_the_outlier_detectors(fitted):
    model, X, _ = fitted
    model.set_outlier_threshold(threshold=-9.0)
    assert model.offset_ == -9.0 and model.contamination_ is None
    lazy = da.from_array(X, chunks=(10_000, D))
    decision = model.decision_function(lazy)
    assert isinstance(decision, da.Array)
    np.testing.assert_allclose(decision.compute(), model.score_samples(X) + 9.0, rtol=0, atol=1e-12)
    labels = model.predict_outliers(lazy).compute()
    assert set(np.unique(labels)) == {-1, 1}
    np.testing.assert_array_equal(labels == -1, decision.compute() < 0)


def test_outlier_methods_refuse_a_missing_or_bad_rule(fitted):
    model, X, _ = fitted
    bare = GaussianMixture(2, random_state=0).fit(X[:2000])
    assert not hasattr(bare, "decision_function") and not hasattr(bare, "predict_outliers")  # as scikit-learn expects
    with pytest.raises(AttributeError) as missing:
        bare.decision_function(X)
    assert isinstance(missing.value.__cause__, NotFittedError)  # the cause shown with it names the fix
    assert "no outlier threshold: call set_outlier_threshold" in str(missing.value.__cause__)
    with pytest.raises(ValueError, match="give one of contamination"):
        bare.set_outlier_threshold(X, contamination=0.1, threshold=-3.0)
    with pytest.raises(ValueError, match=r"contamination must be in \(0, 0.5\], got 0.7"):
        bare.set_outlier_threshold(X, contamination=0.7)
    with pytest.raises(ValueError, match="threshold must be a finite log-density, got nan"):
        bare.set_outlier_threshold(threshold=float("nan"))
    with pytest.raises(ValueError, match="contamination needs X"):
        bare.set_outlier_threshold(contamination=0.1)


def test_threshold_is_saved_with_the_model_and_dropped_by_a_refit(fitted, tmp_path):
    model, X, _ = fitted
    model.set_outlier_threshold(X, contamination=0.01)
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert loaded.offset_ == model.offset_ and loaded.contamination_ == 0.01
    np.testing.assert_array_equal(loaded.predict_outliers(X), model.predict_outliers(X))
    refit = loaded.fit(X[:5000])
    assert not hasattr(refit, "offset_")


def test_written_outlier_flags_and_their_count(fitted, tmp_path):
    model, X, planted = fitted
    model.set_outlier_threshold(X, contamination=0.01)
    written, _ = write_predictions(model, da.from_array(X, chunks=(6_000, D)), tmp_path / "p.zarr", labels=False,
                                   log_density=True, outlier=True)
    import zarr

    flags = zarr.open_array(str(tmp_path / "p.zarr"), path="outlier")[:]
    assert flags.dtype == bool and written["outlier"]["true"] == np.count_nonzero(flags) == round(0.01 * len(X))
    np.testing.assert_array_equal(flags, model.predict_outliers(X) == -1)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "p.zarr"), path="log_density")[:],
                                  model.score_samples(X))


BASE = {"data": {"path": "x.zarr"}, "output": {"path": "out"}}


@pytest.mark.parametrize("model, outliers_rule, message", [
    ({"kind": "kmeans"}, {"contamination": 0.01}, "output.outliers is only for kind: gmm"),
    ({"kind": "gmm"}, {}, "output.outliers: give contamination (e.g. 0.01) or threshold"),
    ({"kind": "gmm"}, {"contamination": 0.01, "threshold": -3}, "give contamination or threshold, not both"),
    ({"kind": "gmm"}, {"contamination": 0.9}, "output.outliers.contamination"),
    ({"kind": "gmm"}, {"threshold": float("inf")}, "threshold must be a finite log-density"),
], ids=["kmeans", "empty", "both", "too-large", "infinite"])
def test_config_refuses_bad_outlier_rules_in_one_line(model, outliers_rule, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_config({**BASE, "model": model, "output": {"path": "out", "outliers": outliers_rule}})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("flags, message", [
    (["--outliers"], "has no saved outlier threshold (its run had no output.outliers); give --contamination"),
    (["--outliers", "--contamination", "0.1"], "--outliers and --contamination each choose the outlier threshold"),
    (["--contamination", "0.6"], "output.outliers.contamination"),
], ids=["no-saved-threshold", "two-rules", "bad-contamination"])
def test_predict_refuses_an_outlier_rule_it_cannot_follow_before_any_cluster(fitted, tmp_path, in_process, flags,
                                                                             message):
    import zarr

    model, X, _ = fitted
    bare = GaussianMixture(2, random_state=0).fit(X[:2000])
    save_model(bare, tmp_path / "model")
    zarr.create_array(str(tmp_path / "data.zarr"), data=X[:1000], chunks=(500, D))
    done = in_process("predict", tmp_path / "model", tmp_path / "data.zarr", "-o", tmp_path / "pred", *flags)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and not (tmp_path / "pred").exists()
