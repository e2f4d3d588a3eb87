"""The automatic heartbeat of a task inside ``with task:``.

One thread per running block, owned by the block: started by __enter__,
stopped and joined by __exit__ (and by Client.close()). It heartbeats every
``interval`` seconds (a fraction of the task's timeout), so a task that
runs longer than its timeout keeps its claim, and it reports what the
sidecar answers: a cancel request, or a refused claim (lost).
"""

import contextvars
import logging
import threading
from typing import TYPE_CHECKING, Optional

from . import errors

if TYPE_CHECKING:  # pragma: no cover
    from .task import Task

log = logging.getLogger("baton_client")

#: The heartbeat interval as a fraction of the task's timeout: three
#: heartbeats per timeout, so one failed call (the sidecar restarting) does
#: not lose the claim.
FRACTION = 1.0 / 3.0
#: The shortest interval, in seconds (the shortest task timeout is 1s).
MIN_INTERVAL = 0.2


def interval_for(timeout: float) -> float:
    """Seconds between automatic heartbeats for a task timeout in seconds."""
    return max(MIN_INTERVAL, timeout * FRACTION)


class Heartbeater:
    """Heartbeats task every interval seconds from its own thread."""

    def __init__(self, task: "Task", interval: float) -> None:
        self.task = task
        self.interval = interval
        #: Heartbeats the sidecar accepted (written by the thread).
        self.beats = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        # The thread runs in a copy of the caller's context: inside the
        # task's OpenTelemetry span, its Heartbeat calls join the trace.
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._loop,), name="baton-heartbeat-" + self.task.id, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        t = self.task
        while not self._stop.wait(self.interval):
            if t._finishing:
                return
            try:
                progress, message = t._progress
                t._heartbeat(progress, message, timeout=max(1.0, self.interval))
                self.beats += 1
            except errors.ClaimLost as e:
                if not t._finishing:
                    t._claim_lost(e.message)
                return
            except errors.BatonError as e:  # the sidecar briefly away: try again next interval
                log.warning("task %s: heartbeat failed, retrying in %.1fs: %s", t.id, self.interval, e)

    def stop(self) -> None:
        """Stop the thread and wait for it (at most one heartbeat call)."""
        self._stop.set()
        th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join()
