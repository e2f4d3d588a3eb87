"""What a worker relies on without writing it: automatic heartbeats,
cancellation, permanent errors, sharing one Client between threads and
coroutines, fenced outputs, stopping on signals (against a real `baton dev`
started with the queues these tests use)."""

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import baton_client
from baton_client import ClaimLost, Client, PermanentError, TaskCancelled, TaskSpec
from baton_client.testing import BatonDev

PKG_DIR = os.path.dirname(os.path.dirname(baton_client.__file__))
QUEUES = ["long", "cancel", "acancel", "perm", "failon", "shared", "out", "sig", "int", "threads"]


@pytest.fixture(scope="module")
def wdev(baton_bin):
    d = BatonDev(baton_bin, queues=QUEUES)
    d.start()
    yield d
    d.stop()


def stored(dev, task_id):
    out = subprocess.run([dev.baton, "--endpoints", dev.endpoint, "tasks", "get", "-o", "json", task_id],
                         check=True, stdout=subprocess.PIPE, env=dev.env).stdout
    return json.loads(out)


def wait_for(cond, timeout=20.0, what="condition"):
    """Poll cond until it is true, with a deadline."""
    deadline = time.monotonic() + timeout
    ev = threading.Event()
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        ev.wait(0.05)
    pytest.fail("%s not reached within %.0fs" % (what, timeout))


def baton_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("baton-"))


def cancel(dev, task_id):
    subprocess.run([dev.baton, "--endpoints", dev.endpoint, "tasks", "cancel", task_id], check=True,
                   stdout=subprocess.DEVNULL, env=dev.env)


