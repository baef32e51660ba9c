"""Which engine renders a request: quality mode + hardware + checkpoints present -> one engine.

auto         -> high_quality when a GPU and the FOMM + Diff2Lip checkpoints are there,
                else the neural real_time engine when its checkpoints are there,
                else the built-in weightless engine (logged, with how to get the neural models).
real_time    -> the neural real_time engine when available, else the built-in engine (the CPU path).
high_quality -> its engine, or a clear error naming what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .base import Engine
from schemas.errors import EngineUnavailable
from .hardware import Hardware
from .settings import QUALITY_MODES, ModelSettings

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".safetensors", ".onnx")


@dataclass(frozen=True)
class Resolution:
    engine: Engine
    mode: str  # the mode actually served ("real_time" or "high_quality")
    why: str  # one sentence on why this engine was chosen


def has_checkpoints(directory: Path) -> bool:
    return directory.is_dir() and any(
        p.is_file() and p.name.endswith(CHECKPOINT_SUFFIXES) for p in directory.rglob("*")
    )


def high_quality_missing(settings: ModelSettings, hardware: Hardware) -> list[str]:
    """What this machine lacks for high_quality (FOMM + Diff2Lip + GFPGAN), in words a user can act on."""
    missing = []
    if not hardware.cuda:
        missing.append("an NVIDIA GPU with CUDA (none was found)")
    if not has_checkpoints(settings.fomm_ckpt_dir):
        missing.append(f"FOMM checkpoints in FOMM_CKPT_DIR={settings.fomm_ckpt_dir}")
    if not has_checkpoints(settings.diff2lip_ckpt_dir):
        missing.append(f"Diff2Lip checkpoints in DIFF2LIP_CKPT_DIR={settings.diff2lip_ckpt_dir}")
    return missing


def all_engines() -> dict[str, Engine]:
    """Every engine this build contains, by name. Neural engines register here as they are built."""
    from .landmark_warp import LandmarkWarpEngine
    from .wav2lip.engine import Wav2LipEngine  # imports no torch until it renders

    engines: list[Engine] = [LandmarkWarpEngine(), Wav2LipEngine()]
    return {engine.name: engine for engine in engines}


def resolve(
    mode: str | None,
    engine_name: str | None,
    settings: ModelSettings,
    hardware: Hardware,
    engines: dict[str, Engine] | None = None,
) -> Resolution:
    engines = all_engines() if engines is None else engines
    mode = mode or settings.default_quality_mode
    if mode not in QUALITY_MODES:
        raise EngineUnavailable(f"Unknown quality mode {mode!r}; use one of {', '.join(QUALITY_MODES)}.")
    if engine_name:
        return _explicit(engine_name, engines, settings, hardware)

    builtin = next(e for e in engines.values() if not e.needs_gpu and not e.required_checkpoints(settings))
    neural_rt = [e for e in engines.values() if e.mode == "real_time" and e is not builtin]
    hq = [e for e in engines.values() if e.mode == "high_quality"]
    hq_missing = high_quality_missing(settings, hardware)

    if mode in ("auto", "high_quality"):
        for engine in hq:
            if not hq_missing and engine.availability(settings, hardware).ok:
                return Resolution(engine, "high_quality", "GPU and FOMM + Diff2Lip checkpoints are present")
        if mode == "high_quality":
            if hq_missing:
                raise EngineUnavailable("high_quality mode needs " + "; ".join(hq_missing) + ".")
            reasons = [e.availability(settings, hardware).reason for e in hq]
            raise EngineUnavailable(
                "high_quality mode cannot run: "
                + ("; ".join(r for r in reasons if r) or "this build has no high_quality engine yet")
                + "."
            )

    for engine in neural_rt:
        availability = engine.availability(settings, hardware)
        if availability.ok:
            return Resolution(engine, "real_time", f"{engine.name} checkpoints are present")

    reasons = [e.availability(settings, hardware).reason for e in neural_rt]
    if mode == "auto":
        reasons.insert(0, "high_quality needs " + ("; ".join(hq_missing) or "an engine this build lacks"))
    why = f"using the built-in weightless engine {builtin.name}: " + (
        "; ".join(r.rstrip(".") for r in reasons) if reasons else "no neural real_time engine in this build")
    if "models download" not in why:  # an engine's reason may already say how to get its models
        why += ". Run `avatar-renderer models download` to get the neural models"
    why += "."
    log.info(why)
    return Resolution(builtin, "real_time", why)


def _explicit(name: str, engines: dict[str, Engine], settings: ModelSettings, hardware: Hardware) -> Resolution:
    engine = engines.get(name)
    if engine is None:
        raise EngineUnavailable(f"Unknown engine {name!r}; this build has: {', '.join(sorted(engines))}.")
    availability = engine.availability(settings, hardware)
    if not availability.ok:
        raise EngineUnavailable(f"Engine {name} cannot run here: {availability.reason}.")
    return Resolution(engine, engine.mode, f"engine {name} was asked for")
