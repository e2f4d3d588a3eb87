"""The client of one local Baton sidecar."""

import datetime
import logging
import os
import socket
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from . import _trace, _transport, errors
from . import config as _config
from .config import ConfigDoc, ConfigWatch
from .lock import Lock
from .task import Task, duration

_SERVICE = "baton.v1.TaskService/"
log = logging.getLogger("baton_client")

# Clients whose worker session must be dropped in a forked child.
_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for c in list(_clients):
        c._forget_session()


if hasattr(os, "register_at_fork"):  # registering a hook opens nothing
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: The longest wait a Next may ask the sidecar for, in seconds.
MAX_WAIT = 600.0


@dataclass
class TaskSpec:
    """A task to submit. Durations are seconds; not_before is a datetime.

    Routing: ``affinity`` is a key such as a speaker prompt whose
    conditioning the GPU caches; tasks with the same key prefer the worker
    that last handled one (at most 256 bytes; "" for none). ``require``
    lists the labels a sidecar must have been started with (``baton sidecar
    --label model=indextts2``) to receive the task (at most 16 pairs; None
    or empty for any sidecar). The sidecar checks both and answers
    InvalidArgument naming ``tasks[i].affinity`` or ``tasks[i].require``.
    """

    payload: Mapping[str, Any]
    id: str = ""
    queue: str = ""
    priority: int = 0
    max_attempts: int = 0
    timeout: Optional[float] = None
    batch: str = ""
    not_before: Optional[datetime.datetime] = None
    traceparent: str = ""
    affinity: str = ""
    require: Optional[Mapping[str, str]] = None

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"payload": dict(self.payload)}
        if not isinstance(self.affinity, str):
            raise TypeError("affinity: %r is not a str" % (self.affinity,))
        for k, v in (("id", self.id), ("queue", self.queue), ("batch", self.batch), ("traceparent", self.traceparent),
                     ("affinity", self.affinity)):
            if v:
                d[k] = v
        if self.require:
            d["require"] = _labels(self.require)
        if self.priority:
            d["priority"] = self.priority
        if self.max_attempts:
            d["maxAttempts"] = self.max_attempts
        if self.timeout is not None:
            d["timeout"] = duration(self.timeout)
        if self.not_before is not None:
            nb = self.not_before
            if nb.tzinfo is None:
                nb = nb.replace(tzinfo=datetime.timezone.utc)
            d["notBefore"] = nb.isoformat()
        return d


def _labels(m: Mapping[str, str]) -> Dict[str, str]:
    """m as a JSON map<string, string>; a non-str key or value is a
    TypeError naming it (JSON would carry it, and the sidecar's answer would
    not name the field)."""
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("require: %r: %r: labels are str keys and str values" % (k, v))
    return dict(m)


@dataclass
class SubmitResult:
    ids: List[str] = field(default_factory=list)
    created: int = 0
    existing: int = 0


