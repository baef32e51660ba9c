"""The sadtalker engine: crop and seamless paste-back, the coefficient track, the real_time chain and its
fallbacks (SadTalker + Wav2Lip -> Wav2Lip over the built-in warp -> built-in warp, each named with why),
`models verify --engine sadtalker`, and SadTalker -> Wav2Lip end to end on CPU with random upstream-format
checkpoints (the face renderer at 128 px, SADTALKER_RENDER_SIZE, to keep CPU time down)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from cli.main import main  # noqa: E402
from engines.hardware import Hardware  # noqa: E402
from engines.registry import EngineRegistry  # noqa: E402
from engines.sadtalker import coefficients as coeffs  # noqa: E402
from engines.sadtalker.crop import PasteBack, align_for_recon, crop_square, face_square, feather_mask, five_points  # noqa: E402
from engines.settings import ModelSettings  # noqa: E402
from tests.sadtalker_fixtures import MAPPING_NAME, SAFETENSORS_NAME, layout_state, write_sadtalker_dir  # noqa: E402
from tests.wav2lip_fixtures import portrait_job, random_model, save_upstream  # noqa: E402

torch.set_num_threads(2)
CPU, GPU = Hardware(cuda=False), Hardware(cuda=True)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def job():
    return portrait_job(size=192, seconds=0.3, fps=10)


# ---------------------------------------------------------------- crop and paste-back


def test_paste_back_changes_only_the_square_and_fades_to_nothing_at_its_edge(job):
    square = face_square(job.landmarks)
    assert 0.3 * job.size < square.side < 1.5 * job.size
    paste = PasteBack(square, job.portrait.shape[:2])
    rendered = np.full((128, 128, 3), 7, np.uint8)
    out = paste(job.portrait, rendered)
    inside = np.zeros(job.portrait.shape[:2], bool)
    inside[max(0, square.y0):square.y0 + square.side, max(0, square.x0):square.x0 + square.side] = True
    assert np.array_equal(out[~inside], job.portrait[~inside])  # outside the square: the portrait's own pixels
    mask = feather_mask(square.side)
    assert mask[0].max() == 0 and mask[:, -1].max() == 0 and mask[square.side // 2, square.side // 2] == 1
    centre = (square.y0 + square.side // 2, square.x0 + square.side // 2)
    assert np.all(out[centre] == 7)  # the middle is the rendered face
    ramp = round(0.12 * square.side)  # FEATHER of the side
    assert np.abs(np.diff(mask, axis=0)).max() <= 1.5 / ramp + 1e-6  # a gradual smoothstep ramp: no seam


def test_the_square_does_not_depend_on_the_frame_and_crops_consistently(job):
    square = face_square(job.landmarks)
    assert face_square(job.landmarks.copy()) == square  # one box per job: no crop jitter
    crop = crop_square(job.portrait, square, 256)
    assert crop.shape == (256, 256, 3)


def test_recon_alignment_is_invariant_to_where_and_how_big_the_face_is(job):
    points = five_points(job.landmarks)
    aligned = align_for_recon(job.portrait, points).astype(np.float32)
    big = np.pad(job.portrait, ((40, 0), (25, 0), (0, 0)), mode="edge")
    import cv2

    big = cv2.resize(big, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    moved = (points + np.array([25, 40])) * 1.5
    again = align_for_recon(big, moved).astype(np.float32)
    assert aligned.shape == (224, 224, 3)
    assert np.abs(aligned - again)[40:184, 40:184].mean() < 12  # the same face, the same place and size


# ---------------------------------------------------------------- coefficients


def test_mel_windows_start_two_frames_early_and_clamp():
    mel = np.arange(80 * 50, dtype=np.float32).reshape(80, 50)
    windows = coeffs.mel_windows(mel, 12)
    assert windows.shape == (12, 80, 16)
    assert np.array_equal(windows[0, 0], np.clip(np.arange(-6, 10), 0, None))  # int(80 * -2 / 25) = -6, clamped
    assert np.array_equal(windows[2, 0], np.arange(16))  # frame 2 reads from column 0
    assert np.array_equal(windows[11, 0], np.minimum(np.arange(28, 44), 49))


def test_mapping_windows_at_25_fps_are_upstreams_27_frame_windows():
    track = np.random.default_rng(0).standard_normal((40, 70)).astype(np.float32)
    windows = coeffs.mapping_windows(track, 40, 25.0)
    for frame in (0, 5, 39):
        index = np.clip(np.arange(frame - 13, frame + 14), 0, 39)
        assert np.allclose(windows[frame], track[index].T)
    halfway = coeffs.mapping_windows(track, 2, 12.5)[1]  # 12.5 fps: frame 1 sits on 25 fps frame 2
    assert np.allclose(halfway, windows[2])
    assert np.array_equal(coeffs.mapping_windows(track, 3, 25.0, start=37), windows[37:40])  # a batch at a time


def test_blinks_are_seeded_and_absent_from_short_clips():
    a = coeffs.blink_ratio(200, np.random.default_rng(4))
    assert np.array_equal(a, coeffs.blink_ratio(200, np.random.default_rng(4)))
    assert a.max() == 1.0 and (a > 0).sum() % 5 == 0
    assert coeffs.blink_ratio(20, np.random.default_rng(4)).max() == 0


def test_coefficient_track_is_seeded_and_still_mode_keeps_the_pose():
    from types import SimpleNamespace

    from engines.sadtalker.checkpoint import build_part

    models = SimpleNamespace(audio2exp=build_part("audio2exp").eval(), audio2pose=build_part("audio2pose").eval())
    source = np.random.default_rng(1).standard_normal(70).astype(np.float32)
    mel = np.random.default_rng(2).uniform(-4, 4, (80, 120)).astype(np.float32)
    moving = coeffs.coefficient_track(models, source, mel, 30, pose_style=7, still=False, seed=3)
    assert moving.shape == (30, 70)
    assert np.array_equal(moving, coeffs.coefficient_track(models, source, mel, 30, 7, False, 3))
    assert not np.allclose(moving[:, 64:], source[64:])  # the head moves
    still = coeffs.coefficient_track(models, source, mel, 30, pose_style=7, still=True, seed=3)
    assert np.array_equal(still[:, 64:], np.repeat(source[None, 64:], 30, axis=0))
    assert np.array_equal(still[:, :64], moving[:, :64])  # the expression is the same


def test_settings_are_read_and_checked():
    from schemas.errors import SettingsError

    settings = ModelSettings.from_env({"SADTALKER_STILL": "1", "SADTALKER_POSE_STYLE": "45", "SADTALKER_CPU": "yes",
                                       "SADTALKER_RENDER_SIZE": "128"})
    assert (settings.sadtalker_still, settings.sadtalker_pose_style, settings.sadtalker_cpu,
            settings.sadtalker_render_size) == (True, 45, True, 128)
    defaults = ModelSettings.from_env({})
    assert (defaults.sadtalker_still, defaults.sadtalker_pose_style, defaults.sadtalker_cpu,
            defaults.sadtalker_render_size) == (False, 0, False, 256)
    for name, value in (("SADTALKER_POSE_STYLE", "46"), ("SADTALKER_POSE_STYLE", "-1"),
                        ("SADTALKER_RENDER_SIZE", "512"), ("SADTALKER_CPU", "maybe")):
        with pytest.raises(SettingsError, match=name):
            ModelSettings.from_env({name: value})


# ---------------------------------------------------------------- the chain and its fallbacks


def placeholder_files(tmp_path, sadtalker=True, wav2lip=True) -> tuple[Path, Path]:
    """Checkpoint files that exist (mode resolution only checks presence; nothing is loaded)."""
    folder = tmp_path / "sadtalker"
    folder.mkdir(exist_ok=True)
    if sadtalker:
        (folder / SAFETENSORS_NAME).write_bytes(b"x")
        (folder / MAPPING_NAME).write_bytes(b"x")
    w2l = tmp_path / "wav2lip_gan.pth"
    if wav2lip:
        w2l.write_bytes(b"x")
    return folder, w2l


def resolve(tmp_path, hardware=CPU, sadtalker=True, wav2lip=True, cpu=True, mode="real_time"):
    folder, w2l = placeholder_files(tmp_path, sadtalker, wav2lip)
    settings = ModelSettings(model_root=tmp_path, sadtalker_ckpt_dir=folder, wav2lip_ckpt=w2l, sadtalker_cpu=cpu)
    return EngineRegistry(settings, hardware).resolve(mode, None)


def test_real_time_is_sadtalker_then_wav2lip_when_both_are_present(tmp_path):
    chosen = resolve(tmp_path)
    assert (chosen.engine.name, chosen.mode) == ("sadtalker", "real_time")
    assert [s.name for s in chosen.engine.stages()] == ["wav2lip"]
    assert resolve(tmp_path, hardware=GPU, cpu=False).engine.name == "sadtalker"


def test_fallbacks_name_what_was_passed_over_and_why(tmp_path):
    on_cpu = resolve(tmp_path, cpu=False)  # SADTALKER_CPU off: the fast chain on a CPU
    assert on_cpu.engine.name == "wav2lip"
    assert "not sadtalker" in on_cpu.why and "SADTALKER_CPU=1" in on_cpu.why
    (tmp_path / "a").mkdir()
    no_sadtalker = resolve(tmp_path / "a", sadtalker=False)
    assert no_sadtalker.engine.name == "wav2lip" and SAFETENSORS_NAME in no_sadtalker.why
    (tmp_path / "b").mkdir()
    nothing = resolve(tmp_path / "b", wav2lip=False, mode="auto")
    assert nothing.engine.name == "landmark-warp"
    assert "wav2lip checkpoints are missing" in nothing.why


def test_asking_for_sadtalker_without_wav2lip_says_what_is_missing(tmp_path):
    from schemas.errors import EngineUnavailable

    folder, w2l = placeholder_files(tmp_path, wav2lip=False)
    registry = EngineRegistry(ModelSettings(model_root=tmp_path, sadtalker_ckpt_dir=folder, wav2lip_ckpt=w2l,
                                            sadtalker_cpu=True), CPU)
    with pytest.raises(EngineUnavailable, match="wav2lip checkpoints are missing"):
        registry.resolve(None, "sadtalker")


# ---------------------------------------------------------------- real checkpoints (random weights), end to end


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    folder = write_sadtalker_dir(root / "sadtalker", seed=2)
    (root / "wav2lip").mkdir()
    w2l = save_upstream(random_model(seed=5), root / "wav2lip" / "wav2lip_gan.pth", data_parallel=True)
    return root, folder, w2l


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_verify_accepts_exact_layouts_and_names_a_bad_key(checkpoints, tmp_path, monkeypatch, capsys):
    root, folder, _ = checkpoints
    monkeypatch.setenv("MODEL_ROOT", str(root))
    monkeypatch.setenv("SADTALKER_CKPT_DIR", str(folder))
    code, out, _ = run_cli(capsys, "models", "verify", "--engine", "sadtalker")
    assert code == 0, out
    assert f"OK       sadtalker/{SAFETENSORS_NAME}" in out and f"OK       sadtalker/{MAPPING_NAME}" in out

    state = layout_state("mapping_00229")
    state.pop("encoder1.1.weight")
    torch.save({"mapping": state, "epoch": 229}, tmp_path / MAPPING_NAME)
    code, _, err = run_cli(capsys, "models", "verify", "--engine", "sadtalker", "--checkpoint", str(tmp_path / MAPPING_NAME))
    assert code == 1 and "missing keys (1): encoder1.1.weight" in err
    from safetensors.torch import save_file

    save_file({"audio2exp.mapping1.weight": torch.zeros(64, 577), "netG.stray": torch.zeros(1)},
              str(tmp_path / SAFETENSORS_NAME))
    code, _, err = run_cli(capsys, "models", "verify", "--engine", "sadtalker", "--checkpoint", str(tmp_path / SAFETENSORS_NAME))
    assert code == 1 and "netG.stray" in err


@pytest.mark.slow
def test_render_real_time_runs_sadtalker_then_wav2lip_end_to_end(checkpoints, tmp_path):
    import av

    from engines.media_audio import write_wav
    from tests.wav2lip_fixtures import speech

    root, folder, w2l = checkpoints
    audio = write_wav(tmp_path / "speech.wav", speech(0.45).samples)
    env = {**os.environ, "MODEL_ROOT": str(root), "SADTALKER_CKPT_DIR": str(folder), "WAV2LIP_CKPT": str(w2l),
           "SADTALKER_CPU": "1", "SADTALKER_RENDER_SIZE": "128", "AVATAR_FORCE_CPU": "1", "SADTALKER_POSE_STYLE": "12",
           "ALLOWED_INPUT_ROOTS": f"{ROOT}:{tmp_path}"}
    out = tmp_path / "talk.mp4"
    done = subprocess.run([sys.executable, "-m", "cli.render", "--face", str(ROOT / "engines/samples/portrait.jpg"),
                           "--audio", str(audio), "--out", str(out), "--mode", "real_time", "--size", "160",
                           "--fps", "10"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["engine"], result["mode"], result["frames"]) == ("sadtalker", "real_time", 5)
    assert set(result["engine_details"]["checkpoints"]) == {str(folder / SAFETENSORS_NAME), str(folder / MAPPING_NAME)}
    with av.open(str(out)) as container:
        assert container.metadata["comment"] == "avatar-renderer engine=sadtalker mode=real_time"
        assert container.metadata["description"] == result["engine_details"]["why"] == "sadtalker checkpoints are present"
        video, sound = container.streams.video[0], container.streams.audio[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert float(video.duration * video.time_base) == pytest.approx(0.5, abs=1e-6)
        assert float(sound.duration * sound.time_base) == pytest.approx(0.45, abs=0.03)
    assert len(frames) == 5 and frames[0].shape == (160, 160, 3)
    assert len({f.tobytes() for f in frames}) == 5  # every frame differs: the renderer is driven per frame


def test_crop_then_paste_back_returns_the_portrait(job):
    """A rendered face identical to the crop it was given goes back without a shift (pixel centres aligned)."""
    square = face_square(job.landmarks)
    crop = crop_square(job.portrait, square, 256)
    back = PasteBack(square, job.portrait.shape[:2])(job.portrait, crop)
    inner = slice(max(0, square.y0) + 8, square.y0 + square.side - 8), slice(max(0, square.x0) + 8, square.x0 + square.side - 8)
    assert np.abs(back[inner].astype(int) - job.portrait[inner]).mean() < 1.0  # 5 with corner-aligned pixels
