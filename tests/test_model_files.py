"""Damaged model files are refused with one line naming the file and what is wrong, never half-loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

import daskem
from daskem.errors import DaskemUserError
from daskem.outputs.model_files import load_model, save_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(300, 3)) + m for m in (0, 6)])
    folder = tmp_path_factory.mktemp("models")
    save_model(daskem.GaussianMixture(2, covariance_type="diag", random_state=0).fit(X), folder / "gmm")
    save_model(daskem.KMeans(2, random_state=0).fit(X), folder / "kmeans")
    return folder


def damaged_copy(models, tmp_path, name, damage):
    import shutil

    target = tmp_path / name
    shutil.copytree(models / name, target)
    damage(target)
    return target


def _rewrite_json(edit):
    def damage(folder):
        document = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps(edit(document)))
    return damage


def _write(name, content):
    return lambda folder: (folder / name).write_bytes(content)


def _save(name, array):
    return lambda folder: np.save(folder / name, array, allow_pickle=False)


def _without(key):
    return _rewrite_json(lambda document: {k: v for k, v in document.items() if k != key})


DAMAGES = {
    "garbage-json": ("gmm", _write("model.json", b"{not json"), "model.json: not valid JSON"),
    "binary-json": ("gmm", _write("model.json", b"\xff\xfe\x00"), "model.json: not a text file"),
    "json-list": ("gmm", _write("model.json", b"[1, 2]"), "holds a list, not a model document"),
    "missing-key": ("gmm", _without("fitted_arrays"), "key 'fitted_arrays' must be a list, but it is missing"),
    "wrong-type": ("kmeans", _rewrite_json(lambda d: {**d, "params": [1]}), "key 'params' must be a dict"),
    "bad-param": ("kmeans", _rewrite_json(lambda d: {**d, "params": {**d["params"], "n_clusters": -3}}),
                  "parameters do not fit"),
    "bad-npy-header": ("gmm", _write("means_.npy", b"\x93NUMPY garbage"), "means_.npy: not a readable .npy array"),
    "truncated-npy": ("kmeans", lambda f: (f / "cluster_centers_.npy").write_bytes(
        (f / "cluster_centers_.npy").read_bytes()[:-8]), "cluster_centers_.npy: not a readable .npy array"),
    "missing-npy": ("gmm", lambda f: (f / "weights_.npy").unlink(), "weights_.npy: missing"),
    "wrong-shape": ("gmm", _save("means_.npy", np.zeros((3, 3))), "means_ has shape (3, 3)"),
    "nan-parameter": ("kmeans", _save("cluster_centers_.npy", np.full((2, 3), np.nan)),
                      "cluster_centers_ holds NaN or infinite values"),
    "inf-covariance": ("gmm", _save("precisions_cholesky_.npy", np.full((2, 3), np.inf)),
                       "precisions_cholesky_ holds NaN or infinite values"),
    "bad-weights": ("gmm", _save("weights_.npy", np.array([0.9, 0.9])), "weights_ must be non-negative and sum to 1"),
    "newer-format": ("gmm", _rewrite_json(lambda d: {**d, "format_version": 99}), "upgrade daskem"),
}


@pytest.mark.parametrize("case", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_model_is_refused_naming_the_file_and_the_problem(models, tmp_path, case):
    name, damage, message = DAMAGES[case]
    folder = damaged_copy(models, tmp_path, name, damage)
    with pytest.raises(DaskemUserError) as error:
        load_model(folder)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_undamaged_models_load(models):
    assert isinstance(load_model(models / "gmm"), daskem.GaussianMixture)
    assert isinstance(load_model(models / "kmeans"), daskem.KMeans)


@pytest.mark.parametrize("case", ["garbage-json", "wrong-shape", "nan-parameter"])
def test_predict_with_a_damaged_model_exits_2_with_one_line_and_writes_nothing(models, tmp_path, in_process, case):
    name, damage, message = DAMAGES[case]
    folder = damaged_copy(models, tmp_path, name, damage)
    store = tmp_path / "rows.zarr"
    done = in_process("make-data", store, "--rows", 100, "--features", 3)
    assert done.returncode == 0, done.stderr
    output = tmp_path / "predicted"
    done = in_process("predict", folder, store, "--array", "X", "-o", output)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not output.exists()
