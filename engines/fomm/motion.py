"""Driving keypoints for FOMM: from the speech (no driving video in a request), or from a user's driving video.

Speech: the built-in engine's seeded head-motion track (slow sway and tilt, nods with speech emphasis) plus a
small slow scale change is applied as a rigid motion about the neck to the portrait's own keypoints and
Jacobians. Keypoints on the head move fully, those away from it (shoulders, background) fade to still, as the
built-in engine's head mask does. This is upstream's relative animation (`animate.normalize_kp`) with the
portrait itself as the first driving frame: the driving keypoints differ from the source by the motion alone.

Video: keypoints detected on each driving frame move the source keypoints by their change since the first
driving frame (relative movement and Jacobians, optionally scaled by the ratio of keypoint hull areas), as
upstream's demo does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import ConvexHull

from ..base import EngineJob
from ..fields import smoothstep
from ..head_motion import HeadRig, drift, motion_track
from ..mouth_track import mouth_track
from .model import Keypoints

SCALE_AMPLITUDE = 0.012  # relative head-size change (standard deviation): leaning in and out a little
SCALE_SIGMA_SECONDS = 1.6


@dataclass(frozen=True)
class HeadMotion:
    """Per video frame, the head's rigid motion in the portrait's pixels: dst = pivot + scale * R(angle) @
    (src - pivot) + shift (y down, positive angle turns x towards y)."""

    angle: np.ndarray  # radians (n,)
    shift: np.ndarray  # pixels (n, 2)
    scale: np.ndarray  # (n,), 1 = unchanged
    pivot: np.ndarray  # pixels (2,): about the neck
    head_center: np.ndarray  # pixels (2,): the head ellipse keypoints must lie in to move fully
    head_radii: np.ndarray  # pixels (2,)

    def __len__(self) -> int:
        return len(self.angle)


def speech_head_motion(job: EngineJob) -> HeadMotion:
    """The job's head motion: seeded by job.seed, nods following the speech's loudness."""
    n_frames, fps = job.frame_count, float(job.fps)
    rng = np.random.default_rng(job.seed)
    envelope = mouth_track(job.audio.analysis_pcm(), fps, n_frames, use_phones=False).envelope
    rig = HeadRig(job.landmarks, job.size)
    angle, shift_x, shift_y = motion_track(n_frames, fps, envelope, rig.scale, rng)
    scale = 1.0 + SCALE_AMPLITUDE * drift(n_frames, fps, SCALE_SIGMA_SECONDS, rng)
    return HeadMotion(angle.astype(np.float32), np.stack([shift_x, shift_y], axis=1).astype(np.float32),
                      scale.astype(np.float32), rig.pivot.astype(np.float32), rig.center.astype(np.float32),
                      rig.radii.astype(np.float32))


def to_model_coordinates(pixels: np.ndarray, size: int) -> np.ndarray:
    """Portrait pixel coordinates -> FOMM's [-1, 1] (first and last pixel centres at -1 and 1)."""
    return 2.0 * np.asarray(pixels, np.float32) / (size - 1) - 1.0


def to_pixels(coordinates: np.ndarray, size: int) -> np.ndarray:
    return (np.asarray(coordinates, np.float32) + 1.0) * (size - 1) / 2.0


def head_weights(values: torch.Tensor, motion: HeadMotion, size: int) -> torch.Tensor:
    """(B, K) how much each keypoint follows the head: 1 inside the head ellipse, fading to 0 at 1.5 radii."""
    center = torch.as_tensor(to_model_coordinates(motion.head_center, size), device=values.device)
    radii = torch.as_tensor(2.0 * motion.head_radii / (size - 1), device=values.device)
    distance = torch.sqrt((((values - center) / radii) ** 2).sum(-1)).cpu().numpy()
    return torch.as_tensor(1.0 - smoothstep(1.0, 1.5, distance), dtype=values.dtype, device=values.device)


def speech_keypoints(source: Keypoints, motion: HeadMotion, frames: slice, size: int) -> Keypoints:
    """Driving keypoints for video frames ``frames`` (one per source batch element): each source keypoint
    moved by the frame's rigid head motion, weighted by how much it belongs to the head; Jacobians turned and
    scaled by the same (weighted) linear part."""
    device, dtype = source.value.device, source.value.dtype
    angle = torch.as_tensor(motion.angle[frames], device=device, dtype=dtype)
    scale = torch.as_tensor(motion.scale[frames], device=device, dtype=dtype)
    shift = torch.as_tensor(2.0 * motion.shift[frames] / (size - 1), device=device, dtype=dtype)
    pivot = torch.as_tensor(to_model_coordinates(motion.pivot, size), device=device, dtype=dtype)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    moved = torch.einsum("bij,bkj->bki", linear, source.value - pivot) + pivot + shift[:, None]
    weight = head_weights(source.value, motion, size)[..., None]  # (B, K, 1)
    value = source.value + weight * (moved - source.value)
    eye = torch.eye(2, device=device, dtype=dtype)
    blended = eye + weight[..., None] * (linear[:, None] - eye)  # (B, K, 2, 2)
    return Keypoints(value, blended @ source.jacobian)


def movement_scale(source: Keypoints, initial: Keypoints) -> float:
    """sqrt of the ratio of the keypoint hull areas (source portrait / first driving frame), as upstream's
    adapt_movement_scale: a face twice as large in the portrait moves twice as far."""
    source_area = ConvexHull(source.value[0].detach().cpu().double().numpy()).volume
    driving_area = ConvexHull(initial.value[0].detach().cpu().double().numpy()).volume
    return float(np.sqrt(source_area) / np.sqrt(driving_area))


def relative_keypoints(source: Keypoints, driving: Keypoints, initial: Keypoints, scale: float = 1.0) -> Keypoints:
    """upstream normalize_kp with relative movement and Jacobians: the source keypoints moved by how the
    driving keypoints moved since the first driving frame (``initial``, batch 1; ``source`` batch 1 or B)."""
    value = source.value + scale * (driving.value - initial.value)
    jacobian = driving.jacobian @ torch.inverse(initial.jacobian) @ source.jacobian
    return Keypoints(value, jacobian)
