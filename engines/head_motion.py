"""Slight head motion with a still background: a small rigid motion (sway, nod, tilt) applied inside a soft
mask around the head, fading to nothing outside it."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from . import face
from .fields import coarse_grid, pixel_grid, smoothstep, upsample

GRID_STEP = 8


class HeadRig:
    def __init__(self, landmarks: np.ndarray, size: int):
        oval = landmarks[face.FACE_OVAL]
        (fx0, fy0), (fx1, fy1) = oval.min(axis=0), oval.max(axis=0)
        face_w, face_h = fx1 - fx0, fy1 - fy0
        self.center = np.array([(fx0 + fx1) / 2, (fy0 + fy1) / 2 - 0.12 * face_h], np.float32)
        # Rigid inside (face + hair), fading out over a band around it.
        self.radii = np.array([0.75 * face_w, 0.78 * face_h], np.float32)
        self.pivot = np.array([(fx0 + fx1) / 2, fy1 + 0.25 * face_h], np.float32)  # about the neck
        extent = 1.55 * self.radii
        self.x0 = int(max(0, self.center[0] - extent[0]))
        self.x1 = int(min(size, self.center[0] + extent[0]))
        self.y0 = int(max(0, self.center[1] - extent[1]))
        self.y1 = int(min(size, self.center[1] + extent[1]))
        self.scale = float(face_h)
        self.width, self.height = self.x1 - self.x0, self.y1 - self.y0
        self.grid_x, self.grid_y = coarse_grid(self.x0, self.y0, self.width, self.height, GRID_STEP)
        r = np.sqrt(((self.grid_x - self.center[0]) / self.radii[0]) ** 2 + ((self.grid_y - self.center[1]) / self.radii[1]) ** 2)
        self.mask = (1 - smoothstep(1.0, 1.5, r)).astype(np.float32)
        self.pixel_x, self.pixel_y = pixel_grid(self.x0, self.y0, self.width, self.height)

    def render(self, source: np.ndarray, angle: float, shift_x: float, shift_y: float) -> np.ndarray:
        """Head region of `source` rotated by `angle` radians about the neck and shifted (pixels)."""
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        # Inverse of the rigid motion, blended by the mask: src = dst - mask * (motion(dst) - dst).
        rx, ry = self.grid_x - self.pivot[0] - shift_x, self.grid_y - self.pivot[1] - shift_y
        back_x = cos * rx + sin * ry + self.pivot[0]
        back_y = -sin * rx + cos * ry + self.pivot[1]
        map_x = self.pixel_x + upsample(self.mask * (back_x - self.grid_x), self.width, self.height, GRID_STEP)
        map_y = self.pixel_y + upsample(self.mask * (back_y - self.grid_y), self.width, self.height, GRID_STEP)
        return cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def drift(n_frames: int, fps: float, sigma_seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A slow random drift with unit spread in the long run: white noise smoothed over ``sigma_seconds``.
    Scaled by the spread such noise has in the long run (1 / sqrt(2 sqrt(pi) sigma)), not by this clip's own
    spread: that made a clip of a few frames sway and tilt as much as a minute does."""
    pad = round(2 * fps)  # two seconds of frames each side (fps may be 29.97...)
    sigma = sigma_seconds * fps
    smooth = gaussian_filter1d(rng.standard_normal(n_frames + 2 * pad), sigma)[pad : pad + n_frames]
    return smooth * np.sqrt(2 * np.sqrt(np.pi) * sigma)


def motion_track(n_frames: int, fps: float, envelope: np.ndarray, face_height: float, rng: np.random.Generator):
    """Per-frame (angle, shift_x, shift_y): slow random sway and tilt, plus small nods with speech emphasis."""
    angle = np.radians(1.2) * drift(n_frames, fps, 0.9, rng)
    shift_x = 0.012 * face_height * drift(n_frames, fps, 1.1, rng)
    emphasis = gaussian_filter1d(envelope.astype(np.float64), 0.12 * fps)
    shift_y = 0.008 * face_height * drift(n_frames, fps, 1.4, rng) + 0.015 * face_height * emphasis
    return angle.astype(np.float32), shift_x.astype(np.float32), shift_y.astype(np.float32)
