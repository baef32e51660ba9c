"""Diff2Lip's model inputs from frames, and its lower halves pasted back over the mouth only.

The face box is Wav2Lip's (engines/wav2lip/crops.py: the face oval padded below the chin, averaged over five
frames by sources.with_boxes, as upstream smooths its detector boxes), resized to 128x128 RGB in [-1, 1].
Diff2Lip regenerates the lower half of that square; the pasted region is the Wav2Lip mouth mask (lips grown,
jaw, feathered) cut to the lower half of the box with a feathered edge, so every pixel outside it keeps the
incoming frame's value.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..wav2lip.crops import mouth_mask, paste_mouth
from . import IMAGE_SIZE

HIDDEN_FROM_ROW = IMAGE_SIZE // 2  # upstream face_hide_percentage 0.5: rows >= int(128 * (1 - 0.5)) are generated


def face_crops(frames: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(B, 3, 128, 128) float32 RGB in [-1, 1]: each frame's box resized to the model's square."""
    batch = np.empty((len(frames), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes)):
        crop = cv2.resize(frame[y0:y1, x0:x1], (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        batch[i] = crop.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    return batch


def lower_half_mask(batch: int) -> np.ndarray:
    """(B, 1, 128, 128) float32: 1 on the rows the model regenerates, 0 above."""
    mask = np.zeros((batch, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    mask[:, :, HIDDEN_FROM_ROW:] = 1.0
    return mask


def paste_mask(landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Float32 (h, w) blend weights in box coordinates: the mouth mask, faded in over a feather's width
    below the box's middle row, so nothing above the generated half is pasted."""
    mask = mouth_mask(landmarks, box)
    height, width = mask.shape
    feather = max(1, int(round(0.05 * width)))
    start = int(np.ceil(height * HIDDEN_FROM_ROW / IMAGE_SIZE))
    rows = np.clip((np.arange(height, dtype=np.float32) - start + 1) / (feather + 1), 0.0, 1.0)
    mask = mask * rows[:, None]
    mask[mask < 1e-4] = 0.0
    return mask


def paste_face(frame: np.ndarray, generated_rgb: np.ndarray, box: tuple[int, int, int, int],
               landmarks: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with the generated 128x128 RGB face ([0, 1]) blended in over the mouth."""
    return paste_mouth(frame, generated_rgb[:, :, ::-1], box, paste_mask(landmarks, box))  # it takes BGR
