"""Affinity keys and required labels (TaskSpec.affinity, TaskSpec.require)
against a real `baton dev` (see conftest.py)."""

import json
import subprocess

import pytest

from baton_client import Client, InvalidArgument, TaskSpec


def stored(dev, task_id):
    """The task as `baton tasks get -o json` shows it."""
    out = subprocess.run([dev.baton, "--endpoints", dev.endpoint, "tasks", "get", "-o", "json", task_id],
                         check=True, stdout=subprocess.PIPE, env=dev.env).stdout
    return json.loads(out)


@pytest.fixture
def indextts2(dev, queue):
    """A second sidecar serving the test's queue, started with --label
    model=indextts2 --label gpu=a100."""
    sock = dev.sidecar("i2-" + queue, labels={"model": "indextts2", "gpu": "a100"}, queues=[queue])
    yield sock
    dev.stop_sidecar(sock)


def test_affinity_and_require_are_stored_and_handed_out(dev, indextts2, queue):
    c = Client(indextts2, process="pytest-routing")
    try:
        res = c.submit([
            TaskSpec(payload={"syn_text": "one"}, id=queue + "-a", affinity="spk/alice.wav", require={"model": "indextts2"}),
            TaskSpec(payload={"syn_text": "two"}, id=queue + "-b"),
        ], queue=queue)
        assert res.created == 2
        a = stored(dev, queue + "-a")["status"]
        assert a["affinity"] == "spk/alice.wav" and a["require"] == {"model": "indextts2"}
        b = stored(dev, queue + "-b")["status"]
        assert "affinity" not in b and "require" not in b

        # The labelled sidecar's worker gets the task and its affinity key.
        seen = {}
        while len(seen) < 2:
            t = c.next(queue, wait=10)
            assert t is not None, "no task within 10s; got %r" % seen
            seen[t.id] = t.affinity
            t.complete()
        assert seen == {queue + "-a": "spk/alice.wav", queue + "-b": ""}
    finally:
        c.close()


def test_submit_require_applies_to_tasks_without_their_own(dev, client, queue):
    client.submit([
        {"id": queue + "-x"},
        TaskSpec(payload={}, id=queue + "-y", require={"model": "glmtts"}),
    ], queue=queue, require={"model": "indextts2"})
    assert stored(dev, queue + "-x")["status"]["require"] == {"model": "indextts2"}
    assert stored(dev, queue + "-y")["status"]["require"] == {"model": "glmtts"}


@pytest.mark.parametrize("spec, field", [
    (TaskSpec(payload={}, require={"gpu model": "a100"}), "tasks[0].require"),
    (TaskSpec(payload={}, require={"model": "v" * 257}), "tasks[0].require"),
    (TaskSpec(payload={}, require={"l%d" % i: "x" for i in range(17)}), "tasks[0].require"),
    (TaskSpec(payload={}, affinity="k" * 257), "tasks[0].affinity"),
])
def test_bad_routing_fields_are_invalid_argument(client, queue, spec, field):
    with pytest.raises(InvalidArgument) as ei:
        client.submit([spec], queue=queue)
    assert ei.value.message.startswith(field + ":"), ei.value.message


def test_non_str_labels_are_type_errors(client, queue):
    with pytest.raises(TypeError, match="require"):
        client.submit([TaskSpec(payload={}, require={"gpus": 2})], queue=queue)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="require"):
        client.submit([{"x": 1}], queue=queue, require={"gpus": 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="affinity"):
        client.submit([TaskSpec(payload={}, affinity=7)], queue=queue)  # type: ignore[arg-type]
