"""The engines through their one interface; heavy ones with fake models."""

import os
import shutil
import sys
import wave

import pytest

from tts_worker.engines import GLMTTSEngine, OfflineEngine, make_engine, tone


def write_wav(path, rate, frames):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * frames)


class FakeIndexTTS2:
    """Stands in for indextts.infer_v2.IndexTTS2."""

    instances = []

    def __init__(self, cfg_path, model_dir, use_fp16=False):
        self.init = (cfg_path, model_dir, use_fp16)
        self.calls = []
        FakeIndexTTS2.instances.append(self)

    def infer(self, spk_audio_prompt, text, output_path, **kw):
        self.calls.append((spk_audio_prompt, text, kw))
        write_wav(output_path, 22050, 22050 // 2)


def test_indextts2_adapter(tmp_path):
    FakeIndexTTS2.instances.clear()
    e = make_engine("indextts2", model_dir="ckpts", factory=FakeIndexTTS2)
    assert e.model is None and "indextts" not in sys.modules  # lazy
    e.load()
    for i in range(2):
        out = str(tmp_path / ("o%d.wav" % i))
        syn = e.synthesize({"uttid": "u", "prompt_speech": "voice.wav", "syn_text": "hi %d" % i, "emo_alpha": 0.6}, out)
        assert (syn.sample_rate, syn.duration_s) == (22050, 0.5)
    assert len(FakeIndexTTS2.instances) == 1  # model loaded once
    m = FakeIndexTTS2.instances[0]
    assert m.init == (os.path.join("ckpts", "config.yaml"), "ckpts", False)
    assert m.calls == [("voice.wav", "hi 0", {"emo_alpha": 0.6}), ("voice.wav", "hi 1", {"emo_alpha": 0.6})]
    with pytest.raises(ValueError, match="payload.prompt_speech"):
        e.synthesize({"syn_text": "x"}, str(tmp_path / "x.wav"))


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
    """Stands in for GLM-TTS's glmtts_inference module."""

    DEVICE = "cpu"

    def __init__(self):
        self.loads = []
        self.generated = []

        class Torch:
            int32 = "int32"

            @staticmethod
            def tensor(data, dtype=None):
                return FakeTensor(data)

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
        self.loads.append((use_phoneme, sample_rate))
        return self.fe, self.tf, "speech_tokenizer", "llm", "flow"

    def generate_long(self, **kw):
        self.generated.append(kw)
        return FakeTensor([], n=24000 * 2), None, [], {}


def test_glmtts_adapter(tmp_path):
    m = FakeGLMModule()
    e = GLMTTSEngine(module=m, sample_rate=24000)
    e.load()
    line = {"uttid": "u1", "prompt_text": "Prompt.", "prompt_speech": "p.wav", "syn_text": " Hello World "}
    syn = e.synthesize(line, str(tmp_path / "u1.wav"))
    assert (syn.sample_rate, syn.duration_s) == (24000, 2.0)
    assert m.loads == [(False, 24000)]
    kw = m.generated[0]
    assert kw["text_info"] == ["u1", "hello world"]
    assert kw["llm"] == "llm" and kw["flow"] == "flow" and kw["embedding"] == ("emb", "p.wav")
    assert kw["speech_feat"] == ("feat", "p.wav", 24000)
    assert kw["cache"]["cache_text"] == ["prompt."] and kw["cache"]["cache_speech_token"] == [[7, 8, 9]]
    with pytest.raises(ValueError, match="payload.prompt_speech"):
        e.synthesize({"uttid": "u", "prompt_text": "p", "syn_text": "s"}, str(tmp_path / "x.wav"))


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
    with pytest.raises(ValueError, match="payload.syn_text"):
        e.synthesize({"uttid": "x"}, str(tmp_path / "x.wav"))


def test_unknown_engine():
    with pytest.raises(ValueError, match="--engine"):
        make_engine("nope")


def test_tone_is_valid_wav(tmp_path):
    syn = tone("a b", str(tmp_path / "t.wav"))
    with wave.open(str(tmp_path / "t.wav")) as w:
        assert w.getnframes() == int(syn.duration_s * 16000)
