"""No credential reaches what a user or a log collector sees: a URL's password (one holding a raw '@'
too), a secret query parameter, storage options under any secret-looking name, in records, printed
results, one-line errors (a config's or an override's), the checkpoint and the messages that workers
make and keep in their logs. Served over a real HTTP server, which ignores the credentials."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import zarr
from conftest import write_config

from daskem.data.credentials import MASK, is_secret_key, mask_text, redacted
from daskem.data.stores import check_chunks, open_array, open_data
from daskem.data.synthetic import make_data
from daskem.errors import DataError
from daskem.pipeline.config_loading import load_config
from daskem.pipeline.resume import path_digest, run_checkpoint

PASSWORD = "Pa55wordURL"


@pytest.fixture
def served(tmp_path):
    """``tmp_path`` over HTTP on 127.0.0.1; yields the URL of its root with a user and PASSWORD in it."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://alice:{PASSWORD}@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_text_loses_url_passwords_and_secret_query_values():
    assert mask_text("http://u:Pa55@word@host:80/x.zarr") == f"http://u:{MASK}@host:80/x.zarr"
    assert mask_text("https://h/p?sig=QS9sig&se=2030&X-Amz-Signature=abcd") == f"https://h/p?sig={MASK}&se=2030&X-Amz-Signature={MASK}"
    assert mask_text("s3://bucket/data.zarr and http://h/x?page=2") == "s3://bucket/data.zarr and http://h/x?page=2"
    assert mask_text("https://h/d?sigma=0.5&code=c0de#access_token=t0k3n") == f"https://h/d?sigma=0.5&code={MASK}#access_token={MASK}"
    for local in ("out/k2&sigma=0.5", "a@b/x?sig=abcd1234.zarr", "runs/x;key=1"):  # not URLs: left as they are
        assert mask_text(local) == local


def test_the_checkpoint_tells_apart_stores_that_masking_makes_alike():
    first, second = "https://h/d.zarr?sig=AAAA1111", "https://h/d.zarr?sig=BBBB2222"
    assert mask_text(first) == mask_text(second) and path_digest(first) != path_digest(second)
    # another password still opens the same data: the same checkpoint
    assert path_digest("http://alice:old-pw@h/d.zarr") == path_digest("http://alice:new-pw@h/d.zarr")


@pytest.mark.parametrize("key", ["ConnectionString", "connection-string", "conn_str", "passphrase", "pwd", "Cookie",
                                 "private_key", "signature", "SharedAccessSignature", "bearer", "jwt", "client_assertion"])
def test_more_names_of_credentials_are_secret(key):
    assert is_secret_key(key)
    options = {"client_kwargs": {"headers": {key: "v4lue"}}, "hdrs": [{key: "v4lue"}], "mirror": "http://h/?sig=v4lue"}
    assert "v4lue" not in json.dumps(redacted(options))


def test_a_list_or_a_string_for_the_storage_options_is_not_echoed(tmp_path, in_process):
    make_data(str(tmp_path / "d.zarr"), n_samples=100, n_features=2, chunk_rows=50)
    for options in ([{"endpoint_url": "http://127.0.0.1:9"}, {"secret": "s3cr3tVALUE_xyz"}], "secret=s3cr3tVALUE_xyz"):
        path = write_config(tmp_path / "c.yaml", {"data": {"path": "d.zarr", "array": "X", "storage_options": options},
                                                  "model": {"kind": "kmeans"}, "output": {"path": "out"}})
        done = in_process("validate", path, cwd=tmp_path)
        assert done.returncode == 2 and "s3cr3tVALUE_xyz" not in done.stderr + done.stdout
        assert f"data.storage_options: Input should be a valid dictionary (got a {type(options).__name__})" in done.stderr


def test_a_section_given_as_a_list_is_echoed_with_its_credentials_masked(tmp_path, in_process):
    path = write_config(tmp_path / "c.yaml", {
        "data": [{"path": "s3://bkt/d.zarr", "storage_options": {"secret": "ListedSecretValue1", "anon": False}}],
        "model": {"kind": "kmeans"}, "output": {"path": "out"}})
    done = in_process("validate", path, cwd=tmp_path)
    assert done.returncode == 2 and "ListedSecretValue1" not in done.stderr
    assert f"'storage_options': {{'secret': '{MASK}', 'anon': False}}" in done.stderr


