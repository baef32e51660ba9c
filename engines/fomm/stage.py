"""The FOMM stage of high_quality: a still portrait (each input pair) animated by speech-driven head motion.

Per batch of ``batch_size`` frames: keypoints of each input frame at 256 px, driving keypoints from the seeded
speech motion track (or a driving video), one generator call for the dense deformation, occlusion map and the
generated 256-px frame, then the full-resolution frame (warp.full_resolution: the input frame warped by the
upsampled deformation, generated pixels only where occluded) and the landmarks moved by the same deformation.
On CUDA the networks run under fp16 autocast (convolutions in half precision; softmaxes, keypoint geometry and
sampling grids stay fp32).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from schemas.errors import InputError

from ..base import Availability, EngineJob, Holding
from ..files import remembered_sha256
from ..stages import FrameStage, Pair, batches, torch_device
from . import CHECKPOINT_NAME, MODEL_SIZE


def model_input(frames: Iterable[np.ndarray], device: str):
    """(B, 3, 256, 256) float32 in [0, 1] from RGB uint8 frames of any size."""
    import torch

    resized = []
    for frame in frames:
        height = frame.shape[0]
        interpolation = cv2.INTER_AREA if height > MODEL_SIZE else cv2.INTER_CUBIC
        resized.append(cv2.resize(frame, (MODEL_SIZE, MODEL_SIZE), interpolation=interpolation))
    batch = torch.from_numpy(np.stack(resized)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class _RestOcclusion:
    frame: np.ndarray  # the still frame it belongs to (compared by identity)
    device: object
    occlusion: object  # (1, 1, h, w) tensor


def frame_tensor(frames: Iterable[np.ndarray], device: str):
    import torch

    return torch.from_numpy(np.stack(list(frames))).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class FommStage(FrameStage):
    name = "fomm"
    description = "First Order Motion Model (vox-256) head motion driven by the speech, warped at full resolution"

    def __init__(self, settings, hardware):
        super().__init__(settings, hardware)
        self.checkpoint = Path(settings.fomm_ckpt_dir) / CHECKPOINT_NAME
        self.generator = None
        self.kp_detector = None
        self.device = "cpu"
        self._rest_cache: _RestOcclusion | None = None

    def required_checkpoints(self) -> list[Path]:
        return [self.checkpoint]

    def availability(self) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, "fomm needs PyTorch; install the extra: pip install 'avatar-renderer[neural]'")
        return super().availability()

    def _load(self) -> Holding:
        from .checkpoint import load_fomm

        self.device = torch_device(self.hardware.cuda)
        self.generator, self.kp_detector = load_fomm(self.checkpoint, self.device)
        return Holding(device=self.device, precision="fp16" if self.hardware.cuda else "fp32",
                       backend="torch-cuda" if self.hardware.cuda else "torch-cpu", batch_size=self.batch_size,
                       checkpoints={str(self.checkpoint): remembered_sha256(self.checkpoint)})

    def _release(self) -> None:
        self.generator = self.kp_detector = self._rest_cache = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def warm_up(self) -> None:
        """One generator call on a grey frame (CUDA kernels chosen, memory pools set up)."""
        import torch

        self.load()
        with torch.inference_mode(), self._precision():
            source = torch.full((1, 3, MODEL_SIZE, MODEL_SIZE), 0.5, device=self.device)
            keypoints = self.kp_detector(source)
            self.generator(source, keypoints, keypoints)

    def _precision(self):
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def transform(self, job: EngineJob, pairs: Iterable[Pair],
                  driving: Iterable[np.ndarray] | None = None) -> Iterator[Pair]:
        """One (frame, landmarks) per input pair: the pair's frame animated by the speech motion track, or,
        with ``driving`` (RGB frames of a driving video, held on its last frame if shorter), by the video's
        motion relative to its first frame."""
        import torch

        from .motion import movement_scale, relative_keypoints, speech_head_motion, speech_keypoints
        from .motion import to_model_coordinates, to_pixels
        from .warp import full_resolution, move_points

        self.load()
        device = self.device
        motion = speech_head_motion(job) if driving is None else None
        driving_frames = None if driving is None else itertools.chain(driving, itertools.repeat(None))
        initial = last_driving = None
        done = 0
        for chunk in batches(itertools.islice(pairs, job.frame_count), self.batch_size):
            frames = [frame for frame, _ in chunk]
            marks = np.stack([landmarks for _, landmarks in chunk])
            size = frames[0].shape[0]
            with torch.inference_mode():
                source_image = model_input(frames, device)
                source = self.kp_detector(source_image)
                if motion is not None:
                    kp_driving = speech_keypoints(source, motion, slice(done, done + len(chunk)), size)
                else:
                    shown, last_driving = self._driving_batch(driving_frames, len(chunk), last_driving)
                    detected = self.kp_detector(model_input(shown, device))
                    if initial is None:
                        initial = detected[0:1]
                        scale = movement_scale(source[0:1], initial)
                    kp_driving = relative_keypoints(source, detected, initial, scale)
                with self._precision():
                    out = self.generator(source_image, kp_driving, source)
                    rest = self._rest_occlusion(frames, source_image, source)
                full = full_resolution(frame_tensor(frames, device), out["deformation"], out["occlusion_map"],
                                       out["prediction"], rest)
                points = torch.as_tensor(to_model_coordinates(marks, size), device=device)
                moved = move_points(points, out["deformation"]).cpu().numpy()
                pixels = full.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for frame, landmarks in zip(pixels, to_pixels(moved, size)):
                yield frame, landmarks.astype(np.float32)
            done += len(chunk)

    def _rest_occlusion(self, frames: list[np.ndarray], source_image, source):
        """The occlusion map of each frame driven by itself (no motion); remembered for a still portrait
        (the same frame object in every pair), computed per batch otherwise."""
        still = all(frame is frames[0] for frame in frames)
        cache = self._rest_cache  # read once: another render thread may replace it
        if still and cache is not None and cache.frame is frames[0] and cache.device == source_image.device:
            return cache.occlusion.expand(len(frames), -1, -1, -1)
        if still:
            first = source[0:1]
            occlusion = self.generator.dense_motion_network(source_image[0:1], first, first)["occlusion_map"]
            self._rest_cache = _RestOcclusion(frames[0], source_image.device, occlusion)
            return occlusion.expand(len(frames), -1, -1, -1)
        return self.generator.dense_motion_network(source_image, source, source)["occlusion_map"]

    @staticmethod
    def _driving_batch(stream: Iterator, count: int, last: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray]:
        shown = []
        for frame in itertools.islice(stream, count):
            last = frame if frame is not None else last
            if last is None:
                raise InputError("the driving video has no frames")
            shown.append(last)
        return shown, last
