"""The worker against a real baton dev."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from baton_client import Client, TaskSpec

from tts_worker.engines import OfflineEngine
from tts_worker.worker import Keepalive, run


def test_run_writes_named_outputs(sidecar, queue, tmp_path):
    c = Client(sidecar)
    try:
        c.submit([{"uttid": "a%d" % i, "syn_text": "word %d" % i} for i in range(3)], queue=queue)
        counts = run(c, OfflineEngine(), [queue], str(tmp_path), wait=1, max_tasks=3)
    finally:
        c.close()
    assert counts["completed"] == 3
    files = sorted(os.listdir(str(tmp_path)))
    assert len(files) == 3 and not [f for f in files if f.startswith(".")]
    ids = sorted(f.split(".")[0] for f in files)
    assert ids == ["a0", "a1", "a2"]
    assert all(f.split(".")[1].isdigit() for f in files)  # fencing token in the name


def test_failed_synthesis_fails_task(sidecar, queue, tmp_path):
    c = Client(sidecar)
    try:
        c.submit([{"id": "nosyn", "prompt_text": "no syn_text here"}], queue=queue)
        counts = run(c, OfflineEngine(), [queue], str(tmp_path), wait=1, max_tasks=1)
    finally:
        c.close()
    assert counts["failed"] == 1 and os.listdir(str(tmp_path)) == []


SLOW = textwrap.dedent("""
    import sys, time
    from tts_worker.engines import OfflineEngine, Synthesis
    from tts_worker.worker import main

    class Slow(OfflineEngine):
        def synthesize(self, payload, path):
            print("started", flush=True)
            time.sleep(1.0)  # simulated inference time, long enough to get SIGTERM mid-task
            return super().synthesize(payload, path)

    sys.exit(main(sys.argv[1:], engine=Slow()))
""")


def test_sigterm_finishes_current_task(sidecar, queue, tmp_path, pyenv):
    c = Client(sidecar)
    c.submit([{"uttid": "slow1", "syn_text": "slow"}, {"uttid": "slow2", "syn_text": "never started"}], queue=queue)
    p = subprocess.Popen([sys.executable, "-c", SLOW, "--queue", queue, "--out-dir", str(tmp_path), "--wait", "1"],
                         env=dict(pyenv, BATON_SOCKET=sidecar), stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"started"
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["completed"] == 1
    assert [f.split(".")[0] for f in os.listdir(str(tmp_path))] == ["slow1"]
    # The second task was never claimed: it is still there for someone else.
    t = c.next(queue, wait=5)
    assert t is not None and t.id == "slow2" and t.attempt == 1
    t.complete({})
    c.close()


def rfc3339(s):
    """A sortable (seconds part, nanoseconds) tuple of a UTC RFC 3339 time."""
    base, _, frac = s.rstrip("Z").partition(".")
    return base, int((frac + "000000000")[:9])


def test_keepalive_heartbeats_during_a_long_synthesis(sidecar, queue):
    c = Client(sidecar)
    try:
        c.submit([TaskSpec(payload={"syn_text": "long"}, id="long1", timeout=30)], queue=queue)
        t = c.next(queue, wait=10)
        first = t.deadline
        done = threading.Event()
        with Keepalive(t, 0.05) as ka:
            # Stands in for a long engine call: wait (with a deadline) until
            # the helper thread has heartbeated a few times.
            deadline = time.monotonic() + 20
            while ka.beats < 3 and time.monotonic() < deadline:
                done.wait(0.05)
        assert ka.beats >= 3 and not ka.lost
        assert rfc3339(t.deadline) > rfc3339(first)
        t.complete({})
    finally:
        c.close()
