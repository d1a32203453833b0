"""The deployment of ``docker/compose.yaml``, run without a container engine: the commands of its
services, read from the file, run as plain processes on this machine in the order compose starts
them, then the job's outputs are checked where its config puts them.

Only what must differ outside containers is changed: service host names (and ``0.0.0.0``,
``localhost``) become 127.0.0.1, the ports the services listen on become free ports of this
machine (in the commands, the health checks and the environment), and the working directory is a
temporary directory laid out as the Dockerfile lays out the image's (its ``COPY`` instructions and
the ``work`` directory that the volume shares).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import pytest
import yaml
import zarr
from conftest import REPO, cli_env
from dask_processes import closed_port
from test_docker import DOCKER, instructions

from daskem.data.stores import open_zarr_array
from daskem.outputs.model_files import load_model
from daskem.pipeline.worker_settings import worker_environment
from daskem.pipeline.config_loading import load_config

PORT_FLAGS, HOST_FLAGS = {"-p", "--port"}, {"-H", "--host"}


class Outside:
    """Rewrites a compose command, health check or environment value for plain processes here."""

    def __init__(self, compose: dict):
        services = compose["services"]
        self.hosts = set(services) | {"0.0.0.0", "localhost"}
        self.ports: dict[str, str] = {}
        for service in services.values():
            command = service["command"]
            for flag, value in zip(command, command[1:]):
                if flag in PORT_FLAGS or flag == "--dashboard-address":
                    self.ports[value.rpartition(":")[2]] = str(closed_port())

    def text(self, value: str) -> str:
        hosts = "|".join(map(re.escape, sorted(self.hosts, key=len, reverse=True)))
        value = re.sub(rf"(?<![\w.-])({hosts})(?=:\d)", "127.0.0.1", value)
        return re.sub(r"(?<=:)(\d+)\b", lambda match: self.ports.get(match[1], match[1]), value)

    def command(self, command: list[str]) -> list[str]:
        """The argument list, with ``python`` and console scripts resolved in this Python's environment."""
        args = []
        for previous, arg in zip([None, *command], command):
            if previous in PORT_FLAGS:
                arg = self.ports.get(arg, arg)
            elif previous in HOST_FLAGS:
                arg = "127.0.0.1"
            else:
                arg = self.text(arg)
            args.append(arg)
        return [executable(args[0]), *args[1:]]

    def environment(self, service: dict, home: Path) -> dict[str, str]:
        """The service's environment over this one, with no AWS files of this machine's user."""
        env = cli_env(AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
                      AWS_CONFIG_FILE=str(home / "no-aws-config"))
        env.update({name: self.text(str(value)) for name, value in service.get("environment", {}).items()})
        return env


def executable(name: str) -> str:
    """``python`` is this interpreter; a console script (``dask``, ``moto_server``) is the one installed beside it."""
    if name == "python":
        return sys.executable
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name!r} (a command of docker/compose.yaml) is not installed"
    return found