class Client:
    """Talks to the sidecar on a Unix socket (stdlib only).

    socket: the socket path; default the BATON_SOCKET environment variable.
    connect_timeout: seconds to keep retrying while the socket does not
    exist or refuses connections (the sidecar is starting); default 10.
    worker: a name for this worker process, shown by the sidecar.

    Creating a Client opens nothing. Every unary call uses its own
    connection. The worker session (an Attach stream) is opened lazily by
    tasks() or session and kept open, without any thread, as one socket held
    by this process: while it is open the sidecar knows the worker is alive,
    and when the process dies (even by SIGKILL) the kernel closes it and the
    sidecar returns the session's claims to the queue at once. After fork()
    the child drops the inherited socket (without shutting it down, so the
    parent's session is unaffected) and opens its own session when it needs
    one. A Client may be used from several threads for unary calls;
    tasks() is meant for one worker loop.
    """

    def __init__(self, socket: Optional[str] = None, connect_timeout: float = 10.0, worker: Optional[str] = None) -> None:
        path = socket or os.environ.get("BATON_SOCKET", "")
        if not path:
            raise ValueError("socket: no socket path given and BATON_SOCKET is not set")
        self.socket = path
        self.connect_timeout = connect_timeout
        self.worker = worker or "%s-%d" % (_hostname(), os.getpid())
        self._stream: Optional[_transport.Stream] = None
        self._session = ""
        self._session_pid = 0
        self._stopping = False
        _clients.add(self)

    # --- plumbing -------------------------------------------------------

    def _call(self, method: str, req: Dict[str, Any], timeout: Optional[float] = 60.0) -> Dict[str, Any]:
        """A TaskService method."""
        return self._call_service(_SERVICE + method, req, timeout)

    def _call_service(self, method: str, req: Dict[str, Any], timeout: Optional[float]) -> Dict[str, Any]:
        """Any method, "package.Service/Method". Inside an OpenTelemetry span
        (a task's, with opentelemetry installed) the call carries its
        traceparent: the sidecar's span of Complete, Heartbeat or a lock wait
        becomes a child of the worker's span."""
        return _transport.unary(self.socket, method, req, timeout, self.connect_timeout, _trace.current_traceparent())

    def _forget_session(self) -> None:
        if self._stream is not None:
            self._stream.detach()
        self._stream = None
        self._session = ""
        self._session_pid = 0

    @property
    def session(self) -> str:
        """The worker session id, opening the Attach stream if needed."""
        if self._session and self._session_pid == os.getpid():
            return self._session
        self._forget_session()
        stream, first = _transport.open_stream(self.socket, _SERVICE + "Attach", {"worker": self.worker}, self.connect_timeout)
        sid = str(first.get("session", ""))
        if not sid:
            stream.close()
            raise errors.Internal("Attach: first message carries no session")
        self._stream, self._session, self._session_pid = stream, sid, os.getpid()
        return sid

    def close(self) -> None:
        """Close the worker session: the sidecar returns every task still
        claimed under it to the queue."""
        if self._stream is not None and self._session_pid == os.getpid():
            self._stream.close()
        self._stream = None
        self._session = ""
        self._session_pid = 0

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- worker loop ----------------------------------------------------

    def next(self, queues: Union[str, Sequence[str], None] = None, wait: float = 5.0) -> Optional[Task]:
        """Claim one task under this client's session, waiting up to wait
        seconds (at most MAX_WAIT, 600: a longer wait is shortened to it;
        the sidecar refuses more). None when no task came. queues: names in
        order of preference (at most 16); None means the sidecar's
        --queue. A queue the sidecar does not serve (--queue) raises
        PermissionDenied."""
        qs = [queues] if isinstance(queues, str) else list(queues or [])
        wait = min(max(wait, 0.0), MAX_WAIT)
        req: Dict[str, Any] = {"queues": qs, "wait": duration(wait), "session": self.session}
        try:
            resp = self._call("Next", req, timeout=wait + 60.0)
        except errors.FailedPrecondition as e:
            self._forget_session()
            raise errors.SessionLost(e.message, e.code) from None
        doc = resp.get("task")
        return Task(self, doc) if doc else None

    def tasks(self, queues: Union[str, Sequence[str], None] = None, wait: float = 5.0) -> Iterator[Task]:
        """Yield claimed tasks forever, until stop() is called. Each task must
        be finished (complete/fail/release or ``with task:``) before the next
        is asked for. wait bounds each long poll, so stop() takes effect
        within wait seconds while idle. A lost session (sidecar restarted) is
        reopened; while the sidecar or etcd is unavailable the loop retries
        with a backoff of up to 5 seconds (logged on the baton_client logger)."""
        self._stopping = False
        delay = 0.1
        while not self._stopping:
            try:
                t = self.next(queues, wait)
            except errors.SessionLost:
                continue
            except errors.Unavailable as e:
                log.warning("sidecar unavailable, retrying in %.1fs: %s", delay, e)
                time.sleep(delay)  # retry backoff
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            if t is None:
                continue
            yield t

    def stop(self) -> None:
        """Make tasks() return before its next claim. Safe to call from a
        signal handler."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- submit ---------------------------------------------------------

    def submit(
        self,
        tasks: Iterable[Union[TaskSpec, Mapping[str, Any]]],
        queue: str = "",
        batch: str = "",
        require: Optional[Mapping[str, str]] = None,
    ) -> SubmitResult:
        """Enqueue tasks: TaskSpec objects, or payload dicts (the id comes
        from the payload's "id", else "uttid", else a hash). queue, batch
        and require (labels a sidecar needs to receive the task, like
        ``baton submit --require``) apply to the tasks that do not set
        their own; a task's affinity key is set with TaskSpec(affinity=...).
        Idempotent by id: a task that exists keeps its fields. The current
        OpenTelemetry span's context is stored with each task. A queue the
        sidecar may not submit to (--submit-queue, by default its --queue)
        raises PermissionDenied and nothing is written; without a queue a
        task goes to the sidecar's first --queue."""
        tp = _trace.current_traceparent()
        req = _labels(require) if require else None
        specs = []
        for t in tasks:
            spec = t if isinstance(t, TaskSpec) else TaskSpec(payload=t)
            d = spec.to_json()
            if queue and "queue" not in d:
                d["queue"] = queue
            if batch and "batch" not in d:
                d["batch"] = batch
            if req and "require" not in d:
                d["require"] = req
            if tp and "traceparent" not in d:
                d["traceparent"] = tp
            specs.append(d)
        resp = self._call("Submit", {"tasks": specs})
        return SubmitResult(ids=list(resp.get("ids", [])), created=int(resp.get("created", 0)), existing=int(resp.get("existing", 0)))

    # --- locks -----------------------------------------------------------

    def lock(self, name: str, wait: Optional[float] = None) -> Lock:
        """A named, fair lock held by this worker's session, for ``with``:

            with client.lock("batch", wait=30) as token:
                ...  # only one worker of the fleet is here; token rises

        wait: seconds to wait (None: up to the sidecar's limit of 10
        minutes; 0: do not wait). DeadlineExceeded when not obtained. The
        lock is released at the end of the block, and when this process
        exits (even by SIGKILL). Not reentrant."""
        return Lock(self, name, wait)

    # --- configuration --------------------------------------------------

    def config(self, name: str) -> ConfigDoc:
        """The current version of a configuration document. NotFound when it
        was never set."""
        return _config.get(self, name)

    def watch_config(
        self, name: str, callback: Optional[Callable[[ConfigDoc], Any]] = None, after_revision: int = 0
    ) -> ConfigWatch:
        """Follow a configuration document. Without a callback, iterate the
        result: ``for doc in client.watch_config("global"): ...`` yields the
        current version, then each change (revisions only rise; reconnects
        after a sidecar restart). With a callback, it is called with each
        version in a daemon thread; call ``.stop()`` on the result to end it.
        A document not set yet is delivered when it is first set."""
        w = ConfigWatch(self, name, after_revision)
        if callback is not None:
            w.start(callback)
        return w


def _hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "worker"
