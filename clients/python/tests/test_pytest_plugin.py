"""The package's pytest fixtures, used as the README shows (conftest.py
enables baton_client.pytest_plugin)."""

import json
import subprocess

from baton_client import Client


def test_speaks(baton_sidecar, baton_queue):
    with Client(baton_sidecar) as c:
        c.submit([{"id": baton_queue + "-1", "text": "hi"}], queue=baton_queue)
        task = c.next(wait=10)
        assert task.payload["text"] == "hi"
        task.complete({"wav": "out/1.wav"})


def test_the_task_is_done_in_etcd(baton_dev, baton_sidecar, baton_queue):
    tid = baton_queue + "-1"
    with Client(baton_sidecar) as c:
        c.submit([{"id": tid, "text": "hi"}], queue=baton_queue)
        c.next(wait=10).complete({"wav": "out/1.wav"})
    out = subprocess.run([baton_dev.baton, "--endpoints", baton_dev.endpoint, "tasks", "get", "-o", "json", tid],
                         check=True, stdout=subprocess.PIPE, env=baton_dev.env).stdout
    got = json.loads(out)
    assert got["status"]["state"] == "DONE"
    assert got["result"] == {"wav": "out/1.wav"}