def test_long_task_keeps_its_claim(wdev):
    # A task running 4x its timeout, with two workers polling: it is
    # started once and completed once; the heartbeat thread lives as long
    # as the block.
    a, b = Client(wdev.socket, process="a"), Client(wdev.socket, process="b")
    starts, during = [], []
    a.submit([TaskSpec(payload={}, id="long1", timeout=1)], queue="long")

    def work(c):
        for t in c.tasks("long", wait=0.5):
            with t:
                starts.append((c.process, t.attempt, t.fencing_token))
                during.append((baton_threads(), t.timeout, getattr(t, "heartbeat_interval", None)))
                threading.Event().wait(4.0)  # the inference, 4x the timeout
                t.result = {"by": c.process}
            a.stop()
            b.stop()

    ths = [threading.Thread(target=work, args=(c,)) for c in (a, b)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    try:
        assert len(starts) == 1, starts
        info = stored(wdev, "long1")
        assert info["status"]["state"] == "DONE" and info["status"]["attempt"] == 1
        threads, timeout, interval = during[0]
        assert "baton-heartbeat-long1" in threads
        assert timeout == 1.0 and 0.2 <= interval < 1.0
        assert json.loads(json.dumps(info["result"])) == {"by": starts[0][0]}
        assert not [n for n in baton_threads() if n.startswith("baton-heartbeat")]
    finally:
        a.close()
        b.close()
    assert baton_threads() == []


def test_cancel_reaches_a_running_task(wdev):
    # The task's timeout is 60s (heartbeats every 20s): the cancel arrives
    # by the session's push, not by a heartbeat.
    c = Client(wdev.socket, process="cx")
    try:
        c.submit([TaskSpec(payload={}, id="cx1", timeout=60)], queue="cancel")
        t = wait_for(lambda: c.next("cancel", wait=1), what="a task")
        called = []
        ended = threading.Event()

        def body():
            with t:
                t.on_cancel(lambda task: called.append(task.id))
                started.set()
                t.cancelled.wait(30)
                t.checkpoint()
                t.result = {"not": "reached"}
            ended.set()

        started = threading.Event()
        th = threading.Thread(target=body)
        th.start()
        assert started.wait(20)
        t0 = time.monotonic()
        cancel(wdev, "cx1")
        assert ended.wait(15), "the cancel did not reach the task"
        th.join()
        assert time.monotonic() - t0 < 15 < t.heartbeat_interval
        assert called == ["cx1"] and t.outcome == "cancelled"
        assert stored(wdev, "cx1")["status"]["state"] == "CANCELLED"
        with pytest.raises(TaskCancelled):
            t.checkpoint()
    finally:
        c.close()


def test_cancel_reaches_a_coroutine(wdev):
    c = Client(wdev.socket, process="acx")

    async def main():
        c.submit([TaskSpec(payload={}, id="acx1", timeout=60)], queue="acancel")
        async for t in c.tasks("acancel", wait=1):
            async with t:
                await asyncio.get_running_loop().run_in_executor(None, cancel, wdev, "acx1")
                await asyncio.sleep(30)  # cancelled by the push
                t.result = {"not": "reached"}
            return t

    try:
        t0 = time.monotonic()
        t = asyncio.run(main())
        assert time.monotonic() - t0 < 15
        assert t.outcome == "cancelled"
        assert stored(wdev, "acx1")["status"]["state"] == "CANCELLED"
    finally:
        c.close()


def test_permanent_errors_are_dead_at_once(wdev):
    c = Client(wdev.socket, process="perm")
    try:
        c.submit([TaskSpec(payload={}, id="perm1", max_attempts=3)], queue="perm")
        c.submit([TaskSpec(payload={}, id="failon1", max_attempts=3)], queue="failon")
        for t in c.tasks("perm", wait=0.5):
            with t:
                raise PermanentError("payload.voice: no such speaker")
            c.stop()
        for t in c.tasks("failon", wait=0.5, fail_on=(ValueError,)):
            with t:
                int("x")
            c.stop()
        for tid in ("perm1", "failon1"):
            info = stored(wdev, tid)
            assert info["status"]["state"] == "DEAD" and info["status"]["attempt"] == 1, info
            assert info["last_error"]["permanent"] is True
        assert "payload.voice: no such speaker" in stored(wdev, "perm1")["last_error"]["error"]
        assert "ValueError: invalid literal" in stored(wdev, "failon1")["last_error"]["error"]
    finally:
        c.close()


@pytest.mark.parametrize("coroutines", [0, 4])
def test_threads_and_coroutines_share_one_client(wdev, caplog, coroutines):
    # 4 threads (and 4 coroutines) on one Client (one session): every task
    # is claimed once and completed once, and nothing is lost. On main,
    # threads opened sessions over each other's: SessionLost, lost claims.
    n = 60
    c = Client(wdev.socket, process="shared")
    c.submit([{"id": "s%d-%d" % (coroutines, i)} for i in range(n)], queue="shared")
    done, lock = [], threading.Lock()

    def record(t, how):
        with lock:
            done.append((t.id, t.attempt, how))
            if len(done) >= n:
                c.stop()

    def thread_worker():
        for t in c.tasks("shared", wait=0.5):
            with t:
                t.result = {"by": "thread"}
            record(t, t.outcome)

    async def coroutine_worker():
        async for t in c.tasks("shared", wait=0.5):
            async with t:
                await asyncio.sleep(0)
                t.result = {"by": "coroutine"}
            record(t, t.outcome)

    async def run_coroutines():
        await asyncio.gather(*[coroutine_worker() for _ in range(coroutines)])

    with caplog.at_level(logging.WARNING, logger="baton_client"):
        ths = [threading.Thread(target=thread_worker) for _ in range(4)]
        if coroutines:
            ths.append(threading.Thread(target=asyncio.run, args=(run_coroutines(),)))
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
    try:
        assert sorted(d[0] for d in done) == sorted("s%d-%d" % (coroutines, i) for i in range(n))
        assert {(a, how) for _, a, how in done} == {(1, "completed")}
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        assert c.next("shared", wait=0) is None
    finally:
        c.close()


def test_fenced_outputs(wdev, tmp_path):
    c = Client(wdev.socket, process="out")
    try:
        c.submit([{"id": "o1"}, {"id": "o2"}, {"id": "o3"}], queue="out")
        ends = {}
        for t in c.tasks("out", wait=0.5):
            with t:
                final = str(tmp_path / ("%s.%d.wav" % (t.id, t.fencing_token)))
                tmp = t.output(final)
                assert tmp.endswith(".part.wav") and os.path.dirname(tmp) == str(tmp_path)
                with open(tmp, "w") as f:
                    f.write(t.id)
                assert not os.path.exists(final)
                if t.id == "o2":
                    raise RuntimeError("engine failed after writing")
                if t.id == "o3":
                    raise ClaimLost("claim lost", "failed_precondition")
            ends[t.id] = (t.outcome, final)
            if len(ends) == 3:
                c.stop()
        assert ends["o1"][0] == "completed" and open(ends["o1"][1]).read() == "o1"
        assert ends["o2"][0] == "failed" and ends["o3"][0] == "lost"
        assert sorted(os.listdir(str(tmp_path))) == [os.path.basename(ends["o1"][1])]
    finally:
        c.close()


def test_threads_stop_with_the_block_and_the_client(wdev):
    c = Client(wdev.socket, process="threads")
    assert baton_threads() == []  # creating a Client starts nothing
    c.submit([TaskSpec(payload={}, id="th1", timeout=2)], queue="threads")
    t = wait_for(lambda: c.next("threads", wait=1), what="a task")
    assert [n for n in baton_threads() if n.startswith("baton-session")]
    with t:
        assert "baton-heartbeat-th1" in baton_threads()
    assert not [n for n in baton_threads() if n.startswith("baton-heartbeat")]
    c.close()
    assert baton_threads() == []
    # A client dropped without close() ends its session and thread.
    d = Client(wdev.socket, process="dropped")
    d.session
    assert [n for n in baton_threads() if n.startswith("baton-session")]
    del d
    gc.collect()
    wait_for(lambda: baton_threads() == [], what="the session thread's end")
    # A task held when the client is closed sees its claim lost, and its
    # heartbeat thread stops.
    c = Client(wdev.socket, process="threads2")
    c.submit([TaskSpec(payload={}, id="th2", timeout=2)], queue="threads")
    t = wait_for(lambda: c.next("threads", wait=1), what="a task")
    with t:
        c.close()
        assert t.lost.is_set()
        with pytest.raises(ClaimLost):
            t.checkpoint()
    assert t.outcome == "lost" and baton_threads() == []


SIGNALLED = textwrap.dedent("""
    import logging, sys, threading
    logging.basicConfig(level=logging.INFO)
    sys.path.insert(0, %r)
    from baton_client import Client
    c = Client(%r)
    for task in c.tasks(%r, wait=1):
        with task:
            print("started", task.id, flush=True)
            threading.Event().wait(2.0)  # the inference
            task.result = {"ok": True}
        print(task.id, task.outcome, flush=True)
    c.close()
    print("stopped", flush=True)
""")


def run_signalled(dev, queue, signals):
    # The child gets SIGINT's default disposition even when this process was
    # started with it ignored (a background job of a shell): Python installs
    # its Ctrl-C handler only then. The timer kills a child that never says
    # what it is waiting for, so a regression fails instead of hanging.
    p = subprocess.Popen([sys.executable, "-c", SIGNALLED % (PKG_DIR, dev.socket, queue)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = threading.Timer(60, p.kill)
    deadline.start()
    try:
        first = p.stdout.readline().decode().split()
        assert first and first[0] == "started", first
        err0 = b""
        for i, s in enumerate(signals):
            p.send_signal(s)
            if i + 1 < len(signals):  # the first was handled before the next is sent
                line = p.stderr.readline()
                err0 += line
                while b"finishing the task in hand" not in line:
                    line = p.stderr.readline()
                    assert line, err0
                    err0 += line
        out, err = p.communicate(timeout=60)
        err = err0 + err
    finally:
        deadline.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    return first[1], p.returncode, out.decode(), err.decode()


def test_sigterm_lets_the_task_finish(wdev):
    c = Client(wdev.socket, process="sig")
    try:
        c.submit([{"id": "sig1"}, {"id": "sig2"}], queue="sig")
        tid, code, out, err = run_signalled(wdev, "sig", [signal.SIGTERM])
        assert code == 0 and "Traceback" not in err, err
        assert out.splitlines() == ["%s completed" % tid, "stopped"]
        assert stored(wdev, tid)["status"]["state"] == "DONE"
        other = ({"sig1", "sig2"} - {tid}).pop()
        assert stored(wdev, other)["status"]["state"] == "PENDING"  # never claimed
    finally:
        c.close()


def test_second_ctrl_c_gives_the_task_back(wdev):
    c = Client(wdev.socket, process="int")
    try:
        c.submit([{"id": "int1"}], queue="int")
        tid, code, out, err = run_signalled(wdev, "int", [signal.SIGINT, signal.SIGINT])
        assert code != 0 and "KeyboardInterrupt" in err
        st = stored(wdev, tid)["status"]
        assert st["state"] == "PENDING" and st["attempt"] == 0, st  # released: no attempt used
    finally:
        c.close()
