"""The Wav2Lip real_time engine: lip-sync painted over base frames, batched through torch or TensorRT."""

from __future__ import annotations

import importlib.util
import itertools
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..base import Availability, Engine, EngineJob
from ..hardware import Hardware, detect
from ..settings import ModelSettings
from .crops import model_inputs, mouth_mask, paste_mouth
from .mel import frame_windows, melspectrogram
from .sources import Pair, landmark_warp_frames, still_frames, with_boxes

BASES = ("landmark-warp", "still")
CPU_BATCH, GPU_BATCH = 16, 128


class Wav2LipEngine(Engine):
    name = "wav2lip"
    mode = "real_time"
    description = "Wav2Lip neural lip-sync (official checkpoints) over the built-in engine's blinks and head motion"
    needs_gpu = False

    def __init__(self, checkpoint: Path | None = None, base: str | None = None, batch_size: int | None = None,
                 backend: str | None = None, hardware: Hardware | None = None):
        """Unset arguments come from WAV2LIP_CKPT, WAV2LIP_BASE (landmark-warp | still), WAV2LIP_BATCH,
        WAV2LIP_BACKEND (auto | torch | tensorrt) and the detected hardware."""
        self._checkpoint = checkpoint
        self._base = base
        self._batch = batch_size
        self._backend = backend
        self._hardware = hardware

    def required_checkpoints(self, settings: ModelSettings) -> list[Path]:
        return [self._checkpoint or settings.wav2lip_ckpt]

    def availability(self, settings: ModelSettings, hardware: Hardware) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, "wav2lip needs PyTorch; install the extra: pip install 'avatar-renderer[neural]'")
        return super().availability(settings, hardware)

    def _settings(self) -> tuple[Path, str, int, str, Hardware]:
        hardware = self._hardware or detect()
        checkpoint = self._checkpoint or ModelSettings.from_env().wav2lip_ckpt
        base = self._base or os.environ.get("WAV2LIP_BASE", "landmark-warp")
        if base not in BASES:
            from ..settings import SettingsError

            raise SettingsError(f"WAV2LIP_BASE={base!r} is not one of {', '.join(BASES)}.")
        batch = self._batch or int(os.environ.get("WAV2LIP_BATCH", GPU_BATCH if hardware.cuda else CPU_BATCH))
        backend = self._backend or os.environ.get("WAV2LIP_BACKEND", "auto")
        return Path(checkpoint), base, max(1, batch), backend, hardware

    def runner(self):
        from .runtime import load_runner

        checkpoint, _, _, backend, hardware = self._settings()
        return load_runner(checkpoint, hardware.cuda, hardware.tensorrt, backend)

    def render(self, job: EngineJob, base_frames: Iterable[Pair] | None = None) -> Iterator[np.ndarray]:
        """job.frame_count frames; ``base_frames`` (frame, landmarks) pairs replace the job's own base."""
        _, base, batch_size, _, _ = self._settings()
        runner = self.runner()
        n_frames = job.frame_count
        windows = frame_windows(melspectrogram(job.audio.analysis_samples()), job.fps, n_frames)
        if base_frames is None:
            base_frames = landmark_warp_frames(job) if base == "landmark-warp" else still_frames(job)
        stream = with_boxes(itertools.islice(base_frames, n_frames), (job.size, job.size))
        done = 0
        while chunk := list(itertools.islice(stream, batch_size)):
            frames, landmarks, boxes = zip(*chunk)
            mel = windows[done : done + len(chunk), None]
            generated = runner(mel, model_inputs(list(frames), list(boxes)))
            for frame, marks, box, face in zip(frames, landmarks, boxes, generated):
                yield paste_mouth(frame, face.transpose(1, 2, 0), box, mouth_mask(marks, box))
            done += len(chunk)
