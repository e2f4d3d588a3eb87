"""The session: one Attach stream and the thread that reads it.

The sidecar pushes on the stream what a worker must know about the tasks it
holds (an operator's cancel request, a lock lost with its lease). One
reader thread per open session delivers those pushes to the tasks at once,
so worker code learns of a cancel without polling.

Ownership: the Client owns its Session; the Session owns the reader
thread, which holds the Session but never the Client (the Client holds a
weakref.finalize that closes the Session when it is collected without
close()). close() stops the thread and joins it.
"""

import collections
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Set

from . import _transport, errors

if TYPE_CHECKING:  # pragma: no cover
    from .task import Task

log = logging.getLogger("baton_client")

# Cancel pushes kept for claims not registered yet (the push overtook the
# Next answer); a bound, not a cache.
_EARLY = 256


class Session:
    """An open session. Thread-safe."""

    def __init__(self, stream: _transport.Stream, sid: str, process: str) -> None:
        self.id = sid
        self.pid = os.getpid()
        self.process = process
        self._stream = stream
        self._mu = threading.Lock()
        # Written by register/unregister (worker threads) and the reader.
        self._tasks: "weakref.WeakValueDictionary[str, Task]" = weakref.WeakValueDictionary()
        self._early: Deque[str] = collections.deque(maxlen=_EARLY)
        self._early_set: Set[str] = set()
        #: Set when the stream ended: the sidecar returned the session's claims.
        self.ended = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._read, name="baton-session-" + sid[:12], daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return not self.ended.is_set() and self.pid == os.getpid()

    def register(self, task: "Task") -> None:
        """Deliver pushes about task.claim to task until unregister()."""
        with self._mu:
            self._tasks[task.claim] = task
            early = task.claim in self._early_set
        if early:
            task._cancel_requested("pushed by the sidecar")
        if self.ended.is_set():
            task._claim_lost("the session ended")

    def unregister(self, task: "Task") -> None:
        with self._mu:
            if self._tasks.get(task.claim) is task:
                del self._tasks[task.claim]

    def _read(self) -> None:
        try:
            while True:
                msg = self._stream.receive()
                if msg is None:
                    break
                self._deliver(msg)
        except errors.BatonError as e:
            if not self._closing:
                log.warning("session %s: stream from the sidecar ended: %s", self.id, e)
        except Exception as e:  # a closed socket read from another thread
            if not self._closing:
                log.warning("session %s: stream from the sidecar broke: %r", self.id, e)
        finally:
            self.ended.set()
            if not self._closing:
                # The sidecar closed the session (it restarted or went
                # away): it has returned every claim made under it.
                with self._mu:
                    held = list(self._tasks.values())
                for t in held:
                    t._claim_lost("the session ended (the sidecar closed it)")

    def _deliver(self, msg: Dict[str, Any]) -> None:
        c = msg.get("cancel")
        if isinstance(c, dict):
            claim = str(c.get("claim", ""))
            with self._mu:
                t = self._tasks.get(claim)
                if t is None and claim not in self._early_set:
                    if len(self._early) == self._early.maxlen:
                        self._early_set.discard(self._early[0])
                    self._early.append(claim)
                    self._early_set.add(claim)
            if t is not None:
                t._cancel_requested("pushed by the sidecar")
        ll = msg.get("lockLost")
        if isinstance(ll, dict):
            log.warning("session %s: lock %s (fencing token %s) was lost with the sidecar's lease",
                        self.id, ll.get("name", ""), ll.get("fencingToken", ""))

    def close(self) -> None:
        """End the session (the sidecar returns its claims) and join the
        reader thread. Tasks still held see their claim lost. Idempotent."""
        if self.pid != os.getpid():
            self.detach()
            return
        with self._mu:
            if self._closing:
                held = []
            else:
                self._closing = True
                held = list(self._tasks.values())
        self._stream.interrupt()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._stream.close()
        for t in held:
            t._claim_lost("the client was closed")

    def detach(self) -> None:
        """In a forked child: drop the inherited socket without shutting
        the connection down (the parent keeps its session)."""
        self._closing = True
        self._stream.detach()


#: The socket API version this client speaks (the sidecar's
#: server.APIVersion), and the response header that carries the sidecar's.
API_VERSION = 1
API_VERSION_HEADER = "Baton-Api-Version"


def check_api_version(header: Optional[str], socket: str, client_version: str) -> None:
    """Raise IncompatibleSidecar unless the sidecar's API version (the
    Attach response's header, None when absent) is this client's."""
    if header is not None and header.strip() == str(API_VERSION):
        return
    try:
        theirs = int(header) if header is not None else 0
    except ValueError:
        theirs = -1
    if theirs == -1:
        raise errors.IncompatibleSidecar("the sidecar at %s sent %s %r, not a version number" % (socket, API_VERSION_HEADER, header))
    if theirs < API_VERSION:
        raise errors.IncompatibleSidecar(
            "baton_client %s speaks socket API %d; the sidecar at %s is too old (API %d%s): upgrade baton"
            % (client_version, API_VERSION, socket, theirs, ", it sends no %s" % API_VERSION_HEADER if header is None else ""))
    raise errors.IncompatibleSidecar(
        "baton_client %s speaks socket API %d; the sidecar at %s speaks API %d: upgrade baton_client (clients/python)"
        % (client_version, API_VERSION, socket, theirs))


def open_session(socket: str, process: str, connect_timeout: float, service: str, client_version: str) -> Session:
    stream, first = _transport.open_stream(socket, service + "Attach", {"process": process}, connect_timeout)
    try:
        check_api_version(stream.header(API_VERSION_HEADER), socket, client_version)
    except errors.IncompatibleSidecar:
        stream.close()
        raise
    sid = str(first.get("session", ""))
    if not sid:
        stream.close()
        raise errors.Internal("Attach: first message carries no session")
    return Session(stream, sid, process)


def close_quietly(session: Optional[Session]) -> None:
    if session is not None:
        session.close()
