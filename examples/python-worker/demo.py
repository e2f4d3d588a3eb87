#!/usr/bin/env python3
"""`make demo`: the whole loop on one machine.

Starts `baton dev` (embedded etcd on a free port, sidecar 1), a second
`baton sidecar` against that etcd, one example worker per sidecar, submits
sample.jsonl, shows progress, prints where the WAV files are and how many each
worker made, and stops everything it started. Every child runs in its own
process group and is stopped (SIGTERM, then SIGKILL after a grace period)
when the demo ends, fails or is interrupted with Ctrl-C; on Linux children
also get SIGTERM if this driver itself is killed.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

from baton_client.testing import free_port, wait_for_socket  # noqa: E402


def _die_with_parent() -> None:
    # Linux: SIGTERM this child when the demo driver dies, even by SIGKILL.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Procs:
    """The processes this demo started, each in its own process group."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.procs = []  # (name, Popen)

    def start(self, name, args, env=None, stdout=None):
        log = open(os.path.join(self.log_dir, name + ".log"), "ab")
        p = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=stdout or log, stderr=log,
                             start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.procs.append((name, p))
        return p

    def stop(self, names=None, grace=15.0):
        """SIGTERM the groups, wait up to grace seconds, then SIGKILL."""
        targets = [(n, p) for n, p in self.procs if names is None or n in names]
        for _, p in targets:
            if p.poll() is None:
                _killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, p in targets:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, p in targets:
            _killpg(p.pid, signal.SIGKILL)  # the group: also any engine subprocess left behind
            p.wait()

    def left(self):
        """Processes still alive in any of our process groups."""
        groups = {p.pid for _, p in self.procs}
        alive = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in groups and fields[0] != "Z":
                alive.append(int(d))
        return alive


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baton", default=os.path.join(ROOT, "bin", "baton"), help="the baton binary (make build)")
    ap.add_argument("--jsonl", default=os.path.join(HERE, "sample.jsonl"))
    ap.add_argument("--lines", type=int, default=0, help="submit only the first N lines (0: all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "demo"), help="where the WAV files go")
    ap.add_argument("--engine", default="offline")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    a = ap.parse_args(argv)

    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="baton-demo.", dir="/tmp")
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.endswith(".wav"):
            os.unlink(os.path.join(a.out, f))
    log_dir = os.path.join(a.out, "logs")
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    procs = Procs(log_dir)
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ok = False
    try:
        jsonl = a.jsonl
        with open(a.jsonl) as f:
            lines = [ln for ln in f if ln.strip()]
        if a.lines:
            lines = lines[: a.lines]
            jsonl = os.path.join(tmp, "batch.jsonl")
            with open(jsonl, "w") as f:
                f.writelines(lines)
        total = len(lines)

        endpoint = "127.0.0.1:%d" % free_port()
        sock1, sock2 = os.path.join(tmp, "s1.sock"), os.path.join(tmp, "s2.sock")
        # Free ports for the admin servers, so the demo never collides with
        # a sidecar already running on the default ones.
        admin1, admin2 = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
        dev = procs.start("baton-dev", [a.baton, "dev", "--data-dir", os.path.join(tmp, "etcd"), "--etcd-listen", endpoint,
                                        "--socket", sock1, "--queue", "tts", "--grace", "5s", "--admin-addr", admin1])
        wait_for_socket(sock1, 60)
        # baton dev's etcd has authentication on; its root password is in
        # the data directory, for the second sidecar and the CLI.
        etcd_env = dict(os.environ, BATON_ETCD_PASSWORD_FILE=os.path.join(tmp, "etcd", "etcd-root.password"))
        side = procs.start("baton-sidecar", [a.baton, "--endpoints", endpoint, "sidecar", "--socket", sock2, "--queue", "tts",
                                             "--worker-id", "sidecar-2", "--grace", "5s", "--admin-addr", admin2], env=etcd_env)
        wait_for_socket(sock2, 60)
        print("demo: baton dev (etcd %s, socket %s) and a second sidecar (socket %s) are up" % (endpoint, sock1, sock2), flush=True)
        print("demo: metrics at http://%s/metrics and http://%s/metrics" % (admin1, admin2), flush=True)

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "clients", "python"), HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        workers = []
        for i, sock in ((1, sock1), (2, sock2)):
            env_i = dict(env, BATON_SOCKET=sock)
            name = "worker-%d" % i
            out = open(os.path.join(log_dir, name + ".out"), "wb")
            p = procs.start(name, [sys.executable, "-m", "tts_worker", "--engine", a.engine, "--queue", "tts",
                                   "--out-dir", a.out, "--name", name], env=env_i, stdout=out)
            out.close()
            workers.append((name, sock, p))
        print("demo: processes: " + " ".join("%s=%d" % (n, p.pid) for n, p in procs.procs), flush=True)

        sub = subprocess.run([a.baton, "--endpoints", endpoint, "submit", "--queue", "tts", "--batch", "demo", jsonl],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=etcd_env)
        if sub.returncode != 0:
            print(sub.stdout.decode(errors="replace"), file=sys.stderr)
            raise SystemExit("demo: baton submit failed")
        print("demo: submitted %d tasks from %s" % (total, os.path.relpath(a.jsonl)), flush=True)

        deadline = time.monotonic() + a.timeout
        done, shown = 0, -1
        while True:
            done = len([f for f in os.listdir(a.out) if f.endswith(".wav") and not f.startswith(".")])
            if done != shown:
                bar = "#" * (30 * done // max(total, 1))
                print("demo: [%-30s] %d/%d WAV files" % (bar, done, total), flush=True)
                shown = done
            if done >= total:
                break
            for name, _, p in workers + [("baton dev", None, dev), ("the second sidecar", None, side)]:
                if p.poll() is not None:
                    raise SystemExit("demo: %s exited early (status %s); see %s" % (name, p.returncode, log_dir))
            if time.monotonic() > deadline:
                raise SystemExit("demo: only %d of %d done after %.0fs; logs in %s" % (done, total, a.timeout, log_dir))
            time.sleep(0.2)  # progress display refresh

        # Workers finish their task in hand on SIGTERM and print their counts.
        procs.stop([n for n, _, _ in workers])
        counts = {}
        for name, sock, _ in workers:
            with open(os.path.join(log_dir, name + ".out")) as f:
                last = [ln for ln in f.read().splitlines() if ln.startswith("{")]
            counts[name] = json.loads(last[-1]) if last else {}
        procs.stop()
        elapsed = time.monotonic() - t0
        left = procs.left()
        print("demo: %d/%d tasks done; the demo ran %.1fs (start to stop, build excluded)" % (done, total, elapsed))
        for (name, sock, _), side_name in zip(workers, ("baton dev", "second sidecar")):
            c = counts.get(name, {})
            print("demo:   %s (via %s): %d WAV files%s" % (name, side_name, c.get("completed", 0),
                                                          ", %d failed" % c["failed"] if c.get("failed") else ""))
        engine_note = ""
        if a.engine == "offline" and not shutil.which("espeak-ng"):
            engine_note = " (synthetic tones, not speech: espeak-ng is not installed)"
        rel = os.path.relpath(a.out)
        print("demo: WAV files in %s/%s" % (a.out if rel.startswith("..") else rel, engine_note))
        print("demo: stopped baton dev, the second sidecar and both workers; %s" % (
            "no process left" if not left else "STILL RUNNING: %s" % left))
        ok = not left
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\ndemo: interrupted; stopping everything it started", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop()
        left = procs.left()
        if interrupted:
            print("demo: stopped; %s" % ("no process left" if not left else "STILL RUNNING: %s" % left), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else (130 if interrupted else 1)


if __name__ == "__main__":
    sys.exit(main())
