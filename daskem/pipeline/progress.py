"""Progress bars over chunks for every pass the cluster runs, and logging set-up for the CLI.

The estimators compute each pass internally, so the client does not know the keys in advance.
A small scheduler plugin watches every graph submitted: it counts the tasks of the graph's
one-task-per-chunk layer (the largest group of keys sharing a name; the deepest one on ties, so
the E-step rather than the reads) and publishes ``done / total`` on an event topic. The client
subscribes and draws a ``tqdm`` bar per pass, shown only for passes that last more than a
second, and only on a terminal. The plugin class is sent to the scheduler by value, so a remote scheduler needs no
daskem installed; if it cannot be registered, runs go on without bars.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from itertools import count

import cloudpickle
from dask.utils import key_split
from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("daskem")

TOPIC = "daskem-progress"
PLUGIN_NAME = "daskem-progress"


class ChunkProgressPlugin(SchedulerPlugin):
    """Counts finished chunk tasks per submitted graph and publishes them on ``TOPIC``."""

    name = PLUGIN_NAME

    def __init__(self, min_chunks: int = 2, interval: float = 0.2):
        self.min_chunks = min_chunks
        self.interval = interval
        self.scheduler = None
        self.passes: dict[int, dict] = {}
        self.key_to_pass: dict = {}
        self.ids = count(1)

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def update_graph(self, scheduler, *, keys=None, tasks=None, **kwargs) -> None:
        self.scheduler = scheduler
        groups = defaultdict(list)
        for key in tasks or ():
            groups[key[0] if isinstance(key, tuple) else key_split(key)].append(key)
        if not groups:
            return
        largest = max(len(members) for members in groups.values())
        if largest < self.min_chunks:
            return
        tied = [name for name, members in groups.items() if len(members) == largest]
        depths: dict = {}
        name = max(tied, key=lambda n: self._depth(scheduler, groups[n][0], depths))
        pass_id = next(self.ids)
        state = {"name": key_split(name), "total": largest, "done": 0, "sent": 0.0}
        self.passes[pass_id] = state
        for key in groups[name]:
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.state == "memory":
                state["done"] += 1
            else:
                self.key_to_pass[key] = pass_id
        self._publish(pass_id, force=True)

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        pass_id = self.key_to_pass.get(key)
        if pass_id is None or finish not in ("memory", "erred", "forgotten"):
            return
        del self.key_to_pass[key]
        state = self.passes.get(pass_id)
        if state is None:
            return
        state["done"] += 1
        self._publish(pass_id, force=state["done"] >= state["total"])

    def _publish(self, pass_id: int, force: bool) -> None:
        state = self.passes[pass_id]
        now = time.monotonic()
        if self.scheduler is None or not (force or now - state["sent"] >= self.interval):
            return
        state["sent"] = now
        message = {"pass": pass_id, "name": state["name"], "done": state["done"], "total": state["total"]}
        self.scheduler.log_event(TOPIC, message)
        if state["done"] >= state["total"]:
            del self.passes[pass_id]

    @staticmethod
    def _depth(scheduler, key, memo: dict, limit: int = 10_000) -> int:
        """Length of the longest dependency chain below ``key`` (iterative, memoized)."""
        stack = [key]
        while stack and len(memo) < limit:
            current = stack[-1]
            ts = scheduler.tasks.get(current)
            deps = [d.key for d in ts.dependencies] if ts is not None else []
            pending = [d for d in deps if d not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            memo[current] = 1 + max((memo[d] for d in deps), default=0)
        return memo.get(key, 0)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ProgressBars:
    """Context manager: register the plugin on ``client``'s scheduler and draw the bars."""

    def __init__(self, client, *, enabled: bool = True, delay: float = 1.0, file=None):
        self.client = client
        self.enabled = enabled
        self.delay = delay
        self.file = file or sys.stderr
        self.bars: dict[int, object] = {}
        self.registered = False

    def __enter__(self) -> "ProgressBars":
        if not self.enabled:
            return self
        try:
            self.client.register_plugin(ChunkProgressPlugin(), name=PLUGIN_NAME)
            self.client.subscribe_topic(TOPIC, self._on_event)
            self.registered = True
        except Exception as exc:  # an old or locked-down scheduler: go on without bars
            logger.debug("no progress bars: %s", exc)
        return self

    def _on_event(self, event) -> None:
        from tqdm.auto import tqdm

        _, message = event
        pass_id = message["pass"]
        bar = self.bars.get(pass_id)
        if bar is None:
            if message["done"] >= message["total"]:
                return
            bar = tqdm(total=message["total"], desc=message["name"][:40], unit="chunk", leave=False,
                       delay=self.delay, file=self.file, dynamic_ncols=True, disable=None)
            self.bars[pass_id] = bar
        bar.update(message["done"] - bar.n)  # respects ``delay``, unlike refresh()
        if message["done"] >= message["total"]:
            bar.close()
            del self.bars[pass_id]

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        if self.registered:
            try:
                self.client.unsubscribe_topic(TOPIC)
                self.client.unregister_scheduler_plugin(PLUGIN_NAME)
            except Exception as error:  # the cluster may already be gone
                logger.debug("progress plugin not removed: %s", error)


# The libraries' loggers whose levels the command line sets: all but asyncio to warnings here
# (``configure_logging``), all to nothing once a run is interrupted (``cli.quiet_shutdown``).
LIBRARY_LOGGERS = ("distributed", "asyncio", "tornado", "bokeh")


def configure_logging(verbosity: int = 0) -> None:
    """Show daskem's log lines (one per iteration, timings, dashboard) on stderr.

    ``verbosity``: -1 warnings only, 0 info, 1 debug. Distributed's own loggers stay at warning.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    daskem_logger = logging.getLogger("daskem")
    daskem_logger.handlers[:] = [handler]
    daskem_logger.setLevel(level)
    daskem_logger.propagate = False
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
