"""The client of one local Baton sidecar."""

import asyncio
import datetime
import logging
import os
import socket
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, Union

from . import _session, _signals, _trace, _transport, _version, errors
from . import config as _config
from .config import ConfigDoc, ConfigWatch
from .lock import Lock
from .task import Task, duration

_SERVICE = "baton.v1.TaskService/"
log = logging.getLogger("baton_client")

# Clients whose session must be dropped in a forked child.
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
    process: a name for this process, shown as ``process`` by
    ``baton workers list`` and ``baton locks list``; default
    ``<hostname>-<pid>``. (``worker=`` is its former name, still accepted
    with a DeprecationWarning.)
    heartbeat: whether ``with task:`` heartbeats automatically (default
    True; every task.heartbeat_interval seconds, a third of the task's
    timeout).

    Creating a Client opens nothing and starts no thread. Every unary call
    uses its own connection. The process's session (an Attach stream) is
    opened lazily by next()/tasks() or session, with one thread that reads
    what the sidecar pushes on it (cancel requests); close() ends both.
    While it is open the sidecar knows the process is alive, and when the
    process dies (even by SIGKILL) the kernel closes it and the sidecar
    returns the session's claims to the queue at once. After fork() the
    child drops the inherited socket (without shutting it down, so the
    parent's session is unaffected) and opens its own session when it needs
    one.

    Thread-safe: one Client may be shared by threads (each running its own
    tasks() loop, or calling next()) and by coroutines (``async for``); they
    share one session. A Client collected without close() closes
    its session.
    """

    def __init__(self, socket: Optional[str] = None, connect_timeout: float = 10.0, process: Optional[str] = None,
                 heartbeat: bool = True, *, worker: Optional[str] = None) -> None:
        path = socket or os.environ.get("BATON_SOCKET", "")
        if not path:
            raise ValueError("socket: no socket path given and BATON_SOCKET is not set")
        self.socket = path
        self.connect_timeout = connect_timeout
        if worker is not None:
            warnings.warn("Client(worker=...) is now Client(process=...): it names this process, not the worker",
                          DeprecationWarning, stacklevel=2)
            if process is None:
                process = worker
        self.process = process or "%s-%d" % (_hostname(), os.getpid())
        self.heartbeat = heartbeat
        self._mu = threading.Lock()
        # The open session, in a box the finalizer shares: a Client
        # collected without close() ends its session and its thread.
        self._box: List[Optional[_session.Session]] = [None]
        weakref.finalize(self, _close_box, self._box)
        # Written by stop() (any thread, or a signal handler: a plain
        # bool, no lock) and by the first loop to start.
        self._stopping = False
        self._loops = 0
        _clients.add(self)

    @property
    def worker(self) -> str:
        """Deprecated: the process's name, now ``process``."""
        warnings.warn("Client.worker is now Client.process: it names this process, not the worker",
                      DeprecationWarning, stacklevel=2)
        return self.process

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
        """In a forked child: drop the parent's session (and a lock another
        thread of the parent may have held)."""
        self._mu = threading.Lock()
        s, self._box[0] = self._box[0], None
        if s is not None:
            s.detach()

    def _open_session(self) -> _session.Session:
        with self._mu:
            s = self._box[0]
            if s is not None and s.alive:
                return s
            if s is not None:
                if s.pid == os.getpid():
                    s.close()
                else:
                    s.detach()
            self._box[0] = None
            s = _session.open_session(self.socket, self.process, self.connect_timeout, _SERVICE, _version.VERSION)
            self._box[0] = s
            return s

    def _drop_session(self, s: _session.Session) -> None:
        """Forget s if it is still the current session (another thread may
        have replaced it already)."""
        with self._mu:
            if self._box[0] is not s:
                return
            self._box[0] = None
        s.close()

    @property
    def session(self) -> str:
        """The session id, opening the Attach stream if needed."""
        return self._open_session().id

    def close(self) -> None:
        """Close the session: the sidecar returns every task still
        claimed under it to the queue; tasks still held see their claim
        lost (task.lost), and their heartbeat threads stop. The session
        thread is joined."""
        with self._mu:
            s, self._box[0] = self._box[0], None
        if s is not None:
            s.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- worker loop ----------------------------------------------------

    def next(self, queues: Union[str, Sequence[str], None] = None, wait: float = 5.0,
             fail_on: Tuple[Type[BaseException], ...] = ()) -> Optional[Task]:
        """Claim one task under this client's session, waiting up to wait
        seconds (at most MAX_WAIT, 600: a longer wait is shortened to it;
        the sidecar refuses more). None when no task came. queues: names in
        order of preference (at most 16); None means the sidecar's
        --queue. A queue the sidecar does not serve (--queue) raises
        PermissionDenied. fail_on: exception types that fail the task
        permanently when they leave ``with task:``."""
        qs = [queues] if isinstance(queues, str) else list(queues or [])
        wait = min(max(wait, 0.0), MAX_WAIT)
        sess = self._open_session()
        req: Dict[str, Any] = {"queues": qs, "wait": duration(wait), "session": sess.id}
        try:
            resp = self._call("Next", req, timeout=wait + 60.0)
        except errors.FailedPrecondition as e:
            self._drop_session(sess)
            raise errors.SessionLost(e.message, e.code) from None
        doc = resp.get("task")
        return Task(self, doc, sess, fail_on) if doc else None

    def tasks(self, queues: Union[str, Sequence[str], None] = None, wait: float = 5.0,
              fail_on: Tuple[Type[BaseException], ...] = (), handle_signals: bool = True) -> "TaskLoop":
        """Claimed tasks, one at a time, until stop() is called:
        ``for task in client.tasks("tts"):`` or, in a coroutine, ``async for
        task in client.tasks("tts"):``. Each task must be finished (``with
        task:``, or complete/fail/release) before the next is asked for.

        wait bounds each long poll, so stop() takes effect within wait
        seconds while idle. A lost session (sidecar restarted) is reopened;
        while the sidecar or etcd is unavailable the loop retries with a
        backoff of up to 5 seconds (logged on the baton_client logger).

        fail_on: exception types that fail a task permanently (DEAD at
        once, with the message) when they leave ``with task:``, e.g.
        ``(ValueError, KeyError)`` for bad payloads; PermanentError always
        does.

        handle_signals: in the main thread, while the loop runs, SIGTERM
        and a first SIGINT (Ctrl-C) call stop(): the task in hand finishes,
        then the loop ends (no traceback). A second SIGINT raises
        KeyboardInterrupt: ``with task:`` releases the task at once. Only
        signals whose handlers are Python's defaults are taken over, and
        they are restored when the loop ends."""
        return TaskLoop(self, queues, wait, tuple(fail_on), handle_signals)

    def stop(self) -> None:
        """Make every tasks() loop of this client return before its next
        claim. Safe to call from any thread and from a signal handler."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _loop_started(self) -> None:
        with self._mu:
            if self._loops == 0:
                self._stopping = False  # a stopped client may loop again
            self._loops += 1

    def _loop_ended(self) -> None:
        with self._mu:
            self._loops -= 1

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
        """A named, fair lock held by this process's session, for ``with``:

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


def _close_box(box: List[Optional[_session.Session]]) -> None:
    s, box[0] = box[0], None
    if s is not None:
        s.close()


class TaskLoop:
    """What Client.tasks() returns: iterate it (``for``) in a thread, or
    (``async for``) in a coroutine. Several loops may run at once on one
    Client, in threads or coroutines."""

    def __init__(self, client: "Client", queues: Union[str, Sequence[str], None], wait: float,
                 fail_on: Tuple[Type[BaseException], ...], handle_signals: bool) -> None:
        self._client = client
        self._queues = queues
        self._wait = wait
        self._fail_on = fail_on
        self._handle_signals = handle_signals
        self._aio_started = False
        self._aio_signals: Optional[_signals.StopOnSignals] = None

    # --- threads ----------------------------------------------------------

    def __iter__(self) -> Iterator[Task]:
        c = self._client
        sigs = _signals.StopOnSignals(c) if self._handle_signals else None
        c._loop_started()
        if sigs is not None:
            sigs.install()
        try:
            delay = 0.1
            while not c._stopping:
                try:
                    t = c.next(self._queues, self._wait, self._fail_on)
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
        finally:
            if sigs is not None:
                sigs.restore()
            c._loop_ended()

    # --- asyncio ------------------------------------------------------------

    def __aiter__(self) -> "TaskLoop":
        return self

    async def __anext__(self) -> Task:
        c = self._client
        loop = asyncio.get_running_loop()
        if not self._aio_started:
            self._aio_started = True
            c._loop_started()
            if self._handle_signals:
                self._aio_signals = _signals.StopOnSignals(c)
                self._aio_signals.install_asyncio(loop)
        delay = 0.1
        try:
            while not c._stopping:
                fut = loop.run_in_executor(None, c.next, self._queues, self._wait, self._fail_on)
                try:
                    t = await asyncio.shield(fut)
                except asyncio.CancelledError:
                    # The claim Next may still make is given back.
                    fut.add_done_callback(_release_unwanted)
                    raise
                except errors.SessionLost:
                    continue
                except errors.Unavailable as e:
                    log.warning("sidecar unavailable, retrying in %.1fs: %s", delay, e)
                    await asyncio.sleep(delay)  # retry backoff
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                if t is not None:
                    return t
        except BaseException:
            self._aio_end(loop)
            raise
        self._aio_end(loop)
        raise StopAsyncIteration

    def _aio_end(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._aio_started:
            self._aio_started = False
            if self._aio_signals is not None:
                self._aio_signals.restore_asyncio(loop)
                self._aio_signals = None
            self._client._loop_ended()


def _release_unwanted(fut: "asyncio.Future[Optional[Task]]") -> None:
    """A Next that finished after its coroutine was cancelled: give its
    task back (one short unary call, in the event loop's thread)."""
    if fut.cancelled() or fut.exception() is not None:
        return
    t = fut.result()
    if t is None:
        return
    try:
        t.release()
    except errors.BatonError as e:
        log.warning("task %s: release after a cancelled Next failed: %s", t.id, e)


def _hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "worker"
