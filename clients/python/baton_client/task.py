"""A claimed task and what a worker does with it."""

import asyncio
import logging
import os
import threading
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type

from . import _heartbeat, _trace, errors

if TYPE_CHECKING:  # pragma: no cover
    from ._session import Session
    from .client import Client

log = logging.getLogger("baton_client")

#: A task's timeout when the sidecar does not say (the default of
#: TaskSpec.timeout and `baton submit --timeout`): 5 minutes.
DEFAULT_TIMEOUT = 300.0


def duration(seconds: float) -> str:
    """Seconds as a protobuf Duration in JSON ("2.5s")."""
    return "%.9fs" % seconds if seconds != int(seconds) else "%ds" % int(seconds)


def parse_duration(s: str, default: float) -> float:
    """A protobuf Duration in JSON ("2.5s") as seconds; default when empty
    or not a duration."""
    try:
        return float(s[:-1]) if s.endswith("s") else default
    except ValueError:
        return default


class Task:
    """A task claimed by this worker.

    Attributes mirror the proto ``baton.v1.Task``: ``id``, ``queue``,
    ``payload`` (dict), ``attempt`` (1-based), ``max_attempts``, ``claim``,
    ``fencing_token`` (int), ``deadline`` (RFC 3339 string: when the claim
    lapses unless heartbeated), ``batch``, ``config_revision`` (int),
    ``config`` (dict or None), ``traceparent``, ``priority`` (int, higher
    runs first), ``timeout`` (seconds a claim may go without a heartbeat;
    the sidecar's default is 300), ``affinity`` (the task's affinity key, ""
    when none; key a per-speaker cache on it).

    Finish it exactly once with complete(), fail() or release(); or use it
    as a context manager, ``with task:`` or ``async with task:`` (see
    __exit__), which also heartbeats it automatically. ``outcome`` says how
    it ended: None while held, then "completed", "failed", "released",
    "cancelled" or "lost".

    ``cancelled`` and ``lost`` are threading.Events set when an operator
    asked to cancel the task (pushed by the sidecar at once) and when the
    claim was lost (a heartbeat was refused, the session ended). The
    methods may be called from any thread.
    """

    def __init__(self, client: "Client", doc: Dict[str, Any], session: Optional["Session"] = None,
                 fail_on: Tuple[Type[BaseException], ...] = ()) -> None:
        self._client = client
        self._session = session
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
        self.timeout: float = parse_duration(str(doc.get("timeout", "")), DEFAULT_TIMEOUT)
        self.affinity: str = doc.get("affinity", "")
        #: Set inside ``with task:`` to the result that __exit__ completes with.
        self.result: Optional[Dict[str, Any]] = None
        self.outcome: Optional[str] = None
        #: Exceptions that fail the task permanently (DEAD at once) when
        #: they leave ``with task:``, beside PermanentError.
        self.fail_on: Tuple[Type[BaseException], ...] = tuple(fail_on)
        #: Seconds between the automatic heartbeats of ``with task:``; by
        #: default a third of the task's timeout. 0 turns them off (set it
        #: before entering the block).
        self.heartbeat_interval: float = _heartbeat.interval_for(self.timeout) if client.heartbeat else 0.0
        #: Set when an operator asked to cancel the task.
        self.cancelled = threading.Event()
        #: Set when the claim was lost: discard this attempt's output.
        self.lost = threading.Event()
        #: Why the claim was lost, when it was.
        self.lost_reason = ""
        self._mu = threading.Lock()
        self._callbacks: List[Callable[["Task"], Any]] = []
        self._progress: Tuple[float, str] = (0.0, "")
        self._finishing = False
        self._beater: Optional[_heartbeat.Heartbeater] = None
        self._outputs: List[Tuple[str, str]] = []
        self._span_cm: Any = None
        self._aio: Optional[Tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]] = None
        self._aio_cancelled = False

    def __repr__(self) -> str:
        return "Task(id=%r, queue=%r, attempt=%d, fencing_token=%d)" % (self.id, self.queue, self.attempt, self.fencing_token)

    # --- answers ----------------------------------------------------------

    def _call(self, method: str, req: Dict[str, Any], timeout: float = 60.0) -> Dict[str, Any]:
        try:
            return self._client._call(method, req, timeout)
        except errors.FailedPrecondition as e:
            self._claim_lost(e.message)
            raise errors.ClaimLost(e.message, e.code) from None

    def _finish(self, method: str, req: Dict[str, Any], outcome: str) -> Dict[str, Any]:
        self._finishing = True  # a heartbeat refused from now on is not a lost claim
        try:
            resp = self._call(method, req)
        except errors.ClaimLost:
            self.outcome = "lost"
            raise
        except BaseException:
            self._finishing = False
            raise
        self.outcome = outcome
        if self._session is not None:
            self._session.unregister(self)
        return resp

    def complete(self, result: Optional[Dict[str, Any]] = None) -> None:
        """Finish the task with result (a JSON object). Raises ClaimLost when
        the claim is stale: discard the output."""
        self._finish("Complete", {"claim": self.claim, "result": result if result is not None else {}}, "completed")

    def fail(self, error: str, permanent: bool = False, retry_after: Optional[float] = None) -> bool:
        """Report a failed attempt. The task is retried after a backoff (or
        retry_after seconds) unless permanent or out of attempts (then it is
        DEAD; CANCELLED when an operator asked to cancel it). Returns True
        when it will be retried. Raises ClaimLost when the claim is stale."""
        req: Dict[str, Any] = {"claim": self.claim, "error": error, "permanent": permanent}
        if retry_after is not None:
            req["retryAfter"] = duration(retry_after)
        resp = self._finish("Fail", req, "failed")
        return bool(resp.get("willRetry", False))

    def release(self) -> None:
        """Give the task back without using an attempt (e.g. on shutdown;
        CANCELLED instead when an operator asked to cancel it)."""
        self._finish("Release", {"claim": self.claim}, "released")

    def heartbeat(self, progress: float = 0.0, message: str = "") -> bool:
        """Extend the claim's deadline by the task's timeout and report
        progress (0 to 1). Returns True when an operator asked to cancel the
        task. Raises ClaimLost when the claim is stale. Inside ``with
        task:`` heartbeats are automatic; use progress() to report."""
        return self._heartbeat(progress, message, 60.0)

    def _heartbeat(self, progress: float, message: str, timeout: float) -> bool:
        resp = self._call("Heartbeat", {"claim": self.claim, "progress": progress, "message": message}, timeout)
        self.deadline = resp.get("deadline", self.deadline)
        if resp.get("cancelRequested", False):
            self._cancel_requested("answered by a heartbeat")
            return True
        return False

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0 to 1) and a message; the next automatic
        heartbeat reports them (``baton tasks get`` shows them). Cheap: call
        it from an engine's progress hook."""
        self._progress = (min(max(float(fraction), 0.0), 1.0), message[:1024])

    # --- cancellation and lost claims --------------------------------------

    def on_cancel(self, callback: Callable[["Task"], Any]) -> None:
        """Call callback(task) when an operator asks to cancel the task (at
        once if already asked). It runs in the client's session thread:
        keep it short (set a flag, stop the engine); an exception is
        logged."""
        with self._mu:
            self._callbacks.append(callback)
            now = self.cancelled.is_set()
        if now:
            self._run_callback(callback)

    def _run_callback(self, cb: Callable[["Task"], Any]) -> None:
        try:
            cb(self)
        except Exception:
            log.exception("task %s: cancel callback failed", self.id)

    def _cancel_requested(self, how: str) -> None:
        with self._mu:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            cbs = list(self._callbacks)
        log.info("task %s: cancel requested (%s)", self.id, how)
        for cb in cbs:
            self._run_callback(cb)
        self._interrupt_coroutine()

    def _claim_lost(self, reason: str) -> None:
        with self._mu:
            if self.lost.is_set() or self.outcome is not None:
                return
            self.lost_reason = reason
            self.lost.set()
        log.warning("task %s: claim lost: %s", self.id, reason)
        self._interrupt_coroutine()

    def checkpoint(self) -> None:
        """Raise TaskCancelled when an operator asked to cancel the task and
        ClaimLost when the claim was lost; return otherwise. Call it between
        steps of long work (between segments, batches, epochs): cheap, no
        I/O. Inside ``with task:`` TaskCancelled ends the task CANCELLED."""
        if self.lost.is_set():
            raise errors.ClaimLost(self.lost_reason or "claim lost", "failed_precondition")
        if self.cancelled.is_set():
            raise errors.TaskCancelled("task %s: an operator asked to cancel it" % self.id)

    # --- fenced output --------------------------------------------------------

    def output(self, path: str) -> str:
        """A temporary path to write path's content to, for ``with task:``.

        The file is moved into place (an atomic rename in the same
        directory) only when the block's Complete succeeds; on any other
        end (an exception, a lost claim, a cancel) it is removed, so a
        lost attempt leaves nothing behind. The temporary name keeps the
        extension (``.x.7.123.part.wav``) for libraries that pick the format
        from it. Put the fencing token in path (``f"{task.id}.{task.fencing_token}.wav"``)
        when a late attempt must never overwrite a newer one's file."""
        d, base = os.path.split(path)
        stem, ext = os.path.splitext(base)
        tmp = os.path.join(d, ".%s.%d.%d.part%s" % (stem, self.fencing_token, os.getpid(), ext))
        self._outputs.append((tmp, path))
        return tmp

    def _settle_outputs(self) -> None:
        outs, self._outputs = self._outputs, []
        for tmp, final in outs:
            if self.outcome == "completed":
                try:
                    os.replace(tmp, final)
                    continue
                except FileNotFoundError:
                    log.error("task %s: output %s was never written; the task is DONE without it", self.id, final)
                    continue
                except OSError as e:
                    log.error("task %s: output %s not moved into place: %s", self.id, final, e)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("task %s: temporary output %s not removed: %s", self.id, tmp, e)

    # --- with task: -----------------------------------------------------------

    def span(self) -> Any:
        """A context manager: an OpenTelemetry span continuing the task's
        traceparent, or a no-op without OpenTelemetry."""
        return _trace.task_span(
            "baton.task " + self.queue,
            self.traceparent,
            {"baton.task.id": self.id, "baton.task.queue": self.queue, "baton.task.attempt": self.attempt, "baton.task.fencing_token": self.fencing_token},
        )

    def _start(self) -> None:
        if self._session is not None:
            self._session.register(self)
        if self.heartbeat_interval > 0 and self.outcome is None:
            self._beater = _heartbeat.Heartbeater(self, self.heartbeat_interval)
            self._beater.start()

    def _stop_heartbeat(self) -> None:
        b, self._beater = self._beater, None
        if b is not None:
            b.stop()

    def __enter__(self) -> "Task":
        self._span_cm = self.span()
        self._span_cm.__enter__()
        self._start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Stop the automatic heartbeat, then end the task:

        - the block succeeded: complete with ``self.result`` (unless the
          body finished the task itself, or the claim was lost);
        - TaskCancelled (from checkpoint()): the task ends CANCELLED;
        - PermanentError, or an exception in ``fail_on``: the task fails
          permanently (DEAD at once, with the message);
        - any other Exception: the task fails with the traceback text and
          is retried after a backoff (DEAD after max_attempts);
        - ClaimLost, or a claim lost while the block ran: nothing is
          answered, ``outcome`` is "lost" and the output must be discarded.

        Exceptions are suppressed (logged on the baton_client logger) so a
        worker loop goes on with the next task. On KeyboardInterrupt or
        SystemExit the task is released and the exception propagates.
        Fenced outputs (output()) are moved into place or removed."""
        try:
            return self._exit_blocking(exc_type, exc, tb)
        finally:
            cm, self._span_cm = self._span_cm, None
            if cm is not None:
                cm.__exit__(exc_type, exc, tb)

    def _exit_blocking(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            self._stop_heartbeat()
            return self._end(exc_type, exc, tb)
        finally:
            if self._session is not None:
                self._session.unregister(self)
            self._settle_outputs()

    def _end(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            if self.outcome is None:
                if self.lost.is_set():
                    self.outcome = "lost"
                    log.warning("task %s: claim lost while running, discarding output: %s", self.id, self.lost_reason)
                    return False
                try:
                    self.complete(self.result)
                except errors.ClaimLost as e:
                    log.warning("task %s: complete refused, discarding output: %s", self.id, e.message)
            return False
        if isinstance(exc, errors.ClaimLost) or (self.lost.is_set() and isinstance(exc, Exception)):
            self.outcome = "lost"
            log.warning("task %s: claim lost, discarding output: %s", self.id, self.lost_reason or exc)
            return True
        if isinstance(exc, errors.TaskCancelled):
            if self.outcome is None:
                try:
                    self.fail("cancelled: %s" % exc, permanent=True)
                    self.outcome = "cancelled"
                except errors.ClaimLost as e:
                    log.warning("task %s: cancel refused: %s", self.id, e.message)
            log.info("task %s cancelled", self.id)
            return True
        if not isinstance(exc, Exception):
            if self.outcome is None:
                try:
                    self.release()
                except errors.BatonError as e:
                    log.warning("task %s: release on %s failed: %s", self.id, exc_type.__name__, e)
            return False
        permanent = isinstance(exc, errors.PermanentError) or (bool(self.fail_on) and isinstance(exc, self.fail_on))
        if permanent:
            text = "%s: %s" % (exc_type.__name__, exc)
            log.warning("task %s failed permanently: %s", self.id, text)
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            log.warning("task %s failed: %s", self.id, text.rstrip())
        if self.outcome is None:
            try:
                self.fail(text[-8000:], permanent=permanent)
            except errors.ClaimLost as e:
                log.warning("task %s: fail refused: %s", self.id, e.message)
        return True

    # --- async with task: ------------------------------------------------------

    def _interrupt_coroutine(self) -> None:
        """Inside ``async with task:``: cancel the coroutine running the block
        (a cancel request or a lost claim reaches it at its next await)."""
        aio = self._aio
        if aio is None:
            return
        loop, atask = aio

        def cancel() -> None:
            if self._aio is not None and not atask.done():
                self._aio_cancelled = True
                atask.cancel()

        try:
            loop.call_soon_threadsafe(cancel)
        except RuntimeError:  # the loop is closed
            pass

    async def __aenter__(self) -> "Task":
        """``async with task:``: as ``with task:``, and a cancel request or a
        lost claim cancels the coroutine running the block (CancelledError at
        its next await), ending the task CANCELLED (or lost)."""
        atask = asyncio.current_task()
        self._span_cm = self.span()
        self._span_cm.__enter__()
        self._start()
        if atask is not None:
            self._aio = (asyncio.get_running_loop(), atask)
            if self.cancelled.is_set() or self.lost.is_set():
                self._interrupt_coroutine()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        aio, self._aio = self._aio, None
        own = self._aio_cancelled
        if own:
            # Our own cancel, not the caller cancelling the coroutine: it
            # does not count against the coroutine (Python 3.11+).
            uncancel = getattr(aio[1] if aio else None, "uncancel", None)
            if uncancel is not None:
                uncancel()
        if isinstance(exc, asyncio.CancelledError) and own:
            if self.lost.is_set():
                exc_type, exc = errors.ClaimLost, errors.ClaimLost(self.lost_reason, "failed_precondition")
            else:
                exc_type, exc = errors.TaskCancelled, errors.TaskCancelled("task %s: an operator asked to cancel it" % self.id)
            tb = None
        elif isinstance(exc, asyncio.CancelledError):
            # The coroutine itself was cancelled (shutdown): give the task back.
            exc_type, exc = KeyboardInterrupt, KeyboardInterrupt()
        fut = asyncio.get_running_loop().run_in_executor(None, self._exit_blocking, exc_type, exc, tb)
        try:
            try:
                suppress = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if not own:
                    raise
                # Our cancel came as the block ended: it lands here, once.
                suppress = await fut
        finally:
            cm, self._span_cm = self._span_cm, None
            if cm is not None:
                cm.__exit__(exc_type, exc, tb)
        if exc_type is KeyboardInterrupt:
            return False
        return bool(suppress)
