"""The SadTalker real_time engine: SadTalker moves the head (pose, expression, blinks), Wav2Lip paints the lips.

Per job: the face square and its 3DMM coefficients are computed once from the portrait; speech becomes a 25 fps
coefficient track; each video frame's 27-frame window drives the keypoints; the face renderer draws the square
(batched; fp16 autocast on a GPU), which is pasted back into the full portrait; the (frame, landmarks) pairs
stream into Wav2Lip (`render(job, base_frames=...)`), which repaints the mouth.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import numpy as np

from ..base import Availability, Engine, EngineJob, Holding
from ..files import remembered_sha256
from ..hardware import Hardware
from ..settings import ModelSettings
from ..stages import Pair
from . import FACE_SIZE
from .checkpoint import checkpoint_files

CPU_BATCH, GPU_BATCH = 2, 16  # face renderer frames per call


class SadTalkerEngine(Engine):
    name = "sadtalker"
    mode = "real_time"
    description = "SadTalker (256) head pose, expression and blinks, lips by Wav2Lip (official checkpoints)"
    needs_gpu = False  # SADTALKER_CPU decides about the CPU

    def __init__(self, settings: ModelSettings, hardware: Hardware, lipsync: Engine):
        """lipsync: the registry's Wav2Lip engine, which paints the mouth over SadTalker's frames."""
        super().__init__(settings, hardware)
        self.lipsync = lipsync
        self.weights, self.mapping_file = checkpoint_files(Path(settings.sadtalker_ckpt_dir))
        self.batch_size = GPU_BATCH if hardware.cuda else CPU_BATCH
        self.models = None

    def required_checkpoints(self) -> list[Path]:
        return [self.weights, self.mapping_file]

    def stages(self) -> list[Engine]:
        return [self.lipsync]

    def availability(self) -> Availability:
        for package in ("torch", "safetensors"):
            if importlib.util.find_spec(package) is None:
                return Availability(False, f"sadtalker needs {package}; install the extra: pip install 'avatar-renderer[neural]'")
        if not self.hardware.cuda and not self.settings.sadtalker_cpu:
            return Availability(False, "sadtalker is not used without a GPU (seconds per frame on a CPU); "
                                       "SADTALKER_CPU=1 allows it")
        return super().availability()

    @property
    def device(self) -> str:
        return "cuda:0" if self.hardware.cuda else "cpu"

    def _load(self) -> Holding:
        from .checkpoint import load_models

        models = load_models(self.settings.sadtalker_ckpt_dir)
        for module in models.modules():
            module.to(self.device)
        self.models = models
        return Holding(device=self.device, precision="fp16" if self.hardware.cuda else "fp32",
                       backend="torch-cuda" if self.hardware.cuda else "torch-cpu", batch_size=self.batch_size,
                       checkpoints={str(p): remembered_sha256(p) for p in self.required_checkpoints()})

    def _release(self) -> None:
        self.models = None
        if self.hardware.cuda:
            import torch

            torch.cuda.empty_cache()

    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        self.load()
        return self.lipsync.render(job, base_frames=self.pairs(job))

    def pairs(self, job: EngineJob) -> Iterator[Pair]:
        """job.frame_count (frame, landmarks) pairs: SadTalker's head motion pasted into the portrait."""
        from ..wav2lip.sources import tracked
        from ..face import shared_analyzer

        analyzer = shared_analyzer()

        def detect(frame: np.ndarray) -> np.ndarray | None:
            try:
                return analyzer.landmarks(frame)
            except Exception:  # a frame without a detectable face keeps the last landmarks
                return None

        self.load()
        return tracked(self.frames(job), detect, job.landmarks, stride=4)

    def frames(self, job: EngineJob) -> Iterator[np.ndarray]:
        import torch

        from ..wav2lip.mel import melspectrogram
        from .coefficients import coefficient_frames, coefficient_track, mapping_windows, source_window
        from .crop import PasteBack, crop_square, face_square
        from .renderer import transform_keypoints

        models, device, size = self.models, self.device, self.settings.sadtalker_render_size
        square = face_square(job.landmarks)
        source = self.source_coefficients(job, square)
        mel = melspectrogram(job.audio.analysis_samples())
        track = coefficient_track(models, source, mel, coefficient_frames(job.audio.duration),
                                  self.settings.sadtalker_pose_style, self.settings.sadtalker_still, job.seed, device)
        paste = PasteBack(square, job.portrait.shape[:2])
        image = crop_square(job.portrait, square, size)
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.hardware.cuda)
        with torch.inference_mode(), autocast:
            src = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)
            canonical = models.kp_extractor(src)
            kp_source = transform_keypoints(canonical, models.mapping(torch.from_numpy(source_window(source)).to(device)))
            features = models.generator.source_features(src)
        for start in range(0, job.frame_count, self.batch_size):
            count = min(self.batch_size, job.frame_count - start)
            chunk = torch.from_numpy(mapping_windows(track, count, float(job.fps), start)).to(device)
            b = chunk.shape[0]
            with torch.inference_mode(), autocast:
                kp_driving = transform_keypoints(canonical.expand(b, -1, -1), models.mapping(chunk))
                faces = models.generator.animate(features.expand(b, -1, -1, -1, -1), kp_driving,
                                                 kp_source.expand(b, -1, -1))
            faces = (faces.float().clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).cpu().numpy()
            for rendered in faces:
                yield paste(job.portrait, rendered)

    def source_coefficients(self, job: EngineJob, square) -> np.ndarray:
        """The portrait's 70 coefficients (expression, angles, translation) from face_3drecon."""
        import torch

        from .crop import align_for_recon, crop_square, five_points
        from .recon import semantic_coefficients

        crop = crop_square(job.portrait, square, FACE_SIZE)
        points = five_points(job.landmarks)
        points = (points - np.array([square.x0, square.y0])) * (FACE_SIZE / square.side)
        aligned = align_for_recon(crop, points)
        with torch.inference_mode():
            tensor = torch.from_numpy(aligned).permute(2, 0, 1)[None].float().div(255).to(self.device)
            return semantic_coefficients(self.models.face_3drecon(tensor))[0].float().cpu().numpy()


