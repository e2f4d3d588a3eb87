"""Connect protocol over HTTP/1.1 on a Unix socket, with http.client.

Unary calls use Connect JSON (POST /pkg.Service/Method, Content-Type
application/json); each call opens its own connection, so nothing is shared
between calls, threads or forked processes. Server streams use
application/connect+json: every message is a 5-byte envelope (flags, big-endian
length) followed by JSON; flag 0x02 marks the end-of-stream message.
"""

import errno
import http.client
import json
import os
import socket
import struct
import time
from typing import Any, Dict, Optional, Tuple

from . import errors

# Retried while the sidecar starts: no socket file yet, or nobody accepting.
_STARTING = (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("baton", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def connect(path: str, timeout: Optional[float], connect_timeout: float) -> _UnixConnection:
    """Open a connection to the sidecar, retrying for up to connect_timeout
    seconds while the socket does not exist or refuses connections."""
    deadline = time.monotonic() + connect_timeout
    delay = 0.02
    while True:
        conn = _UnixConnection(path, timeout)
        try:
            conn.connect()
            return conn
        except OSError as e:
            conn.close()
            if e.errno not in _STARTING:
                raise errors.SidecarNotFound("cannot connect to the sidecar at %s: %s" % (path, e)) from e
            if time.monotonic() + delay > deadline:
                raise errors.SidecarNotFound(
                    "no sidecar at %s (waited %.1fs; is `baton sidecar` running and BATON_SOCKET right?): %s"
                    % (path, connect_timeout, e.strerror)
                ) from e
            time.sleep(delay)  # backoff while the sidecar starts; not a condition wait
            delay = min(delay * 2, 0.5)


def _headers(content_type: str, timeout: Optional[float]) -> Dict[str, str]:
    h = {"Content-Type": content_type, "Connect-Protocol-Version": "1"}
    if timeout is not None:
        h["Connect-Timeout-Ms"] = str(max(1, int(timeout * 1000)))
    return h


def _json_object(data: bytes, what: str) -> Dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8") or "{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.Internal("%s: the sidecar answered with invalid JSON: %s" % (what, e)) from e
    if not isinstance(doc, dict):
        raise errors.Internal("%s: the sidecar answered with JSON that is not an object" % what)
    return doc


def _error_from_body(status: int, body: bytes) -> errors.BatonError:
    try:
        doc = json.loads(body.decode("utf-8") or "{}")
        code = doc.get("code") or errors._BY_HTTP.get(status, "unknown")
        message = doc.get("message") or ""
    except (ValueError, UnicodeDecodeError, AttributeError):
        code = errors._BY_HTTP.get(status, "unknown")
        message = body[:200].decode("utf-8", "replace")
    return errors.error_for(code, message or "HTTP %d" % status)


def unary(path: str, method: str, request: Dict[str, Any], timeout: Optional[float], connect_timeout: float,
          traceparent: str = "") -> Dict[str, Any]:
    """Call a unary method with a JSON request; return the JSON response or
    raise the BatonError for the Connect error code. A traceparent is sent
    as the W3C header, so the sidecar's span of the call joins the trace."""
    body = json.dumps(request).encode("utf-8")
    headers = _headers("application/json", None)
    if traceparent:
        headers["traceparent"] = traceparent
    conn = connect(path, timeout, connect_timeout)
    try:
        conn.request("POST", "/" + method, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise errors.Unavailable("%s: connection to the sidecar at %s failed: %s" % (method, path, e)) from e
    finally:
        conn.close()
    if resp.status != 200:
        raise _error_from_body(resp.status, data)
    return _json_object(data, method)


class Stream:
    """An open server stream. It owns one connection; close() ends the call."""

    def __init__(self, conn: _UnixConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp

    def header(self, name: str) -> Optional[str]:
        """A response header of the call, None when absent."""
        return self._resp.getheader(name)

    def fileno(self) -> int:
        sock = self._conn.sock
        return sock.fileno() if sock is not None else -1

    def receive(self) -> Optional[Dict[str, Any]]:
        """Read the next message; None at a clean end of stream."""
        try:
            head = self._resp.read(5)
            if len(head) < 5:
                return None
            flags, n = struct.unpack(">BI", head)
            data = self._resp.read(n) if n else b""
        except (OSError, http.client.HTTPException) as e:
            raise errors.Unavailable("stream from the sidecar broke: %s" % e) from e
        if len(data) < n:
            return None
        doc = _json_object(data, "stream message")
        if flags & 0x02:
            err = doc.get("error")
            if err:
                raise errors.error_for(err.get("code", "unknown"), err.get("message", ""))
            return None
        return doc

    def interrupt(self) -> None:
        """Make a receive() blocked in another thread return (shutdown(2)
        only; the reading thread closes the stream)."""
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """End the call for every process sharing the socket."""
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conn.close()

    def detach(self) -> None:
        """Close this process's file descriptor without shutting the
        connection down (used in a forked child: the parent keeps it)."""
        sock = self._conn.sock
        self._conn.sock = None
        if sock is not None:
            # close(2) only; no shutdown(2), so the parent's stream stays
            # up. socket.close() would leave the descriptor open while the
            # response's file object refers to it.
            fd = sock.detach()
            if fd >= 0:
                os.close(fd)


def open_stream(path: str, method: str, request: Dict[str, Any], connect_timeout: float) -> Tuple[Stream, Dict[str, Any]]:
    """Open a server stream and read its first message."""
    stream, first = _open(path, method, request, connect_timeout, True)
    assert first is not None
    return stream, first


def open_stream_lazy(path: str, method: str, request: Dict[str, Any], connect_timeout: float) -> Stream:
    """Open a server stream whose first message may come much later (a
    watch that is up to date): return once the sidecar accepted the call."""
    stream, _ = _open(path, method, request, connect_timeout, False)
    return stream


def _open(path: str, method: str, request: Dict[str, Any], connect_timeout: float, first: bool) -> Tuple[Stream, Optional[Dict[str, Any]]]:
    payload = json.dumps(request).encode("utf-8")
    body = struct.pack(">BI", 0, len(payload)) + payload
    conn = connect(path, None, connect_timeout)
    try:
        conn.request("POST", "/" + method, body=body, headers=_headers("application/connect+json", None))
        # The headers (and the first message, when one is due) should come
        # at once; do not hang forever if not.
        conn.sock.settimeout(30)
        resp = conn.getresponse()
        if resp.status != 200:
            raise _error_from_body(resp.status, resp.read())
        stream = Stream(conn, resp)
        msg = None
        if first:
            msg = stream.receive()
            if msg is None:
                raise errors.Unavailable("%s: stream ended before its first message" % method)
        conn.sock.settimeout(None)
        return stream, msg
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise errors.Unavailable("%s: connection to the sidecar at %s failed: %s" % (method, path, e)) from e
    except BaseException:
        conn.close()
        raise
