"""Shared fixtures: run the command line as users do, in a subprocess (or, for failures found before
any cluster, in this process); every covariance type."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from covariance_reference import SHARED_SUITE_TYPES, registered

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m daskem`` subprocess: this checkout first on the path, and no
    malloc variable that a cluster started earlier in this test process left behind (a nanny gives
    its worker the environment's value over the dask config's)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path):
    """``run_cli(*args, cwd=tmp_path, env=None, timeout=240)`` -> CompletedProcess (text, captured)."""

    def run(*args, cwd=None, env=None, timeout=240):
        return subprocess.run(
            [sys.executable, "-m", "daskem", *map(str, args)],
            cwd=cwd or tmp_path, env=cli_env(**(env or {})), capture_output=True, text=True, timeout=timeout,
        )

    return run


@pytest.fixture
def in_process(capsys, monkeypatch):
    """``in_process(*args, cwd=None, env=None)``: run the command line's ``main(args)`` here, in
    ``cwd`` with the variables ``env`` set when given, and return a CompletedProcess (exit status,
    stdout, stderr); what main() sets for its process (the log set-up, the signal handlers), the
    directory and the environment are as before once it returns. Seconds faster than ``run_cli`` (no
    interpreter to start, nothing to import): for the failures found before any cluster, whose
    real-process behaviour ``test_cli`` checks once."""
    from daskem.cli import main

    def run(*args, cwd=None, env=None):
        with monkeypatch.context() as patched, _process_settings_kept():
            if cwd is not None:
                patched.chdir(cwd)
            for name, value in (env or {}).items():
                patched.setenv(name, value)
            with _dask_config_read_again(env or {}):
                status = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, captured.out, captured.err)

    return run


@contextmanager
def _process_settings_kept() -> Iterator[None]:
    """Inside, the command line may set up logging and its signal handlers for the process, as it does
    in its own; afterwards they are as they were."""
    import logging
    import signal

    from daskem.pipeline.progress import LIBRARY_LOGGERS

    logger = logging.getLogger("daskem")
    saved = logger.handlers[:], logger.level, logger.propagate
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)



@contextmanager
def _dask_config_read_again(env: dict[str, str]) -> Iterator[None]:
    """Inside: the dask config as a new process would read it from the environment, when ``env`` has
    ``DASK_*`` variables (dask reads them once, on import); afterwards the config as it was."""
    import dask

    if not any(name.startswith("DASK_") for name in env):
        yield
        return
    saved = copy.deepcopy(dask.config.config)
    try:
        dask.config.refresh()
        yield
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


def write_config(path: Path, config: dict) -> Path:
    """Write ``config`` as YAML to ``path``; returns ``path``."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(params=SHARED_SUITE_TYPES)
def cov(request):
    """Each registered covariance type, then the toy ``scalar`` type, registered for this test only."""
    with registered(request.param) as covariance_type:
        yield covariance_type


@pytest.fixture(scope="session")
def s3():
    """A real S3 endpoint (moto's server on 127.0.0.1) with a bucket and an access key; see ``tests/s3.py``."""
    from s3 import s3_server

    with s3_server() as server:
        yield server

