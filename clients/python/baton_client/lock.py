"""Named locks held by this process's session."""

import threading
from typing import TYPE_CHECKING, Any, Dict, Optional

from . import errors
from .task import duration

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

_SERVICE = "baton.v1.LockService/"


class Lock:
    """A named, fair mutex held by the session (see Client.lock).

    ``with client.lock("batch", wait=30) as token:`` takes the lock (waiting
    up to ``wait`` seconds; None waits up to the sidecar's limit of 10
    minutes), gives the fencing token (an int that rises with every holder:
    pass it to whatever the lock protects so that a stale holder's writes can
    be refused) and releases it at the end of the block. The lock is also
    released when the process exits, even by SIGKILL.

    Raises DeadlineExceeded when the lock was not obtained within ``wait``;
    Unavailable when the lock lease was lost while waiting or the sidecar
    could not vouch for the grant (nothing is held: take it again); on
    leaving the block, LockLost when the lock had been lost with its
    lease (only when the block itself raised nothing). Locks are not
    reentrant: one holder per name per process.
    """

    def __init__(self, client: "Client", name: str, wait: Optional[float] = None) -> None:
        self._client = client
        self.name = name
        self.wait = wait
        #: The fencing token while held, else None.
        self.token: Optional[int] = None
        self._session = ""
        self._mu = threading.Lock()

    def acquire(self) -> int:
        """Take the lock and return its fencing token."""
        with self._mu:
            if self.token is not None:
                raise errors.FailedPrecondition("lock %r is already held by this Lock object" % self.name)
            session = self._client.session
            req: Dict[str, Any] = {"name": self.name, "session": session}
            timeout = 660.0
            if self.wait is not None:
                req["wait"] = duration(max(0.0, self.wait))
                timeout = self.wait + 60.0
            resp = self._client._call_service(_SERVICE + "Lock", req, timeout)
            self.token = int(resp.get("fencingToken", 0))
            self._session = session
            return self.token

    def try_acquire(self) -> Optional[int]:
        """Take the lock only if nobody holds or awaits it; the fencing
        token, or None."""
        with self._mu:
            if self.token is not None:
                raise errors.FailedPrecondition("lock %r is already held by this Lock object" % self.name)
            session = self._client.session
            try:
                resp = self._client._call_service(_SERVICE + "TryLock", {"name": self.name, "session": session}, 60.0)
            except errors.Aborted:
                return None
            self.token = int(resp.get("fencingToken", 0))
            self._session = session
            return self.token

    def release(self) -> None:
        """Release the lock. Raises LockLost when it was no longer held.
        When the sidecar cannot answer (Unavailable), the lock is still
        held: the error propagates and release() may be called again."""
        with self._mu:
            if self.token is None:
                return
            try:
                self._client._call_service(_SERVICE + "Unlock", {"name": self.name, "session": self._session}, 60.0)
            except errors.FailedPrecondition as e:
                self.token, self._session = None, ""
                raise errors.LockLost(e.message, e.code) from None
            self.token, self._session = None, ""

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.release()
        except errors.BatonError:
            if exc_type is None:
                raise  # LockLost, or Unavailable (the lock is still held)
