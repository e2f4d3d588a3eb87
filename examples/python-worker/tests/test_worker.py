"""The worker against a real baton dev."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from baton_client import Client, TaskSpec
from baton_client.testing import BatonDev
from test_engines import FakeGLMModule

from tts_worker.engines import GLMTTSEngine, OfflineEngine
from tts_worker.worker import main, run

QUEUES = ["bad", "oom", "wcancel", "glm"]


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


def test_bad_payloads_are_dead_at_once(wdev, tmp_path):
    c = Client(wdev.socket)
    try:
        c.submit([TaskSpec(payload={"prompt_text": "no syn_text here"}, id="nosyn", max_attempts=3),
                  TaskSpec(payload={"syn_text": "hi", "emotion_wieght": 1}, id="typo", max_attempts=3)], queue="bad")
        counts = run(c, OfflineEngine(), ["bad"], str(tmp_path), wait=1, max_tasks=2)
    finally:
        c.close()
    assert counts["failed"] == 2 and os.listdir(str(tmp_path)) == []
    for tid, msg in (("nosyn", "payload.syn_text"), ("typo", "payload.emotion_wieght: unknown field")):
        info = stored(wdev, tid)
        assert info["status"]["state"] == "DEAD" and info["status"]["attempt"] == 1, info
        assert msg in info["last_error"]["error"]


class OutOfMemoryError(RuntimeError):
    """Named as torch.cuda.OutOfMemoryError."""


class OOMOnce(OfflineEngine):
    def __init__(self):
        super().__init__(espeak="")
        self.calls = 0
        self.freed = 0

    def synthesize(self, payload, path, progress=None):
        self.calls += 1
        if self.calls == 1:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().synthesize(payload, path)

    def free_memory(self):
        self.freed += 1


def test_out_of_memory_releases_the_task(wdev, tmp_path):
    c = Client(wdev.socket)
    e = OOMOnce()
    try:
        c.submit([TaskSpec(payload={"syn_text": "big"}, id="oom1", max_attempts=1)], queue="oom")
        counts = run(c, e, ["oom"], str(tmp_path), wait=1, max_tasks=2)
    finally:
        c.close()
    # The first attempt was given back (no attempt used: max_attempts is 1),
    # the cache freed; the second completed.
    assert counts["released"] == 1 and counts["completed"] == 1 and e.freed == 1
    info = stored(wdev, "oom1")
    assert info["status"]["state"] == "DONE" and info["status"]["attempt"] == 1
    assert [f for f in os.listdir(str(tmp_path)) if not f.startswith("oom1.")] == []


class Stepping(OfflineEngine):
    """An engine that reports progress between steps, as IndexTTS2 does per
    segment; the first call signals that it started."""

    def __init__(self, started):
        super().__init__(espeak="")
        self.started = started

    def synthesize(self, payload, path, progress=None):
        ev = threading.Event()
        for i in range(600):
            progress(i / 600.0, "segment %d" % i)
            self.started.set()
            ev.wait(0.05)  # one segment of inference
        return super().synthesize(payload, path)


def test_cancel_stops_the_engine(wdev, tmp_path):
    c = Client(wdev.socket)
    started = threading.Event()
    try:
        c.submit([TaskSpec(payload={"syn_text": "long"}, id="wc1", timeout=60)], queue="wcancel")
        counts = {}
        th = threading.Thread(target=lambda: counts.update(run(c, Stepping(started), ["wcancel"], str(tmp_path), wait=1, max_tasks=1)))
        th.start()
        assert started.wait(20)
        subprocess.run([wdev.baton, "--endpoints", wdev.endpoint, "tasks", "cancel", "wc1"], check=True, env=wdev.env,
                       stdout=subprocess.DEVNULL)
        th.join(20)
        assert not th.is_alive()
    finally:
        c.close()
    assert counts["cancelled"] == 1 and os.listdir(str(tmp_path)) == []
    assert stored(wdev, "wc1")["status"]["state"] == "CANCELLED"


def test_glmtts_relative_socket_and_out_dir(wdev, tmp_path, monkeypatch):
    # GLM-TTS loads from its checkout's directory; a relative BATON_SOCKET
    # and --out-dir still mean what they meant where the worker started.
    checkout = str(tmp_path / "GLM-TTS")
    os.makedirs(checkout)
    c = Client(wdev.socket)
    c.submit([{"uttid": "g1", "prompt_text": "p", "prompt_speech": "p.wav", "syn_text": "hello"}], queue="glm")
    c.close()
    monkeypatch.chdir(os.path.dirname(wdev.socket))
    monkeypatch.setenv("BATON_SOCKET", os.path.basename(wdev.socket))
    engine = GLMTTSEngine(code_dir=checkout, module=FakeGLMModule(checkout))
    code = main(["--engine", "glmtts", "--queue", "glm", "--out-dir", "out-g", "--max-tasks", "1", "--wait", "1"], engine=engine)
    assert code == 0
    files = os.listdir(os.path.join(os.path.dirname(wdev.socket), "out-g"))
    assert [f.split(".")[0] for f in files] == ["g1"]
    assert stored(wdev, "g1")["status"]["state"] == "DONE"


SLOW = textwrap.dedent("""
    import sys, time
    from tts_worker.engines import OfflineEngine, Synthesis
    from tts_worker.worker import main

    class Slow(OfflineEngine):
        def synthesize(self, payload, path, progress):
            print("started", flush=True)
            time.sleep(1.0)  # simulated inference time, long enough to get SIGTERM mid-task
            return super().synthesize(payload, path, progress)

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


def test_payload_output_stays_in_the_output_directory(tmp_path):
    # IndexTTS2 batch lines name their file ("output"); a task's payload must
    # not make the worker write outside --out-dir.
    from tts_worker.engines import PayloadError
    from tts_worker.worker import output_path

    class T:
        id, fencing_token = "t1", 7
        payload = {}

    t = T()
    assert output_path(str(tmp_path), t) == str(tmp_path / "t1.7.wav")
    t.payload = {"output": "spk/a.wav"}
    assert output_path(str(tmp_path), t) == str(tmp_path / "spk" / "a.wav")
    for bad in ("/etc/x.wav", "../x.wav", "a/../../x.wav", "x.txt", "", 3):
        t.payload = {"output": bad}
        with pytest.raises(PayloadError, match="payload.output"):
            output_path(str(tmp_path), t)
