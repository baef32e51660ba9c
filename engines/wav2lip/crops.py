"""Face boxes from Face Mesh landmarks, the model's input crops, and paste-back over the mouth only.

Boxes follow upstream's inference framing (a face detector box from forehead to chin, padded 10 px below
the chin at typical resolutions; here 5% of the face height), so the mouth sits in the lower half that the
model regenerates. Only a feathered region around lips and chin is blended back into the frame: outside it
every pixel of the base frame is left exactly as it was.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import face
from . import FACE_SIZE

CHIN_PAD = 0.05  # of the face height, added below the chin
NOSE_BOTTOM = 2  # Face Mesh point under the nose tip: the mask never reaches above it
JAW_POINTS = [152, 148, 176, 149, 150, 377, 400, 378, 379]  # chin and lower jaw
MOUTH_SCALE = 1.45  # lips' outline grown about its centre, to cover the cheeks' lip lines


def face_box(landmarks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(x0, y0, x1, y1) float box around the face oval, padded below the chin, inside the frame."""
    oval = landmarks[face.FACE_OVAL]
    x0, y0 = oval.min(axis=0)
    x1, y1 = oval.max(axis=0)
    y1 += CHIN_PAD * (y1 - y0)
    height, width = frame_size
    return np.array([max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)], dtype=np.float64)


def int_box(box: np.ndarray) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def model_inputs(frames: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(B, 6, 96, 96) float32 in [0, 1]: each crop in BGR (the order upstream trained on) with its lower half
    zeroed, then the same crop unmasked as the reference."""
    batch = np.empty((len(frames), 6, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes)):
        crop = cv2.resize(frame[y0:y1, x0:x1, ::-1], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
        chw = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
        batch[i, 3:] = chw
        batch[i, :3] = chw
        batch[i, :3, FACE_SIZE // 2 :] = 0.0
    return batch


def mouth_mask(landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Float32 (h, w) weights in box coordinates: 1 over lips and chin, feathered to exactly 0 well inside
    the box's edges and below the nose."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    lips = landmarks[face.LIPS_OUTER]
    centre = lips.mean(axis=0)
    grown = centre + (lips - centre) * MOUTH_SCALE
    points = np.concatenate([grown, landmarks[JAW_POINTS]]) - np.array([x0, y0], dtype=np.float32)
    feather = max(1, int(round(0.05 * width)))
    top = max(float(landmarks[NOSE_BOTTOM][1] - y0) + feather, feather)
    points[:, 0] = np.clip(points[:, 0], 2 * feather, width - 1 - 2 * feather)
    points[:, 1] = np.clip(points[:, 1], top, height - 1 - 2 * feather)
    hard = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(hard, cv2.convexHull(np.round(points).astype(np.int32)), 255)
    size = 2 * feather + 1
    soft = cv2.blur(hard.astype(np.float32) / 255.0, (size, size), borderType=cv2.BORDER_CONSTANT)
    soft[soft < 1e-4] = 0.0
    return soft


def paste_mouth(frame: np.ndarray, generated_bgr: np.ndarray, box: tuple[int, int, int, int],
                mask: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with the generated (96x96 BGR, [0,1]) face blended in where ``mask`` > 0."""
    x0, y0, x1, y1 = box
    out = frame.copy()
    generated = cv2.resize(generated_bgr[:, :, ::-1], (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    region = out[y0:y1, x0:x1].astype(np.float32)
    weight = mask[:, :, None]
    blended = region * (1.0 - weight) + np.clip(generated * 255.0, 0, 255) * weight
    inside = mask > 0
    out[y0:y1, x0:x1][inside] = np.clip(np.round(blended[inside]), 0, 255).astype(np.uint8)
    return out
