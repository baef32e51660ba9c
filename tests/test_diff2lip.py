"""The Diff2Lip stage: the UNet's state dict equals upstream's layout (fixture copied from the shared upstream
layouts), random checkpoints in upstream's file format load strictly, broken ones are refused naming the key,
the sampler's schedule facts and DDIM update, and the stage end to end on CPU (2 DDIM steps, 3 frames):
count and shape, only the mouth region changed, the audio steering it, the same seed giving the same frames.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.diff2lip import DIFF2LIP_IO  # noqa: E402
from engines.diff2lip.checkpoint import CheckpointError, load_diff2lip, write_random_checkpoint  # noqa: E402
from engines.diff2lip.crops import paste_mask  # noqa: E402
from engines.diff2lip.sampler import (DdimSchedule, alphas_cumprod, ddim_sample, ddim_timesteps,  # noqa: E402
                                      linear_betas)
from engines.diff2lip.stage import Diff2LipStage, job_noise, mel_windows  # noqa: E402
from engines.diff2lip.unet import Diff2LipUNet  # noqa: E402
from engines.hardware import Hardware  # noqa: E402
from engines.settings import ModelSettings  # noqa: E402
from engines.stages import still_pairs  # noqa: E402
from engines.wav2lip.crops import face_box, int_box  # noqa: E402
from engines.wav2lip.mel import frame_windows, melspectrogram  # noqa: E402
from tests.wav2lip_fixtures import portrait_job  # noqa: E402

torch.set_num_threads(2)
LAYOUT = json.loads((Path(__file__).parent / "fixtures" / "diff2lip_layout.json").read_text())
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diff2lip")
    write_random_checkpoint(folder / "checkpoint.pt", seed=5)
    return folder


@pytest.fixture(scope="module")
def weights(checkpoint_dir):
    return torch.load(checkpoint_dir / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True)


@pytest.fixture(scope="module")
def job():
    from engines import SAMPLES
    from engines.media_audio import load_audio

    speech = load_audio(SAMPLES / "speech.wav")
    start = int(0.5 * 48_000)  # a voiced stretch: the frames hear different sounds
    voiced = type(speech)(speech.samples[start : start + int(0.4 * 48_000)])
    return portrait_job(size=128, audio=voiced)


@pytest.fixture(scope="module")
def stage(checkpoint_dir):
    settings = ModelSettings(model_root=checkpoint_dir.parent, diff2lip_ckpt_dir=checkpoint_dir,
                             hq_ddim_steps=2, hq_batch=2)
    built = Diff2LipStage(settings, Hardware(cuda=False))
    built.load()
    yield built
    built.close()


def first_frames(job, count: int):
    return itertools.islice(still_pairs(job), count)


@pytest.fixture(scope="module")
def rendered(stage, job):
    """The first two frames of the job (one batch; a UNet forward is seconds on a CPU)."""
    return list(stage.transform(job, first_frames(job, 2)))


def skeleton() -> Diff2LipUNet:
    """The network without memory or initialisation (meta tensors): enough for names, shapes and dtypes."""
    with torch.device("meta"):
        return Diff2LipUNet()


# ---------------------------------------------------------------- layout and checkpoints

def test_state_dict_is_upstreams_layout_key_for_key():
    state = skeleton().state_dict()
    assert [[key, list(value.shape)] for key, value in state.items()] == LAYOUT["tensors"]
    assert {value.dtype for value in state.values()} == {torch.float32}
    assert sum(value.numel() for value in state.values()) == LAYOUT["elements"] == 101_670_630


def test_fp16_halves_exactly_the_convolutions_upstream_halves():
    model = skeleton()
    model.convert_to_fp16()
    halved = sorted(key for key, value in model.state_dict().items() if value.dtype == torch.float16)
    assert halved == LAYOUT["fp16_after_convert_to_fp16"]
    assert model.state_dict()["time_embed.0.weight"].dtype == torch.float32
    assert model.state_dict()["out.2.weight"].dtype == torch.float32


def test_random_checkpoint_in_upstream_format_loads_strictly(stage, weights):
    assert list(weights) == [key for key, _ in LAYOUT["tensors"]]  # flat: no wrapper dict, no module. prefix
    assert {value.dtype for value in weights.values()} == {torch.float32}
    model = stage.model  # loaded by load_diff2lip from that file
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    for key in ("input_blocks.0.0.weight", "audio_encoder.input_block.0.weight", "out.2.bias"):
        assert torch.equal(loaded[key], weights[key])


def shared_storage_copy(state: dict) -> dict:
    """The same keys and shapes as ``state``, all views of one buffer: torch.save writes it once (a few MB),
    so broken files are quick to write and read."""
    buffer = torch.zeros(max(value.numel() for value in state.values()))
    return {key: buffer[: value.numel()].view(value.shape) for key, value in state.items()}


def test_broken_checkpoints_are_refused_naming_the_key(weights, tmp_path):
    broken = shared_storage_copy(weights)
    del broken["middle_block.1.qkv.bias"]
    broken["input_blocks.0.0.weight"] = torch.zeros(128, 6, 3, 3)  # the model without a reference frame
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as refused:
        load_diff2lip(tmp_path / "broken.pt")
    message = str(refused.value)
    assert "missing keys (1): middle_block.1.qkv.bias" in message
    assert "wrong shapes (1): input_blocks.0.0.weight (128, 6, 3, 3) != (128, 9, 3, 3)" in message
    assert refused.value.code == "bad_checkpoint"

    renamed = shared_storage_copy(weights)
    renamed["module.out.2.bias"] = renamed.pop("out.2.bias")
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): out.2.bias; unexpected keys \(1\): module.out.2.bias"):
        load_diff2lip(tmp_path / "renamed.pt")

    torch.save({"state_dict": {"x": torch.zeros(1)}, "step": 3}, tmp_path / "wrapped.pt")
    with pytest.raises(CheckpointError, match="not tensors: state_dict, step"):
        load_diff2lip(tmp_path / "wrapped.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_diff2lip(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_diff2lip(tmp_path / "absent.pt")


# ---------------------------------------------------------------- sampler

def test_linear_schedule_facts():
    betas = linear_betas()
    assert len(betas) == 1000 and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    cumulative = alphas_cumprod(betas)
    assert cumulative[0] == pytest.approx(0.9999, abs=1e-12)
    assert cumulative[1] == pytest.approx(0.9999 * (1 - (1e-4 + 0.0199 / 999)), abs=1e-12)
    assert cumulative[499] == pytest.approx(0.078587, rel=1e-4)
    assert cumulative[999] == pytest.approx(4.0358e-5, rel=1e-4)  # DDPM's alpha-bar at T


def test_ddim_timestep_subsequences():
    assert ddim_timesteps(25) == list(range(0, 1000, 40))  # upstream's ddim25
    assert ddim_timesteps(2) == [0, 500]
    assert ddim_timesteps(3) == [0, 334, 668]
    evenly = ddim_timesteps(600)  # no integer stride gives 600 steps: evenly spaced instead
    assert len(evenly) == 600 and evenly[0] == 0 and evenly[-1] == 999
    with pytest.raises(ValueError):
        ddim_timesteps(0)
    schedule = DdimSchedule.respaced(25)
    full = alphas_cumprod(linear_betas())
    np.testing.assert_allclose(schedule.alphas_cumprod, full[schedule.timesteps], rtol=1e-12)
    assert schedule.alphas_cumprod_prev[0] == 1.0
    np.testing.assert_array_equal(schedule.alphas_cumprod_prev[1:], schedule.alphas_cumprod[:-1])


def test_ddim_recovers_the_image_a_perfect_noise_predictor_knows():
    """A model that predicts the exact noise of a known clean image (using the ORIGINAL step index it is
    given) makes DDIM land on that image, whatever the step count."""
    full = torch.from_numpy(alphas_cumprod(linear_betas()))
    clean = torch.linspace(-0.9, 0.9, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    seen = []

    def oracle(x, t):
        seen.append(int(t[0]))
        abar = full[t].float()[:, None, None, None]
        eps = (x - abar.sqrt() * clean) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    start = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for steps in (2, 25):
        seen.clear()
        result = ddim_sample(oracle, start, DdimSchedule.respaced(steps))
        torch.testing.assert_close(result, clean, atol=1e-4, rtol=0)
        assert seen == ddim_timesteps(steps)[::-1]


# ---------------------------------------------------------------- the stage

def test_stage_contract(stage, checkpoint_dir):
    assert stage.name == "diff2lip" and stage.mode == "high_quality"
    assert stage.required_checkpoints() == [checkpoint_dir / "checkpoint.pt"]
    held = stage.describe()
    assert held["available"] and held["loaded"]
    assert (held["device"], held["precision"], held["backend"], held["batchSize"]) == ("cpu", "fp32", "torch-cpu", 2)
    assert list(held["checkpoints"]) == [str(checkpoint_dir / "checkpoint.pt")]
    assert len(held["checkpoints"][str(checkpoint_dir / "checkpoint.pt")]) == 64
    missing = Diff2LipStage(ModelSettings(diff2lip_ckpt_dir=checkpoint_dir / "absent"), Hardware(cuda=False))
    assert not missing.availability().ok and "checkpoint.pt" in missing.availability().reason


def test_stage_repaints_only_the_mouth(rendered, job):
    assert job.frame_count == 10 and len(rendered) == 2  # one output per incoming pair
    box = int_box(face_box(job.landmarks, (128, 128)))
    region = np.zeros((128, 128), bool)
    region[box[1]:box[3], box[0]:box[2]] = paste_mask(job.landmarks, box) > 0
    assert not region[: (box[1] + box[3]) // 2].any()  # nothing above the box's middle row is pasted
    for frame, landmarks in rendered:
        assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
        assert landmarks is job.landmarks
        changed = np.any(frame != job.portrait, axis=2)
        assert changed.sum() > 50
        assert not np.any(changed & ~region)
    assert np.array_equal(rendered[0][0], rendered[1][0])  # same crop, same noise, same mel window


def test_same_seed_same_frames(stage, job, rendered):
    again = list(stage.transform(job, first_frames(job, 2)))
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(rendered, again, strict=True))
    assert torch.equal(job_noise(3), job_noise(3)) and not torch.equal(job_noise(3), job_noise(4))


def test_each_frame_hears_its_own_mel_window(stage, job):
    windows = mel_windows(job)
    assert windows.shape == (job.frame_count, 80, 16)
    np.testing.assert_array_equal(windows[0], windows[1])  # upstream: frame i hears from frame max(i - 1, 0)
    np.testing.assert_array_equal(windows[3], frame_windows(melspectrogram(job.audio.analysis_samples()), 25.0, 3)[2])
    with torch.inference_mode():  # the audio reaches the embedding every ResBlock adds
        style = stage.model.audio_encoder_to_style(stage.model.audio_encoder(torch.from_numpy(windows[1:3])))
    assert style.shape == (2, 512) and not torch.allclose(style[0], style[1])


# ---------------------------------------------------------------- GPU only

@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA")
def test_fp16_on_cuda_matches_fp32_and_reports_speed(checkpoint_dir, job):
    import time

    path = checkpoint_dir / "checkpoint.pt"
    full = load_diff2lip(path, "cuda:0", fp16=False)
    half = load_diff2lip(path, "cuda:0", fp16=True)
    inputs = [torch.from_numpy(a).cuda() for a in DIFF2LIP_IO.example_inputs(16, seed=1)]
    with torch.inference_mode():
        reference, approx = full(*inputs), half(*inputs)
    error = (approx.float() - reference).abs()
    print(f"Diff2Lip UNet fp16 vs fp32: max abs {error.max().item():.4f}, mean {error.mean().item():.5f}, "
          f"output scale {reference.abs().mean().item():.3f}")
    assert torch.isfinite(approx).all()
    assert error.mean().item() < 0.02 * reference.abs().mean().item() + 1e-3
    del full
    torch.cuda.empty_cache()

    settings = ModelSettings(model_root=checkpoint_dir.parent, diff2lip_ckpt_dir=checkpoint_dir, hq_batch=16)
    stage = Diff2LipStage(settings, Hardware(cuda=True))
    assert stage.load().precision == "fp16"
    stage.warm_up()
    frames = 32
    pairs = [(job.portrait, job.landmarks)] * frames
    list(stage.transform(job, pairs[:16]))  # a whole batch once, so timings below are steady
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = list(stage.transform(job, pairs))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert len(out) == frames
    steps = settings.hq_ddim_steps
    print(f"Diff2Lip fp16 batch 16, {steps} DDIM steps: {frames / seconds:.2f} frames/s, "
          f"{frames * steps / seconds:.1f} frame-steps/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    stage.close()