@pytest.mark.parametrize("args, shown", [
    (["--set", "data.storage_options..secret=hunter2XYZ"], f"--set 'data.storage_options..secret={MASK}'"),
    (["--set", "data.storage_options.secret:hunter2XYZ"], "--set 'data.storage_options.secret...'"),
    (["--set", "data.path.secret=hunter2XYZ"], f"--set 'data.path.secret={MASK}': data.path is a value"),
    (["--set", "=hunter2XYZ"], f"--set '={MASK}': write it as section.key=value"),
])
def test_a_malformed_override_is_quoted_without_its_value(tmp_path, in_process, args, shown):
    make_data(str(tmp_path / "d.zarr"), n_samples=100, n_features=2, chunk_rows=50)
    path = write_config(tmp_path / "c.yaml", {"data": {"path": "d.zarr", "array": "X"}, "model": {"kind": "kmeans"},
                                              "output": {"path": "out"}})
    done = in_process("validate", path, *args, cwd=tmp_path)
    assert done.returncode == 2 and "hunter2XYZ" not in done.stderr and shown in done.stderr, done.stderr


@pytest.mark.parametrize("flag", ["--storage-option", "--output-storage-option"])
def test_a_malformed_storage_option_flag_names_itself_and_hides_the_value(tmp_path, in_process, flag):
    done = in_process("predict", "out", "d.zarr", "--array", "X", "-o", "pred", flag, "hunter2XYZ", cwd=tmp_path)
    assert done.returncode == 2 and "hunter2XYZ" not in done.stderr
    assert f"error: {flag} '{MASK}': write it as key=value" in done.stderr
    several = in_process("predict", "out", "d.zarr", "--array", "X", "-o", "pred", flag, "anon=true",
                         flag, "hunter2XYZ", cwd=tmp_path)
    assert f"error: {flag} (#2 of 2) '{MASK}': write it as key=value" in several.stderr  # which one, by its place


