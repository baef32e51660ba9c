"""The wav2lip engine end to end on CPU with random weights in upstream's checkpoint format: frame count and
shape, the audio driving the mouth, pixels outside the blended region unchanged, batching, the built-in
engine's frames underneath, and registration / mode resolution."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines import face  # noqa: E402
from engines.hardware import Hardware  # noqa: E402
from engines.landmark_warp import LandmarkWarpEngine  # noqa: E402
from engines.registry import EngineRegistry  # noqa: E402
from engines.settings import ModelSettings  # noqa: E402
from engines.wav2lip.crops import face_box, int_box, mouth_mask  # noqa: E402
from engines.wav2lip.engine import Wav2LipEngine  # noqa: E402
from tests.wav2lip_fixtures import portrait_job, random_model, save_upstream  # noqa: E402

torch.set_num_threads(2)
CPU = Hardware(cuda=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_upstream(random_model(seed=5), tmp_path_factory.mktemp("ckpt") / "wav2lip_gan.pth",
                         data_parallel=True)


@pytest.fixture(scope="module")
def job():
    return portrait_job(size=256, seconds=0.6)


def settings_for(checkpoint, base="still", batch_size=0):
    return ModelSettings(wav2lip_ckpt=checkpoint, wav2lip_base=base, wav2lip_batch=batch_size)


def render(checkpoint, job, base="still", batch_size=0):
    settings = settings_for(checkpoint, base, batch_size)
    engine = Wav2LipEngine(settings, CPU, base_engine=LandmarkWarpEngine(settings, CPU))
    return list(engine.render(job))


def test_still_portrait_frames_change_only_inside_the_mouth_region(checkpoint, job):
    frames = render(checkpoint, job, batch_size=8)
    assert len(frames) == job.frame_count == 15
    assert all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in frames)
    box = int_box(face_box(job.landmarks, (256, 256)))
    region = np.zeros((256, 256), bool)
    region[box[1]:box[3], box[0]:box[2]] = mouth_mask(job.landmarks, box) > 0
    for frame in frames:
        changed = np.any(frame != job.portrait, axis=2)
        assert changed.sum() > 200
        assert not np.any(changed & ~region)


def test_audio_drives_the_generated_mouth(checkpoint, job):
    silent = portrait_job(size=256, audio=type(job.audio)(np.zeros_like(job.audio.samples)))
    speaking = render(checkpoint, job, batch_size=8)
    quiet = render(checkpoint, silent, batch_size=8)
    lips = job.landmarks[face.LIPS_OUTER].mean(axis=0).astype(int)
    patch = (slice(lips[1] - 6, lips[1] + 6), slice(lips[0] - 10, lips[0] + 10))
    # Silence gives one mouth for every frame; speech gives frames that differ from it and each other.
    assert all(np.array_equal(quiet[0][patch], q[patch]) for q in quiet)
    differences = [np.abs(s[patch].astype(int) - q[patch].astype(int)).mean() for s, q in zip(speaking, quiet)]
    assert max(differences) > 1.0
    assert len({s[patch].tobytes() for s in speaking}) > 5


def test_batch_size_does_not_change_the_frames(checkpoint, job):
    one = render(checkpoint, job, batch_size=1)[:6]
    many = render(checkpoint, job, batch_size=5)[:6]
    for a, b in zip(one, many):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_built_in_engine_frames_underneath(checkpoint, job):
    base = list(LandmarkWarpEngine(ModelSettings(), CPU).render(job))
    frames = render(checkpoint, job, base="landmark-warp", batch_size=8)
    assert len(frames) == len(base)
    nose_bottom = int(job.landmarks[2][1]) - 8  # the head sways a few pixels
    for ours, theirs in zip(frames, base):
        np.testing.assert_array_equal(ours[:nose_bottom], theirs[:nose_bottom])  # eyes, blinks, head motion
        assert np.any(ours != theirs)
    assert any(np.any(a[:nose_bottom] != base[0][:nose_bottom]) for a in base[1:])  # the base really moves


def test_registry_lists_wav2lip_and_real_time_picks_it_when_the_checkpoint_exists(checkpoint, tmp_path):
    present = EngineRegistry(ModelSettings.from_env({"MODEL_ROOT": str(tmp_path), "WAV2LIP_CKPT": str(checkpoint)}), CPU)
    assert "wav2lip" in present.names()
    assert present.resolve("real_time", None).engine.name == "wav2lip"
    assert present.resolve("auto", None).engine.name == "wav2lip"
    absent = EngineRegistry(ModelSettings.from_env({"MODEL_ROOT": str(tmp_path)}), CPU)
    fallback = absent.resolve("real_time", None)
    assert fallback.engine.name == "landmark-warp" and "wav2lip_gan.pth" in fallback.why


def test_engine_loads_once_describes_what_it_holds_and_releases_it(checkpoint, job):
    from engines.files import file_sha256

    engines = EngineRegistry(settings_for(checkpoint, batch_size=4), CPU)
    wav2lip = engines.engines["wav2lip"]
    assert not wav2lip.loaded and "device" not in wav2lip.describe()
    held = wav2lip.load()
    runner = wav2lip.runner
    assert wav2lip.load() is held and wav2lip.runner is runner  # a second load() is free
    list(wav2lip.render(job))
    assert wav2lip.runner is runner  # rendering reuses the loaded model
    described = wav2lip.describe()
    assert described["loaded"] and described["device"] == "cpu" and described["backend"] == "torch-cpu"
    assert described["precision"] == "fp32" and described["batchSize"] == 4
    assert described["checkpoints"] == {str(checkpoint): file_sha256(checkpoint)}
    engines.close()
    assert not wav2lip.loaded and wav2lip.runner is None and "device" not in wav2lip.describe()


def test_settings_reach_the_engine_without_the_environment(checkpoint, tmp_path, monkeypatch):
    """The engine renders the checkpoint its settings name, whatever the environment says at render time."""
    monkeypatch.setenv("WAV2LIP_CKPT", str(tmp_path / "elsewhere.pth"))
    monkeypatch.setenv("WAV2LIP_BATCH", "1")
    engines = EngineRegistry(settings_for(checkpoint, batch_size=3), CPU)
    chosen = engines.resolve("real_time", None).engine
    assert chosen.name == "wav2lip" and chosen.load().batch_size == 3
    assert chosen.describe()["checkpoints"].keys() == {str(checkpoint)}


def test_registry_import_does_not_import_torch():
    code = ("import sys; from engines.registry import EngineRegistry; from engines.settings import ModelSettings; "
            "from engines.hardware import Hardware; EngineRegistry(ModelSettings(), Hardware(cuda=False)).describe(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_render_result_names_what_the_engine_held(checkpoint, tmp_path):
    from engines import SAMPLES
    from engines.files import file_sha256
    from engines.media_audio import load_audio, write_wav
    from engines.pipeline import RenderRequest
    from engines.pipeline import render as render_request

    audio = write_wav(tmp_path / "a.wav", load_audio(SAMPLES / "speech.wav").trimmed(0.4).samples)
    engines = EngineRegistry(settings_for(checkpoint, batch_size=4), CPU)
    result = render_request(RenderRequest(SAMPLES / "portrait.jpg", audio, tmp_path / "o.mp4", engine="wav2lip",
                                          size=128), engines)
    assert result.engine == "wav2lip"
    assert result.engine_details == {"device": "cpu", "precision": "fp32", "backend": "torch-cpu", "batchSize": 4,
                                     "checkpoints": {str(checkpoint): file_sha256(checkpoint)},
                                     "why": "engine wav2lip was asked for"}
