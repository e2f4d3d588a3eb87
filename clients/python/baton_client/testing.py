"""Run a real ``baton dev`` for tests (stdlib only), like the Go package
sidecar/sidecartest: a temp data directory, a free etcd port and a short
socket path, so that runs never collide.

    with BatonDev(baton="bin/baton", queues=["tts"]) as dev:
        client = Client(dev.socket)

A ``baton`` binary comes from build_baton() (go build) or the BATON_BIN
environment variable.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

from . import _transport


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def repo_root(start: Optional[str] = None) -> str:
    """The Baton repository holding this file (the directory with go.mod)."""
    d = os.path.abspath(start or os.path.dirname(__file__))
    while d != os.path.dirname(d):
        if os.path.exists(os.path.join(d, "go.mod")) and os.path.isdir(os.path.join(d, "cmd", "baton")):
            return d
        d = os.path.dirname(d)
    raise RuntimeError("not inside the Baton repository; set BATON_BIN")


_built: Optional[str] = None


def build_baton(outdir: str) -> str:
    """go build ./cmd/baton into outdir (or return $BATON_BIN); the path.
    Builds once per process: later calls return the first build."""
    global _built
    if os.environ.get("BATON_BIN"):
        return os.environ["BATON_BIN"]
    if _built is None or not os.path.exists(_built):
        out = os.path.join(outdir, "baton")
        subprocess.run(["go", "build", "-o", out, "./cmd/baton"], cwd=repo_root(), check=True)
        _built = out
    return _built


def wait_for_socket(path: str, timeout: float) -> None:
    """Return once the sidecar at path accepts connections."""
    _transport.connect(path, 5.0, timeout).close()


def stop_process(p: "subprocess.Popen[bytes]", timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after timeout; always reaps."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class BatonDev:
    """``baton dev`` in a temp directory: embedded etcd on a free port plus
    one sidecar. Attributes: socket, endpoint, admin (its admin server's
    host:port), dir, log (path of its output). sidecar() starts more
    sidecars against the same etcd (their admin servers on any free port)."""

    def __init__(self, baton: str, queues: Sequence[str] = ("default",), ttl: str = "10s", grace: str = "2s") -> None:
        self.baton = baton
        self.queues = list(queues)
        self.ttl = ttl
        self.grace = grace
        # Short path: sun_path holds ~108 bytes.
        self.dir = tempfile.mkdtemp(prefix="bt.", dir="/tmp")
        self.socket = os.path.join(self.dir, "dev.sock")
        self.endpoint = "127.0.0.1:%d" % free_port()
        self.log = os.path.join(self.dir, "dev.log")
        #: host:port of the dev sidecar's admin server (/metrics, /healthz, /readyz).
        self.admin = "127.0.0.1:%d" % free_port()
        #: The etcd root password file ``baton dev`` writes (its etcd has
        #: authentication on), and an environment for other baton commands
        #: against this etcd: ``subprocess.run([...], env=dev.env)``.
        self.password_file = os.path.join(self.dir, "etcd", "etcd-root.password")
        self.env: Dict[str, str] = dict(os.environ, BATON_ETCD_PASSWORD_FILE=self.password_file)
        self._procs: List["subprocess.Popen[bytes]"] = []
        self._sidecars: Dict[str, "subprocess.Popen[bytes]"] = {}

    def _start(self, args: List[str], log: str, socket_path: str,
               env: Optional[Mapping[str, str]] = None) -> "subprocess.Popen[bytes]":
        with open(log, "ab") as f:
            p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._procs.append(p)
        try:
            wait_for_socket(socket_path, 30.0)
        except Exception:
            with open(log, "rb") as f:
                raise RuntimeError("baton did not start:\n" + f.read().decode(errors="replace"))
        return p

    def start(self) -> "BatonDev":
        qs = [a for q in self.queues for a in ("--queue", q)]
        self.process = self._start(
            [self.baton, "dev", "--data-dir", os.path.join(self.dir, "etcd"), "--etcd-listen", self.endpoint,
             "--socket", self.socket, "--ttl", self.ttl, "--grace", self.grace, "--admin-addr", self.admin] + qs,
            self.log, self.socket)
        return self

    def sidecar(self, name: str, labels: Optional[Mapping[str, str]] = None,
                queues: Optional[Sequence[str]] = None) -> str:
        """Start another sidecar on the same etcd, serving queues (default:
        this dev's queues; its workers take tasks from these only and submit
        to these only) and started with ``--label KEY=VALUE`` for each of
        labels (the labels a task's ``require`` matches); return its socket
        path. stop_sidecar() stops it before stop() does."""
        sock = os.path.join(self.dir, name + ".sock")
        qs = [a for q in (self.queues if queues is None else queues) for a in ("--queue", q)]
        ls = [a for k, v in sorted((labels or {}).items()) for a in ("--label", "%s=%s" % (k, v))]
        self._sidecars[sock] = self._start(
            [self.baton, "--endpoints", self.endpoint, "sidecar", "--socket", sock, "--ttl", self.ttl,
             "--grace", self.grace, "--worker-id", name, "--admin-addr", "127.0.0.1:0"] + qs + ls,
            os.path.join(self.dir, name + ".log"), sock, env=self.env)
        return sock

    def stop_sidecar(self, socket_path: str) -> None:
        """Stop the sidecar that sidecar() started on socket_path."""
        p = self._sidecars.pop(socket_path)
        stop_process(p)
        self._procs.remove(p)

    def stop(self) -> None:
        for p in reversed(self._procs):
            stop_process(p)
        self._procs.clear()
        self._sidecars.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "BatonDev":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
