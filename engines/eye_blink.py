"""Blinks: the upper eyelid slides down over the eye; the skin above it stretches to follow.

Per image column between the eye corners, output rows between a line above the lid and the lowered lid edge
are mapped back onto the rows between that line and the lid's rest position (the lid and lashes move down),
while rows below the lowered lid still show the eye underneath.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import face


class EyeRig:
    def __init__(self, landmarks: np.ndarray, upper: list[int], lower: list[int], size: int):
        upper_pts, lower_pts = landmarks[upper], landmarks[lower]
        left, right = float(upper_pts[:, 0].min()), float(upper_pts[:, 0].max())
        eye_width = right - left
        self.x0 = int(max(0, np.floor(left - 0.15 * eye_width)))
        self.x1 = int(min(size, np.ceil(right + 0.15 * eye_width)))
        columns = np.arange(self.x0, self.x1, dtype=np.float32)
        order_u, order_l = np.argsort(upper_pts[:, 0]), np.argsort(lower_pts[:, 0])
        self.lid = np.interp(columns, upper_pts[order_u, 0], upper_pts[order_u, 1], left=np.nan, right=np.nan)
        lower_lid = np.interp(columns, lower_pts[order_l, 0], lower_pts[order_l, 1], left=np.nan, right=np.nan)
        outside = np.isnan(self.lid) | np.isnan(lower_lid)
        corner_y = float(np.mean(upper_pts[[0, -1], 1]))
        self.lid[outside] = corner_y
        lower_lid[outside] = corner_y
        self.travel = np.maximum(lower_lid - self.lid, 0.0) * 0.92  # how far the lid edge drops when shut
        self.skin_top = self.lid - 0.55 * eye_width  # above this line nothing moves
        self.y0 = int(max(0, np.floor(self.skin_top.min()) - 1))
        self.y1 = int(min(size, np.ceil(lower_lid.max()) + 2))
        self.rows = np.arange(self.y0, self.y1, dtype=np.float32)[:, None]
        self.columns = np.broadcast_to(columns[None, :], (self.y1 - self.y0, len(columns))).astype(np.float32)

    def render(self, source: np.ndarray, closure: float) -> np.ndarray:
        """The eye region of `source` with the lid closed by `closure` (0 open .. 1 shut)."""
        lowered = self.lid + closure * self.travel
        span_src = np.maximum(self.lid - self.skin_top, 1.0)
        span_dst = np.maximum(lowered - self.skin_top, 1.0)
        stretched = self.skin_top + (self.rows - self.skin_top) * (span_src / span_dst)
        map_y = np.where((self.rows >= self.skin_top) & (self.rows <= lowered), stretched, self.rows)
        return cv2.remap(source, self.columns, map_y.astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)


def eye_rigs(landmarks: np.ndarray, size: int) -> list[EyeRig]:
    return [
        EyeRig(landmarks, face.RIGHT_EYE_UPPER, face.RIGHT_EYE_LOWER, size),
        EyeRig(landmarks, face.LEFT_EYE_UPPER, face.LEFT_EYE_LOWER, size),
    ]


def blink_track(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Lid closure per frame: blinks every 2-6 s (people blink ~10-20 times a minute), each ~0.2 s long."""
    closure = np.zeros(n_frames, np.float32)
    t = rng.uniform(0.8, 2.5)
    duration = n_frames / fps
    while t < duration:
        length = rng.uniform(0.16, 0.26)
        times = np.arange(n_frames) / fps
        phase = (times - t) / length
        # Fast close (first third), slower reopen.
        shape = np.where(phase < 0.35, phase / 0.35, 1 - (phase - 0.35) / 0.65)
        closure = np.maximum(closure, np.clip(shape, 0, 1).astype(np.float32) * ((phase >= 0) & (phase <= 1)))
        t += rng.uniform(2.0, 6.0)
    return closure
