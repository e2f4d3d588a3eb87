"""Engine adapters behind one small interface.

An engine is loaded once per process (load()) and then turns one task
payload into one WAV file (synthesize()). Engines are not thread-safe; the
worker runs one task at a time. Heavy libraries (torch, indextts, GLM-TTS)
are imported in load(), never at module import, so the worker and its tests
start without them. A payload an engine cannot use raises PayloadError (a
PermanentError: the task is DEAD at once, with the field named).
"""

import math
import os
import shutil
import struct
import subprocess
import sys
import wave
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from baton_client import PermanentError


@dataclass
class Synthesis:
    """What an engine reports about the file it wrote."""

    sample_rate: int
    duration_s: float
    note: str = ""


#: Called by an engine with its progress (0 to 1) and a short message; the
#: worker feeds it into the task's heartbeats.
Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


class PayloadError(PermanentError, ValueError):
    """A payload no retry can fix (a missing or unknown field): the task is
    DEAD at once with this message, which names the field."""


#: Fields any engine accepts: the task id fields `baton submit` reads.
ID_FIELDS = ("id", "uttid")


class Engine:
    """The interface: a name, load() once, synthesize(payload, path) per task.

    FIELDS lists the payload fields the engine reads; any other field is a
    PayloadError naming it (a typo must not be dropped silently)."""

    name = "engine"
    FIELDS: Tuple[str, ...] = ()

    def load(self) -> None:
        """Load the model. Called once, before the first task."""

    def synthesize(self, payload: Dict[str, Any], output_path: str, progress: Progress = _no_progress) -> Synthesis:
        """Write a WAV file for payload at output_path."""
        raise NotImplementedError

    def check_fields(self, payload: Dict[str, Any]) -> None:
        unknown = sorted(set(payload) - set(self.FIELDS) - set(ID_FIELDS))
        if unknown:
            raise PayloadError("payload.%s: unknown field for the %s engine (it reads %s)"
                               % (unknown[0], self.name, ", ".join(self.FIELDS)))

    def free_memory(self) -> None:
        """Release cached GPU memory after an out-of-memory error."""
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available():
            cuda.empty_cache()


def is_out_of_memory(e: BaseException) -> bool:
    """A CUDA out-of-memory error (torch.cuda.OutOfMemoryError, or a
    RuntimeError saying so): the GPU is busy, not the input bad."""
    return type(e).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(e)


def text_of(payload: Dict[str, Any]) -> str:
    """The text to speak: GLM-TTS's syn_text, else text."""
    t = payload.get("syn_text", payload.get("text"))
    if not isinstance(t, str) or not t.strip():
        raise PayloadError("payload.syn_text: a non-empty string is required (or payload.text)")
    return t


def _string(payload: Dict[str, Any], field: str, required: bool = False) -> Optional[str]:
    v = payload.get(field)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise PayloadError("payload.%s: a non-empty string is required" % field)
    return v


def _number(payload: Dict[str, Any], field: str, kind: type = float) -> Any:
    v = payload[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)):
        raise PayloadError("payload.%s: a%s number is required, not %r" % (field, "n integer" if kind is int else "", v))
    return kind(v)


def wav_info(path: str) -> Optional[Synthesis]:
    """Sample rate and duration from a PCM WAV header; None if not PCM WAV."""
    try:
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            return Synthesis(rate, w.getnframes() / float(rate) if rate else 0.0)
    except (wave.Error, EOFError, OSError):
        return None


