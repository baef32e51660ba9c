"""Model and render settings (the seed's variable names), parsed once at the edge and passed down.

`ModelSettings.from_env(env)` takes the mapping the entry point read (cli/ passes os.environ); nothing below
the entry points reads the environment itself, so a worker built from explicit settings renders with exactly
those settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from schemas.errors import SettingsError

QUALITY_MODES = ("auto", "real_time", "high_quality")
WAV2LIP_BASES = ("landmark-warp", "still")
WAV2LIP_BACKENDS = ("auto", "torch", "tensorrt")
SADTALKER_RENDER_SIZES = ("256", "128")


def int_env(env: Mapping[str, str], name: str, default: int, minimum: int = 0, unit: str = "") -> int:
    """A whole-number setting: `default` when unset or blank, else checked against `minimum`."""
    return _number_env(env, name, default, minimum, int, "a whole number" + (f" of {unit}" if unit else ""))


def float_env(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number_env(env, name, default, minimum, float, "a number")


def choice_env(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}.")
    return value


def flag_env(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes/no value (1/0, true/false).")


def _number_env(env: Mapping[str, str], name: str, default, minimum, parse, described: str):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {described}.") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf", and NaN would pass the minimum check
        raise SettingsError(f"{name}={raw!r} is not a finite number.")
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}.")
    return value


def pose_style_env(env: Mapping[str, str]) -> int:
    """SADTALKER_POSE_STYLE: one of SadTalker's 46 head-motion styles (0..45)."""
    style = int_env(env, "SADTALKER_POSE_STYLE", 0, 0)
    if style > 45:
        raise SettingsError(f"SADTALKER_POSE_STYLE must be from 0 to 45, got {style}.")
    return style


def path_env(env: Mapping[str, str], name: str, default: Path) -> Path:
    value = env.get(name, "").strip()
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class ModelSettings:
    default_quality_mode: str = "auto"
    model_root: Path = Path.home() / ".cache" / "avatar-renderer" / "models"
    wav2lip_ckpt: Path | None = None  # None: derived from model_root (see __post_init__)
    sadtalker_ckpt_dir: Path | None = None
    fomm_ckpt_dir: Path | None = None
    diff2lip_ckpt_dir: Path | None = None
    gfpgan_ckpt: Path | None = None
    trt_cache_dir: Path | None = None
    wav2lip_base: str = "landmark-warp"  # what Wav2Lip paints over: the built-in engine's frames or the still
    wav2lip_batch: int = 0  # 0: 128 on a GPU, 16 on a CPU
    wav2lip_backend: str = "auto"  # auto: TensorRT when an engine is built for this checkpoint and GPU
    force_cpu: bool = False  # AVATAR_FORCE_CPU: ignore any GPU
    hq_batch: int = 0  # HQ_BATCH: frames per model call in high_quality stages; 0: 16 on a GPU, 2 on a CPU
    hq_ddim_steps: int = 25  # HQ_DDIM_STEPS: Diff2Lip DDIM sampling steps (upstream: 25); tests use fewer
    hq_allow_cpu: bool = False  # HQ_ALLOW_CPU: let high_quality run without a GPU (very slow; tests, trials)
    sadtalker_still: bool = False  # SADTALKER_STILL: keep the portrait's head pose (expression and blinks only)
    sadtalker_pose_style: int = 0  # SADTALKER_POSE_STYLE: audio2pose style 0..45
    sadtalker_cpu: bool = False  # SADTALKER_CPU: let real_time / auto use SadTalker without a GPU (slow)
    sadtalker_render_size: int = 256  # SADTALKER_RENDER_SIZE: face renderer resolution, 256 (trained) or 128
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 600.0

    def __post_init__(self) -> None:
        root = self.model_root
        for name, default in (("wav2lip_ckpt", root / "wav2lip" / "wav2lip_gan.pth"),
                              ("sadtalker_ckpt_dir", root / "sadtalker"), ("fomm_ckpt_dir", root / "fomm"),
                              ("diff2lip_ckpt_dir", root / "diff2lip"),
                              ("gfpgan_ckpt", root / "gfpgan" / "GFPGANv1.4.pth"), ("trt_cache_dir", root / "trt")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ModelSettings":
        root = path_env(env, "MODEL_ROOT", cls.model_root)
        return cls(
            default_quality_mode=choice_env(env, "DEFAULT_QUALITY_MODE", "auto", QUALITY_MODES),
            model_root=root,
            wav2lip_ckpt=path_env(env, "WAV2LIP_CKPT", root / "wav2lip" / "wav2lip_gan.pth"),
            sadtalker_ckpt_dir=path_env(env, "SADTALKER_CKPT_DIR", root / "sadtalker"),
            fomm_ckpt_dir=path_env(env, "FOMM_CKPT_DIR", root / "fomm"),
            diff2lip_ckpt_dir=path_env(env, "DIFF2LIP_CKPT_DIR", root / "diff2lip"),
            gfpgan_ckpt=path_env(env, "GFPGAN_CKPT", root / "gfpgan" / "GFPGANv1.4.pth"),
            trt_cache_dir=path_env(env, "TRT_CACHE_DIR", root / "trt"),
            wav2lip_base=choice_env(env, "WAV2LIP_BASE", "landmark-warp", WAV2LIP_BASES),
            wav2lip_batch=int_env(env, "WAV2LIP_BATCH", 0, 0),
            wav2lip_backend=choice_env(env, "WAV2LIP_BACKEND", "auto", WAV2LIP_BACKENDS),
            force_cpu=flag_env(env, "AVATAR_FORCE_CPU", False),
            hq_batch=int_env(env, "HQ_BATCH", 0, 0),
            hq_ddim_steps=int_env(env, "HQ_DDIM_STEPS", 25, 1),
            hq_allow_cpu=flag_env(env, "HQ_ALLOW_CPU", False),
            sadtalker_still=flag_env(env, "SADTALKER_STILL", False),
            sadtalker_pose_style=pose_style_env(env),
            sadtalker_cpu=flag_env(env, "SADTALKER_CPU", False),
            sadtalker_render_size=int(choice_env(env, "SADTALKER_RENDER_SIZE", "256", SADTALKER_RENDER_SIZES)),
            max_image_pixels=int_env(env, "MAX_IMAGE_PIXELS", 40_000_000, 1),
            max_audio_seconds=float_env(env, "MAX_AUDIO_SECONDS", 600.0, 0.001),
        )
