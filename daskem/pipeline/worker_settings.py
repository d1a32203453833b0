"""The environment daskem's worker processes start with: ``dask_config/workers.yaml`` (malloc
thresholds that let a read reuse the last one's buffers; the file says why).

A nanny sets these variables before it spawns its worker, the only time glibc reads them, from
``distributed.nanny.pre-spawn-environ`` in the dask config, where a variable already in the
nanny's own environment wins. Every nanny also leaves the variables it set in its process's
environment, so a LocalCluster started earlier in the same process leaves distributed's default
``MALLOC_TRIM_THRESHOLD_=65536`` there. The two thresholds only help together, so daskem applies
both or neither: neither when the user has chosen a value of their own for one of them.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

logger = logging.getLogger("daskem")

WORKERS_CONFIG = Path(__file__).with_name("dask_config") / "workers.yaml"
PRE_SPAWN = "distributed.nanny.pre-spawn-environ"
HOW_TO = "see 'The workers' memory allocator' in docs/deployment.md"


def worker_environment() -> dict[str, Any]:
    """The environment variables ``workers.yaml`` gives a worker process, with their values (a copy)."""
    return dict(_file_environment())


@functools.cache
def _file_environment() -> dict[str, Any]:
    """``workers.yaml`` read once per process."""
    return yaml.safe_load(WORKERS_CONFIG.read_text())["distributed"]["nanny"]["pre-spawn-environ"]


def _distributed_defaults() -> dict[str, Any]:
    """distributed's own default pre-spawn environment (``MALLOC_TRIM_THRESHOLD_: 65536``, ...)."""
    import dask
    import distributed  # noqa: F401  (registers distributed's defaults)

    return dask.config.get(PRE_SPAWN, {}, config=dask.config.merge(*dask.config.defaults))


def user_choices() -> dict[str, Any]:
    """The ``workers.yaml`` variables the user has given a value of their own, in this process's
    environment or in the dask config: anything but daskem's value and distributed's default (which
    earlier nannies leave in the environment); ``null`` in the config (unset it) is a choice too."""
    import dask

    defaults, configured = _distributed_defaults(), dask.config.get(PRE_SPAWN, {}) or {}
    chosen = {}
    for name, value in worker_environment().items():
        neutral = {str(value)} | ({str(defaults[name])} if name in defaults else set())
        if name in os.environ and os.environ[name] not in neutral:
            chosen[name] = os.environ[name]
        elif name in configured and (configured[name] is None or str(configured[name]) not in neutral):
            chosen[name] = configured[name]
    return chosen


@contextmanager
def applied() -> Iterator[dict[str, Any]]:
    """Around a cluster's start: the nannies created inside give their workers ``workers.yaml``'s
    variables, unless the user chose one (then none, and the log says so). Yields what was applied.
    Leftovers of earlier nannies in this process's environment are replaced meanwhile; the
    environment is as it was afterwards."""
    import dask

    chosen = user_choices()
    if chosen:
        logger.info("cluster: the workers keep the malloc settings chosen here (%s), not daskem's (%s); %s",
                    _listed(chosen), _listed(worker_environment()), HOW_TO)
        yield {}
        return
    ours = worker_environment()
    before = {name: os.environ.get(name) for name in ours}
    os.environ.update({name: str(ours[name]) for name, value in before.items() if value is not None})
    try:
        with dask.config.set({f"{PRE_SPAWN}.{name}": value for name, value in ours.items()}):
            yield ours
    finally:  # as it was: the nannies, too, set their variables in this process's environment
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_missing(client) -> None:
    """Say how many of a running cluster's workers (on glibc, where the variables mean something)
    run without ``workers.yaml``'s settings: only a hint, so a worker that cannot answer is skipped."""
    from daskem.engine.reduction import SCHEDULER_ANSWER_SECONDS

    ours = worker_environment()
    names = sorted(ours)
    try:
        found = client.run(_environment_values, names, callback_timeout=SCHEDULER_ANSWER_SECONDS)
    except Exception as exc:  # noqa: BLE001  (a worker without daskem, a timeout: the passes will report it)
        logger.debug("cluster: could not ask the workers for their malloc settings: %s", exc)
        return
    glibc = [values for libc, values in found.values() if libc == "glibc"]
    lacking = sum(values != [str(ours[name]) for name in names] for values in glibc)
    if lacking:
        logger.info("cluster: %d of %d worker(s) run without daskem's malloc settings (%s), so reading a "
                    "store can take up to twice as long; %s", lacking, len(found), _listed(ours), HOW_TO)


def _environment_values(names: list[str]) -> tuple[str, list[str | None]]:
    import platform

    return platform.libc_ver()[0], [os.environ.get(name) for name in names]


def _listed(variables: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in variables.items())
