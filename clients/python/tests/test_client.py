"""baton_client against a real `baton dev` (see conftest.py)."""

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import baton_client
from baton_client import ClaimLost, Client, InvalidArgument, PermissionDenied, SidecarNotFound, TaskSpec

PKG = os.path.dirname(baton_client.__file__)


def claim(c, queue, timeout=20.0):
    """Next with a deadline: the task the queue hands out, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = c.next(queue, wait=min(2.0, max(0.1, deadline - time.monotonic())))
        if t is not None:
            return t
    pytest.fail("no task on %s within %.0fs" % (queue, timeout))


def test_happy_path(client, queue):
    res = client.submit([{"uttid": "u%d" % i, "syn_text": "hello %d" % i} for i in range(3)], queue=queue, batch="b1")
    assert res.ids == ["u0", "u1", "u2"] and res.created == 3
    assert client.submit([{"uttid": "u0"}], queue=queue).existing == 1

    seen = {}
    for t in client.tasks(queue, wait=1):
        with t:
            assert t.attempt == 1 and t.batch == "b1" and t.claim
            assert t.heartbeat(0.5, "half") is False
            t.result = {"chars": len(t.payload["syn_text"])}
        assert t.outcome == "completed"
        seen[t.id] = t.fencing_token
        if len(seen) == 3:
            client.stop()
    assert sorted(seen) == ["u0", "u1", "u2"]
    assert len(set(seen.values())) == 3
    assert client.next(queue, wait=0) is None


def test_with_task_failure(client, queue):
    client.submit([TaskSpec(payload={"x": 1}, id="bad", max_attempts=2)], queue=queue)
    t = claim(client, queue)
    with t:
        raise ValueError("engine exploded")
    assert t.outcome == "failed"
    # Retried after the backoff, with the attempt counted.
    t2 = claim(client, queue)
    assert (t2.id, t2.attempt) == ("bad", 2)
    assert t2.fencing_token > t.fencing_token
    with t2:
        raise ValueError("again")
    assert t2.outcome == "failed"
    # Out of attempts: DEAD, nothing more to claim.
    assert client.next(queue, wait=2) is None
    # A finished claim refuses everything.
    with pytest.raises(ClaimLost) as ei:
        t2.complete({})
    assert "claim lost" in ei.value.message


def test_claim_lost_after_reclaim(sidecar, queue):
    a = Client(sidecar, process="a")
    b = Client(sidecar, process="b")
    try:
        a.submit([{"id": "t1"}], queue=queue)
        ta = claim(a, queue)
        a.close()  # session closed: the claim goes back to the queue at once
        tb = claim(b, queue)
        assert tb.id == "t1" and tb.attempt == 2 and tb.fencing_token > ta.fencing_token
        with pytest.raises(ClaimLost):
            ta.heartbeat()
        with pytest.raises(ClaimLost):
            ta.complete({"from": "a"})
        assert ta.outcome == "lost"
        # `with task:` swallows a lost claim and records it.
        ta.outcome = None
        with ta:
            ta.result = {"from": "a"}
        assert ta.outcome == "lost"
        tb.complete({"from": "b"})
        assert tb.outcome == "completed"
    finally:
        a.close()
        b.close()


WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, %r)
    from baton_client import Client
    c = Client(%r)
    t = c.next(%r, wait=20)
    print(t.id, t.fencing_token, flush=True)
    time.sleep(600)
""")


