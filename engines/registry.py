"""Which engine renders a request: quality mode + hardware + checkpoints present -> one engine.

auto         -> high_quality when a GPU and the FOMM + Diff2Lip + GFPGAN checkpoints are there,
                else the neural real_time engine when its checkpoints are there,
                else the built-in weightless engine (logged, with how to get the neural models).
real_time    -> the neural real_time engine when available, else the built-in engine (the CPU path).
high_quality -> its engine, or a clear error naming what is missing. HQ_ALLOW_CPU lets it run without a GPU
                when asked for by name or mode; auto never picks it without a GPU.

An EngineRegistry is built once per process from the settings and hardware the entry point found; it builds
each engine once, so models loaded by one job serve the next, and closes them all at shutdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import EngineUnavailable, InvalidParameter

from .base import Engine
from .hardware import Hardware
from .settings import QUALITY_MODES, ModelSettings

log = logging.getLogger(__name__)

BUILTIN = "landmark-warp"


@dataclass(frozen=True)
class Resolution:
    engine: Engine
    mode: str  # the mode actually served ("real_time" or "high_quality")
    why: str  # one sentence on why this engine was chosen


def built_engines(settings: ModelSettings, hardware: Hardware) -> list[Engine]:
    """Every engine this build contains. Neural engines register here as they are built."""
    from .high_quality import HighQualityEngine  # none of these imports torch until an engine loads
    from .landmark_warp import LandmarkWarpEngine
    from .sadtalker.engine import SadTalkerEngine
    from .wav2lip.engine import Wav2LipEngine

    builtin = LandmarkWarpEngine(settings, hardware)
    wav2lip = Wav2LipEngine(settings, hardware, base_engine=builtin)
    # real_time tries neural engines in this order: SadTalker (+ Wav2Lip lips), then Wav2Lip over the built-in warp
    return [builtin, SadTalkerEngine(settings, hardware, lipsync=wav2lip), wav2lip, HighQualityEngine(settings, hardware)]


class EngineRegistry:
    """The engines of this process, each built once; resolves a request's mode/engine to one of them."""

    def __init__(self, settings: ModelSettings, hardware: Hardware, engines: list[Engine] | None = None):
        self.settings = settings
        self.hardware = hardware
        listed = built_engines(settings, hardware) if engines is None else engines
        self.engines: dict[str, Engine] = {engine.name: engine for engine in listed}

    @classmethod
    def for_settings(cls, settings: ModelSettings) -> "EngineRegistry":
        """The registry of this machine: hardware detected once (none when AVATAR_FORCE_CPU is set)."""
        from .hardware import detect

        return cls(settings, detect(settings.force_cpu))

    def names(self) -> list[str]:
        return sorted(self.engines)

    def describe(self) -> list[dict]:
        return [engine.describe() for engine in self.engines.values()]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    def check_request(self, mode: str | None, engine_name: str | None) -> None:
        """Refuse, before any work, a mode or engine name this build does not know, or an engine asked for
        together with a mode it does not serve (InvalidParameter: a request a retry cannot fix)."""
        if mode is not None and mode not in QUALITY_MODES:
            raise InvalidParameter(f"Unknown quality mode {mode!r}; use one of {', '.join(QUALITY_MODES)}.")
        if engine_name is None:
            return
        engine = self.engines.get(engine_name)
        if engine is None:
            raise InvalidParameter(f"Unknown engine {engine_name!r}; this build has: {', '.join(self.names())}.")
        if mode not in (None, "auto", engine.mode):
            raise InvalidParameter(
                f"Engine {engine_name} serves {engine.mode}, not {mode}; drop the engine or the mode.")

    def check_driving_video(self, mode: str | None, engine_name: str | None) -> None:
        """Refuse, before any work, a driving video in a request that only a real_time engine can serve (they
        cannot use one; it must not be silently ignored). Under auto the pipeline checks the engine it chose."""
        engine = self.engines.get(engine_name) if engine_name else None
        if engine is not None and not engine.uses_driving_video:
            raise InvalidParameter(f"Engine {engine.name} cannot use a driving video: only high_quality engines "
                                   "take their head motion from one. Leave the driving video out or ask for "
                                   "mode high_quality.")
        if engine is None and (mode or self.settings.default_quality_mode) == "real_time":
            raise InvalidParameter("A driving video moves the head in high_quality mode only; real_time engines "
                                   "cannot use it. Leave the driving video out or ask for mode high_quality.")

    def resolve(self, mode: str | None, engine_name: str | None) -> Resolution:
        self.check_request(mode, engine_name)
        if engine_name:  # the engine decides the mode; DEFAULT_QUALITY_MODE does not override it
            return self._explicit(engine_name)
        mode = mode or self.settings.default_quality_mode

        builtin = self.engines[BUILTIN]
        neural_rt = [e for e in self.engines.values() if e.mode == "real_time" and e is not builtin]
        hq = [e for e in self.engines.values() if e.mode == "high_quality"]
        hq_missing = self.high_quality_missing(allow_cpu=mode == "high_quality" and self.settings.hq_allow_cpu)

        if mode in ("auto", "high_quality"):
            for engine in hq:
                if not hq_missing and engine.availability().ok:
                    where = "a GPU" if self.hardware.cuda else "the CPU (HQ_ALLOW_CPU)"
                    return Resolution(engine, "high_quality",
                                      f"FOMM + Diff2Lip + GFPGAN checkpoints are present; running on {where}")
            if mode == "high_quality":
                if not hq:
                    raise EngineUnavailable(
                        "high_quality mode (FOMM + Diff2Lip + GFPGAN) is not built into this version yet; "
                        "use real_time or auto.")
                if hq_missing:
                    raise EngineUnavailable("high_quality mode needs " + "; ".join(hq_missing) + ".")
                reasons = [e.availability().reason for e in hq]
                raise EngineUnavailable("high_quality mode cannot run: " + "; ".join(r for r in reasons if r) + ".")

        passed_over = []  # (engine, why not) of neural real_time engines tried before the one chosen
        for engine in neural_rt:
            availability = engine.availability()
            if availability.ok:
                why = f"{engine.name} checkpoints are present" + "".join(
                    f"; not {name}: {reason.rstrip('.')}" for name, reason in passed_over)
                if passed_over:
                    log.info(why)
                return Resolution(engine, "real_time", why)
            passed_over.append((engine.name, availability.reason))

        reasons = [e.availability().reason for e in neural_rt]
        if mode == "auto":
            reasons.insert(0, "high_quality " + (
                "needs " + "; ".join(hq_missing) if hq and hq_missing else "is not built into this version yet"))
        why = f"using the built-in weightless engine {builtin.name}: " + (
            "; ".join(r.rstrip(".") for r in reasons) if reasons else "no neural real_time engine in this build")
        if "models download" not in why:  # an engine's reason may already say how to get its models
            why += ". Run `avatar-renderer models download` to get the neural models"
        why += "."
        log.info(why)
        return Resolution(builtin, "real_time", why)

    def high_quality_missing(self, allow_cpu: bool = False) -> list[str]:
        """What this machine lacks for high_quality (FOMM + Diff2Lip + GFPGAN), in words a user can act on."""
        missing = []
        if not self.hardware.cuda and not allow_cpu:
            missing.append("an NVIDIA GPU with CUDA (none was found; HQ_ALLOW_CPU=1 runs it on the CPU, very slowly)")
        settings = self.settings
        for label, variable, path in (
                ("the FOMM checkpoint", "FOMM_CKPT_DIR", settings.fomm_ckpt_dir / "vox-cpk.pth.tar"),
                ("the Diff2Lip checkpoint", "DIFF2LIP_CKPT_DIR", settings.diff2lip_ckpt_dir / "checkpoint.pt"),
                ("the GFPGAN checkpoint", "GFPGAN_CKPT", settings.gfpgan_ckpt)):
            if not path.is_file():
                missing.append(f"{label} {path} ({variable})")
        return missing

    def _explicit(self, name: str) -> Resolution:
        engine = self.engines[name]
        availability = engine.availability()
        if not availability.ok:
            raise EngineUnavailable(f"Engine {name} cannot run here: {availability.reason}.")
        return Resolution(engine, engine.mode, f"engine {name} was asked for")
