"""make demo in a short form: counts add up, nothing is left running."""

import os
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(os.path.dirname(HERE), "demo.py")


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgids):
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":
                found.append(int(d))
    return found


def pids_of(out):
    m = re.search(r"demo: processes: (.*)", out)
    assert m, out
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def test_demo_short(baton_bin, tmp_path):
    r = subprocess.run([sys.executable, DEMO, "--baton", baton_bin, "--lines", "6", "--out", str(tmp_path / "out")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert "demo: 6/6 tasks done;" in out, out
    made = [int(n) for n in re.findall(r"worker-\d \(via [^)]*\): (\d+) WAV files", out)]
    assert len(made) == 2 and sum(made) == 6, out
    assert "no process left" in out
    wavs = [f for f in os.listdir(str(tmp_path / "out")) if f.endswith(".wav")]
    assert len(wavs) == 6
    pids = pids_of(out)
    assert not [p for p in pids.values() if alive(p)]
    assert not group_members(set(pids.values()))


def test_demo_ctrl_c_leaves_nothing(baton_bin, tmp_path):
    p = subprocess.Popen([sys.executable, DEMO, "--baton", baton_bin, "--out", str(tmp_path / "out")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for raw in p.stdout:
            lines.append(raw.decode())
            if lines[-1].startswith("demo: processes:"):
                break
        pids = pids_of("".join(lines))
        p.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(lines) + rest.decode()
    assert p.returncode == 130, out
    assert "interrupted" in out and "no process left" in out, out
    assert not [q for q in pids.values() if alive(q)], out
    assert not group_members(set(pids.values())), out
