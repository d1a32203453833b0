"""The container files are what they claim, read as plain files (no container engine is needed):
one image from an exact Python tag, installed with pip and run by a user without privileges; a
compose file whose services are plain command lists that daskem's own parser and config loader
accept; and a job config that validates with the environment the compose file gives it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from daskem.cli import build_parser
from daskem.pipeline.config_loading import load_config

DOCKER = Path(__file__).resolve().parents[1] / "docker"
SERVICES = {"s3", "scheduler", "worker-1", "worker-2", "setup", "job"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), " ".join(line.split()[1:])) for line in lines]


def test_the_image_is_built_from_an_exact_python_tag_with_pip_and_runs_unprivileged():
    steps = instructions()
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", steps[0][1])
    keywords = [keyword for keyword, _ in steps]
    install = next(i for i, (keyword, arguments) in enumerate(steps)
                   if keyword == "RUN" and arguments.startswith("python -m pip install . "))
    assert "import daskem" in steps[install][1]  # the build fails unless the install imports
    env = " ".join(arguments for keyword, arguments in steps if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    users = [i for i, keyword in enumerate(keywords) if keyword == "USER"]
    assert users and users[-1] > install and steps[users[-1]][1] not in ("root", "0")
    copied = {part for keyword, arguments in steps[:install] if keyword == "COPY" for part in shlex.split(arguments)}
    assert {"pyproject.toml", "README.md", "daskem"} <= copied  # what pip install . builds from


def test_every_service_is_a_plain_command_list_on_pinned_images(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        command = service["command"]
        assert isinstance(command, list) and all(isinstance(part, str) for part in command), name
        assert ":" in service["image"] and not service["image"].endswith(":latest"), name
    assert services["s3"]["image"].startswith("motoserver/moto:") and services["s3"]["entrypoint"] == []
    daskem_services = SERVICES - {"s3"}
    assert {services[name]["build"]["dockerfile"] for name in daskem_services} == {"docker/Dockerfile"}
    for name in ("scheduler", "worker-1", "worker-2"):
        assert services[name]["command"][:2] == ["dask", "scheduler" if name == "scheduler" else "worker"]
        assert "work/scheduler.json" in services[name]["command"]


def test_the_setup_and_job_commands_are_what_daskem_s_parser_accepts(compose):
    services = compose["services"]
    for name, subcommand in (("setup", "make-data"), ("job", "run")):
        command = services[name]["command"]
        assert command[:4] == ["python", "-m", "daskem", subcommand]
        build_parser().parse_args(command[3:])  # exits (SystemExit) on an unknown flag
    assert services["setup"]["command"][4].startswith("s3://")
    assert services["job"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


def test_the_job_config_validates_with_the_environment_of_the_compose_file(compose, monkeypatch):
    job = compose["services"]["job"]
    for name, value in job["environment"].items():
        monkeypatch.setenv(name, value)
    config = load_config(DOCKER / job["command"][-1].removeprefix("docker/"))
    assert config.data.path == compose["services"]["setup"]["command"][4]
    assert config.data.storage_options["endpoint_url"] == job["environment"]["AWS_ENDPOINT_URL_S3"]
    assert config.cluster.scheduler_file.endswith("work/scheduler.json")
    assert "work:/opt/daskem/work" in job["volumes"]  # the scheduler file; the outputs go to the bucket
    assert config.output.path.startswith(f"s3://{config.data.path.removeprefix('s3://').split('/')[0]}/results/")
    assert config.output.storage_options == config.data.storage_options
