"""Faces to and from GFPGAN's input: the FFHQ-512 alignment, from our Face Mesh landmarks.

Upstream (facexlib's FaceRestoreHelper) detects five points with RetinaFace, maps them onto the FFHQ 512x512
five-point template with a similarity transform (cv2.estimateAffinePartial2D, LMEDS), warps the face in, and
pastes the restored face back through the inverse transform under a feathered mask (a face-parsing network's
face region, blurred). Here the five points and the face region both come from the 478 MediaPipe landmarks
every frame already carries, so nothing is detected again and nothing is downloaded.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..face import FACE_OVAL, LEFT_EYE_LOWER, LEFT_EYE_UPPER, MOUTH_CORNERS, NOSE_TIP, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER
from . import FACE_SIZE

# facexlib's "standard 5 landmarks for FFHQ faces with 512 x 512", in image order: eye on the image's left, eye
# on the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right.
FFHQ_512_TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
BORDER_RGB = (132, 133, 135)  # upstream fills outside the photo with this grey (given there in BGR order)

# The paste-back mask, in the 512 crop: the face oval shrunk by ERODE px, then blurred twice as upstream blurs
# its parsing mask (101 px kernel, sigma 11), so it fades out across about the oval line; the crop's outer
# BORDER px are cleared so the crop's edge never shows. It is drawn and blurred at 1/MASK_SCALE of the crop's
# side and resized up (a smooth mask loses nothing; the full-size blur cost ~20 ms a frame).
MASK_ERODE, MASK_BLUR_KERNEL, MASK_BLUR_SIGMA, MASK_BORDER = 15, 101, 11, 10
MASK_SCALE = 4
SHRINK_FIRST_BELOW = 0.75  # pasting back at less than this scale: area-resample first (no aliasing)

_RIGHT_EYE = sorted(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER))  # the subject's right eye is on the image's left
_LEFT_EYE = sorted(set(LEFT_EYE_UPPER + LEFT_EYE_LOWER))


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres (mean of each eye's lid contour), nose tip and mouth corners, in the template's order."""
    return np.array([landmarks[_RIGHT_EYE].mean(axis=0), landmarks[_LEFT_EYE].mean(axis=0), landmarks[NOSE_TIP],
                     landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]], dtype=np.float32)


def alignment(landmarks: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform from frame pixels to the 512x512 aligned face."""
    points = five_points(landmarks)
    matrix, _ = cv2.estimateAffinePartial2D(points, FFHQ_512_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:  # LMEDS found no consensus (degenerate points): plain least squares over all five
        matrix, _ = cv2.estimateAffinePartial2D(points, FFHQ_512_TEMPLATE, method=cv2.RANSAC,
                                                ransacReprojThreshold=1e9)
    return matrix


def warp_face(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The aligned 512x512 face crop of an RGB frame."""
    return cv2.warpAffine(frame, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)


def face_mask(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Float32 (512, 512) in [0, 1]: where the restored face replaces the frame, in the crop's coordinates."""
    side = FACE_SIZE // MASK_SCALE
    oval = cv2.transform(landmarks[FACE_OVAL].reshape(-1, 1, 2).astype(np.float32), matrix).reshape(-1, 2)
    small_oval = (oval + 0.5) / MASK_SCALE - 0.5  # pixel centres of the small grid
    mask = np.zeros((side, side), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(small_oval * 4).astype(np.int32)), 1.0, shift=2)
    erode = max(1, round(MASK_ERODE / MASK_SCALE))
    mask = cv2.erode(mask, np.ones((erode, erode), np.uint8))
    kernel = MASK_BLUR_KERNEL // MASK_SCALE | 1  # odd
    for _ in range(2):
        mask = cv2.GaussianBlur(mask, (kernel, kernel), MASK_BLUR_SIGMA / MASK_SCALE)
    mask = cv2.resize(mask, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
    mask[:MASK_BORDER], mask[-MASK_BORDER:], mask[:, :MASK_BORDER], mask[:, -MASK_BORDER:] = 0, 0, 0, 0
    return mask


def _shrunk(images: list[np.ndarray], inverse: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """When the crop goes back at a much smaller scale, area-resample it first and fold the resize into the
    transform, so the bilinear warp that follows never skips pixels."""
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))
    if scale >= SHRINK_FIRST_BELOW:
        return images, inverse
    side = max(8, round(FACE_SIZE * scale))
    factor = side / FACE_SIZE
    small = [cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in images]
    linear = inverse[:, :2] / factor
    # a small-crop pixel centre x_s sits at x_b = (x_s + 0.5) / factor - 0.5 in the full crop
    offset = inverse[:, 2] + inverse[:, :2] @ np.full(2, 0.5 / factor - 0.5)
    return small, np.hstack([linear, offset[:, None]])


def _footprint(mask: np.ndarray, inverse: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1: the frame rectangle the mask's non-zero part lands in (empty when off the frame)."""
    x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
    corners = np.array([[x - 1, y - 1], [x + w, y - 1], [x - 1, y + h], [x + w, y + h]], np.float32)
    landed = cv2.transform(corners[None], inverse)[0]
    (x0, y0), (x1, y1) = np.floor(landed.min(axis=0)) - 1, np.ceil(landed.max(axis=0)) + 2
    return max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))


def paste_back(frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame with ``face`` (a processed 512x512 crop taken with ``matrix``) blended in under ``mask``.
    Only the rectangle under the mask is warped and blended; the rest of the frame is copied as it is."""
    height, width = frame.shape[:2]
    (face, mask), inverse = _shrunk([face, mask], cv2.invertAffineTransform(matrix))
    x0, y0, x1, y1 = _footprint(mask, inverse, width, height)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    into_box = inverse - np.array([[0, 0, x0], [0, 0, y0]])
    box = (x1 - x0, y1 - y0)
    placed = cv2.warpAffine(face, into_box, box, flags=cv2.INTER_LINEAR).astype(np.float32)
    weight = cv2.warpAffine(mask, into_box, box, flags=cv2.INTER_LINEAR)[:, :, None]
    under = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(under + weight * (placed - under)), 0, 255).astype(np.uint8)
    return out
