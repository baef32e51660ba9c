"""`avatar-renderer bench --sadtalker`: the SadTalker -> Wav2Lip real_time chain's speed with random weights in
the upstream file formats (random weights cost what the real ones do).

- coefficients: seconds to turn the clip into its 25 fps coefficient track (3DMM of the portrait, audio2exp,
  audio2pose) — once per job;
- face renderer: frames/s of keypoints + mapping + OcclusionAwareSPADEGenerator at 256 px per batch size,
  fp32 and (on a GPU) fp16 autocast, so the faster one is known;
- end to end: the clip through the whole render path (SadTalker -> paste-back -> Wav2Lip -> H.264) at 512 px
  after a warm-up render.
On a CPU the same figures come from a reduced job (a fraction of a second of speech, batch 1 and 2), and the
report says so. TensorRT is not used for the face renderer in this build (see README).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from engines import SAMPLES
from engines.base import EngineJob
from engines.framing import frame_photo
from engines.hardware import detect
from engines.media_audio import load_audio, open_audio, write_wav
from engines.media_image import load_portrait
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings

from .bench_report import write_report
from .bench_wav2lip import random_checkpoint


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def renderer_speed(engine, batches: tuple[int, ...], cuda: bool, min_seconds: float) -> dict:
    """{precision: {batch: frames/s}} of the face renderer on random 27-frame windows."""
    import torch

    from engines.sadtalker.renderer import transform_keypoints

    models, device = engine.models, engine.device
    size = engine.settings.sadtalker_render_size
    figures = {}
    for precision in (("fp32", "fp16") if cuda else ("fp32",)):
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16")
        per_batch = {}
        for batch in batches:
            with torch.inference_mode(), autocast:
                src = torch.rand(1, 3, size, size, device=device)
                canonical = models.kp_extractor(src)
                features = models.generator.source_features(src)
                windows = torch.randn(batch, 70, 27, device=device)

                def step():
                    motion = models.mapping(windows)
                    kp = transform_keypoints(canonical.expand(batch, -1, -1), motion)
                    return models.generator.animate(features.expand(batch, -1, -1, -1, -1), kp, kp)

                step()  # warm-up
                _sync(cuda)
                frames, started = 0, time.perf_counter()
                while frames == 0 or time.perf_counter() - started < min_seconds:
                    step()
                    frames += batch
                _sync(cuda)
            per_batch[str(batch)] = round(frames / (time.perf_counter() - started), 2)
        figures[precision] = per_batch
    return figures


def coefficient_seconds(engine, seconds: float) -> dict:
    """Seconds for one job's coefficient track (3DMM of the portrait + audio2exp + audio2pose)."""
    from engines.sadtalker.coefficients import coefficient_frames, coefficient_track
    from engines.sadtalker.crop import face_square
    from engines.wav2lip.mel import melspectrogram

    audio = open_audio(write_wav(Path(tempfile.mkdtemp()) / "c.wav",
                                 load_audio(SAMPLES / "speech.wav").trimmed(seconds).samples), 600.0)
    framed = frame_photo(load_portrait(SAMPLES / "portrait.jpg"), 512)
    job = EngineJob(framed.portrait, framed.landmarks, audio, Fraction(25), 512)
    started = time.perf_counter()
    square = face_square(job.landmarks)
    source = engine.source_coefficients(job, square)
    recon = time.perf_counter()
    track = coefficient_track(engine.models, source, melspectrogram(audio.analysis_samples()),
                              coefficient_frames(audio.duration), 0, False, 0, engine.device)
    done = time.perf_counter()
    return {"audio_seconds": round(audio.duration, 2), "coefficient_frames": len(track),
            "recon_seconds": round(recon - started, 3), "audio_to_coefficients_seconds": round(done - recon, 3)}


def end_to_end(settings: ModelSettings, size: int, seconds: float, workdir: Path) -> dict:
    audio_path = write_wav(workdir / "clip.wav", load_audio(SAMPLES / "speech.wav").trimmed(seconds).samples)
    warm = write_wav(workdir / "warm.wav", load_audio(SAMPLES / "speech.wav").trimmed(0.2).samples)
    engines = EngineRegistry.for_settings(settings)
    request = RenderRequest(face_path=SAMPLES / "portrait.jpg", audio_path=audio_path,
                            out_path=workdir / f"sadtalker_{size}.mp4", engine="sadtalker", size=size)
    try:
        render(replace(request, audio_path=warm), engines)  # warm-up: model load, Face Mesh graph, kernels
        result = render(request, engines)
    finally:
        engines.close()
    return {"size": size, "render_seconds": result.render_seconds, "audio_seconds": result.audio_seconds,
            "frames": result.frames, "frames_per_second": round(result.frames / result.render_seconds, 2),
            "real_time_factor": round(result.render_seconds / result.audio_seconds, 3),
            "engine_seconds": result.frames_seconds, "first_frame_seconds": result.first_frame_seconds,
            "encoder": result.encoder}


def run_sadtalker_bench(args) -> int:
    import torch

    env_settings = ModelSettings.from_env(dict(os.environ))
    hardware = detect(env_settings.force_cpu)
    cuda = hardware.cuda
    seconds = float(getattr(args, "seconds", 10.0)) if cuda else 0.2
    with tempfile.TemporaryDirectory(prefix="avatar-bench-sadtalker-") as tmp:
        workdir = Path(tmp)
        from engines.sadtalker.checkpoint import write_random_checkpoints

        (workdir / "wav2lip").mkdir()
        settings = replace(env_settings, model_root=workdir, sadtalker_ckpt_dir=write_random_checkpoints(workdir / "sadtalker"),
                           wav2lip_ckpt=random_checkpoint(workdir / "wav2lip" / "wav2lip_gan.pth"), sadtalker_cpu=True)
        report = {
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "device": "cuda" if cuda else "cpu",
                        "gpu": torch.cuda.get_device_name(0) if cuda else None},
            "weights": "random, upstream checkpoint formats",
            "render_size": settings.sadtalker_render_size,
            "reduced": None if cuda else (
                f"CPU run: {seconds:g} s of speech at 256 px output, renderer batches 1 and 2; the goal (10 s at "
                "512 through SadTalker + Wav2Lip in <= 3 s) is for one H100"),
            "tensorrt": "not used for the face renderer in this build (torch fp16 autocast on a GPU)",
        }
        engines = EngineRegistry(settings, hardware)
        try:
            engine = engines.engines["sadtalker"]
            engine.load()
            report["coefficients"] = coefficient_seconds(engine, seconds)
            report["face_renderer_frames_per_second"] = renderer_speed(
                engine, (1, 8, 16, 32) if cuda else (1, 2), cuda, 1.0 if cuda else 0.0)
            if cuda:
                report["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        finally:
            engines.close()
        report["end_to_end"] = end_to_end(settings, 512 if cuda else 256, seconds, workdir)
    write_report(report, getattr(args, "out", None), "bench_sadtalker.json")
    return 0
