"""Never hang silently: every pass runs as futures on the client's cluster, watched while it waits.

A pass that cannot go on ends the run within ``cluster.timeout`` seconds with one line that says
what happened and the fix: every worker gone (and none coming back), every worker paused for lack
of memory, a scheduler that stopped answering, a task killed again and again (``KilledWorker``,
almost always a worker out of memory). A worker that leaves or joins while the run goes on is a
warning line: its tasks are recomputed, and since every task is pure the result is the same.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

from daskem.engine.reduction import passes_run_by
from daskem.errors import DaskemUserError

logger = logging.getLogger("daskem")

# Seconds between two looks at the cluster while a pass runs.
POLL_SECONDS = 1.0


class ClusterError(DaskemUserError):
    """The cluster cannot finish the work: workers gone, paused, killed, or the scheduler silent."""


class ClusterWatchdog:
    """Runs each pass on ``client`` and checks the cluster every ``poll`` seconds while waiting."""

    def __init__(self, client, timeout: float, *, memory_hint: str, poll: float = POLL_SECONDS):
        self.client = client
        self.timeout = float(timeout)
        self.poll = poll
        self.memory_hint = memory_hint
        self.workers = self._workers() or {}
        self._since: dict[str, float] = {}  # problem -> when it was first seen

    def compute(self, collections: list) -> list:
        """The results of ``collections``, computed on the cluster; a ``ClusterError`` once they cannot finish."""
        from distributed import KilledWorker, wait

        futures = self.client.compute(collections)
        try:
            while True:
                try:
                    wait(futures, timeout=self.poll)
                    break
                except TimeoutError:  # still running: look at the cluster, then wait again
                    self._check()
            results = self.client.gather(futures)
            self._check()  # a worker lost and replaced within one short pass is still logged
            return results
        except KilledWorker as exc:
            raise ClusterError(
                f"every worker that ran one task died while running it ({_first_line(exc)}); a worker killed "
                f"mid-task has almost always exceeded its memory limit: {self.memory_hint}"
            ) from None
        finally:
            self.client.cancel([future for future in futures if not future.done()])

    def _check(self) -> None:
        workers = self._workers()
        if workers is None:
            self._persisting("scheduler", f"the scheduler at {self.client.scheduler.address} has not answered for "
                             "{seconds:.0f} s: check that it still runs and is reachable, then run again to resume")
            return
        self._clear("scheduler")
        for address in sorted(set(self.workers) - set(workers)):
            logger.warning("worker %s left the cluster; its tasks are recomputed on the others", address)
        for address in sorted(set(workers) - set(self.workers)):
            logger.info("worker %s joined the cluster", address)
        self.workers = workers
        if not workers:
            self._persisting("no-workers", "every worker is gone and none has joined for {seconds:.0f} s: start "
                             "workers, then run again to resume; if they died of memory, "
                             f"{self.memory_hint}")
            return
        self._clear("no-workers")
        if all(info.get("status") == "paused" for info in workers.values()):
            self._persisting("paused", "every worker has been paused for {seconds:.0f} s because its memory is "
                             f"nearly full, so no task can run: {self.memory_hint}")
        else:
            self._clear("paused")

    def _workers(self) -> dict[str, dict] | None:
        """The scheduler's workers by address, or None when the scheduler does not answer."""
        try:
            return dict(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:  # a lost connection shows as any of several errors; all mean "no answer"
            return None

    def _persisting(self, problem: str, message: str) -> None:
        """Raise ``message`` once ``problem`` has lasted ``timeout`` seconds."""
        first = self._since.setdefault(problem, time.monotonic())
        seconds = time.monotonic() - first
        if seconds >= self.timeout:
            raise ClusterError(message.format(seconds=seconds) + f" (cluster.timeout: {self.timeout:g} s)")

    def _clear(self, problem: str) -> None:
        self._since.pop(problem, None)


def _first_line(exc: BaseException) -> str:
    """The first sentence of ``exc``'s message (distributed's run on for several)."""
    text = " ".join(str(exc).split())
    return text.split(". ")[0].rstrip(".") if text else type(exc).__name__


@contextmanager
def watched(client, timeout: float, *, memory_hint: str) -> Iterator[ClusterWatchdog]:
    """Run every pass made inside the block on ``client`` under a ``ClusterWatchdog``."""
    watchdog = ClusterWatchdog(client, timeout, memory_hint=memory_hint)
    with passes_run_by(watchdog.compute):
        yield watchdog
