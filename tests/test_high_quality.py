"""high_quality end to end on a CPU: random FOMM, Diff2Lip and GFPGAN checkpoints in the upstream file formats
under MODEL_ROOT, `render --mode high_quality` through the real CLI (HQ_ALLOW_CPU, 2 DDIM steps, a few frames),
the video decoded back; `models verify` on the same files; what happens without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.media_audio import load_audio, write_wav  # noqa: E402
from tests.media_fixtures import PORTRAIT, SPEECH  # noqa: E402

CLI = str(Path(sys.executable).parent / "avatar-renderer")
SECONDS, FPS, SIZE = 0.4, 5, 96  # two frames: one batch through each stage (minutes of CPU otherwise)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    from cli.bench_hq import write_random_checkpoints
    from engines.settings import ModelSettings

    root = tmp_path_factory.mktemp("hq-models")
    write_random_checkpoints(ModelSettings(model_root=root))
    return root


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("hq-audio") / "speech.wav", load_audio(SPEECH).trimmed(SECONDS).samples)


def _run(*args, model_root: Path, **env):
    full_env = {**os.environ, "MODEL_ROOT": str(model_root), "HQ_DDIM_STEPS": "2", "HQ_BATCH": "2", **env}
    if "HQ_ALLOW_CPU" not in env:  # whatever the developer's shell holds
        full_env.pop("HQ_ALLOW_CPU", None)
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600, env=full_env)


@pytest.mark.slow
def test_high_quality_renders_end_to_end_on_a_cpu_with_upstream_format_checkpoints(model_root, speech, tmp_path):
    out = tmp_path / "hq.mp4"
    done = _run("render", "--face", str(PORTRAIT), "--audio", str(speech), "--out", str(out), "--mode",
                "high_quality", "--size", str(SIZE), "--fps", str(FPS), model_root=model_root, HQ_ALLOW_CPU="1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["engine"] == "fomm-diff2lip-gfpgan" and result["mode"] == "high_quality"
    assert result["frames"] == int(SECONDS * FPS)
    held = result["engine_details"]
    assert held["device"] == "cpu" and len(held["checkpoints"]) == 3
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", SIZE, SIZE)
        assert audio.codec_context.name == "aac"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == result["frames"]
    assert all(frame.std() > 5 for frame in frames)  # pictures, not blank frames
    assert float(video.duration * video.time_base) == pytest.approx(SECONDS, abs=1 / FPS)
    # The x264 settings of the mode: slow preset, CRF 18 (the encoder writes them into the stream).
    assert b"crf=18.0" in out.read_bytes() and b"subme=8" in out.read_bytes()


def test_without_a_gpu_high_quality_says_so_and_how_to_run_it_anyway(model_root, speech, tmp_path):
    done = _run("render", "--face", str(PORTRAIT), "--audio", str(speech), "--out", str(tmp_path / "x.mp4"),
                "--mode", "high_quality", model_root=model_root, AVATAR_FORCE_CPU="1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "GPU" in done.stderr and "HQ_ALLOW_CPU" in done.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_models_verify_accepts_the_three_layouts_and_names_a_bad_key(model_root, tmp_path):
    done = _run("models", "verify", "--engine", "fomm", "--engine", "diff2lip", "--engine", "gfpgan",
                model_root=model_root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("OK") == 3

    state = torch.load(model_root / "gfpgan" / "GFPGANv1.4.pth", map_location="cpu", weights_only=True)["params_ema"]
    missing = "final_linear.weight"
    del state[missing]
    broken = tmp_path / "broken.pth"
    torch.save({"params_ema": state}, broken)
    done = _run("models", "verify", "--engine", "gfpgan", "--checkpoint", str(broken), model_root=model_root)
    assert done.returncode == 1 and missing in done.stderr and "Traceback" not in done.stderr


def test_the_engine_describes_its_three_stages(model_root):
    from engines.hardware import Hardware
    from engines.registry import EngineRegistry
    from engines.settings import ModelSettings

    settings = ModelSettings(model_root=model_root, hq_allow_cpu=True)
    engine = EngineRegistry(settings, Hardware(cuda=False)).engines["fomm-diff2lip-gfpgan"]
    described = engine.describe()
    assert described["available"] and [s["name"] for s in described["stages"]] == ["fomm", "diff2lip", "gfpgan"]
    assert np.all([not s["loaded"] for s in described["stages"]])


def test_cuda_out_of_memory_halves_every_stage_batch_and_is_a_retryable_error(model_root, monkeypatch):
    from engines.base import Holding
    from engines.hardware import Hardware
    from engines.registry import EngineRegistry
    from engines.settings import ModelSettings
    from schemas.errors import OutOfMemory
    from tests.wav2lip_fixtures import portrait_job

    settings = ModelSettings(model_root=model_root, hq_allow_cpu=True, hq_batch=8)
    engine = EngineRegistry(settings, Hardware(cuda=False)).engines["fomm-diff2lip-gfpgan"]
    monkeypatch.setattr(engine, "load", lambda: Holding())  # the OOM path only; no weights needed

    def out_of_memory(job, pairs, **_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator, as the stage's transform is

    monkeypatch.setattr(engine.lips, "transform", out_of_memory)
    with pytest.raises(OutOfMemory) as error:
        list(engine.render(portrait_job(size=64, seconds=0.1)))
    assert error.value.retryable and "batch 8" in error.value.message and "batch 4" in error.value.message
    assert [stage.batch_size for stage in engine.stages()] == [4, 4, 4]
    with pytest.raises(OutOfMemory):  # again: halved again, never below one
        list(engine.render(portrait_job(size=64, seconds=0.1)))
    assert [stage.batch_size for stage in engine.stages()] == [2, 2, 2]

    def other_failure(job, pairs, **_):
        raise ValueError("not memory")
        yield

    monkeypatch.setattr(engine.lips, "transform", other_failure)
    with pytest.raises(ValueError):  # other errors pass through untouched, batches kept
        list(engine.render(portrait_job(size=64, seconds=0.1)))
    assert [stage.batch_size for stage in engine.stages()] == [2, 2, 2]
