"""The worker process: load the engine once, then claim one task at a time
from the local sidecar, write its WAV atomically and complete the task.

Output: OUT_DIR/<task id>.<fencing token>.wav, written under a temporary
name and renamed into place, so two workers never overwrite each other's
file and a stale attempt's file is recognisable by its lower token.

SIGTERM (and SIGINT once): finish the task in hand, then exit; while idle,
exit within --wait seconds. A second SIGINT interrupts the task: it is
released (given back without using an attempt) and the worker exits.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from baton_client import BatonError, ClaimLost, Client, Task

from . import tracing
from .engines import Engine, OfflineEngine, make_engine, wav_info

log = logging.getLogger("tts_worker")


def output_path(out_dir: str, task: Task) -> str:
    return os.path.join(out_dir, "%s.%d.wav" % (task.id, task.fencing_token))


def process(engine: Engine, task: Task, out_dir: str, worker: str) -> Dict[str, Any]:
    """Synthesize task into its final path (via a temporary file); the result."""
    final = output_path(out_dir, task)
    tmp = os.path.join(out_dir, ".%s.%d.%d.part.wav" % (task.id, task.fencing_token, os.getpid()))
    t0 = time.monotonic()
    try:
        # The inference, as its own span inside the task's (no-op without
        # OpenTelemetry): where a slow task's time went.
        with tracing.span("tts.synthesize", **{"tts.engine": engine.name}):
            syn = engine.synthesize(task.payload, tmp)
        info = wav_info(tmp) or syn
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    result: Dict[str, Any] = {
        "path": os.path.abspath(final),
        "duration_s": round(info.duration_s, 3),
        "sample_rate": info.sample_rate,
        "engine": engine.name,
        "worker": worker,
        "seconds": round(time.monotonic() - t0, 3),
    }
    if syn.note:
        result["note"] = syn.note
    return result


class Keepalive:
    """Heartbeats task every interval seconds from a helper thread while the
    engine works (the engine call blocks the main thread), so a synthesis
    longer than the task's timeout keeps its claim. Owned by the with block:
    the thread is stopped and joined when it ends. lost is set when the
    sidecar refused a heartbeat (the claim is gone: discard the output)."""

    def __init__(self, task: Task, interval: float) -> None:
        self.task, self.interval = task, interval
        self.beats = 0
        self.lost = False
        self.cancel_requested = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.task.heartbeat(0.5, "synthesizing"):
                    self.cancel_requested = True
                self.beats += 1
            except ClaimLost:
                self.lost = True
                return
            except BatonError as e:  # sidecar briefly away: try again next interval
                log.warning("task %s: heartbeat failed: %s", self.task.id, e)

    def __enter__(self) -> "Keepalive":
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="heartbeat-" + self.task.id, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def run(client: Client, engine: Engine, queues: List[str], out_dir: str, wait: float = 2.0,
        max_tasks: int = 0, heartbeat: float = 30.0) -> Dict[str, int]:
    """The loop: one task at a time until client.stop() (or max_tasks).
    heartbeat: seconds between heartbeats during a synthesis (0: none)."""
    os.makedirs(out_dir, exist_ok=True)
    counts = {"completed": 0, "failed": 0, "lost": 0, "released": 0}
    for task in client.tasks(queues, wait=wait):
        with task:
            task.heartbeat(0.0, "synthesizing")
            with Keepalive(task, heartbeat) as ka:
                result = process(engine, task, out_dir, client.worker)
            if ka.lost:
                os.unlink(result["path"])
                raise ClaimLost("a heartbeat was refused during synthesis")
            if ka.cancel_requested:
                log.info("task %s: cancel was requested during synthesis", task.id)
            task.result = result
        outcome = task.outcome or "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "lost" and task.result:
            # Another worker owns the task now: this output is stale.
            try:
                os.unlink(task.result["path"])
            except OSError:
                pass
        log.info("task %s %s%s", task.id, outcome,
                 " -> %s" % task.result["path"] if outcome == "completed" and task.result else "")
        if max_tasks and sum(counts.values()) >= max_tasks:
            break
    return counts


def engine_from_args(a: argparse.Namespace) -> Engine:
    if a.engine == "offline":
        return OfflineEngine(voice=a.voice)
    if a.engine == "indextts2":
        return make_engine("indextts2", model_dir=a.model_dir or "checkpoints", cfg_path=a.cfg_path, use_fp16=a.fp16)
    return make_engine("glmtts", code_dir=a.model_dir or ".", sample_rate=a.sample_rate, use_phoneme=a.use_phoneme)


def main(argv: Optional[List[str]] = None, engine: Optional[Engine] = None) -> int:
    """The command line; engine, when given, replaces --engine (tests)."""
    p = argparse.ArgumentParser(prog="python -m tts_worker", description="A Baton text-to-speech worker.")
    p.add_argument("--engine", choices=["offline", "indextts2", "glmtts"], default=os.environ.get("TTS_ENGINE", "offline"))
    p.add_argument("--queue", action="append", default=None, help="queue to take tasks from (repeatable; default: the sidecar's)")
    p.add_argument("--out-dir", default=os.environ.get("TTS_OUT_DIR", "out"), help="where WAV files go (default: out)")
    p.add_argument("--socket", default=None, help="the sidecar's socket (default: $BATON_SOCKET)")
    p.add_argument("--name", default=None, help="worker name (default: hostname-pid)")
    p.add_argument("--wait", type=float, default=2.0, help="long-poll seconds; bounds how long an idle worker takes to stop")
    p.add_argument("--model-dir", default="", help="indextts2: checkpoints dir; glmtts: the GLM-TTS checkout")
    p.add_argument("--cfg-path", default="", help="indextts2: config.yaml (default MODEL_DIR/config.yaml)")
    p.add_argument("--fp16", action="store_true", help="indextts2: half precision")
    p.add_argument("--sample-rate", type=int, default=24000, help="glmtts: 24000 or 32000")
    p.add_argument("--use-phoneme", action="store_true", help="glmtts: phoneme input")
    p.add_argument("--voice", default="en", help="offline: espeak-ng voice")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats during a synthesis (0: none)")
    p.add_argument("--max-tasks", type=int, default=0, help="exit after this many tasks (0: run until SIGTERM)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s[%(process)d] %(message)s", stream=sys.stderr)
    # Spans leave the process only with a tracer provider: installed when
    # the OTEL_* variables ask for traces (see tracing.py).
    stop_tracing = tracing.setup()

    if engine is None:
        engine = engine_from_args(a)
    t0 = time.monotonic()
    engine.load()  # once per process, before the first claim
    kind = getattr(engine, "kind", engine.name)
    log.info("engine %s loaded in %.1fs", kind, time.monotonic() - t0)

    client = Client(a.socket, worker=a.name)
    interrupts = []

    def on_signal(signum: int, frame: Any) -> None:
        client.stop()
        interrupts.append(signum)
        if signum == signal.SIGINT and len([s for s in interrupts if s == signal.SIGINT]) > 1:
            raise KeyboardInterrupt
        log.info("signal %d: finishing the current task, then exiting", signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        counts = run(client, engine, a.queue or [], a.out_dir, a.wait, a.max_tasks, a.heartbeat)
    except KeyboardInterrupt:
        log.info("interrupted; the task in hand was released")
        return 130
    finally:
        client.close()
        if stop_tracing is not None:
            stop_tracing()  # flushes the spans still in the batch
    print(json.dumps({"worker": client.worker, **counts}), flush=True)
    return 0
