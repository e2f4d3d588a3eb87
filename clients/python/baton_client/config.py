"""Configuration documents: read, and follow as they change."""

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional

from . import _transport, errors

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

_SERVICE = "baton.v1.ConfigService/"
log = logging.getLogger("baton_client")


@dataclass(frozen=True)
class ConfigDoc:
    """One version of a configuration document."""

    name: str
    revision: int
    document: Dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.document[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.document.get(key, default)


def get(client: "Client", name: str) -> ConfigDoc:
    resp = client._call_service(_SERVICE + "Get", {"name": name}, 60.0)
    return ConfigDoc(name=name, revision=int(resp.get("revision", 0)), document=resp.get("document") or {})


class ConfigWatch:
    """Follows a document; iterate it, or give Client.watch_config a
    callback. Revisions only rise. When the sidecar goes away (restart,
    redeploy) the watch reconnects with the last revision it saw, so it
    resumes with the current version and never goes backwards.

    ``stop()`` ends the iteration (safe from another thread or a signal
    handler); ``latest`` is the last version delivered.
    """

    def __init__(self, client: "Client", name: str, after_revision: int = 0) -> None:
        self._client = client
        self.name = name
        self.latest: Optional[ConfigDoc] = None
        self._after = after_revision
        self._stopping = False
        self._stream: Optional[_transport.Stream] = None
        # Reentrant: stop() may run in a signal handler of a thread that
        # holds it.
        self._mu = threading.RLock()
        self._thread: Optional[threading.Thread] = None

    def __iter__(self) -> Iterator[ConfigDoc]:
        delay = 0.1
        while not self._stopping:
            try:
                stream = _transport.open_stream_lazy(
                    self._client.socket, _SERVICE + "Watch", {"name": self.name, "afterRevision": str(self._after)}, self._client.connect_timeout
                )
            except errors.Unavailable as e:
                if self._stopping:
                    return
                log.warning("config watch of %s: sidecar unavailable, retrying in %.1fs: %s", self.name, delay, e)
                time.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 5.0)
                continue
            with self._mu:
                self._stream = stream
                if self._stopping:
                    stream.close()
                    return
            try:
                while True:
                    try:
                        msg = stream.receive()
                    except errors.Unavailable:
                        break
                    if msg is None:
                        break
                    delay = 0.1
                    rev = int(msg.get("revision", 0))
                    if rev <= self._after:
                        continue  # never backwards, even across sidecars
                    self._after = rev
                    self.latest = ConfigDoc(name=self.name, revision=rev, document=msg.get("document") or {})
                    yield self.latest
            finally:
                with self._mu:
                    self._stream = None
                    stream.close()

    def stop(self) -> None:
        """End the watch: the iteration (or callback thread) returns."""
        self._stopping = True
        with self._mu:
            s = self._stream
        if s is not None:
            s.interrupt()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def _run(self, callback: Callable[[ConfigDoc], Any]) -> None:
        for doc in self:
            try:
                callback(doc)
            except Exception:  # a bad callback must not end the watch
                log.exception("config watch of %s: callback failed on revision %d", self.name, doc.revision)

    def start(self, callback: Callable[[ConfigDoc], Any]) -> "ConfigWatch":
        """Call callback with each version in a thread of its own (a daemon
        thread; stop() ends it)."""
        t = threading.Thread(target=self._run, args=(callback,), name="baton-config-" + self.name, daemon=True)
        self._thread = t
        t.start()
        return self
