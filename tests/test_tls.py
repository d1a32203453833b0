"""TLS to a running scheduler: a real ``dask scheduler --protocol tls`` and ``dask worker`` on
127.0.0.1 with certificates made by the test (trustme). A run and a prediction with the client's
certificates succeed; without them, or with certificates the scheduler does not trust, the command
prints one line naming the problem and the fix and exits 2 without waiting for dask's retries."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config
from dask_processes import NO_DASHBOARD, dask_cluster

from daskem.data.synthetic import make_data
from daskem.models.kmeans import KMeans
from daskem.outputs.model_files import save_model

PARTIES = ("scheduler", "worker", "client", "stranger")  # the stranger's certificate comes from another CA


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """PEM files: ``ca`` and ``other-ca``, and ``<party>.pem`` / ``<party>.key`` for each of ``PARTIES``."""
    import trustme

    directory = tmp_path_factory.mktemp("certificates")
    ca, other = trustme.CA(), trustme.CA()
    files = {"ca": directory / "ca.pem", "other-ca": directory / "other-ca.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    other.cert_pem.write_to_path(files["other-ca"])
    for party in PARTIES:
        issued = (other if party == "stranger" else ca).issue_cert("127.0.0.1", "localhost")
        files[f"{party}.pem"], files[f"{party}.key"] = directory / f"{party}.pem", directory / f"{party}.key"
        issued.cert_chain_pems[0].write_to_path(files[f"{party}.pem"])
        issued.private_key_pem.write_to_path(files[f"{party}.key"])
    return files


def dask_flags(files: dict[str, Path], party: str) -> list[str]:
    return ["--tls-ca-file", str(files["ca"]), "--tls-cert", str(files[f"{party}.pem"]),
            "--tls-key", str(files[f"{party}.key"])]


def tls_config(files: dict[str, Path], party: str = "client", ca: str = "ca") -> dict[str, str]:
    return {"ca_file": str(files[ca]), "cert_file": str(files[f"{party}.pem"]), "key_file": str(files[f"{party}.key"])}


@pytest.fixture(scope="module")
def tls_address(tmp_path_factory, certificates):
    """The tls:// address of a scheduler that requires TLS, with two workers; stopped after the module."""
    from distributed.security import Security

    files = certificates
    client = Security(tls_ca_file=str(files["ca"]), tls_client_cert=str(files["client.pem"]),
                      tls_client_key=str(files["client.key"]), require_encryption=True)
    with dask_cluster(tmp_path_factory.mktemp("tls-cluster"), security=client,
                      scheduler_args=["--protocol", "tls", *NO_DASHBOARD, *dask_flags(files, "scheduler")],
                      worker_args=dask_flags(files, "worker")) as info:
        assert info["address"].startswith("tls://127.0.0.1:")
        yield info["address"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "blobs.zarr"
    make_data(str(path), n_samples=3000, n_features=2, n_components=3, chunk_rows=500, seed=3)
    return path


def run_config(store: Path, **cluster) -> dict:
    return {"data": {"path": str(store), "array": "X"},
            "model": {"kind": "kmeans", "n_components": 3, "init": "k-means++", "max_iter": 5, "random_state": 0},
            "cluster": cluster, "output": {"path": "out", "report": False}}


@pytest.mark.cluster
def test_a_run_on_a_tls_scheduler_with_the_client_certificates_succeeds(tmp_path, run_cli, store, tls_address,
                                                                         certificates):
    config = run_config(store, address=tls_address, tls=tls_config(certificates))
    done = run_cli("run", write_config(tmp_path / "c.yaml", config))
    assert done.returncode == 0, done.stderr
    assert f"cluster: scheduler {tls_address}, 2 worker(s)" in done.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["cluster"]["scheduler"] == tls_address and summary["cluster"]["n_workers"] == 2
    assert summary["config"]["cluster"]["tls"]["cert_file"] == str(certificates["client.pem"])


@pytest.mark.cluster
def test_predict_reaches_a_tls_scheduler_with_the_tls_flags(tmp_path, run_cli, store, tls_address, certificates):
    rows = np.random.default_rng(0).normal(size=(300, 2))
    save_model(KMeans(3, init="k-means++", random_state=0).fit(rows), tmp_path / "model")
    done = run_cli("predict", tmp_path / "model", store, "--array", "X", "-o", tmp_path / "pred",
                   "--address", tls_address, "--tls-ca-file", certificates["ca"],
                   "--tls-cert", certificates["client.pem"], "--tls-key", certificates["client.key"])
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "pred" / "run.json").read_text())
    assert summary["command"] == "predict" and summary["cluster"]["scheduler"] == tls_address


@pytest.mark.cluster
def test_a_tls_scheduler_without_the_tls_keys_is_one_line_naming_cluster_tls(tmp_path, in_process, store, tls_address):
    done = in_process("run", write_config(tmp_path / "c.yaml", run_config(store, address=tls_address)), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'c.yaml'}: cluster: address {tls_address}, a TLS scheduler: set cluster.tls "
        "(ca_file, cert_file, key_file) to the certificates that let this client in"]
    done = in_process("predict", tmp_path / "model", store, "-o", tmp_path / "pred", "--address", tls_address,
                      cwd=tmp_path)
    assert done.returncode == 2 and "a TLS scheduler: set cluster.tls" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "pred").exists()


@pytest.mark.cluster
@pytest.mark.parametrize("party, ca, reason", [
    ("stranger", "ca", "TLSV1_ALERT_UNKNOWN_CA"),  # the scheduler does not trust the client's certificate
    ("client", "other-ca", "CERTIFICATE_VERIFY_FAILED"),  # the client does not trust the scheduler's
])
def test_certificates_the_other_side_does_not_trust_are_one_line_at_once(tmp_path, in_process, store, tls_address,
                                                                          certificates, party, ca, reason):
    config = run_config(store, address=tls_address, tls=tls_config(certificates, party, ca))
    # dask itself would retry for the whole connect timeout, set here far beyond the test's patience
    started = time.monotonic()
    done = in_process("run", write_config(tmp_path / "c.yaml", config),
                      env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "60s"}, cwd=tmp_path)
    assert time.monotonic() - started < 20, "waited for the connect timeout"
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [f"error: cluster.address: the TLS handshake with {tls_address} failed ({reason}); check "
                      "cluster.tls: ca_file must have signed the scheduler's certificate, and the scheduler must "
                      "trust the CA of cert_file"], done.stderr
    assert not (tmp_path / "out").exists()


def test_tls_files_are_checked_when_the_config_is_read(tmp_path, in_process, certificates):
    files = {**tls_config(certificates), "key_file": str(tmp_path / "missing.key")}
    config = run_config(tmp_path / "blobs.zarr", address="tls://127.0.0.1:8786", tls=files)
    done = in_process("validate", write_config(tmp_path / "c.yaml", config), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path / 'c.yaml'}: cluster.tls.key_file: "
                                   f"'{tmp_path / 'missing.key'}': no such file; give the path of a PEM file")


def test_tls_certificates_for_a_plain_tcp_address_are_a_config_error(tmp_path, in_process, certificates):
    config = run_config(tmp_path / "blobs.zarr", address="tcp://127.0.0.1:8786", tls=tls_config(certificates))
    done = in_process("validate", write_config(tmp_path / "c.yaml", config), cwd=tmp_path)
    assert done.returncode == 2 and "not a tls:// address, but cluster.tls is set" in done.stderr