def test_sigkilled_worker_task_finished_by_another(sidecar, client, queue):
    client.submit([{"id": "k1"}], queue=queue)
    p = subprocess.Popen([sys.executable, "-c", WORKER % (os.path.dirname(PKG), sidecar, queue)], stdout=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode().split()
        assert line[0] == "k1"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    t = claim(client, queue)
    assert t.id == "k1" and t.attempt == 2 and t.fencing_token > int(line[1])
    t.complete({"ok": True})


def test_fork_safety(client, queue):
    client.submit([{"id": "parent"}, {"id": "child"}], queue=queue)
    t = claim(client, queue)
    assert t.id == "parent"
    parent_session = client.session
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's session or socket
        code = 1
        try:
            os.close(r)
            tc = claim(client, queue)
            ok = client.session != parent_session and tc.id == "child"
            tc.complete({"by": "child"})
            os.write(w, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    msg = os.read(r, 10)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert msg == b"ok" and os.WEXITSTATUS(status) == 0
    # The child's exit did not close the parent's session: its claim holds.
    assert client.session == parent_session
    t.complete({"by": "parent"})
    assert client.next(queue, wait=0) is None


FORKING_WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, %r)
    from baton_client import Client
    c = Client(%r)
    t = c.next(%r, wait=20)
    pid = os.fork()
    if pid == 0:  # a child that never touches the client, like a fork-started data loader
        time.sleep(600)
        os._exit(0)
    print(t.id, t.fencing_token, pid, flush=True)
    time.sleep(600)
""")


def test_forked_child_does_not_keep_a_dead_parents_session(sidecar, client, queue):
    client.submit([{"id": "f1"}], queue=queue)
    p = subprocess.Popen([sys.executable, "-c", FORKING_WORKER % (os.path.dirname(PKG), sidecar, queue)], stdout=subprocess.PIPE)
    child = 0
    try:
        tid, token, child = p.stdout.readline().decode().split()
        child = int(child)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        # The child is alive and still has a copy of the parent's file
        # descriptors, but not of the session socket: the session closed.
        os.kill(child, 0)
        t = claim(client, queue)
        assert t.id == tid and t.attempt == 2 and t.fencing_token > int(token)
        t.complete({})
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_python39_syntax():
    for fn in os.listdir(PKG):
        if fn.endswith(".py"):
            ast.parse(open(os.path.join(PKG, fn)).read(), fn, feature_version=(3, 9))


def test_import_opens_nothing():
    code = textwrap.dedent("""
        import os, sys, threading
        sys.path.insert(0, %r)
        before = set(os.listdir('/proc/self/fd'))
        import baton_client
        c = baton_client.Client('/nonexistent.sock')
        after = set(os.listdir('/proc/self/fd'))
        assert threading.active_count() == 1, threading.enumerate()
        assert after == before, (before, after)
    """) % os.path.dirname(PKG)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stdlib_only():
    # At run time, without OpenTelemetry: importing and using the client
    # loads only stdlib modules.
    code = textwrap.dedent("""
        import sys, sysconfig, os
        sys.path.insert(0, %r)
        sys.modules['opentelemetry'] = None  # the optional dependency is absent
        before = set(sys.modules)
        import baton_client, baton_client.testing
        try:
            baton_client.Client('/nonexistent.sock', connect_timeout=0).submit([{'id': 'x'}])
        except baton_client.SidecarNotFound:
            pass
        stdlib = sysconfig.get_paths()['stdlib']
        bad = []
        for name in set(sys.modules) - before:
            m = sys.modules[name]
            f = getattr(m, '__file__', None)
            if name.split('.')[0] == 'baton_client' or f is None:
                continue
            if not os.path.realpath(f).startswith(os.path.realpath(stdlib)) or 'site-packages' in f:
                bad.append((name, f))
        assert not bad, bad
    """) % os.path.dirname(PKG)
    subprocess.run([sys.executable, "-c", code], check=True)
    # In the source: every import is stdlib or relative, except the optional
    # opentelemetry import guarded by `except ImportError` and pytest in the
    # pytest plugin (imported only by pytest, from a conftest).
    stdlib = set(getattr(sys, "stdlib_module_names", ())) or None
    for fn in os.listdir(PKG):
        if not fn.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(PKG, fn)).read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top == "opentelemetry":
                    assert fn == "_trace.py"
                    continue
                if top == "pytest":
                    assert fn == "pytest_plugin.py"
                    continue
                if stdlib is not None:
                    assert top in stdlib, "%s imports %s" % (fn, n)


def test_errors_map_codes(client, queue):
    with pytest.raises(InvalidArgument) as ei:
        client.submit([TaskSpec(payload={"a": 1}, id="p", priority=5000)], queue=queue)
    assert ei.value.code == "invalid_argument" and "priority" in ei.value.message
    with pytest.raises(SidecarNotFound) as ei:
        Client("/tmp/no-such-baton.sock", connect_timeout=0.2).submit([{"id": "x"}])
    assert "/tmp/no-such-baton.sock" in str(ei.value)


def test_queues_out_of_the_sidecars_scope_are_refused(client, queue):
    # The sidecar serves only the test's queue (conftest.py): another
    # queue is refused, naming the field and the queue, and nothing is
    # written.
    with pytest.raises(PermissionDenied) as ei:
        client.next([queue, "elsewhere"], wait=0)
    assert ei.value.message.startswith('queues[1]: queue "elsewhere" is not served by this sidecar'), ei.value.message
    with pytest.raises(PermissionDenied) as ei:
        client.submit([{"id": "s1"}, TaskSpec(payload={}, id="s2", queue="elsewhere")], queue=queue)
    assert ei.value.message.startswith('tasks[1].queue: queue "elsewhere" is not one this sidecar may submit to'), ei.value.message
    assert client.next(queue, wait=0) is None


def test_waits_for_a_starting_sidecar(baton_bin, tmp_path):
    # The call is made before the sidecar exists; it connects once it is up.
    from baton_client.testing import BatonDev
    d = BatonDev(baton_bin, queues=["w"])
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, %r); from baton_client import Client; "
                          "print(Client(%r, connect_timeout=60).submit([{'id': 'late'}]).ids)" % (os.path.dirname(PKG), d.socket)],
                         stdout=subprocess.PIPE)
    try:
        d.start()
        out, _ = p.communicate(timeout=60)
        assert out.strip() == b"['late']"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        d.stop()


OTEL = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, %r)
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from baton_client import Client

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    c = Client(%r)
    with trace.get_tracer("test").start_as_current_span("submit") as s:
        c.submit([{"id": "traced"}], queue=%r)
        submit_ctx = s.get_span_context()
    t = c.next(%r, wait=10)
    with t:
        pass
    # A spec without a traceparent, submitted inside a span: the call's
    # traceparent header carries the context, and the sidecar stores it.
    with trace.get_tracer("test").start_as_current_span("raw") as s:
        c._call("Submit", {"tasks": [{"id": "raw", "queue": %r, "payload": {}}]})
        raw_ctx = s.get_span_context()
    raw = c.next(%r, wait=10)
    raw.complete()
    c.close()
    spans = {sp.name: sp for sp in exporter.get_finished_spans()}
    w = spans["baton.task " + %r]
    print(json.dumps({
        "traceparent": t.traceparent,
        "submit_trace": "%%032x" %% submit_ctx.trace_id,
        "submit_span": "%%016x" %% submit_ctx.span_id,
        "worker_trace": "%%032x" %% w.context.trace_id,
        "worker_parent": "%%016x" %% w.parent.span_id,
        "attrs": dict(w.attributes),
        "raw_traceparent": raw.traceparent,
        "raw_ctx": "%%032x-%%016x" %% (raw_ctx.trace_id, raw_ctx.span_id),
    }))
""")


