"""`avatar-renderer bench --hq`: the high_quality chain's speed with random weights in the upstream file formats.

- per stage: frames/s of FOMM (motion + full-resolution warp), Diff2Lip (per frame, and per DDIM step) and
  GFPGAN (align + restore + paste), each run alone over the still portrait;
- end to end: 10 s of the bundled speech at 512 and 1024 through the whole render path (load, Face Mesh,
  the three stages, H.264 slow CRF 18 or NVENC p7), after a warm-up render; peak GPU memory.
On a CPU the same figures are measured on a reduced job (short clip, small size, few DDIM steps) and the
report says so: a CPU is not what this mode is for. Random weights cost exactly what the real ones do.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from engines import SAMPLES
from engines.base import EngineJob
from engines.face import shared_analyzer
from engines.framing import frame_photo
from engines.hardware import detect
from engines.media_audio import load_audio, open_audio, write_wav
from engines.media_image import load_portrait
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from engines.stages import still_pairs

from .bench_report import write_report


@dataclass(frozen=True)
class Plan:
    """What one bench run measures: the full figures on a GPU, a reduced job on a CPU."""

    stage_size: int
    stage_seconds: float
    sizes: tuple[int, ...]
    end_to_end_seconds: float
    ddim_steps: int
    batch: int

    @classmethod
    def for_machine(cls, cuda: bool, seconds: float) -> "Plan":
        if cuda:
            return cls(stage_size=512, stage_seconds=2.0, sizes=(512, 1024), end_to_end_seconds=seconds,
                       ddim_steps=25, batch=0)
        return cls(stage_size=128, stage_seconds=0.2, sizes=(128,), end_to_end_seconds=0.2, ddim_steps=2, batch=2)


def write_random_checkpoints(settings: ModelSettings) -> None:
    """Random FOMM, Diff2Lip and GFPGAN files, in the upstream formats, where the settings expect them."""
    from engines.diff2lip.checkpoint import write_random_checkpoint as write_random_diff2lip
    from engines.fomm.checkpoint import write_random_fomm
    from engines.gfpgan.checkpoint import write_random_checkpoint as write_random_gfpgan

    for path, write in ((settings.fomm_ckpt_dir / "vox-cpk.pth.tar", write_random_fomm),
                        (settings.diff2lip_ckpt_dir / "checkpoint.pt", write_random_diff2lip),
                        (settings.gfpgan_ckpt, write_random_gfpgan)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)


def _job(size: int, seconds: float, workdir: Path) -> EngineJob:
    audio_path = write_wav(workdir / f"stage_{seconds:g}.wav", load_audio(SAMPLES / "speech.wav").trimmed(seconds).samples)
    framed = frame_photo(load_portrait(SAMPLES / "portrait.jpg"), size)
    shared_analyzer()  # Face Mesh graph built before any timing
    return EngineJob(framed.portrait, framed.landmarks, open_audio(audio_path, 600.0), Fraction(25), size)


def stage_speed(engine, job: EngineJob, ddim_steps: int) -> dict:
    """Frames/s of each stage alone over the still portrait (after one warm-up pass of the same job)."""
    figures = {}
    for stage in engine.stages():
        stage.load()
        for _ in stage.transform(job, still_pairs(job)):  # warm-up: kernels, caches
            pass
        _synchronize()
        started = time.perf_counter()
        frames = sum(1 for _ in stage.transform(job, still_pairs(job)))
        _synchronize()
        elapsed = time.perf_counter() - started
        entry = {"frames": frames, "seconds": round(elapsed, 3), "frames_per_second": round(frames / elapsed, 2),
                 "batch": stage.batch_size}
        if stage.name == "diff2lip":
            entry["ddim_steps"] = ddim_steps
            entry["frame_steps_per_second"] = round(frames * ddim_steps / elapsed, 1)
        figures[stage.name] = entry
    return figures


def end_to_end(settings: ModelSettings, size: int, seconds: float, workdir: Path) -> dict:
    audio_path = write_wav(workdir / f"clip_{seconds:g}.wav", load_audio(SAMPLES / "speech.wav").trimmed(seconds).samples)
    engines = EngineRegistry.for_settings(settings)
    request = RenderRequest(face_path=SAMPLES / "portrait.jpg", audio_path=audio_path,
                            out_path=workdir / f"hq_{size}.mp4", mode="high_quality", size=size)
    try:
        render(replace(request, audio_path=write_wav(workdir / "warm.wav", load_audio(audio_path).trimmed(0.2).samples)),
               engines)  # warm-up: model load, Face Mesh graph, kernels
        _reset_peak_memory()
        result = render(request, engines)
    finally:
        engines.close()
    return {"render_seconds": result.render_seconds, "audio_seconds": result.audio_seconds, "frames": result.frames,
            "real_time_factor": round(result.render_seconds / result.audio_seconds, 3),
            "first_frame_seconds": result.first_frame_seconds, "encoder": result.encoder,
            "peak_gpu_memory_mb": _peak_memory_mb()}


def run_hq_bench(args) -> int:
    import torch

    env_settings = ModelSettings.from_env(dict(os.environ))
    hardware = detect(env_settings.force_cpu)
    plan = Plan.for_machine(hardware.cuda, float(getattr(args, "seconds", 10.0)))
    with tempfile.TemporaryDirectory(prefix="avatar-bench-hq-") as tmp:
        workdir = Path(tmp)
        settings = replace(env_settings, model_root=workdir / "models", fomm_ckpt_dir=workdir / "models" / "fomm",
                           diff2lip_ckpt_dir=workdir / "models" / "diff2lip",
                           gfpgan_ckpt=workdir / "models" / "gfpgan" / "GFPGANv1.4.pth",
                           hq_ddim_steps=plan.ddim_steps, hq_batch=plan.batch or env_settings.hq_batch,
                           hq_allow_cpu=True)
        write_random_checkpoints(settings)
        report = {
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "device": "cuda" if hardware.cuda else "cpu",
                        "gpu": torch.cuda.get_device_name(0) if hardware.cuda else None},
            "weights": "random, upstream checkpoint formats",
            "reduced": None if hardware.cuda else (
                f"CPU run: {plan.stage_size} px, {plan.end_to_end_seconds:g} s of speech, {plan.ddim_steps} DDIM "
                "steps (25 in production); the goal (10 s at 512 in <= 10 s) is for one H100"),
        }
        engines = EngineRegistry(settings, hardware)
        try:
            engine = engines.engines["fomm-diff2lip-gfpgan"]
            report["stage_frames_per_second"] = stage_speed(
                engine, _job(plan.stage_size, plan.stage_seconds, workdir), plan.ddim_steps)
        finally:
            engines.close()
        report["end_to_end"] = {f"{plan.end_to_end_seconds:g}s_{size}": end_to_end(
            settings, size, plan.end_to_end_seconds, workdir) for size in plan.sizes}
    write_report(report, getattr(args, "out", None), "bench_hq.json")
    return 0


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_mb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
