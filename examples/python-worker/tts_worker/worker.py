"""The worker process: load the engine once, then claim one task at a time
from the local sidecar, write its WAV as a fenced output and complete the
task.

Output: OUT_DIR/<task id>.<fencing token>.wav (or OUT_DIR/<output> when the
payload names one, as IndexTTS2 batch lines do), written under a temporary
name and moved into place only when Complete succeeds (Task.output), so a
lost attempt leaves nothing behind and two workers never overwrite each
other's file.

baton_client does the rest: heartbeats while the engine works (a third of
the task's timeout), the engine's progress in them, cancellation (the
engine's progress hook raises TaskCancelled at its next step), bad payloads
DEAD at once (PayloadError), a CUDA out-of-memory error gives the task back
without using an attempt and backs off. SIGTERM (and Ctrl-C once): finish
the task in hand, then exit; while idle, exit within --wait seconds. A
second Ctrl-C interrupts the task: it is released and the worker exits 130.
"""

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from baton_client import Client, Task

from . import tracing
from .engines import Engine, GLMTTSEngine, IndexTTS2Engine, OfflineEngine, PayloadError, is_out_of_memory, wav_info

log = logging.getLogger("tts_worker")

#: Backoff after a CUDA out-of-memory error: first and longest, seconds.
OOM_BACKOFF = (1.0, 30.0)


def output_path(out_dir: str, task: Task) -> str:
    """The file a task's WAV goes to: the payload's "output" (a relative
    path inside out_dir), else <id>.<fencing token>.wav."""
    name = task.payload.get("output")
    if name is None:
        return os.path.join(out_dir, "%s.%d.wav" % (task.id, task.fencing_token))
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in name.split("/") or not name.endswith(".wav"):
        raise PayloadError("payload.output: a relative .wav path inside the output directory is required, not %r" % (name,))
    return os.path.join(out_dir, name)


def process(engine: Engine, task: Task, out_dir: str, process_name: str) -> Dict[str, Any]:
    """Synthesize task into a fenced output (moved into place when the
    task's Complete succeeds); the result."""
    # One heartbeat before the heavy work: the status says "synthesizing",
    # and a cancel requested while the task waited stops it here.
    task.heartbeat(0.0, "synthesizing")
    task.checkpoint()
    final = output_path(out_dir, task)
    os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
    tmp = task.output(final)
    t0 = time.monotonic()

    def progress(fraction: float, message: str) -> None:
        task.progress(fraction, message)
        task.checkpoint()  # a cancel or a lost claim stops the engine at its next step

    # The inference, as its own span inside the task's (no-op without
    # OpenTelemetry): where a slow task's time went.
    with tracing.span("tts.synthesize", **{"tts.engine": engine.name}):
        syn = engine.synthesize(task.payload, tmp, progress)
    info = wav_info(tmp) or syn
    result: Dict[str, Any] = {
        "path": os.path.abspath(final),
        "duration_s": round(info.duration_s, 3),
        "sample_rate": info.sample_rate,
        "engine": engine.name,
        "process": process_name,
        "seconds": round(time.monotonic() - t0, 3),
    }
    if syn.note:
        result["note"] = syn.note
    return result


def run(client: Client, engine: Engine, queues: List[str], out_dir: str, wait: float = 2.0,
        max_tasks: int = 0, heartbeat: Optional[float] = None) -> Dict[str, int]:
    """The loop: one task at a time until client.stop() (or max_tasks).
    heartbeat: seconds between heartbeats during a synthesis; None: the
    client's default (a third of the task's timeout); 0: none."""
    os.makedirs(out_dir, exist_ok=True)
    counts = {"completed": 0, "failed": 0, "lost": 0, "released": 0, "cancelled": 0}
    backoff = 0.0
    pause = threading.Event()  # never set: waits out the OOM backoff
    for task in client.tasks(queues, wait=wait):
        oom = False
        if heartbeat is not None:
            task.heartbeat_interval = heartbeat
        with task:
            try:
                task.result = process(engine, task, out_dir, client.process)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                # The GPU is full, the input is fine: give the task back
                # (no attempt used), free the cache, back off.
                oom = True
                log.warning("task %s: CUDA out of memory; released, backing off: %s", task.id, e)
                engine.free_memory()
                task.release()
        outcome = task.outcome or "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
        if oom:
            backoff = min(max(backoff * 2, OOM_BACKOFF[0]), OOM_BACKOFF[1])
            pause.wait(backoff)
        else:
            backoff = 0.0
        log.info("task %s %s%s", task.id, outcome,
                 " -> %s" % task.result["path"] if outcome == "completed" and task.result else "")
        if max_tasks and sum(counts.values()) >= max_tasks:
            break
    return counts


