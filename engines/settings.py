"""Model and render settings read from the environment (the seed's variable names), validated once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from schemas.errors import SettingsError

QUALITY_MODES = ("auto", "real_time", "high_quality")


def int_env(env: dict[str, str], name: str, default: int, minimum: int = 0, unit: str = "") -> int:
    """A whole-number setting: `default` when unset or blank, else checked against `minimum`."""
    return _number_env(env, name, default, minimum, int, "a whole number" + (f" of {unit}" if unit else ""))


def float_env(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number_env(env, name, default, minimum, float, "a number")


def _number_env(env: dict[str, str], name: str, default, minimum, parse, described: str):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {described}.") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _path_env(env: dict[str, str], name: str, default: Path) -> Path:
    value = env.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class ModelSettings:
    default_quality_mode: str
    model_root: Path
    wav2lip_ckpt: Path
    sadtalker_ckpt_dir: Path
    fomm_ckpt_dir: Path
    diff2lip_ckpt_dir: Path
    gfpgan_ckpt: Path
    max_image_pixels: int
    max_audio_seconds: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ModelSettings":
        env = dict(os.environ if env is None else env)
        mode = env.get("DEFAULT_QUALITY_MODE", "auto").strip() or "auto"
        if mode not in QUALITY_MODES:
            raise SettingsError(
                f"DEFAULT_QUALITY_MODE={mode!r} is not one of {', '.join(QUALITY_MODES)}."
            )
        root = _path_env(env, "MODEL_ROOT", Path.home() / ".cache" / "avatar-renderer" / "models")
        try:
            max_pixels = int(env.get("MAX_IMAGE_PIXELS", str(40_000_000)))
            max_seconds = float(env.get("MAX_AUDIO_SECONDS", "600"))
        except ValueError as exc:
            raise SettingsError(f"MAX_IMAGE_PIXELS / MAX_AUDIO_SECONDS must be numbers: {exc}") from exc
        if max_pixels <= 0 or max_seconds <= 0:
            raise SettingsError("MAX_IMAGE_PIXELS and MAX_AUDIO_SECONDS must be positive.")
        return cls(
            default_quality_mode=mode,
            model_root=root,
            wav2lip_ckpt=_path_env(env, "WAV2LIP_CKPT", root / "wav2lip" / "wav2lip_gan.pth"),
            sadtalker_ckpt_dir=_path_env(env, "SADTALKER_CKPT_DIR", root / "sadtalker"),
            fomm_ckpt_dir=_path_env(env, "FOMM_CKPT_DIR", root / "fomm"),
            diff2lip_ckpt_dir=_path_env(env, "DIFF2LIP_CKPT_DIR", root / "diff2lip"),
            gfpgan_ckpt=_path_env(env, "GFPGAN_CKPT", root / "gfpgan" / "GFPGANv1.4.pth"),
            max_image_pixels=max_pixels,
            max_audio_seconds=max_seconds,
        )
