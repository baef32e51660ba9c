"""FOMM vox-256: upstream-exact layout, strict loading of upstream-format checkpoints, refusals naming the
bad key, and the motion stage on a small job (random weights, CPU)."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.hardware import Hardware  # noqa: E402
from engines.settings import ModelSettings  # noqa: E402
from engines.stages import still_pairs  # noqa: E402
from schemas.errors import CheckpointError  # noqa: E402
from tests.wav2lip_fixtures import portrait_job  # noqa: E402

torch.set_num_threads(2)

LAYOUT = json.loads((Path(__file__).parent / "fixtures" / "fomm_vox256_layout.json").read_text())
HAS_CUDA = torch.cuda.is_available()


def layout_of(model) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    from engines.fomm.checkpoint import write_random_fomm

    folder = tmp_path_factory.mktemp("fomm")
    write_random_fomm(folder / "vox-cpk.pth.tar", seed=1)
    return folder


@pytest.fixture(scope="module")
def stage(checkpoint_dir):
    from engines.fomm.stage import FommStage

    fomm = FommStage(ModelSettings(model_root=checkpoint_dir, fomm_ckpt_dir=checkpoint_dir), Hardware(cuda=False))
    fomm.load()
    yield fomm
    fomm.close()


@pytest.fixture(scope="module")
def job():
    """2 frames 0.3 s apart (fps 10/3), 128 px: the head has moved visibly between them."""
    return portrait_job(size=128, seconds=0.6, fps=Fraction(10, 3))


@pytest.fixture(scope="module")
def rendered(stage, job):
    return list(stage.transform(job, still_pairs(job)))


# ---------------------------------------------------------------------------------------------- layout


def test_layouts_are_upstreams_key_for_key():
    from engines.fomm.model import KPDetector, OcclusionAwareGenerator

    for name, model in (("generator", OcclusionAwareGenerator()), ("kp_detector", KPDetector())):
        state = model.state_dict()
        assert list(state) == list(LAYOUT[name]), name  # same keys, same order
        assert layout_of(model) == LAYOUT[name], name
        int64 = sorted(key for key, value in state.items() if value.dtype == torch.int64)
        assert int64 == LAYOUT["int64"][name]
        assert all(value.dtype == torch.float32 for key, value in state.items() if key not in int64)
        assert sum(p.numel() for p in model.parameters()) == LAYOUT["parameters"][name]


def test_fixed_gaussian_buffers_equal_upstreams():
    from engines.fomm.model import KPDetector, OcclusionAwareGenerator

    kp_down = KPDetector().state_dict()["down.weight"]
    motion_down = OcclusionAwareGenerator().state_dict()["dense_motion_network.down.weight"]
    for tensor, name in ((kp_down, "kp_detector.down.weight"), (motion_down, "generator.dense_motion_network.down.weight")):
        assert list(tensor.shape) == [3, 1, 13, 13]
        np.testing.assert_allclose(tensor.numpy().ravel(), LAYOUT["down_weight"][name], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------- files


def test_random_checkpoint_is_upstreams_file_format_and_loads_strictly(checkpoint_dir, stage):
    path = checkpoint_dir / "vox-cpk.pth.tar"
    with open(path, "rb") as handle:
        assert handle.read(2) != b"PK"  # legacy torch serialisation, as torch 1.0 wrote vox-cpk.pth.tar
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"generator", "kp_detector", "discriminator", "optimizer_generator",
                        "optimizer_discriminator", "optimizer_kp_detector", "epoch"}
    assert {key: list(value.shape) for key, value in raw["discriminator"].items()} == LAYOUT["discriminator"]
    generator, kp_detector = stage.generator, stage.kp_detector  # what load_fomm gave the stage
    assert not generator.training and not kp_detector.training
    for model, name in ((generator, "generator"), (kp_detector, "kp_detector")):
        for key, value in model.state_dict().items():
            assert torch.equal(value, raw[name][key]), key


def test_broken_files_are_refused_naming_the_key(stage, tmp_path):
    from engines.fomm.checkpoint import load_fomm

    generator, kp_detector = dict(stage.generator.state_dict()), dict(stage.kp_detector.state_dict())
    del generator["bottleneck.r3.conv2.weight"]
    kp_detector["jacobian.weight"] = torch.zeros(4, 35, 7, 7)
    kp_detector["kp.extra"] = torch.zeros(1)
    torch.save({"generator": generator, "kp_detector": kp_detector, "epoch": 1}, tmp_path / "broken.pth.tar")
    with pytest.raises(CheckpointError) as refused:
        load_fomm(tmp_path / "broken.pth.tar")
    message = str(refused.value)
    assert refused.value.code == "bad_checkpoint"
    assert "generator: missing keys (1): bottleneck.r3.conv2.weight" in message
    assert "kp_detector: unexpected keys (1): kp.extra" in message
    assert "jacobian.weight (4, 35, 7, 7) != (40, 35, 7, 7)" in message
    torch.save({"generator": {"first.conv.weight": torch.zeros(64, 3, 7, 7)}, "epoch": 1}, tmp_path / "half.pth.tar")
    with pytest.raises(CheckpointError, match="no 'kp_detector'"):
        load_fomm(tmp_path / "half.pth.tar")
    (tmp_path / "text.pth.tar").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_fomm(tmp_path / "text.pth.tar")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_fomm(tmp_path / "absent.pth.tar")


def test_stage_needs_its_checkpoint(tmp_path):
    from engines.fomm.stage import FommStage

    fomm = FommStage(ModelSettings(model_root=tmp_path), Hardware(cuda=False))
    assert fomm.required_checkpoints() == [tmp_path / "fomm" / "vox-cpk.pth.tar"]
    availability = fomm.availability()
    assert not availability.ok and "vox-cpk.pth.tar" in availability.reason


# ---------------------------------------------------------------------------------------------- motion


def test_speech_motion_is_seeded_and_follows_the_speech(job):
    from engines.fomm.motion import speech_head_motion
    from engines.media_audio import Audio

    motion = speech_head_motion(job)
    again = speech_head_motion(job)
    assert len(motion) == job.frame_count
    for name in ("angle", "shift", "scale"):
        np.testing.assert_array_equal(getattr(motion, name), getattr(again, name))
    other_seed = speech_head_motion(replace(job, seed=job.seed + 1))
    assert not np.array_equal(motion.angle, other_seed.angle)
    # Nods come with the speech: the same seed with the second half silenced nods differently.
    half_silent = job.audio.samples.copy()
    half_silent[len(half_silent) // 2 :] = 0.0
    silent_end = speech_head_motion(replace(job, audio=Audio(half_silent)))
    assert not np.allclose(motion.shift[:, 1], silent_end.shift[:, 1])
    np.testing.assert_array_equal(motion.angle, silent_end.angle)  # sway is seeded, not speech-driven


def test_speech_keypoints_move_head_keypoints_rigidly_and_leave_far_ones():
    from engines.fomm.model import Keypoints
    from engines.fomm.motion import HeadMotion, speech_keypoints, to_model_coordinates

    size = 101
    motion = HeadMotion(angle=np.array([0.0, 0.1], np.float32), shift=np.array([[5.0, -2.5], [0.0, 0.0]], np.float32),
                        scale=np.array([1.0, 1.1], np.float32), pivot=np.array([50.0, 90.0], np.float32),
                        head_center=np.array([50.0, 40.0], np.float32), head_radii=np.array([20.0, 25.0], np.float32))
    head = to_model_coordinates(np.array([[50.0, 40.0], [60.0, 30.0]]), size)
    far = to_model_coordinates(np.array([[2.0, 98.0]]), size)
    values = torch.as_tensor(np.concatenate([head, far]))[None].repeat(2, 1, 1)
    source = Keypoints(values, torch.eye(2).expand(2, 3, 2, 2).clone())
    driving = speech_keypoints(source, motion, slice(0, 2), size)
    # frame 0: a pure shift of 5, -2.5 pixels = 0.1, -0.05 in [-1, 1]; Jacobians unchanged
    np.testing.assert_allclose((driving.value[0, :2] - values[0, :2]).numpy(), [[0.1, -0.05]] * 2, atol=1e-6)
    np.testing.assert_allclose(driving.jacobian[0, :2].numpy(), np.eye(2)[None].repeat(2, 0), atol=1e-6)
    # frame 1: turned 0.1 rad and scaled 1.1 about the neck, Jacobian = the same linear part
    pivot = to_model_coordinates(motion.pivot, size)
    linear = 1.1 * np.array([[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]])
    np.testing.assert_allclose(driving.value[1, :2].numpy(), (head - pivot) @ linear.T + pivot, atol=1e-5)
    np.testing.assert_allclose(driving.jacobian[1, 0].numpy(), linear, atol=1e-5)
    # the keypoint far from the head stays where it is
    np.testing.assert_allclose(driving.value[:, 2].numpy(), values[:, 2].numpy(), atol=1e-7)


def test_relative_keypoints_follow_upstream_normalize_kp():
    from engines.fomm.model import Keypoints
    from engines.fomm.motion import relative_keypoints

    generator = torch.Generator().manual_seed(0)
    def random_keypoints():
        return Keypoints(torch.rand(1, 10, 2, generator=generator) * 2 - 1,
                         torch.eye(2) + 0.1 * torch.randn(1, 10, 2, 2, generator=generator))
    source, driving, initial = random_keypoints(), random_keypoints(), random_keypoints()
    moved = relative_keypoints(source, driving, initial, scale=0.5)
    np.testing.assert_allclose(moved.value, source.value + 0.5 * (driving.value - initial.value), atol=1e-6)
    expected = torch.matmul(torch.matmul(driving.jacobian, torch.inverse(initial.jacobian)), source.jacobian)
    np.testing.assert_allclose(moved.jacobian, expected, atol=1e-6)
    same = relative_keypoints(source, initial, initial)  # the first driving frame leaves the source as it is
    np.testing.assert_allclose(same.value, source.value, atol=1e-6)
    np.testing.assert_allclose(same.jacobian, source.jacobian, atol=1e-5)


def test_landmarks_follow_a_known_deformation():
    from engines.fomm.warp import move_points

    height = width = 64
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    grid = torch.stack([xs, ys], -1)[None]
    shifted = grid - torch.tensor([0.1, -0.05])  # output z shows source z - t: content moved by +t
    points = torch.tensor([[[0.0, 0.0], [0.3, -0.4], [-0.5, 0.2]]])
    np.testing.assert_allclose(move_points(points, shifted), points + torch.tensor([0.1, -0.05]), atol=1e-5)
    zoomed = grid / 1.2  # content scaled up 1.2x about the centre
    np.testing.assert_allclose(move_points(points, zoomed), points * 1.2, atol=1e-4)


def test_full_resolution_keeps_the_portrait_at_rest_and_generates_only_what_motion_hides():
    from engines.fomm.warp import full_resolution

    generator = torch.Generator().manual_seed(0)
    portrait = torch.rand(1, 3, 40, 40, generator=generator)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 10), torch.linspace(-1, 1, 10), indexing="ij")
    identity = torch.stack([xs, ys], -1)[None]
    rest = 0.3 + 0.6 * torch.rand(1, 1, 10, 10, generator=generator)  # the network's map is not 1 at rest
    generated = torch.zeros(1, 3, 256, 256)
    still = full_resolution(portrait, identity, rest, generated, rest_occlusion=rest)
    torch.testing.assert_close(still, portrait, atol=1e-5, rtol=0)
    hidden = rest.clone()
    hidden[..., :5] = 0.0  # motion hides the left half of the source: generated (black) pixels fill it
    frame = full_resolution(portrait, identity, hidden, generated, rest_occlusion=rest)
    assert frame[..., :16].abs().max() < 1e-6
    torch.testing.assert_close(frame[..., 24:], portrait[..., 24:], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- the stage


def test_stage_describes_what_it_holds(stage, checkpoint_dir):
    from engines.files import file_sha256

    described = stage.describe()
    assert described["name"] == "fomm" and described["mode"] == "high_quality" and described["loaded"]
    assert (described["device"], described["backend"], described["precision"]) == ("cpu", "torch-cpu", "fp32")
    assert described["batchSize"] == 2  # CPU default (HQ_BATCH unset)
    path = checkpoint_dir / "vox-cpk.pth.tar"
    assert described["checkpoints"] == {str(path): file_sha256(path)}


def test_stage_yields_every_frame_moving_with_the_head(rendered, job):
    from engines.fomm.motion import speech_head_motion, to_pixels, to_model_coordinates

    assert len(rendered) == job.frame_count == 2
    for frame, landmarks in rendered:
        assert frame.shape == (job.size, job.size, 3) and frame.dtype == np.uint8
        assert landmarks.shape == (478, 2) and landmarks.dtype == np.float32 and np.isfinite(landmarks).all()
    frames = [frame.astype(np.int16) for frame, _ in rendered]
    assert all(np.abs(a - b).mean() > 0.05 for a, b in zip(frames, frames[1:]))  # the head moves
    # Landmarks move the way the head was driven: each one along the rigid head motion at its place (random
    # weights: the share of the motion a landmark gets depends on where the random keypoints fall).
    motion = speech_head_motion(job)
    points = to_model_coordinates(job.landmarks, job.size)
    pivot = to_model_coordinates(motion.pivot, job.size)
    for i, (_, landmarks) in enumerate(rendered):
        cos, sin = np.cos(motion.angle[i]) * motion.scale[i], np.sin(motion.angle[i]) * motion.scale[i]
        driven = (points - pivot) @ np.array([[cos, -sin], [sin, cos]]).T + pivot + 2 * motion.shift[i] / (job.size - 1)
        head_moved = to_pixels(driven, job.size) - job.landmarks
        landmarks_moved = landmarks - job.landmarks
        moving = np.linalg.norm(landmarks_moved, axis=1) > 1e-3
        assert moving.mean() > 0.5, i
        along = (head_moved * landmarks_moved).sum(1) / (np.linalg.norm(head_moved, axis=1) * np.linalg.norm(landmarks_moved, axis=1))
        assert np.median(along[moving]) > 0.9, (i, np.median(along[moving]))


def test_stage_rerenders_identically_with_the_same_seed(stage, job, rendered):
    again = list(stage.transform(job, still_pairs(job)))
    assert len(again) == 2
    for (frame, landmarks), (first, first_landmarks) in zip(again, rendered):
        np.testing.assert_array_equal(frame, first)
        np.testing.assert_array_equal(landmarks, first_landmarks)


def test_full_resolution_warp_is_sharper_than_upscaling_256(stage):
    """At 512 px, the portrait warped by FOMM's upsampled deformation against the best the 256-px path can
    give (the 256-px warp upscaled): Laplacian variance on the face."""
    import cv2

    from engines.fomm.stage import frame_tensor, model_input
    from engines.fomm.warp import full_resolution, upscaled_prediction

    job = portrait_job(size=512, seconds=0.1)
    with torch.inference_mode():
        source_image = model_input([job.portrait], "cpu")
        keypoints = stage.kp_detector(source_image)
        motion = stage.generator.dense_motion_network(source_image, keypoints, keypoints)
        deformation, seen = motion["deformation"], torch.ones_like(motion["occlusion_map"])
        ours = full_resolution(frame_tensor([job.portrait], "cpu"), deformation, seen, source_image)
        small = full_resolution(source_image, deformation, seen, source_image)
        upscaled = upscaled_prediction(small, 512)

    x0, y0 = job.landmarks.min(axis=0).astype(int)
    x1, y1 = job.landmarks.max(axis=0).astype(int)

    def sharpness(image: torch.Tensor) -> float:
        gray = cv2.cvtColor((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(gray[y0:y1, x0:x1], cv2.CV_64F).var())

    assert sharpness(ours) > 2 * sharpness(upscaled)


def test_driving_video_moves_the_portrait_relative_to_its_first_frame(stage):
    job = portrait_job(size=96, seconds=0.08)  # 2 frames
    shifted = np.roll(job.portrait, 8, axis=1)  # the driving face moves 8 px right
    (first, first_marks), (second, second_marks) = stage.transform(job, still_pairs(job),
                                                                   driving=iter([job.portrait, shifted]))
    # The first driving frame is the reference: no motion, the portrait and its landmarks as they are.
    assert np.abs(first_marks - job.landmarks).max() < 0.05
    assert np.abs(first.astype(int) - job.portrait).max() <= 2
    assert np.abs(second.astype(int) - first).mean() > 0.05  # the second driving frame moves the face
    assert np.abs(second_marks - job.landmarks).mean() > 0.05


def test_a_short_driving_video_is_held_on_its_last_frame_and_an_empty_one_refused():
    from engines.fomm.stage import FommStage
    from schemas.errors import InputError

    frames = iter([np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8), None, None])
    shown, last = FommStage._driving_batch(frames, 2, None)
    assert [f.max() for f in shown] == [0, 1]
    held, _ = FommStage._driving_batch(frames, 2, last)
    assert [f.max() for f in held] == [1, 1]
    with pytest.raises(InputError, match="no frames"):
        FommStage._driving_batch(iter([None]), 1, None)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA")
def test_fp16_on_cuda_matches_fp32(checkpoint_dir):
    from engines.fomm.stage import FommStage

    settings = ModelSettings(model_root=checkpoint_dir, fomm_ckpt_dir=checkpoint_dir)
    job = portrait_job(size=512, seconds=0.6, fps=25)
    on_gpu = FommStage(settings, Hardware(cuda=True))
    on_cpu = FommStage(settings, Hardware(cuda=False))
    assert on_gpu.load().precision == "fp16" and on_gpu.load().backend == "torch-cuda"
    pairs = list(still_pairs(job))[:4]
    half = list(on_gpu.transform(job, pairs))
    full = list(on_cpu.transform(job, pairs))
    for (frame16, marks16), (frame32, marks32) in zip(half, full):
        assert np.abs(frame16.astype(int) - frame32).mean() < 1.0
        assert np.abs(marks16 - marks32).max() < 0.5
    on_gpu.close()
