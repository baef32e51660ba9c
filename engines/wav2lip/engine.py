"""The Wav2Lip real_time engine: lip-sync painted over base frames, batched through torch or TensorRT."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..base import Availability, Engine, EngineJob, Holding
from ..files import remembered_sha256
from ..hardware import Hardware
from ..settings import ModelSettings
from ..stages import still_pairs
from . import WAV2LIP_IO
from .crops import model_inputs, mouth_mask, paste_mouth
from .mel import frame_windows, melspectrogram
from .sources import Pair, landmark_warp_frames, with_boxes

CPU_BATCH, GPU_BATCH = 16, 128


class Wav2LipEngine(Engine):
    name = "wav2lip"
    mode = "real_time"
    description = "Wav2Lip neural lip-sync (official checkpoints) over the built-in engine's blinks and head motion"
    needs_gpu = False

    def __init__(self, settings: ModelSettings, hardware: Hardware, base_engine: Engine | None = None):
        """base_engine: the built-in engine whose frames (blinks, head motion) Wav2Lip paints over when
        WAV2LIP_BASE=landmark-warp (the registry passes its own, so it is built once)."""
        super().__init__(settings, hardware)
        self.base_engine = base_engine
        self.checkpoint = Path(settings.wav2lip_ckpt)
        self.batch_size = settings.wav2lip_batch or (GPU_BATCH if hardware.cuda else CPU_BATCH)
        self.runner = None

    def required_checkpoints(self) -> list[Path]:
        return [self.checkpoint]

    def availability(self) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, "wav2lip needs PyTorch; install the extra: pip install 'avatar-renderer[neural]'")
        return super().availability()

    def _load(self) -> Holding:
        from .runtime import build_runner

        self.runner = build_runner(self.checkpoint, self.hardware.cuda, self.hardware.tensorrt,
                                   self.settings.wav2lip_backend, self.settings.trt_cache_dir)
        return Holding(device="cuda:0" if self.hardware.cuda else "cpu", precision=self.runner.precision,
                       backend=self.runner.label, batch_size=self.batch_size,
                       checkpoints={str(self.checkpoint): remembered_sha256(self.checkpoint)})

    def warm_up(self) -> None:
        self.load()
        self.runner(*WAV2LIP_IO.example_inputs(1))

    def _release(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.runner = None

    def render(self, job: EngineJob, base_frames: Iterable[Pair] | None = None) -> Iterator[np.ndarray]:
        """job.frame_count frames; ``base_frames`` (frame, landmarks) pairs replace the job's own base."""
        self.load()
        runner = self.runner
        n_frames = job.frame_count
        windows = frame_windows(melspectrogram(job.audio.analysis_samples()), float(job.fps), n_frames)
        if base_frames is None:
            use_warp = self.settings.wav2lip_base == "landmark-warp" and self.base_engine is not None
            base_frames = landmark_warp_frames(self.base_engine, job) if use_warp else still_pairs(job)
        stream = with_boxes(itertools.islice(base_frames, n_frames), (job.size, job.size))
        done = 0
        while chunk := list(itertools.islice(stream, self.batch_size)):
            frames, landmarks, boxes = zip(*chunk)
            mel = windows[done : done + len(chunk), None]
            generated = runner(mel, model_inputs(list(frames), list(boxes)))
            for frame, marks, box, face in zip(frames, landmarks, boxes, generated):
                yield paste_mouth(frame, face.transpose(1, 2, 0), box, mouth_mask(marks, box))
            done += len(chunk)
