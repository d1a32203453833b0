"""A real S3 server for tests: moto's server on 127.0.0.1 (or another address) on a free port, in a thread of the test
process, that checks the signature of every request against an IAM access key it issued.

The daskem processes a test starts (the CLI, its Dask workers) reach it over HTTP like any S3
endpoint, so nothing is mocked. ``s3_server()`` yields an ``S3Server`` with one bucket and one
access key; ``S3Server.env()`` is the environment of a CLI run that names its credentials as
``${DASKEM_TEST_S3_KEY}`` / ``${DASKEM_TEST_S3_SECRET}`` and finds none elsewhere.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from werkzeug.serving import WSGIRequestHandler

KEY_VARIABLE, SECRET_VARIABLE = "DASKEM_TEST_S3_KEY", "DASKEM_TEST_S3_SECRET"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with ``bucket`` and an access key allowed to read and write it."""

    endpoint_url: str
    bucket: str
    key: str
    secret: str

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def storage_options(self, **changes: Any) -> dict[str, Any]:
        """The fsspec (s3fs) options that reach this server with the issued key; ``changes`` replace some."""
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret, **changes}

    def config_options(self) -> dict[str, str]:
        """``data.storage_options`` of a config: the credentials come from the environment."""
        return {"endpoint_url": self.endpoint_url, "key": f"${{{KEY_VARIABLE}}}", "secret": f"${{{SECRET_VARIABLE}}}"}

    def env(self, tmp_path: Path) -> dict[str, str]:
        """Variables for a CLI subprocess: the credentials, and no other source of AWS credentials
        (no files, no environment keys, no instance-metadata lookup off this machine)."""
        return {
            KEY_VARIABLE: self.key, SECRET_VARIABLE: self.secret,
            "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def upload(self, local: Path, name: str) -> str:
        """Copy the local store (or file tree) ``local`` to ``s3://bucket/name``, byte for byte; its URL."""
        import s3fs

        fs = s3fs.S3FileSystem(**self.storage_options(), skip_instance_cache=True)
        fs.put(str(local), f"{self.bucket}/{name}", recursive=True)
        return self.url(name)


@contextmanager
def s3_server(bucket: str = "daskem", host: str = "127.0.0.1") -> Iterator[S3Server]:
    """Start moto's S3 (and IAM) server on ``host`` (an address of this machine), on a free port, create
    ``bucket`` and an access key, then turn on request authentication; shut the server down and forget
    its state on the way out."""
    import boto3

    if _running:  # moto keeps its state per process: this server serves the same buckets and keys
        with _serving(host) as endpoint:
            first = _running[0]
            if bucket != first.bucket:
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=first.key,
                             aws_secret_access_key=first.secret).create_bucket(Bucket=bucket)
            yield S3Server(endpoint, bucket, first.key, first.secret)
        return
    with _serving(host) as endpoint:
        try:
            setup = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                         aws_secret_access_key="setup")
            iam = boto3.client("iam", **setup)
            iam.create_user(UserName="daskem")
            iam.put_user_policy(UserName="daskem", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
            issued = iam.create_access_key(UserName="daskem")["AccessKey"]
            boto3.client("s3", **setup).create_bucket(Bucket=bucket)
            _moto_api(endpoint, "reset-auth", b"0")  # from now on every request must be signed by a known key
            _running.append(S3Server(endpoint, bucket, issued["AccessKeyId"], issued["SecretAccessKey"]))
            yield _running[0]
        finally:
            _running.clear()
            _moto_api(endpoint, "reset-auth", b"inf")
            _moto_api(endpoint, "reset", b"")


# The server that set moto's state up in this process; another one started meanwhile shares it.
_running: list[S3Server] = []


@contextmanager
def _serving(host: str) -> Iterator[str]:
    """moto's application served on ``host``, a free port, in a thread; its endpoint URL."""
    from werkzeug.serving import make_server

    server = make_server(host, 0, _moto_application(), threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per request would flood the test log
        pass


def _moto_application():
    """moto's WSGI application: S3, IAM and moto's own API, dispatched by request."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)


def _moto_api(endpoint: str, action: str, body: bytes) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/{action}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
