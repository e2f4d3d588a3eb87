"""Locks and configuration documents through baton_client, against a real
`baton dev` (see conftest.py)."""

import json
import os
import queue as queuelib
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import baton_client
from baton_client import Client, DeadlineExceeded, NotFound

PKG = os.path.dirname(baton_client.__file__)

_names = iter(range(1_000_000))


@pytest.fixture
def name():
    """A lock or config name of its own for each test."""
    return "n%d-%d" % (os.getpid(), next(_names))


def config_set(dev, name, doc):
    """Set a document with the real CLI, as an operator does."""
    subprocess.run(
        [dev.baton, "--endpoints", dev.endpoint, "config", "set", name, "-"],
        input=json.dumps(doc).encode(), check=True, stdout=subprocess.DEVNULL, env=dev.env,
    )


def test_lock_excludes_other_workers_and_token_rises(dev, client, name):
    other = Client(dev.socket, process="other")
    try:
        with client.lock(name, wait=5) as token:
            assert token > 0
            with pytest.raises(DeadlineExceeded):
                with other.lock(name, wait=0):
                    pass
            assert other.lock(name).try_acquire() is None
        with other.lock(name, wait=5) as token2:
            assert token2 > token
    finally:
        other.close()


LOCKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, %r)
    from baton_client import Client
    c = Client(%r)
    lk = c.lock(%r, wait=20)
    print(lk.acquire(), flush=True)
    time.sleep(600)
""")


def test_lock_released_when_holder_is_sigkilled(dev, client, name):
    p = subprocess.Popen([sys.executable, "-c", LOCKER % (os.path.dirname(PKG), dev.socket, name)], stdout=subprocess.PIPE)
    try:
        held = int(p.stdout.readline())
        with pytest.raises(DeadlineExceeded):
            client.lock(name, wait=0).acquire()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    with client.lock(name, wait=10) as token:
        assert token > held


def test_config_get_and_watch(dev, client, name):
    with pytest.raises(NotFound):
        client.config(name)
    config_set(dev, name, {"sample_rate": 24000, "seed": 1})
    doc = client.config(name)
    assert doc["sample_rate"] == 24000 and doc.revision > 0

    watch = client.watch_config(name)
    it = iter(watch)
    first = next(it)
    assert first == doc
    config_set(dev, name, {"sample_rate": 22050, "seed": 2})
    second = next(it)
    assert second["seed"] == 2 and second.revision > first.revision
    watch.stop()

    # Resuming from the last revision seen gives only newer versions.
    config_set(dev, name, {"sample_rate": 22050, "seed": 3})
    resumed = next(iter(client.watch_config(name, after_revision=second.revision)))
    assert resumed["seed"] == 3 and resumed.revision > second.revision


def test_watch_config_callback(dev, client, name):
    got: "queuelib.Queue[baton_client.ConfigDoc]" = queuelib.Queue()
    watch = client.watch_config(name, got.put)
    try:
        config_set(dev, name, {"seed": 10})  # not set before: delivered when first set
        assert got.get(timeout=20)["seed"] == 10
        config_set(dev, name, {"seed": 11})
        assert got.get(timeout=20)["seed"] == 11
        assert watch.latest is not None and watch.latest["seed"] == 11
    finally:
        watch.stop()
    assert not any(t.name == "baton-config-" + name for t in threading.enumerate())


def test_pinned_config_reaches_the_task(dev, client, name, tmp_path, queue):
    config_set(dev, name, {"sample_rate": 24000})
    pinned = client.config(name)
    f = tmp_path / "b.jsonl"
    f.write_text('{"uttid": "pin-1", "syn_text": "x"}\n')
    subprocess.run([dev.baton, "--endpoints", dev.endpoint, "submit", "--queue", queue, "--batch", name,
                    "--pin-config", name, str(f)], check=True, stdout=subprocess.DEVNULL, env=dev.env)
    config_set(dev, name, {"sample_rate": 16000})
    t = client.next(queue, wait=20)
    assert t is not None
    assert t.config == {"sample_rate": 24000} and t.config_revision == pinned.revision
    t.complete({})
