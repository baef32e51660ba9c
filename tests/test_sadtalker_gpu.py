"""SadTalker on an NVIDIA GPU (skipped without CUDA; part of `make gpu-check`): fp16 autocast of the face
renderer against fp32, and the SadTalker -> Wav2Lip chain at 512 px rendering faster than real time."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

HAS_CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA")]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    from cli.bench_wav2lip import random_checkpoint
    from engines.sadtalker.checkpoint import write_random_checkpoints
    from engines.settings import ModelSettings

    root = tmp_path_factory.mktemp("models")
    (root / "wav2lip").mkdir()
    return ModelSettings(model_root=root, sadtalker_ckpt_dir=write_random_checkpoints(root / "sadtalker"),
                         wav2lip_ckpt=random_checkpoint(root / "wav2lip" / "wav2lip_gan.pth"))


def test_fp16_face_renderer_matches_fp32(settings):
    from engines.sadtalker.checkpoint import load_models
    from engines.sadtalker.renderer import transform_keypoints

    models = load_models(settings.sadtalker_ckpt_dir)
    for module in models.modules():
        module.to("cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    src = torch.rand(1, 3, 256, 256, device="cuda", generator=generator)
    windows = torch.randn(4, 70, 27, device="cuda", generator=generator)

    def run(half: bool):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
            canonical = models.kp_extractor(src)
            kp = transform_keypoints(canonical.expand(4, -1, -1), models.mapping(windows))
            out = models.generator(src.expand(4, -1, -1, -1), kp, kp.flip(0))
        return out.float()

    full, half = run(False), run(True)
    assert full.shape == (4, 3, 256, 256)
    assert (full - half).abs().mean().item() < 0.02


def test_chain_renders_512_px_faster_than_real_time(settings, tmp_path):
    from engines import SAMPLES
    from engines.media_audio import load_audio, write_wav
    from engines.pipeline import RenderRequest, render
    from engines.registry import EngineRegistry

    audio = write_wav(tmp_path / "clip.wav", load_audio(SAMPLES / "speech.wav").trimmed(4.0).samples)
    engines = EngineRegistry.for_settings(settings)
    try:
        assert engines.resolve("real_time", None).engine.name == "sadtalker"
        request = RenderRequest(SAMPLES / "portrait.jpg", audio, tmp_path / "warm.mp4", mode="real_time", size=512)
        render(replace(request, audio_path=write_wav(tmp_path / "w.wav", load_audio(audio).trimmed(0.3).samples)),
               engines)  # warm-up
        started = time.perf_counter()
        result = render(replace(request, out_path=tmp_path / "talk.mp4"), engines)
        elapsed = time.perf_counter() - started
    finally:
        engines.close()
    assert result.engine == "sadtalker" and result.engine_details["device"] == "cuda:0"
    assert result.engine_details["precision"] == "fp16"
    assert result.frames == 100 and np.isfinite(elapsed)
    assert elapsed < result.audio_seconds, f"{elapsed:.2f} s for {result.audio_seconds} s of speech"