def image_workdir(root: Path) -> Path:
    """The image's working directory, built here from the Dockerfile's WORKDIR, COPY and ``mkdir work``;
    a COPY to an absolute path lands at that path under ``root``."""
    steps = instructions()
    workdir = root / next(arguments for keyword, arguments in steps if keyword == "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True)
    for keyword, arguments in steps:
        if keyword == "COPY":
            *sources, target = arguments.split()
            base = root / target.lstrip("/") if target.startswith("/") else workdir / target
            base.parent.mkdir(parents=True, exist_ok=True)
            for source in sources:
                destination = base / Path(source).name if target.endswith("/") else base
                copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy
                copy(REPO / source, destination)
    (workdir / "work").mkdir()
    return workdir


def image_environment(root: Path, workdir: Path) -> dict[str, str]:
    """The Dockerfile's ``ENV`` variables, with the image's working directory at ``workdir``; and
    dask's system config directory (``/etc/dask`` in the image) at its place under ``root``."""
    image_workdir = next(arguments for keyword, arguments in instructions() if keyword == "WORKDIR")
    pairs = [pair.split("=", 1) for keyword, arguments in instructions() if keyword == "ENV"
             for pair in shlex.split(arguments)]
    return {"DASK_ROOT_CONFIG": str(root / "etc" / "dask"),
            **{name: value.replace(image_workdir, str(workdir)) for name, value in pairs}}


class Deployment:
    """The compose services as processes in one working directory, their output in log files."""

    def __init__(self, compose: dict, root: Path, stack: ExitStack):
        self.services, self.outside = compose["services"], Outside(compose)
        self.root, self.workdir = root, image_workdir(root)
        self.processes: dict[str, subprocess.Popen] = {}
        stack.callback(self.stop)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def start(self, name: str) -> subprocess.Popen:
        service = self.services[name]
        assert set(service.get("depends_on", {})) <= set(self.processes), f"{name} before what it depends on"
        with open(self.root / f"{name}.log", "wb") as log:
            env = {**image_environment(self.root, self.workdir), **self.outside.environment(service, self.root)}
            process = subprocess.Popen(self.outside.command(service["command"]), cwd=self.workdir, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def run(self, name: str, timeout: float) -> subprocess.CompletedProcess:
        """A one-shot service in the foreground (``restart: "no"``): its exit status and output."""
        assert self.services[name]["restart"] == "no"
        process = self.start(name)
        process.wait(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, self.log(name))

    def wait_healthy(self, name: str) -> None:
        """Run the service's health check, as compose does, until it passes (or its retries run out)."""
        check = self.services[name]["healthcheck"]
        assert check["test"][0] == "CMD"
        command, interval = self.outside.command(check["test"][1:]), float(check["interval"].rstrip("s"))
        for _ in range(check["retries"]):
            assert self.processes[name].poll() is None, f"{name} exited:\n{self.log(name)}"
            if subprocess.run(command, env=cli_env(), capture_output=True, timeout=30).returncode == 0:
                return
            time.sleep(interval)
        pytest.fail(f"{name} never became healthy:\n{self.log(name)}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_workers(scheduler_file: Path, names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Until the workers have joined (compose's job depends on them being started, not joined, and
    waits only for one, while the test checks that the run used both); then each one's environment."""
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
        client.wait_for_workers(len(list(names)), timeout=60)
        return client.run(lambda: dict(os.environ))  # a lambda goes by value: the workers cannot import this module


def fetched(path: str, storage_options: dict, workdir: Path, local: Path) -> Path:
    """The job's output directory as a local directory: itself, or a copy of an object-store prefix."""
    if "://" not in path:
        return workdir / path
    fs, fs_path = fsspec.core.url_to_fs(path, **storage_options)
    if isinstance(fs, LocalFileSystem):
        return Path(fs_path)
    fs.get(fs_path.rstrip("/") + "/", str(local), recursive=True)
    return local


@pytest.mark.cluster
def test_the_compose_services_run_as_processes_and_the_job_writes_its_outputs(tmp_path):
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    with ExitStack() as stack:
        deployment = Deployment(compose, tmp_path, stack)
        deployment.start("s3")
        deployment.start("scheduler")
        deployment.wait_healthy("s3")
        deployment.wait_healthy("scheduler")
        workers = [name for name, service in compose["services"].items() if service["command"][:2] == ["dask", "worker"]]
        for name in workers:
            deployment.start(name)
        setup = deployment.run("setup", timeout=120)
        assert setup.returncode == 0, setup.stdout
        scheduler_file = deployment.workdir / "work" / "scheduler.json"
        environments = wait_for_workers(scheduler_file, workers)
        # the image's dask config reaches the workers: they start with daskem's allocator settings
        expected = worker_environment()
        for environ in environments.values():
            assert {name: environ.get(name) for name in expected} == {name: str(v) for name, v in expected.items()}
        scheduler = json.loads(scheduler_file.read_text())["address"]
        job = deployment.run("job", timeout=180)
        assert job.returncode == 0, job.stdout

        # The outputs, wherever the job's config puts them, read with the job's environment.
        service = compose["services"]["job"]
        env = deployment.outside.environment(service, tmp_path)
        config_file = deployment.workdir / service["command"][-1]
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            config = load_config(config_file)
            output = fetched(config.output.path, getattr(config.output, "storage_options", {}),
                             deployment.workdir, tmp_path / "fetched")
            n_rows = open_zarr_array(config.data.path, array=config.data.array,
                                     storage_options=config.data.storage_options).shape[0]
    model = load_model(output)
    assert model.n_components == config.model.n_components and model.means_.shape[0] == config.model.n_components
    setup_args = compose["services"]["setup"]["command"]
    assert n_rows == int(setup_args[setup_args.index("--rows") + 1])
    labels = zarr.open_array(str(output / "predictions.zarr"), path="labels", mode="r")[:]
    assert labels.shape == (n_rows,) and set(np.unique(labels)) <= set(range(model.n_components))
    summary = json.loads((output / "run.json").read_text())
    assert summary["cluster"]["embedded"] is False and summary["cluster"]["scheduler"] == scheduler
    assert summary["cluster"]["n_workers"] == len(workers) == 2
    assert f"cluster: scheduler {scheduler}, 2 worker(s)" in job.stdout
    assert "without daskem's malloc settings" not in job.stdout  # the image's workers have them
