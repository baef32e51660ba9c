"""The one small interface every engine implements, and the job it is handed."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .hardware import Hardware
from .media_audio import Audio
from .settings import ModelSettings


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # when not ok: what is missing, in words a user can act on


@dataclass(frozen=True)
class EngineJob:
    """What an engine renders: a framed portrait with its face landmarks, and speech, at a frame rate."""

    portrait: np.ndarray  # RGB uint8 (size, size, 3): the portrait cropped square around the face and resized
    landmarks: np.ndarray  # float32 (478, 2): Face Mesh landmarks of the largest face, in portrait pixels
    audio: Audio
    fps: int
    size: int
    seed: int = 0  # drives blinks and head motion, so a job re-rendered gives the same video

    @property
    def frame_count(self) -> int:
        """Frames covering the whole audio: video and audio lengths differ by less than one frame."""
        return max(1, math.ceil(self.audio.duration * self.fps - 1e-6))


class Engine(abc.ABC):
    name: str  # stable id used by --engine and in output metadata
    mode: str  # the quality mode it serves: "real_time" or "high_quality"
    description: str
    needs_gpu: bool = False

    def required_checkpoints(self, settings: ModelSettings) -> list[Path]:
        return []

    def availability(self, settings: ModelSettings, hardware: Hardware) -> Availability:
        if self.needs_gpu and not hardware.cuda:
            return Availability(False, f"{self.name} needs an NVIDIA GPU with CUDA, and none was found")
        missing = [p for p in self.required_checkpoints(settings) if not p.exists()]
        if missing:
            listed = ", ".join(str(p) for p in missing)
            return Availability(
                False,
                f"{self.name} checkpoints are missing ({listed}); run `avatar-renderer models download`",
            )
        return Availability(True)

    @abc.abstractmethod
    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        """Yield job.frame_count RGB uint8 frames of shape (size, size, 3), in order."""
