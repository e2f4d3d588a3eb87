"""Engine adapters behind one small interface.

An engine is loaded once per process (load()) and then turns one task
payload into one WAV file (synthesize()). Engines are not thread-safe; the
worker runs one task at a time. Heavy libraries (torch, indextts, GLM-TTS)
are imported in load(), never at module import, so the worker and its tests
start without them.
"""

import math
import os
import shutil
import struct
import subprocess
import sys
import wave
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional


@dataclass
class Synthesis:
    """What an engine reports about the file it wrote."""

    sample_rate: int
    duration_s: float
    note: str = ""


class Engine:
    """The interface: a name, load() once, synthesize(payload, path) per task."""

    name = "engine"

    def load(self) -> None:
        """Load the model. Called once, before the first task."""

    def synthesize(self, payload: Dict[str, Any], output_path: str) -> Synthesis:
        """Write a WAV file for payload at output_path."""
        raise NotImplementedError


def text_of(payload: Dict[str, Any]) -> str:
    """The text to speak: GLM-TTS's syn_text, else text."""
    t = payload.get("syn_text", payload.get("text"))
    if not isinstance(t, str) or not t.strip():
        raise ValueError("payload.syn_text: a non-empty string is required (or payload.text)")
    return t


def wav_info(path: str) -> Optional[Synthesis]:
    """Sample rate and duration from a PCM WAV header; None if not PCM WAV."""
    try:
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            return Synthesis(rate, w.getnframes() / float(rate) if rate else 0.0)
    except (wave.Error, EOFError, OSError):
        return None


class IndexTTS2Engine(Engine):
    """IndexTTS2: ``indextts.infer_v2.IndexTTS2(cfg_path, model_dir, ...)``
    and ``.infer(spk_audio_prompt=..., text=..., output_path=...)``.

    Payload: text or syn_text; spk_audio_prompt or prompt_speech (the voice
    prompt WAV); optional emo_audio_prompt, emo_alpha, emo_vector,
    use_emo_text, emo_text are passed through. factory replaces the
    IndexTTS2 class (tests pass a fake).
    """

    name = "indextts2"
    PASSTHROUGH = ("emo_audio_prompt", "emo_alpha", "emo_vector", "use_emo_text", "emo_text", "use_random")

    def __init__(self, model_dir: str = "checkpoints", cfg_path: str = "", use_fp16: bool = False,
                 factory: Optional[Callable[..., Any]] = None) -> None:
        self.model_dir = model_dir
        self.cfg_path = cfg_path or os.path.join(model_dir, "config.yaml")
        self.use_fp16 = use_fp16
        self._factory = factory
        self.model: Any = None

    def load(self) -> None:
        factory = self._factory
        if factory is None:
            from indextts.infer_v2 import IndexTTS2  # type: ignore[import-not-found]  # heavy: imported here only

            factory = IndexTTS2
        self.model = factory(cfg_path=self.cfg_path, model_dir=self.model_dir, use_fp16=self.use_fp16)

    def synthesize(self, payload: Dict[str, Any], output_path: str) -> Synthesis:
        prompt = payload.get("spk_audio_prompt", payload.get("prompt_speech"))
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("payload.prompt_speech: the voice prompt WAV path is required (or payload.spk_audio_prompt)")
        kw = {k: payload[k] for k in self.PASSTHROUGH if k in payload}
        self.model.infer(spk_audio_prompt=prompt, text=text_of(payload), output_path=output_path, **kw)
        info = wav_info(output_path)
        if info is None:
            raise RuntimeError("indextts2 wrote no PCM WAV at %s" % output_path)
        return info


class GLMTTSEngine(Engine):
    """GLM-TTS (github.com/zai-org/GLM-TTS): its ``glmtts_inference`` module's
    load_models() and generate_long(), fed one batch line at a time:
    ``uttid``, ``prompt_text``, ``prompt_speech`` (WAV path), ``syn_text``.

    code_dir is the GLM-TTS checkout (its scripts use paths relative to it:
    ckpt/, frontend/). module replaces the imported glmtts_inference (tests
    pass a fake exposing load_models, generate_long, DEVICE, torch and
    torchaudio, as the real module does).
    """

    name = "glmtts"

    def __init__(self, code_dir: str = ".", sample_rate: int = 24000, use_phoneme: bool = False,
                 use_cache: bool = True, seed: int = 0, module: Any = None) -> None:
        self.code_dir = code_dir
        self.sample_rate = sample_rate
        self.use_phoneme = use_phoneme
        self.use_cache = use_cache
        self.seed = seed
        self.m = module
        self.frontend: Any = None
        self.text_frontend: Any = None
        self.llm: Any = None
        self.flow: Any = None

    def load(self) -> None:
        if self.m is None:
            code_dir = os.path.abspath(self.code_dir)
            sys.path.insert(0, code_dir)
            os.chdir(code_dir)  # GLM-TTS loads ckpt/ and frontend/ relative to its checkout
            import glmtts_inference  # type: ignore[import-not-found]  # heavy: imported here only

            self.m = glmtts_inference
        self.frontend, self.text_frontend, _, self.llm, self.flow = self.m.load_models(
            use_phoneme=self.use_phoneme, sample_rate=self.sample_rate)

    def synthesize(self, payload: Dict[str, Any], output_path: str) -> Synthesis:
        for f in ("uttid", "prompt_text", "prompt_speech", "syn_text"):
            if not isinstance(payload.get(f), str) or not payload[f]:
                raise ValueError("payload.%s: a non-empty string is required (GLM-TTS batch line)" % f)
        m, fe, tf = self.m, self.frontend, self.text_frontend
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
        tts_speech, _, _, _ = m.generate_long(
            frontend=fe, text_frontend=tf, llm=self.llm, flow=self.flow,
            text_info=[payload["uttid"], syn_text], cache=cache, embedding=embedding, seed=self.seed,
            flow_prompt_token=flow_prompt_token, speech_feat=speech_feat, device=m.DEVICE,
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

    def __init__(self, espeak: Optional[str] = None, voice: str = "en") -> None:
        self.espeak = espeak if espeak is not None else (shutil.which("espeak-ng") or "")
        self.voice = voice

    @property
    def kind(self) -> str:
        return "espeak-ng" if self.espeak else "synthetic tone (espeak-ng not found; this is not speech)"

    def synthesize(self, payload: Dict[str, Any], output_path: str) -> Synthesis:
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