def test_validate_prints_the_store_without_its_password(tmp_path, served, in_process):
    make_data(str(tmp_path / "d.zarr"), n_samples=200, n_features=2, chunk_rows=50)
    path = write_config(tmp_path / "c.yaml", {"data": {"path": f"{served}/d.zarr", "array": "X"},
                                              "model": {"kind": "kmeans"}, "output": {"path": "out"}})
    done = in_process("validate", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ") and f"alice:{MASK}@127.0.0.1" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    config = load_config(path)
    source, _ = open_data(config.data)
    identity = run_checkpoint(config, source, check_chunks(config.data)).identity  # what the checkpoint file beside the output keeps
    assert PASSWORD not in json.dumps(identity) and f"alice:{MASK}@" in identity["data"]["path"]


def test_a_corrupt_chunk_read_over_a_url_is_reported_without_its_password(tmp_path, served):
    store = tmp_path / "d.zarr"
    make_data(str(store), n_samples=200, n_features=2, chunk_rows=50)
    array = zarr.open_group(str(store), mode="r")["X"]
    chunk = store.joinpath(array.path, *array.metadata.encode_chunk_key((2, 0)).split("/"))
    chunk.write_bytes(b"\x07" * chunk.stat().st_size)
    _, X = open_array(f"{served}/d.zarr", array="X", slab_bytes=1)
    with pytest.raises(DataError) as raised:  # the message a worker makes, and keeps in its log
        X.sum().compute(scheduler="threads")
    assert PASSWORD not in str(raised.value) and "cannot be read or decoded" in str(raised.value)


@pytest.mark.cluster
def test_sample_from_a_url_shows_no_password(tmp_path, served, in_process):
    make_data(str(tmp_path / "d.zarr"), n_samples=600, n_features=2, n_components=2, chunk_rows=200, seed=1)
    fitted = in_process("run", write_config(tmp_path / "c.yaml", {
        "data": {"path": "d.zarr", "array": "X"}, "model": {"kind": "gmm", "n_components": 2, "max_iter": 5},
        "cluster": {"n_workers": 1}, "output": {"path": "out", "report": False}}), "--no-progress", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr

    drawn = in_process("sample", f"{served}/out", "--rows", "50", "-o", "drawn", "--n-workers", "1", "--no-progress",
                       cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    record = (tmp_path / "drawn" / "run.json").read_text()
    assert PASSWORD not in drawn.stdout + drawn.stderr + record
    assert json.loads(record)["model_path"] == f"http://alice:{MASK}@{served.rpartition('@')[2]}/out"
    assert zarr.open_group(str(tmp_path / "drawn"), mode="r")["X"].shape == (50, 2)

    missing = in_process("sample", f"{served}/nothere", "--rows", "5", "-o", "none", cwd=tmp_path)
    assert missing.returncode == 2 and PASSWORD not in missing.stderr and f"alice:{MASK}@" in missing.stderr
    assert not np.any([path.name == "none" for path in tmp_path.iterdir()])


def test_make_data_on_an_unreachable_store_is_one_line_without_its_credentials(tmp_path, in_process):
    from dask_processes import closed_port

    done = in_process("make-data", "s3://bucket/x.zarr", "--rows", "100", "--features", "2",
                      "--storage-option", f"endpoint_url=http://127.0.0.1:{closed_port()}",
                      "--storage-option", "key=AKIAEXAMPLEKEY", "--storage-option", "secret=s3cr3tVALUE_xyz",
                      cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: s3://bucket/x.zarr: cannot connect") and "endpoint_url" in done.stderr
    assert "s3cr3tVALUE_xyz" not in done.stderr and "AKIAEXAMPLEKEY" not in done.stderr


def test_make_data_logs_and_records_a_url_without_its_password(tmp_path, in_process):
    url = f"file://alice:FtpPw2024@{tmp_path}/d.zarr"
    done = in_process("make-data", url, "--rows", "100", "--features", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    truth = next(tmp_path.rglob("truth.json")).read_text()  # where fsspec's local files put a URL with a user
    assert "FtpPw2024" not in done.stdout + done.stderr + truth and f"alice:{MASK}@" in truth


def test_a_credential_from_the_environment_stays_the_string_it_is(monkeypatch):
    from daskem.pipeline.config_loading import expand_env

    for name, value in {"PIN": "0123", "ANON": "no", "BS": "1048576", "ROWS": "0x10"}.items():
        monkeypatch.setenv(f"DASKEM_TEST_{name}", value)
    expanded = expand_env({"data": {"chunk_rows": "${DASKEM_TEST_ROWS}", "storage_options": {
        "password": "${DASKEM_TEST_PIN}", "anon": "${DASKEM_TEST_ANON}", "default_block_size": "${DASKEM_TEST_BS}"}}})
    options = expanded["data"]["storage_options"]
    assert options["password"] == "0123" and isinstance(options["password"], str)  # not YAML's octal 83
    assert options["anon"] is False and options["default_block_size"] == 1048576  # other options are read as YAML
    assert expanded["data"]["chunk_rows"] == 16


def test_make_data_on_a_store_that_takes_no_writes_is_one_line(tmp_path, served, in_process):
    done = in_process("make-data", f"{served}/new.zarr", "--rows", "100", "--features", "2", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"alice:{MASK}@" in done.stderr and PASSWORD not in done.stderr and "Unsupported method ('PUT')" in done.stderr


def test_a_credential_given_on_the_command_line_stays_the_string_it_is():
    from daskem.cli import _options
    from daskem.pipeline.config_loading import apply_override

    assert _options(["secret=0123", "anon=0", "default_block_size=1048576"]) == {
        "secret": "0123", "anon": 0, "default_block_size": 1048576}
    assert apply_override({}, "data.storage_options.token=0123") == {"data": {"storage_options": {"token": "0123"}}}
    assert apply_override({}, "model.n_components=12") == {"model": {"n_components": 12}}  # YAML, as before
