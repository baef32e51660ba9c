"""`avatar-renderer bench --wav2lip`: the Wav2Lip engine's speed with random weights in upstream's format.

- model: frames/s of the generator alone at batch 1, 32 and 128 (torch on this machine's device; TensorRT
  FP16 too when a GPU, the tensorrt package and a built engine for the checkpoint are present);
- end to end: a --seconds clip of the bundled speech rendered at 512x512 through the whole render path
  (load, Face Mesh, mel features, base frames, inference, paste-back, H.264 + AAC), once over still frames
  and once over the built-in engine's frames (blinks, head motion), after a warm-up render.
Random weights cost exactly what the real ones do: same layers, same shapes.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from engines import SAMPLES
from engines.media_audio import load_audio, write_wav
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import WAV2LIP_BASES, ModelSettings
from engines.wav2lip import WAV2LIP_IO

from .bench_report import write_report

BATCHES = (1, 32, 128)


def random_checkpoint(path: Path) -> Path:
    """A randomly initialised Wav2Lip saved the way upstream saves one."""
    import torch

    from engines.wav2lip.model import Wav2Lip

    torch.manual_seed(0)
    torch.save({"state_dict": Wav2Lip().state_dict(), "global_step": 0, "global_epoch": 0}, path)
    return path


def model_speed(runner, batches=BATCHES, min_seconds: float = 2.0) -> dict[str, float]:
    result = {}
    for batch in batches:
        mel, faces = WAV2LIP_IO.example_inputs(batch)
        runner(mel, faces)  # warm-up
        frames, started = 0, time.perf_counter()
        while frames == 0 or time.perf_counter() - started < min_seconds:
            runner(mel, faces)
            frames += batch
        result[str(batch)] = round(frames / (time.perf_counter() - started), 1)
    return result


def end_to_end(settings: ModelSettings, checkpoint: Path, seconds: float, size: int, workdir: Path) -> dict:
    audio_path = write_wav(workdir / "clip.wav", load_audio(SAMPLES / "speech.wav").trimmed(seconds).samples)
    figures = {}
    for base in WAV2LIP_BASES:
        engines = EngineRegistry.for_settings(replace(settings, wav2lip_ckpt=checkpoint, wav2lip_base=base))
        request = RenderRequest(face_path=SAMPLES / "portrait.jpg", audio_path=audio_path,
                                out_path=workdir / f"{base}.mp4", engine="wav2lip", size=size)
        render(request, engines)  # warm-up: model load, Face Mesh graph
        result = render(request, engines)
        engines.close()
        figures[base] = {
            "render_seconds": result.render_seconds, "frames": result.frames,
            "frames_per_second": round(result.frames / result.render_seconds, 1),
            "real_time_factor": round(result.render_seconds / result.audio_seconds, 3),
            "engine_seconds": result.frames_seconds, "encode_seconds": result.encode_seconds,
            "first_frame_seconds": result.first_frame_seconds,
        }
    return figures


def run_wav2lip_bench(args) -> int:
    import torch

    from engines.hardware import detect
    from engines.wav2lip.checkpoint import load_wav2lip
    from engines.wav2lip.runtime import TorchRunner

    settings = ModelSettings.from_env(os.environ)
    hardware = detect(settings.force_cpu)
    seconds = float(getattr(args, "seconds", 10.0))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        checkpoint = random_checkpoint(workdir / "wav2lip_gan.pth")
        device = "cuda" if hardware.cuda else "cpu"
        report = {
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "device": device,
                        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None},
            "weights": "random, upstream checkpoint format",
            "model_frames_per_second": {f"torch-{device}": model_speed(TorchRunner(load_wav2lip(checkpoint), device))},
        }
        if hardware.cuda and hardware.tensorrt:
            from engines.tensorrt_cache import find_engine
            from engines.tensorrt_runner import TensorRTRunner

            engine = find_engine(checkpoint, settings.trt_cache_dir)
            report["model_frames_per_second"]["tensorrt-fp16"] = (
                model_speed(TensorRTRunner(engine, WAV2LIP_IO)) if engine else "no engine built (run avatar-renderer trt-build)")
        report[f"end_to_end_{seconds:g}s_512"] = end_to_end(settings, checkpoint, seconds, 512, workdir)
    write_report(report, getattr(args, "out", None), "bench_wav2lip.json")
    return 0
