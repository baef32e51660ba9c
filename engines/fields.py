"""Small helpers shared by the warps: smooth ramps and coarse displacement grids upsampled to pixels."""

from __future__ import annotations

import cv2
import numpy as np


def smoothstep(edge0: float, edge1: float, value: np.ndarray) -> np.ndarray:
    t = np.clip((value - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def coarse_grid(x0: int, y0: int, width: int, height: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute coordinates of coarse samples placed where cv2.resize(INTER_LINEAR) by `step` expects them:
    at (k + 0.5) * step - 0.5, so that upsampling puts every sample back at its own pixel."""
    cols = (np.arange(-(-width // step)) + 0.5) * step - 0.5 + x0
    rows = (np.arange(-(-height // step)) + 0.5) * step - 0.5 + y0
    grid_x, grid_y = np.meshgrid(cols.astype(np.float32), rows.astype(np.float32))
    return grid_x, grid_y


def upsample(displacement: np.ndarray, width: int, height: int, step: int) -> np.ndarray:
    """Coarse displacement (not absolute coordinates: near the border cv2 clamps, which is harmless for a
    displacement that is ~0 there) to one value per pixel of a width x height region. Channels (a third axis)
    are upsampled each on its own: with 1, 3 or 4 of them the values equal separate calls' (with 2 they do not)."""
    rows, cols = displacement.shape[:2]
    size = (cols * step, rows * step)
    return cv2.resize(np.asarray(displacement, np.float32), size, interpolation=cv2.INTER_LINEAR)[:height, :width]


def pixel_grid(x0: int, y0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(x0, x0 + width, dtype=np.float32), np.arange(y0, y0 + height, dtype=np.float32))
    return xs, ys


def boxes_around(y0: int, y1: int, x0: int, x1: int, height: int, width: int) -> list[tuple[slice, slice]]:
    """The parts of a height x width image outside the box (y0:y1, x0:x1), as up to four non-empty boxes."""
    boxes = [(slice(0, y0), slice(0, width)), (slice(y1, height), slice(0, width)),
             (slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, width))]
    return [(rows, cols) for rows, cols in boxes if rows.stop > rows.start and cols.stop > cols.start]