class IndexTTS2Engine(Engine):
    """IndexTTS2 (github.com/index-tts/index-tts, ``indextts/infer_v2.py``):
    ``IndexTTS2(cfg_path, model_dir, use_fp16, device, use_cuda_kernel,
    use_deepspeed, use_accel, use_torch_compile)`` and ``.infer(
    spk_audio_prompt, text, output_path, emo_audio_prompt, emo_alpha,
    emo_vector, use_emo_text, emo_text, use_random, interval_silence,
    max_text_tokens_per_segment, **generation_kwargs)``.

    Payload: the text (``text`` or GLM-TTS's ``syn_text``), the voice prompt
    WAV (``voice``, upstream's batch field, or ``spk_audio_prompt`` or
    ``prompt_speech``); emotion from ``emotion_audio``/``emo_audio_prompt``,
    ``emotion_weight``/``emo_alpha``, ``emotion_vector``/``emo_vector`` (8
    numbers), ``emotion_text``/``emo_text`` (sets use_emo_text), ``use_emo_text``,
    ``use_random``; ``interval_silence`` (ms), ``max_text_tokens_per_segment``;
    generation settings ``temperature``, ``top_p``, ``top_k``, ``num_beams``,
    ``repetition_penalty``, ``max_mel_tokens``, ``length_penalty``,
    ``do_sample``. ``output`` (upstream's) is read by the worker (the file
    name). factory replaces the IndexTTS2 class (tests pass a fake).
    """

    name = "indextts2"
    # upstream batch field -> infer() argument
    ALIASES = {"emotion_audio": "emo_audio_prompt", "emotion_weight": "emo_alpha", "emotion_vector": "emo_vector",
               "emotion_text": "emo_text"}
    INFER = ("emo_audio_prompt", "emo_alpha", "emo_vector", "use_emo_text", "emo_text", "use_random",
             "interval_silence", "max_text_tokens_per_segment")
    GENERATION = ("temperature", "top_p", "top_k", "num_beams", "repetition_penalty", "max_mel_tokens",
                  "length_penalty", "do_sample")
    INTS = ("interval_silence", "max_text_tokens_per_segment", "top_k", "num_beams", "max_mel_tokens")
    BOOLS = ("use_emo_text", "use_random", "do_sample")
    FIELDS = ("text", "syn_text", "voice", "spk_audio_prompt", "prompt_speech", "prompt_text", "output") + \
        tuple(ALIASES) + INFER + GENERATION

    def __init__(self, model_dir: str = "checkpoints", cfg_path: str = "", use_fp16: bool = False,
                 device: Optional[str] = None, use_cuda_kernel: Optional[bool] = None, use_deepspeed: bool = False,
                 use_accel: bool = False, use_torch_compile: bool = False,
                 factory: Optional[Callable[..., Any]] = None) -> None:
        self.model_dir = model_dir
        self.cfg_path = cfg_path or os.path.join(model_dir, "config.yaml")
        self.options: Dict[str, Any] = {"use_fp16": use_fp16, "device": device, "use_cuda_kernel": use_cuda_kernel,
                                        "use_deepspeed": use_deepspeed, "use_accel": use_accel,
                                        "use_torch_compile": use_torch_compile}
        self._factory = factory
        self.model: Any = None

    def load(self) -> None:
        factory = self._factory
        if factory is None:
            from indextts.infer_v2 import IndexTTS2  # type: ignore[import-not-found]  # heavy: imported here only

            factory = IndexTTS2
        self.model = factory(cfg_path=self.cfg_path, model_dir=self.model_dir, **self.options)

    def arguments(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """infer()'s keyword arguments for payload (bad fields named)."""
        self.check_fields(payload)
        p = dict(payload)
        for upstream, ours in self.ALIASES.items():
            if upstream in p:
                if ours in p:
                    raise PayloadError("payload.%s: give it or payload.%s, not both" % (upstream, ours))
                p[ours] = p.pop(upstream)
        voice = p.get("voice", p.get("spk_audio_prompt", p.get("prompt_speech")))
        if not isinstance(voice, str) or not voice:
            raise PayloadError("payload.voice: the voice prompt WAV path is required (or payload.spk_audio_prompt, payload.prompt_speech)")
        kw: Dict[str, Any] = {"spk_audio_prompt": voice, "text": text_of(p)}
        if "emo_text" in p and "use_emo_text" not in p:
            p["use_emo_text"] = True
        for f in self.INFER + self.GENERATION:
            if f not in p:
                continue
            v = p[f]
            if f in self.BOOLS:
                if not isinstance(v, bool):
                    raise PayloadError("payload.%s: true or false, not %r" % (f, v))
            elif f == "emo_audio_prompt" or f == "emo_text":
                v = _string(p, f, True)
            elif f == "emo_vector":
                if not isinstance(v, list) or len(v) != 8 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                    raise PayloadError("payload.emotion_vector: 8 numbers are required "
                                       "(happy, angry, sad, afraid, disgusted, melancholic, surprised, calm)")
            else:
                v = _number(p, f, int if f in self.INTS else float)
            kw[f] = v
        return kw

    def synthesize(self, payload: Dict[str, Any], output_path: str, progress: Progress = _no_progress) -> Synthesis:
        kw = self.arguments(payload)
        # Upstream reports progress through its gr_progress attribute.
        self.model.gr_progress = lambda value, desc=None: progress(float(value), str(desc or ""))
        try:
            self.model.infer(output_path=output_path, **kw)
        finally:
            self.model.gr_progress = None
        info = wav_info(output_path)
        if info is None:
            raise RuntimeError("indextts2 wrote no PCM WAV at %s" % output_path)
        return info


class GLMTTSEngine(Engine):
    """GLM-TTS (github.com/zai-org/GLM-TTS): its ``glmtts_inference`` module's
    load_models(use_phoneme, sample_rate) and generate_long(frontend,
    text_frontend, llm, flow, text_info, cache, device, embedding, seed,
    sample_method, flow_prompt_token, speech_feat, ..., use_phoneme), fed
    one batch line at a time: ``uttid``, ``prompt_text``, ``prompt_speech``
    (WAV path), ``syn_text``; per task ``seed`` (int) and ``sample_method``
    (upstream's "ras" by default) override the worker's.

    code_dir is the GLM-TTS checkout: load_models() reads ckpt/ and
    frontend/ relative to the working directory, so load() changes into it
    for the load only and changes back. device ("cuda:1", "cpu") replaces
    the module's DEVICE before loading. module replaces the imported
    glmtts_inference (tests pass a fake exposing load_models,
    generate_long, DEVICE, torch and torchaudio, as the real module does).
    """

    name = "glmtts"
    FIELDS = ("uttid", "prompt_text", "prompt_speech", "syn_text", "seed", "sample_method")

    def __init__(self, code_dir: str = ".", sample_rate: int = 24000, use_phoneme: bool = False,
                 use_cache: bool = True, seed: int = 0, sample_method: str = "ras", device: Optional[str] = None,
                 module: Any = None) -> None:
        self.code_dir = code_dir
        self.sample_rate = sample_rate
        self.use_phoneme = use_phoneme
        self.use_cache = use_cache
        self.seed = seed
        self.sample_method = sample_method
        self.device = device
        self.m = module
        self.frontend: Any = None
        self.text_frontend: Any = None
        self.llm: Any = None
        self.flow: Any = None

    def load(self) -> None:
        code_dir = os.path.abspath(self.code_dir)
        cwd = os.getcwd()
        os.chdir(code_dir)  # GLM-TTS loads ckpt/ and frontend/ relative to its checkout
        try:
            if self.m is None:
                sys.path.insert(0, code_dir)
                import glmtts_inference  # type: ignore[import-not-found]  # heavy: imported here only

                self.m = glmtts_inference
            if self.device:
                self.m.DEVICE = self.m.torch.device(self.device)
            self.frontend, self.text_frontend, _, self.llm, self.flow = self.m.load_models(
                use_phoneme=self.use_phoneme, sample_rate=self.sample_rate)
        finally:
            os.chdir(cwd)

    def synthesize(self, payload: Dict[str, Any], output_path: str, progress: Progress = _no_progress) -> Synthesis:
        self.check_fields(payload)
        for f in ("uttid", "prompt_text", "prompt_speech", "syn_text"):
            if not isinstance(payload.get(f), str) or not payload[f]:
                raise PayloadError("payload.%s: a non-empty string is required (GLM-TTS batch line)" % f)
        seed = _number(payload, "seed", int) if "seed" in payload else self.seed
        method = _string(payload, "sample_method") or self.sample_method
        m, fe, tf = self.m, self.frontend, self.text_frontend
        progress(0.05, "prompt features")
        prompt_text = tf.text_normalize(payload["prompt_text"])
        syn_text = tf.text_normalize(payload["syn_text"])
        speech = payload["prompt_speech"]
        prompt_text_token = fe._extract_text_token(prompt_text + " ")
        prompt_speech_token = fe._extract_speech_token([speech])
        speech_feat = fe._extract_speech_feat(speech, sample_rate=self.sample_rate)
        embedding = fe._extract_spk_embedding(speech)
        cache_speech_token = [prompt_speech_token.squeeze().tolist()]
        flow_prompt_token = m.torch.tensor(cache_speech_token, dtype=m.torch.int32).to(m.DEVICE)
        cache = {"cache_text": [prompt_text], "cache_text_token": [prompt_text_token],
                 "cache_speech_token": cache_speech_token, "use_cache": self.use_cache}
        progress(0.2, "generating")
        tts_speech, _, _, _ = m.generate_long(
            frontend=fe, text_frontend=tf, llm=self.llm, flow=self.flow,
            text_info=[payload["uttid"], syn_text], cache=cache, embedding=embedding, seed=seed,
            sample_method=method, flow_prompt_token=flow_prompt_token, speech_feat=speech_feat, device=m.DEVICE,
            use_phoneme=self.use_phoneme)
        m.torchaudio.save(output_path, tts_speech, self.sample_rate)
        info = wav_info(output_path)
        if info is None:  # e.g. a float WAV: trust the tensor's length
            return Synthesis(self.sample_rate, tts_speech.shape[-1] / float(self.sample_rate))
        return info


class OfflineEngine(Engine):
    """Needs nothing installed: espeak-ng when it is on PATH (real speech,
    22.05 kHz), otherwise a synthetic tone, clearly labelled as such in the
    result ("note") and the worker's log, one short beep per word."""

    name = "offline"
    # GLM-TTS batch lines (sample.jsonl) run on it too; the prompt is unused.
    FIELDS = ("syn_text", "text", "voice", "prompt_text", "prompt_speech")

    def __init__(self, espeak: Optional[str] = None, voice: str = "en") -> None:
        self.espeak = espeak if espeak is not None else (shutil.which("espeak-ng") or "")
        self.voice = voice

    @property
    def kind(self) -> str:
        return "espeak-ng" if self.espeak else "synthetic tone (espeak-ng not found; this is not speech)"

    def synthesize(self, payload: Dict[str, Any], output_path: str, progress: Progress = _no_progress) -> Synthesis:
        self.check_fields(payload)
        text = text_of(payload)
        if self.espeak:
            voice = payload.get("voice", self.voice)
            subprocess.run([self.espeak, "-v", str(voice), "-w", output_path, "--", text],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            info = wav_info(output_path)
            if info is None:
                raise RuntimeError("espeak-ng wrote no WAV at %s" % output_path)
            info.note = "espeak-ng"
            return info
        return tone(text, output_path)


def tone(text: str, output_path: str, rate: int = 16000) -> Synthesis:
    """A synthetic tone WAV: a 0.25 s beep and 0.1 s gap per word (mono,
    16-bit), pitch varying with the word. Labelled: it is not speech."""
    frames = bytearray()
    for word in text.split()[:200] or ["."]:
        freq = 300.0 + (sum(map(ord, word)) % 400)
        for i in range(int(rate * 0.25)):
            env = min(1.0, i / 200.0, (rate * 0.25 - i) / 200.0)
            frames += struct.pack("<h", int(12000 * env * math.sin(2 * math.pi * freq * i / rate)))
        frames += b"\x00\x00" * int(rate * 0.1)
    with wave.open(output_path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return Synthesis(rate, len(frames) / 2.0 / rate, "synthetic tone, not speech (espeak-ng not found)")


def make_engine(name: str, **opts: Any) -> Engine:
    """The engine called name ("offline", "indextts2", "glmtts")."""
    if name == "offline":
        return OfflineEngine(**opts)
    if name == "indextts2":
        return IndexTTS2Engine(**opts)
    if name == "glmtts":
        return GLMTTSEngine(**opts)
    raise ValueError("--engine: unknown engine %r (offline, indextts2, glmtts)" % name)
