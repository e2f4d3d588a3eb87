"""The engines through their one interface; heavy ones with fake models."""

import os
import shutil
import sys
import wave

import pytest

from tts_worker.engines import GLMTTSEngine, OfflineEngine, PayloadError, is_out_of_memory, make_engine, tone


def write_wav(path, rate, frames):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * frames)


class FakeIndexTTS2:
    """Stands in for indextts.infer_v2.IndexTTS2, with upstream's signatures
    (index-tts/index-tts, indextts/infer_v2.py): a renamed or unknown
    argument fails here as it would there."""

    instances = []
    # The generation settings infer_generator pops from **generation_kwargs.
    GENERATION = {"do_sample", "top_p", "top_k", "temperature", "length_penalty", "num_beams",
                  "repetition_penalty", "max_mel_tokens"}

    def __init__(self, cfg_path="checkpoints/config.yaml", model_dir="checkpoints", use_fp16=False, device=None,
                 use_cuda_kernel=None, use_deepspeed=False, use_accel=False, use_torch_compile=False):
        self.init = dict(cfg_path=cfg_path, model_dir=model_dir, use_fp16=use_fp16, device=device,
                         use_cuda_kernel=use_cuda_kernel, use_deepspeed=use_deepspeed, use_accel=use_accel,
                         use_torch_compile=use_torch_compile)
        self.calls = []
        self.gr_progress = None
        FakeIndexTTS2.instances.append(self)

    def infer(self, spk_audio_prompt, text, output_path,
              emo_audio_prompt=None, emo_alpha=1.0,
              emo_vector=None,
              use_emo_text=False, emo_text=None, use_random=False, interval_silence=200,
              verbose=False, max_text_tokens_per_segment=120, stream_return=False,
              more_segment_before=0, return_segments=False, **generation_kwargs):
        unknown = set(generation_kwargs) - self.GENERATION
        if unknown:
            raise TypeError("generate() got unexpected keyword arguments %s" % sorted(unknown))
        self.calls.append(dict(spk_audio_prompt=spk_audio_prompt, text=text, emo_audio_prompt=emo_audio_prompt,
                               emo_alpha=emo_alpha, emo_vector=emo_vector, use_emo_text=use_emo_text,
                               emo_text=emo_text, interval_silence=interval_silence,
                               max_text_tokens_per_segment=max_text_tokens_per_segment, **generation_kwargs))
        for i, desc in enumerate(("starting inference...", "text processing...", "speech synthesis 1/1...")):
            if self.gr_progress is not None:  # upstream's _set_gr_progress
                self.gr_progress(0.1 * i, desc=desc)
        write_wav(output_path, 22050, 22050 // 2)
        return output_path


def test_indextts2_adapter(tmp_path):
    FakeIndexTTS2.instances.clear()
    e = make_engine("indextts2", model_dir="ckpts", device="cuda:1", use_torch_compile=True, factory=FakeIndexTTS2)
    assert e.model is None and "indextts" not in sys.modules  # lazy
    e.load()
    seen = []
    for i in range(2):
        out = str(tmp_path / ("o%d.wav" % i))
        syn = e.synthesize({"uttid": "u", "prompt_speech": "voice.wav", "syn_text": "hi %d" % i, "emo_alpha": 0.6}, out,
                           lambda f, m: seen.append((f, m)))
        assert (syn.sample_rate, syn.duration_s) == (22050, 0.5)
    assert len(FakeIndexTTS2.instances) == 1  # model loaded once
    m = FakeIndexTTS2.instances[0]
    assert m.init == dict(cfg_path=os.path.join("ckpts", "config.yaml"), model_dir="ckpts", use_fp16=False,
                          device="cuda:1", use_cuda_kernel=None, use_deepspeed=False, use_accel=False,
                          use_torch_compile=True)
    assert [(c["spk_audio_prompt"], c["text"], c["emo_alpha"]) for c in m.calls] == [("voice.wav", "hi 0", 0.6), ("voice.wav", "hi 1", 0.6)]
    assert seen[:3] == [(0.0, "starting inference..."), (0.1, "text processing..."), (0.2, "speech synthesis 1/1...")]
    assert m.gr_progress is None  # the hook is the task's only while it runs
    with pytest.raises(PayloadError, match="payload.voice"):
        e.synthesize({"syn_text": "x"}, str(tmp_path / "x.wav"))


def test_indextts2_upstream_batch_fields(tmp_path):
    FakeIndexTTS2.instances.clear()
    e = make_engine("indextts2", factory=FakeIndexTTS2)
    e.load()
    line = {"text": "Hi.", "voice": "spk.wav", "emotion_audio": "sad.wav", "emotion_weight": 0.7,
            "emotion_vector": [0, 0, 0.8, 0, 0, 0, 0, 0], "emotion_text": "so sad", "output": "hi.wav",
            "interval_silence": 300, "max_text_tokens_per_segment": 80, "temperature": 0.7, "top_p": 0.9,
            "top_k": 20, "num_beams": 1, "repetition_penalty": 8.0, "max_mel_tokens": 1000}
    e.synthesize(line, str(tmp_path / "o.wav"))
    call = FakeIndexTTS2.instances[0].calls[0]
    assert call == dict(spk_audio_prompt="spk.wav", text="Hi.", emo_audio_prompt="sad.wav", emo_alpha=0.7,
                        emo_vector=[0, 0, 0.8, 0, 0, 0, 0, 0], use_emo_text=True, emo_text="so sad",
                        interval_silence=300, max_text_tokens_per_segment=80, temperature=0.7, top_p=0.9,
                        top_k=20, num_beams=1, repetition_penalty=8.0, max_mel_tokens=1000)
    for bad, match in [({"text": "x", "voice": "v.wav", "emotion_wieght": 1}, "payload.emotion_wieght: unknown field"),
                       ({"text": "x", "voice": "v.wav", "top_k": 2.5}, "payload.top_k: an integer"),
                       ({"text": "x", "voice": "v.wav", "emotion_vector": [1, 2]}, "payload.emotion_vector: 8 numbers"),
                       ({"text": "x", "voice": "v.wav", "emotion_weight": 1, "emo_alpha": 1}, "payload.emotion_weight: give it or")]:
        with pytest.raises(PayloadError, match=match):
            e.synthesize(bad, str(tmp_path / "x.wav"))


def test_indextts2_fake_has_upstreams_signature():
    # The fake is what the adapter is checked against: a renamed argument
    # fails, as upstream would.
    with pytest.raises(TypeError):
        FakeIndexTTS2(cfg_path="c", model_dir="m", use_half=True)
    with pytest.raises(TypeError):
        FakeIndexTTS2().infer(spk_audio_prompt="v", text="t", output_path="o", emotion_alpha=1)


class FakeTensor:
    def __init__(self, data, n=0):
        self.data, self.shape = data, (1, n)

    def to(self, device):
        return self

    def squeeze(self):
        return self

    def tolist(self):
        return list(self.data)


class FakeGLMModule:
    """Stands in for GLM-TTS's glmtts_inference module, with upstream's
    signatures (zai-org/GLM-TTS, glmtts_inference.py)."""

    DEVICE = "cpu"

    def __init__(self, checkout=None):
        self.loads = []
        self.generated = []
        self.checkout = checkout

        class Torch:
            int32 = "int32"

            @staticmethod
            def tensor(data, dtype=None):
                return FakeTensor(data)

            @staticmethod
            def device(name):
                return "device(%s)" % name

        class Torchaudio:
            @staticmethod
            def save(path, speech, rate):
                write_wav(path, rate, speech.shape[1])

        class Frontend:
            def _extract_text_token(self, t):
                return FakeTensor([len(t)])

            def _extract_speech_token(self, paths):
                return FakeTensor([7, 8, 9])

            def _extract_speech_feat(self, path, sample_rate):
                return ("feat", path, sample_rate)

            def _extract_spk_embedding(self, path):
                return ("emb", path)

        class TextFrontend:
            def text_normalize(self, t):
                return t.strip().lower()

        self.torch, self.torchaudio = Torch, Torchaudio
        self.fe, self.tf = Frontend(), TextFrontend()

    def load_models(self, use_phoneme=False, sample_rate=24000):
        # Upstream opens ckpt/ and frontend/ relative to the working directory.
        if self.checkout is not None:
            assert os.getcwd() == self.checkout, os.getcwd()
        self.loads.append((use_phoneme, sample_rate, self.DEVICE))
        return self.fe, self.tf, "speech_tokenizer", "llm", "flow"

    def generate_long(self, frontend, text_frontend, llm, flow, text_info, cache, device, embedding, seed=0,
                      sample_method="ras", flow_prompt_token=None, speech_feat=None, local_llm_forward=None,
                      local_flow_forward=None, use_phoneme=False):
        self.generated.append(dict(llm=llm, flow=flow, text_info=text_info, cache=cache, device=device,
                                   embedding=embedding, seed=seed, sample_method=sample_method,
                                   speech_feat=speech_feat, use_phoneme=use_phoneme))
        return FakeTensor([], n=24000 * 2), None, [], {}


def test_glmtts_adapter(tmp_path):
    checkout = str(tmp_path / "GLM-TTS")
    os.makedirs(checkout)
    cwd = os.getcwd()
    m = FakeGLMModule(checkout)
    e = GLMTTSEngine(code_dir=checkout, module=m, sample_rate=24000, seed=3, device="cuda:1")
    e.load()
    assert os.getcwd() == cwd  # back where it was: relative paths keep working
    line = {"uttid": "u1", "prompt_text": "Prompt.", "prompt_speech": "p.wav", "syn_text": " Hello World "}
    syn = e.synthesize(line, str(tmp_path / "u1.wav"))
    assert (syn.sample_rate, syn.duration_s) == (24000, 2.0)
    assert m.loads == [(False, 24000, "device(cuda:1)")]
    kw = m.generated[0]
    assert kw["text_info"] == ["u1", "hello world"] and kw["device"] == "device(cuda:1)"
    assert kw["llm"] == "llm" and kw["flow"] == "flow" and kw["embedding"] == ("emb", "p.wav")
    assert kw["speech_feat"] == ("feat", "p.wav", 24000)
    assert (kw["seed"], kw["sample_method"]) == (3, "ras")
    assert kw["cache"]["cache_text"] == ["prompt."] and kw["cache"]["cache_speech_token"] == [[7, 8, 9]]
    e.synthesize(dict(line, seed=42, sample_method="topk"), str(tmp_path / "u2.wav"))
    assert (m.generated[1]["seed"], m.generated[1]["sample_method"]) == (42, "topk")
    with pytest.raises(PayloadError, match="payload.prompt_speech"):
        e.synthesize({"uttid": "u", "prompt_text": "p", "syn_text": "s"}, str(tmp_path / "x.wav"))
    with pytest.raises(PayloadError, match="payload.seeds: unknown field"):
        e.synthesize(dict(line, seeds=1), str(tmp_path / "x.wav"))
    with pytest.raises(PayloadError, match="payload.seed: an integer"):
        e.synthesize(dict(line, seed="1"), str(tmp_path / "x.wav"))


def test_glmtts_fake_has_upstreams_signature():
    m = FakeGLMModule()
    with pytest.raises(TypeError):
        m.generate_long(frontend=1, text_frontend=1, llm=1, flow=1, text_info=[], cache={}, device=1, embedding=1,
                        sampling_method="ras")
    with pytest.raises(TypeError):
        m.load_models(use_phonemes=True)


def test_out_of_memory_is_recognised():
    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError's name
        pass

    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert not is_out_of_memory(ValueError("bad"))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/run installs it)")
