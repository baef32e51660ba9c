"""The engine contract every engine implements, and the job it is handed.

Lifecycle, the same for the built-in engine and every neural one (Wav2Lip today; FOMM, Diff2Lip, GFPGAN and
SadTalker next):

    engine = SomeEngine(settings, hardware)   # cheap: no model is read; settings are passed in, never read
    engine.availability()                     #   from the environment below the entry points
    engine.load()                             # once per process: reads checkpoints onto the chosen device
    engine.warm_up()                          # optional: one tiny forward pass so the first job is not slow
    engine.render(job) ... engine.render(job) # many jobs; thread-safe once loaded
    engine.describe()                         # what it holds: device, precision, backend, checkpoints
    engine.close()                            # releases models (GPU memory) at shutdown

An engine that chains several models (high_quality: FOMM -> Diff2Lip -> GFPGAN) lists them as `stages()`;
each stage is an engine-like part with its own checkpoints, load() and describe(), and the engine's own
load/describe/close cover all of them. `load()` is idempotent and guarded by a lock, so the registry can call
it lazily from any render thread.
"""

from __future__ import annotations

import abc
import math
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .hardware import Hardware
from .media_audio import OUTPUT_RATE, Audio
from .settings import ModelSettings

if TYPE_CHECKING:
    from .media_video import DrivingVideo


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
    fps: Fraction  # exact (30000/1001); frame i shows at i / fps seconds. Engines use float(fps) for arrays
    size: int
    seed: int = 0  # drives blinks and head motion, so a job re-rendered gives the same video
    # A checked driving video whose head motion replaces the speech-driven one (engines/media_video.py); only
    # engines with uses_driving_video take it (the pipeline refuses it for the others).
    driving: "DrivingVideo | None" = None

    @property
    def frame_count(self) -> int:
        """Frames covering the whole audio: video and audio lengths differ by less than one frame (counted
        exactly, in samples, so 10 minutes at 30000/1001 is 17983 frames, not one more or less)."""
        return max(1, math.ceil(Fraction(self.audio.n_samples, OUTPUT_RATE) * Fraction(self.fps)))


@dataclass
class Holding:
    """What a loaded engine (or stage) holds, for /engines, list_engines, metrics and the completion event."""

    device: str = "cpu"  # cpu | cuda:0
    precision: str = "fp32"  # fp32 | fp16 | none (no model)
    backend: str = "numpy"  # numpy | torch-cpu | torch-cuda | tensorrt-fp16 | onnxruntime ...
    batch_size: int = 1
    checkpoints: dict[str, str] = field(default_factory=dict)  # path -> SHA-256 of the file loaded

    def as_dict(self) -> dict:
        """The wire form (render.completed.v1 `engineDetails`, /engines, list_engines)."""
        return {"device": self.device, "precision": self.precision, "backend": self.backend,
                "batchSize": self.batch_size, "checkpoints": dict(self.checkpoints)}


class Engine(abc.ABC):
    name: str  # stable id used by --engine and in output metadata
    mode: str  # the quality mode it serves: "real_time" or "high_quality"
    description: str
    needs_gpu: bool = False
    uses_driving_video: bool = False  # whether render() moves the head by EngineJob.driving

    def __init__(self, settings: ModelSettings, hardware: Hardware):
        self.settings = settings
        self.hardware = hardware
        self._load_lock = threading.Lock()
        self._holding: Holding | None = None

    # ------------------------------------------------------------------ what it needs

    def required_checkpoints(self) -> list[Path]:
        """Files that must exist before load() can work (from self.settings)."""
        return []

    def stages(self) -> list["Engine"]:
        """The models this engine chains, in order (empty for a single-model engine)."""
        return []

    def availability(self) -> Availability:
        if self.needs_gpu and not self.hardware.cuda:
            return Availability(False, f"{self.name} needs an NVIDIA GPU with CUDA, and none was found")
        missing = [p for p in self.required_checkpoints() if not p.exists()]
        if missing:
            listed = ", ".join(str(p) for p in missing)
            return Availability(
                False,
                f"{self.name} checkpoints are missing ({listed}); run `avatar-renderer models download`",
            )
        for stage in self.stages():
            found = stage.availability()
            if not found.ok:
                return found
        return Availability(True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def loaded(self) -> bool:
        return self._holding is not None

    def load(self) -> Holding:
        """Load the models once (idempotent, thread-safe); returns what is held."""
        if self._holding is None:
            with self._load_lock:
                if self._holding is None:
                    for stage in self.stages():
                        stage.load()
                    self._holding = self._load()
        return self._holding

    def _load(self) -> Holding:
        """Read checkpoints onto the device; engines with models override this."""
        return Holding(precision="none")

    def warm_up(self) -> None:
        """Make the first job fast: by default just load; neural engines may run one tiny forward pass."""
        self.load()

    def close(self) -> None:
        """Release the models (and GPU memory). The engine can be loaded again afterwards."""
        with self._load_lock:
            for stage in self.stages():
                stage.close()
            if self._holding is not None:
                self._release()
            self._holding = None

    def _release(self) -> None:
        """Drop references to models; engines holding CUDA tensors also empty torch's cache."""

    def describe(self) -> dict:
        """Name, mode, availability and, once loaded, what it holds (with each stage's own description)."""
        availability = self.availability()
        entry = {"name": self.name, "mode": self.mode, "description": self.description,
                 "needsGpu": self.needs_gpu, "available": availability.ok, "loaded": self.loaded}
        if not availability.ok:
            entry["reason"] = availability.reason
        if self._holding is not None:
            entry.update(self._holding.as_dict())
        if self.stages():
            entry["stages"] = [stage.describe() for stage in self.stages()]
        return entry

    @abc.abstractmethod
    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        """Yield job.frame_count RGB uint8 frames of shape (size, size, 3), in order. Called after load()."""
