"""The high_quality engine: FOMM head motion -> Diff2Lip lips -> GFPGAN face restoration, on the GPU.

The three stages (engines/stages.py) stream (frame, landmarks) pairs into each other a batch at a time, so a
long job never holds all its frames and all three models stay resident once loaded. The chain needs a CUDA GPU
unless HQ_ALLOW_CPU is set (minutes per second of video on a CPU: for trials and the tests).

An out-of-memory error (CUDA's, or the host's) halves every stage's batch for the rest of the process and is
raised as the typed, retryable `out_of_memory` error, so the worker's next attempt runs with smaller batches.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from schemas.errors import OutOfMemory, from_exception

from .base import Availability, Engine, EngineJob, Holding
from .hardware import Hardware
from .settings import ModelSettings
from .stages import FrameStage, still_pairs, torch_device

log = logging.getLogger(__name__)


class HighQualityEngine(Engine):
    name = "fomm-diff2lip-gfpgan"
    mode = "high_quality"
    description = "FOMM head motion, Diff2Lip diffusion lip-sync and GFPGAN v1.4 face restoration (official checkpoints)"
    uses_driving_video = True  # FOMM takes its motion from a driving video when the request has one

    def __init__(self, settings: ModelSettings, hardware: Hardware):
        super().__init__(settings, hardware)
        from .diff2lip.stage import Diff2LipStage
        from .fomm.stage import FommStage
        from .gfpgan.stage import GfpganStage

        self.motion = FommStage(settings, hardware)
        self.lips = Diff2LipStage(settings, hardware)
        self.faces = GfpganStage(settings, hardware)

    @property
    def needs_gpu(self) -> bool:  # type: ignore[override]
        return not self.settings.hq_allow_cpu

    def stages(self) -> list[FrameStage]:
        return [self.motion, self.lips, self.faces]

    def required_checkpoints(self) -> list[Path]:
        return [path for stage in self.stages() for path in stage.required_checkpoints()]

    def availability(self) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, f"{self.name} needs PyTorch; install the extra: pip install 'avatar-renderer[neural]'")
        if self.needs_gpu and not self.hardware.cuda:
            return Availability(False, f"{self.name} needs an NVIDIA GPU with CUDA, and none was found "
                                       "(HQ_ALLOW_CPU=1 runs it on the CPU, very slowly)")
        return super().availability()

    def _load(self) -> Holding:
        held = [stage.load() for stage in self.stages()]
        checkpoints = {path: sha for holding in held for path, sha in holding.checkpoints.items()}
        precisions = sorted({holding.precision for holding in held})
        return Holding(device=torch_device(self.hardware.cuda), precision="+".join(precisions),
                       backend=held[0].backend, batch_size=min(stage.batch_size for stage in self.stages()),
                       checkpoints=checkpoints)

    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        self.load()
        driving = job.driving.frames(job.fps) if job.driving is not None else None  # decoded lazily
        moving = self.motion.transform(job, still_pairs(job), driving=driving)
        speaking = self.lips.transform(job, moving)
        restored = self.faces.transform(job, speaking)
        try:
            for frame, _landmarks in restored:
                yield frame
        except Exception as error:
            mapped = from_exception(error)  # the error tree knows torch's CUDA OOM (and MemoryError) by name
            if not isinstance(mapped, OutOfMemory):
                raise
            tried = self.motion.batch_size
            self._halve_batches()
            raise OutOfMemory(f"{mapped.message} in high_quality at batch {tried}; the next try uses batch "
                              f"{self.motion.batch_size} (HQ_BATCH sets it)") from error

    def _halve_batches(self) -> None:
        for stage in self.stages():
            if stage.batch_size > 1:
                stage.halvings += 1
        log.warning("out of memory in high_quality: batches halved to %d", self.motion.batch_size)
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