def test_offline_espeak(tmp_path):
    e = OfflineEngine()
    assert e.kind == "espeak-ng"
    syn = e.synthesize({"syn_text": "Hello from Baton."}, str(tmp_path / "a.wav"))
    assert syn.sample_rate == 22050 and syn.duration_s > 0.3 and syn.note == "espeak-ng"


def test_offline_tone_fallback(tmp_path):
    e = OfflineEngine(espeak="")
    assert "not speech" in e.kind
    syn = e.synthesize({"syn_text": "three short words"}, str(tmp_path / "t.wav"))
    assert syn.sample_rate == 16000 and abs(syn.duration_s - 3 * 0.35) < 1e-6
    assert "synthetic" in syn.note
    with pytest.raises(PayloadError, match="payload.syn_text"):
        e.synthesize({"uttid": "x"}, str(tmp_path / "x.wav"))
    with pytest.raises(PayloadError, match="payload.sin_text: unknown field"):
        e.synthesize({"uttid": "x", "sin_text": "typo"}, str(tmp_path / "x.wav"))


def test_unknown_engine():
    with pytest.raises(ValueError, match="--engine"):
        make_engine("nope")


def test_tone_is_valid_wav(tmp_path):
    syn = tone("a b", str(tmp_path / "t.wav"))
    with wave.open(str(tmp_path / "t.wav")) as w:
        assert w.getnframes() == int(syn.duration_s * 16000)