def engine_from_args(a: argparse.Namespace) -> Engine:
    if a.engine == "offline":
        return OfflineEngine(voice=a.voice)
    if a.engine == "indextts2":
        return IndexTTS2Engine(model_dir=a.model_dir or "checkpoints", cfg_path=a.cfg_path, use_fp16=a.fp16,
                               device=a.device, use_cuda_kernel=a.cuda_kernel, use_deepspeed=a.deepspeed,
                               use_accel=a.accel, use_torch_compile=a.torch_compile)
    return GLMTTSEngine(code_dir=a.model_dir or ".", sample_rate=a.sample_rate, use_phoneme=a.use_phoneme,
                        seed=a.seed, sample_method=a.sample_method, device=a.device)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="baton-tts-worker", description="A Baton text-to-speech worker.")
    p.add_argument("--engine", choices=["offline", "indextts2", "glmtts"], default=os.environ.get("TTS_ENGINE", "offline"),
                   help="default: offline (or $TTS_ENGINE)")
    p.add_argument("--queue", action="append", default=None, help="queue to take tasks from (repeatable; default: the sidecar's)")
    p.add_argument("--out-dir", default=os.environ.get("TTS_OUT_DIR", "out"), help="where WAV files go (default: out, or $TTS_OUT_DIR)")
    p.add_argument("--socket", default=None, help="the sidecar's socket (default: $BATON_SOCKET)")
    p.add_argument("--name", default=None, help="name of this process, shown as process by baton workers list and baton locks list (default: hostname-pid)")
    p.add_argument("--wait", type=float, default=2.0, help="long-poll seconds; bounds how long an idle worker takes to stop (default 2)")
    p.add_argument("--model-dir", default="", help="indextts2: checkpoints dir (default checkpoints); glmtts: the GLM-TTS checkout (default .)")
    p.add_argument("--device", default=None, help="indextts2, glmtts: torch device, e.g. cuda:1 or cpu (default: the engine's choice)")
    p.add_argument("--cfg-path", default="", help="indextts2: config.yaml (default MODEL_DIR/config.yaml)")
    p.add_argument("--fp16", action="store_true", help="indextts2: half precision")
    p.add_argument("--cuda-kernel", action=argparse.BooleanOptionalAction, default=None,
                   help="indextts2: BigVGAN's fused CUDA kernel (default: on for CUDA)")
    p.add_argument("--deepspeed", action="store_true", help="indextts2: DeepSpeed inference")
    p.add_argument("--accel", action="store_true", help="indextts2: its accel engine (use_accel)")
    p.add_argument("--torch-compile", action="store_true", help="indextts2: torch.compile the s2mel model")
    p.add_argument("--sample-rate", type=int, default=24000, help="glmtts: 24000 or 32000 (default 24000)")
    p.add_argument("--use-phoneme", action="store_true", help="glmtts: phoneme input")
    p.add_argument("--seed", type=int, default=0, help="glmtts: seed when the payload gives none (default 0)")
    p.add_argument("--sample-method", default="ras", help="glmtts: sampling method when the payload gives none (default ras)")
    p.add_argument("--voice", default="en", help="offline: espeak-ng voice (default en)")
    p.add_argument("--heartbeat", type=float, default=None,
                   help="seconds between heartbeats during a synthesis (default: a third of the task's timeout; 0: none)")
    p.add_argument("--max-tasks", type=int, default=0, help="exit after this many tasks (default 0: run until SIGTERM)")
    return p


def main(argv: Optional[List[str]] = None, engine: Optional[Engine] = None) -> int:
    """The command line (baton-tts-worker, python -m tts_worker); engine,
    when given, replaces --engine (tests)."""
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s[%(process)d] %(message)s", stream=sys.stderr)
    # Paths are made absolute before the engine loads: GLM-TTS's load runs
    # in its checkout's directory.
    sock = a.socket or os.environ.get("BATON_SOCKET", "")
    if not sock:
        print("baton-tts-worker: --socket: no socket given and BATON_SOCKET is not set", file=sys.stderr)
        return 2
    out_dir = os.path.abspath(a.out_dir)
    client = Client(os.path.abspath(sock), process=a.name)
    # Spans leave the process only with a tracer provider: installed when
    # the OTEL_* variables ask for traces (see tracing.py).
    stop_tracing = tracing.setup()
    try:
        if engine is None:
            engine = engine_from_args(a)
        t0 = time.monotonic()
        engine.load()  # once per process, before the first claim
        kind = getattr(engine, "kind", engine.name)
        log.info("engine %s loaded in %.1fs", kind, time.monotonic() - t0)
        counts = run(client, engine, a.queue or [], out_dir, a.wait, a.max_tasks, a.heartbeat)
    except KeyboardInterrupt:
        log.info("interrupted; the task in hand was released")
        return 130
    finally:
        client.close()
        if stop_tracing is not None:
            stop_tracing()  # flushes the spans still in the batch
    print(json.dumps({"process": client.process, **counts}), flush=True)
    return 0
