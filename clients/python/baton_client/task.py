"""A claimed task and what a worker does with it."""

import logging
import traceback
from typing import TYPE_CHECKING, Any, Dict, Optional

from . import _trace, errors

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("baton_client")


def duration(seconds: float) -> str:
    """Seconds as a protobuf Duration in JSON ("2.5s")."""
    return "%.9fs" % seconds if seconds != int(seconds) else "%ds" % int(seconds)


class Task:
    """A task claimed by this worker.

    Attributes mirror the proto ``baton.v1.Task``: ``id``, ``queue``,
    ``payload`` (dict), ``attempt``, ``max_attempts``, ``claim``,
    ``fencing_token`` (int), ``deadline`` (RFC 3339 string), ``batch``,
    ``config_revision`` (int), ``config`` (dict or None), ``traceparent``,
    ``priority``, ``affinity`` (the task's affinity key, "" when none; key
    a per-speaker cache on it).

    Finish it exactly once with complete(), fail() or release(); or use it
    as a context manager (see __exit__). ``outcome`` says how it ended:
    None while held, then "completed", "failed", "released" or "lost".
    Not safe to share between threads without a lock.
    """

    def __init__(self, client: "Client", doc: Dict[str, Any]) -> None:
        self._client = client
        self.raw = doc
        self.id: str = doc.get("id", "")
        self.queue: str = doc.get("queue", "")
        self.payload: Dict[str, Any] = doc.get("payload") or {}
        self.attempt: int = int(doc.get("attempt", 0))
        self.max_attempts: int = int(doc.get("maxAttempts", 0))
        self.claim: str = doc.get("claim", "")
        self.fencing_token: int = int(doc.get("fencingToken", 0))
        self.deadline: str = doc.get("deadline", "")
        self.batch: str = doc.get("batch", "")
        self.config_revision: int = int(doc.get("configRevision", 0))
        self.config: Optional[Dict[str, Any]] = doc.get("config")
        self.traceparent: str = doc.get("traceparent", "")
        self.priority: int = int(doc.get("priority", 0))
        self.timeout: str = doc.get("timeout", "")
        self.affinity: str = doc.get("affinity", "")
        #: Set inside ``with task:`` to the result that __exit__ completes with.
        self.result: Optional[Dict[str, Any]] = None
        self.outcome: Optional[str] = None
        self._span_cm: Any = None

    def __repr__(self) -> str:
        return "Task(id=%r, queue=%r, attempt=%d, fencing_token=%d)" % (self.id, self.queue, self.attempt, self.fencing_token)

    def _call(self, method: str, req: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return self._client._call(method, req)
        except errors.FailedPrecondition as e:
            self.outcome = "lost"
            raise errors.ClaimLost(e.message, e.code) from None

    def complete(self, result: Optional[Dict[str, Any]] = None) -> None:
        """Finish the task with result (a JSON object). Raises ClaimLost when
        the claim is stale: discard the output."""
        self._call("Complete", {"claim": self.claim, "result": result if result is not None else {}})
        self.outcome = "completed"

    def fail(self, error: str, permanent: bool = False, retry_after: Optional[float] = None) -> bool:
        """Report a failed attempt. The task is retried after a backoff (or
        retry_after seconds) unless permanent or out of attempts. Returns
        True when it will be retried. Raises ClaimLost when the claim is stale."""
        req: Dict[str, Any] = {"claim": self.claim, "error": error, "permanent": permanent}
        if retry_after is not None:
            req["retryAfter"] = duration(retry_after)
        resp = self._call("Fail", req)
        self.outcome = "failed"
        return bool(resp.get("willRetry", False))

    def release(self) -> None:
        """Give the task back without using an attempt (e.g. on shutdown)."""
        self._call("Release", {"claim": self.claim})
        self.outcome = "released"

    def heartbeat(self, progress: float = 0.0, message: str = "") -> bool:
        """Extend the claim's deadline by the task's timeout and report
        progress (0 to 1). Returns True when an operator asked to cancel the
        task. Raises ClaimLost when the claim is stale."""
        resp = self._call("Heartbeat", {"claim": self.claim, "progress": progress, "message": message})
        self.deadline = resp.get("deadline", self.deadline)
        return bool(resp.get("cancelRequested", False))

    def span(self) -> Any:
        """A context manager: an OpenTelemetry span continuing the task's
        traceparent, or a no-op without OpenTelemetry."""
        return _trace.task_span(
            "baton.task " + self.queue,
            self.traceparent,
            {"baton.task.id": self.id, "baton.task.queue": self.queue, "baton.task.attempt": self.attempt, "baton.task.fencing_token": self.fencing_token},
        )

    def __enter__(self) -> "Task":
        self._span_cm = self.span()
        self._span_cm.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """On success, complete with ``self.result`` (unless the body already
        finished the task). On an Exception, fail the task with the traceback
        text and suppress the exception, so a worker loop goes on with the
        next task. ClaimLost (from the body or from complete) is logged and
        suppressed: ``outcome`` is "lost" and the output must be discarded.
        On KeyboardInterrupt/SystemExit the task is released and the
        exception propagates."""
        try:
            if exc_type is None:
                if self.outcome is None:
                    try:
                        self.complete(self.result)
                    except errors.ClaimLost as e:
                        log.warning("task %s: complete refused, discarding output: %s", self.id, e.message)
                return False
            if isinstance(exc, errors.ClaimLost):
                self.outcome = "lost"
                log.warning("task %s: claim lost, discarding output: %s", self.id, exc.message)
                return True
            if not isinstance(exc, Exception):
                if self.outcome is None:
                    try:
                        self.release()
                    except errors.BatonError as e:
                        log.warning("task %s: release on %s failed: %s", self.id, exc_type.__name__, e)
                return False
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            log.warning("task %s failed: %s", self.id, text.rstrip())
            if self.outcome is None:
                try:
                    self.fail(text[-8000:])
                except errors.ClaimLost as e:
                    log.warning("task %s: fail refused: %s", self.id, e.message)
            return True
        finally:
            cm, self._span_cm = self._span_cm, None
            if cm is not None:
                cm.__exit__(exc_type, exc, tb)