def test_opentelemetry_continues_the_trace(sidecar, queue):
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk not installed (.ci/run installs it)")
    import json
    out = subprocess.run([sys.executable, "-c", OTEL % (os.path.dirname(PKG), sidecar, queue, queue, queue, queue, queue)],
                         check=True, stdout=subprocess.PIPE).stdout
    r = json.loads(out)
    # The sidecar of this test does not trace (no OTEL_* variables): Next
    # hands out the context stored at submit.
    assert r["traceparent"].split("-")[1:3] == [r["submit_trace"], r["submit_span"]]
    assert r["worker_trace"] == r["submit_trace"] and r["worker_parent"] == r["submit_span"]
    assert r["attrs"]["baton.task.id"] == "traced" and r["attrs"]["baton.task.attempt"] == 1
    assert "-".join(r["raw_traceparent"].split("-")[1:3]) == r["raw_ctx"]


def test_release_and_interrupt(client, queue):
    client.submit([{"id": "r1"}], queue=queue)
    t = claim(client, queue)
    t.release()
    assert t.outcome == "released"
    t2 = claim(client, queue)
    assert t2.id == "r1" and t2.attempt == 1  # a release uses no attempt
    with pytest.raises(KeyboardInterrupt):
        with t2:
            raise KeyboardInterrupt
    assert t2.outcome == "released"
    t3 = claim(client, queue)
    assert t3.id == "r1" and t3.attempt == 1
    t3.complete({})


def test_api_version_is_checked_on_connect(client, queue):
    from baton_client import IncompatibleSidecar, _session
    # The real sidecar speaks this client's version: the session opens.
    assert client.session
    # Too old (no header, or a lower version) and too new say which side to upgrade.
    for header, want in ((None, "too old (API 0, it sends no Baton-Api-Version): upgrade baton"),
                         ("0", "too old (API 0): upgrade baton"),
                         ("2", "speaks API 2: upgrade baton_client"),
                         ("x", "not a version number")):
        with pytest.raises(IncompatibleSidecar) as ei:
            _session.check_api_version(header, "/run/b.sock", baton_client.__version__)
        assert want in ei.value.message and "/run/b.sock" in ei.value.message


def test_one_version():
    # pyproject.toml takes the version from baton_client._version, the one place.
    text = open(os.path.join(os.path.dirname(PKG), "pyproject.toml")).read()
    assert 'dynamic = ["version"]' in text and 'attr = "baton_client._version.VERSION"' in text
    assert baton_client.__version__ == baton_client._version.VERSION


def test_process_name_is_shown_as_process(dev, sidecar, queue):
    """The name a Client attaches with is the ``process`` of its session in
    ``baton workers list``, beside the sidecar's worker id; ``worker=``, its
    former name, still works and warns."""
    import json
    new = Client(sidecar, process="py-new")
    with pytest.warns(DeprecationWarning, match="process"):
        old = Client(sidecar, worker="py-old")
    try:
        assert old.process == "py-old"
        with pytest.warns(DeprecationWarning):
            assert old.worker == "py-old"
        ids = {new.session: "py-new", old.session: "py-old"}
        deadline = time.monotonic() + 20
        while True:
            out = subprocess.run([dev.baton, "--endpoints", dev.endpoint, "workers", "list", "-o", "json"],
                                 env=dev.env, check=True, stdout=subprocess.PIPE).stdout
            entry = [w for w in json.loads(out) if w["worker_id"] == queue]
            got = {s["session"]: s.get("process") for s in (entry[0].get("sessions") or [])} if entry else {}
            if got == ids:
                break
            assert time.monotonic() < deadline, "workers list shows %r, want %r" % (got, ids)
            time.sleep(0.05)
    finally:
        new.close()
        old.close()
