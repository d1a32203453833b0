"""Model files without pickle, preprocessing that travels with the model, predictions to Zarr,
and output directories that appear only when complete."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr

import daskem
from daskem.errors import DaskemUserError, OutputError
from daskem.kernels.covariance import COVARIANCE_TYPES
from daskem.models.gaussian_mixture import GaussianMixture
from daskem.models.kmeans import KMeans
from daskem.models.preprocessing import (
    PreprocessedModel,
    Preprocessing,
    fit_preprocessing,
)
from daskem.outputs.model_files import load_model, save_model
from daskem.outputs.predictions import write_predictions
from daskem.outputs.report import RowSample, report_sample
from daskem.outputs.records import output_format
from daskem.outputs.staging import StagedOutput
from daskem.pipeline.config import PCAConfig, PreprocessConfig


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 8.0, 5.0]])
    X = np.concatenate([rng.normal(c, 1.0, size=(300, 3)) for c in centers]) * [1.0, 10.0, 0.1]
    return da.from_array(X[rng.permutation(len(X))], chunks=(200, 3))


def fitted(kind, X):
    if kind == "kmeans":
        return KMeans(3, random_state=0, max_iter=20).fit(X)
    return GaussianMixture(3, covariance_type=kind, random_state=0, max_iter=20).fit(X)


@pytest.mark.parametrize("kind", ["kmeans", *COVARIANCE_TYPES])
def test_saved_model_reloads_and_predicts_the_same(tmp_path, blobs, kind):
    model = fitted(kind, blobs)
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(blobs).compute(), model.predict(blobs).compute())
    if kind != "kmeans":
        np.testing.assert_array_equal(loaded.score_samples(blobs).compute(), model.score_samples(blobs).compute())
        assert loaded.converged_ == model.converged_ and loaded.history_ == model.history_
    else:
        assert loaded.inertia_ == model.inertia_


def test_model_directory_holds_only_npy_and_json(tmp_path, blobs):
    save_model(fitted("full", blobs), tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert all(name.endswith((".npy", ".json")) for name in files)
    assert {"means_.npy", "precisions_cholesky_.npy", "weights_.npy", "model.json"} <= set(files)
    for path in (tmp_path / "model").glob("*.npy"):
        np.load(path, allow_pickle=False)
    document = json.loads((tmp_path / "model" / "model.json").read_text())
    assert document["estimator"] == "GaussianMixture" and document["versions"]["numpy"] == np.__version__


def test_array_constructor_parameters_are_saved_as_npy(tmp_path, blobs):
    means = fitted("full", blobs).means_
    model = GaussianMixture(3, means_init=means, random_state=0, max_iter=5).fit(blobs)
    save_model(model, tmp_path / "model")
    assert (tmp_path / "model" / "params" / "means_init.npy").is_file()
    np.testing.assert_array_equal(load_model(tmp_path / "model").means_init, means)


def test_load_model_accepts_the_run_directory(tmp_path, blobs):
    save_model(fitted("kmeans", blobs), tmp_path / "run" / "model")
    assert isinstance(load_model(tmp_path / "run"), KMeans)


def test_load_model_is_exported():
    assert daskem.load_model is load_model


def test_load_model_without_model_json_is_a_user_error(tmp_path):
    with pytest.raises(DaskemUserError, match="no model.json there"):
        load_model(tmp_path)


@pytest.mark.parametrize("whiten", [False, True])
def test_preprocessing_is_saved_and_applied_to_raw_rows(tmp_path, blobs, whiten):
    config = PreprocessConfig(standardize=True, pca=PCAConfig(n_components=2, whiten=whiten))
    prep = fit_preprocessing(blobs, config, random_state=0)
    assert prep.n_features_out == 2 and prep.steps[0] == "standardize"
    model = PreprocessedModel(fitted("full", prep.transform(blobs)), prep)
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, PreprocessedModel) and loaded.n_features_in_ == 3 and loaded.means_.shape == (3, 2)
    raw = blobs.compute()
    np.testing.assert_array_equal(loaded.predict(raw), model.predict(blobs).compute())
    np.testing.assert_array_equal(loaded.predict_proba(blobs).compute(), model.predict_proba(blobs).compute())


def test_preprocessing_matches_dask_ml_and_numpy_matches_dask(blobs):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    raw = blobs.compute()
    prep = fit_preprocessing(blobs, PreprocessConfig(standardize=True, pca=PCAConfig(n_components=2)))
    expected = PCA(2).fit_transform(StandardScaler().fit_transform(raw))
    got = prep.transform(raw)
    np.testing.assert_allclose(np.abs(got), np.abs(expected), rtol=1e-6, atol=1e-8)  # axes up to sign
    np.testing.assert_array_equal(prep.transform(blobs).compute(), got)
    with pytest.raises(ValueError, match="fitted on 3 features"):
        prep.transform(raw[:, :2])


def test_float32_rows_stay_float32():
    prep = Preprocessing.from_arrays(2, {"center": np.ones(2), "scale": np.full(2, 2.0)})
    out = prep.transform(np.ones((4, 2), dtype=np.float32))
    assert out.dtype == np.float32 and not out.any()


def test_predictions_are_written_chunked_like_the_rows(tmp_path, blobs):
    model = fitted("diag", blobs)
    written, nothing = write_predictions(model, blobs, tmp_path / "p.zarr", responsibilities=True, log_density=True)
    assert nothing is None  # nothing asked for alongside the writes
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert {name: spec["dtype"] for name, spec in written.items()} == {
        "labels": "int32", "responsibilities": "float32", "log_density": "float64"}
    assert group["labels"].chunks == (200,) and group["responsibilities"].chunks == (200, 3)
    np.testing.assert_array_equal(group["labels"][:], model.predict(blobs).compute())
    np.testing.assert_allclose(group["responsibilities"][:], model.predict_proba(blobs).compute(), rtol=1e-6)
    np.testing.assert_array_equal(group["log_density"][:], model.score_samples(blobs).compute())


def test_irregular_row_chunks_are_made_regular(tmp_path, blobs):
    X = blobs.rechunk(((100, 300, 500), (3,)))
    write_predictions(fitted("kmeans", blobs), X, tmp_path / "p.zarr")
    assert zarr.open_array(str(tmp_path / "p.zarr"), path="labels").chunks == (500,)


@pytest.mark.parametrize("kind", ["kmeans", "full"])
def test_the_report_sample_taken_while_writing_is_the_sample_of_its_own_pass(tmp_path, blobs, kind):
    model = fitted(kind, blobs)
    X = blobs.rechunk(((100, 300, 500), (3,)))  # made regular for the writes: the sample must not notice
    alone = report_sample(model, blobs, rows=300, seed=4)
    written, sample = write_predictions(model, X, tmp_path / "p.zarr", alongside=RowSample.of(model, 900, rows=300,
                                                                                               seed=4))
    assert list(written) == ["labels"] and sorted(sample) == sorted(alone) and 200 < len(sample["rows"]) < 400
    for name in alone:
        np.testing.assert_array_equal(sample[name], alone[name])
    assert write_predictions(model, X, tmp_path / "q.zarr", labels=False, alongside=RowSample.of(model, 900)) == (
        {}, None)  # nothing written, no pass: the caller takes its sample in a pass of its own


# ----------------------------------------------------------------------------- staged directory


def test_staged_output_appears_only_at_commit(tmp_path):
    final = tmp_path / "out" / "run"
    with StagedOutput(final) as tmp:
        (tmp / "run.json").write_text("{}")
        assert not final.exists()
        stage = StagedOutput(final)
        stage.check()
    assert not final.exists() and not list(tmp_path.iterdir())  # not committed: nothing left, parents too

    staged = StagedOutput(final)
    with staged as tmp:
        (tmp / "run.json").write_text("{}")
        staged.commit()
    assert (final / "run.json").is_file() and [p.name for p in final.parent.iterdir()] == ["run"]


def test_error_leaves_no_directory(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with StagedOutput(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def earlier_daskem_output(path):
    """A directory that a completed daskem command wrote: its run.json is marked complete."""
    path.mkdir()
    (path / "run.json").write_text(json.dumps({**output_format(), "complete": True}))
    (path / "old").write_text("keep")


def test_existing_output_is_refused_without_overwrite(tmp_path):
    earlier_daskem_output(tmp_path / "run")
    with pytest.raises(OutputError, match="output directory already exists; set output.overwrite: true"):
        StagedOutput(tmp_path / "run").check()


def test_empty_existing_directory_is_used(tmp_path):
    (tmp_path / "run").mkdir()
    staged = StagedOutput(tmp_path / "run")
    with staged as tmp:
        (tmp / "new").write_text("x")
        staged.commit()
    assert (tmp_path / "run" / "new").is_file()


def test_overwrite_replaces_the_old_directory_only_when_complete(tmp_path):
    earlier_daskem_output(tmp_path / "run")
    with pytest.raises(RuntimeError):
        with StagedOutput(tmp_path / "run", overwrite=True):
            raise RuntimeError("crash")
    assert (tmp_path / "run" / "old").read_text() == "keep"
    staged = StagedOutput(tmp_path / "run", overwrite=True)
    with staged as tmp:
        (tmp / "new").write_text("x")
        assert (tmp_path / "run" / "old").exists()
        staged.commit()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
