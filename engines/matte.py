"""A person matte for each video frame: MediaPipe selfie segmentation (its model ships inside the mediapipe wheel),
smoothed over time so the edge does not shimmer from frame to frame.

Each frame's mask (0..1, the probability that a pixel shows the person) is blended with the previous smoothed
matte (an exponential moving average, SMOOTHING of the past kept), then its edges are sharpened a little into
a clean ramp: below LOW it is background (0), above HIGH person (255).
"""

from __future__ import annotations

import threading

import numpy as np

SMOOTHING = 0.5  # share of the previous matte kept in each frame's (higher: steadier, slower to follow motion)
LOW, HIGH = 0.25, 0.75  # mask probabilities mapped to fully transparent / fully opaque

_local = threading.local()  # one segmenter per thread (MediaPipe graphs are not shared between threads)


def _segmenter():
    if getattr(_local, "segmenter", None) is None:
        import mediapipe as mp

        _local.segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    return _local.segmenter


def person_mask(rgb: np.ndarray) -> np.ndarray:
    """The segmenter's raw probability (float32, frame size) that each pixel shows the person."""
    result = _segmenter().process(np.ascontiguousarray(rgb))
    mask = result.segmentation_mask
    if mask is None:
        return np.zeros(rgb.shape[:2], np.float32)
    return mask.astype(np.float32, copy=False)


class TemporalMatte:
    """Mattes of consecutive frames of one video, each smoothed with the ones before it."""

    def __init__(self, smoothing: float = SMOOTHING):
        self.smoothing = smoothing
        self._previous: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 alpha (255: person) of this frame."""
        mask = person_mask(rgb)
        if self._previous is not None and self._previous.shape == mask.shape:
            mask = self.smoothing * self._previous + (1 - self.smoothing) * mask
        self._previous = mask
        ramp = np.clip((mask - LOW) / (HIGH - LOW), 0.0, 1.0)
        return (ramp * 255 + 0.5).astype(np.uint8)
