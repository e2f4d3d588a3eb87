"""Stopping a worker loop on SIGTERM and Ctrl-C.

While a tasks() loop runs in the main thread, SIGTERM and a first SIGINT
call Client.stop(): the task in hand finishes and the loop ends. A second
SIGINT raises KeyboardInterrupt, so ``with task:`` releases the task at
once. Only handlers that are still Python's defaults are replaced, and they
are put back when the loop ends: an application that installed its own
keeps them.
"""

import asyncio
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

log = logging.getLogger("baton_client")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _is_default(sig: int, handler: Any) -> bool:
    return handler is signal.SIG_DFL or (sig == signal.SIGINT and handler is signal.default_int_handler)


class StopOnSignals:
    def __init__(self, client: "Client") -> None:
        self._client = client
        self._prev: Dict[int, Any] = {}
        self._asyncio: List[int] = []
        self.interrupts = 0

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                raise KeyboardInterrupt
        self._client.stop()
        log.info("%s: finishing the task in hand, then stopping (Ctrl-C again to give it back at once)",
                 signal.Signals(signum).name)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            prev = signal.getsignal(sig)
            if _is_default(sig, prev):
                self._prev[sig] = prev
                signal.signal(sig, lambda signum, frame: self._on_signal(signum))

    def restore(self) -> None:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)
        self._prev.clear()

    def install_asyncio(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            if _is_default(sig, signal.getsignal(sig)):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                except (NotImplementedError, RuntimeError):
                    continue
                self._asyncio.append(sig)

    def restore_asyncio(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self._asyncio:
            try:
                loop.remove_signal_handler(sig)
            except RuntimeError:  # the loop is closed
                pass
        self._asyncio.clear()
