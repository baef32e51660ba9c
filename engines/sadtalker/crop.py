"""Where SadTalker looks and where its output goes back, from our Face Mesh landmarks (upstream detects 68
landmarks with facexlib, which downloads weights at run time; the same points are read off the 478-point mesh).

- `face_square`: upstream's crop (src/utils/croper.py align_face): centre a little below the eyes, half-side
  max(2 x eye distance, 1.8 x eye-to-mouth); here kept square (parts outside the portrait are edge-padded
  instead of squashing the crop), computed once per job from the portrait, so the box never jitters.
- `align_for_recon`: Deep3DFaceRecon's 5-point alignment (eye centres, nose tip, mouth corners fitted to the
  standard 3D landmarks of `similarity_Lm3D_all.mat` by least squares) -> the 224x224 input of face_3drecon.
- `paste_back`: the rendered square resized to the crop and blended into the full frame through a feathered
  mask that reaches exactly 0 at the square's edge (no seam), everything outside the square untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import face
from . import RECON_SIZE

# The 5 standard points (x, y, z) of Deep3DFaceRecon, from upstream's similarity_Lm3D_all.mat (68 points reduced
# by load_lm3d: eye centres, nose tip, mouth corners), in that order.
STANDARD_5 = np.array([[-0.31148657, 0.29036078, 0.13377953],
                       [0.30979887, 0.28972036, 0.13179526],
                       [0.0032535, -0.04617932, 0.55244243],
                       [-0.25216928, -0.38133916, 0.22405732],
                       [0.2484662, -0.38128236, 0.22235769]])
RESCALE = 102.0  # upstream align_img's rescale_factor
FEATHER = 0.12  # of the square's side: width of the blend ramp at its edge


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres: the mean of each eye's outline."""
    left = landmarks[face.RIGHT_EYE_UPPER + face.RIGHT_EYE_LOWER].mean(axis=0)
    right = landmarks[face.LEFT_EYE_UPPER + face.LEFT_EYE_LOWER].mean(axis=0)
    return left.astype(np.float64), right.astype(np.float64)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2): eye centres, nose tip, mouth corners (image left first), as upstream's extract_5p orders them."""
    left, right = eye_centres(landmarks)
    return np.stack([left, right, landmarks[face.NOSE_TIP], landmarks[face.MOUTH_CORNERS[0]],
                     landmarks[face.MOUTH_CORNERS[1]]]).astype(np.float64)


@dataclass(frozen=True)
class Square:
    x0: int
    y0: int
    side: int

    def to_square(self, size: int) -> np.ndarray:
        """2x3 affine from frame pixels to a size x size crop, pixel centres aligned as cv2.resize aligns them
        (so the paste-back, a cv2.resize, puts every pixel back where it was taken from)."""
        scale = size / self.side
        return np.array([[scale, 0, (0.5 - self.x0) * scale - 0.5], [0, scale, (0.5 - self.y0) * scale - 0.5]],
                        dtype=np.float64)


def face_square(landmarks: np.ndarray) -> Square:
    left, right = eye_centres(landmarks)
    eye_avg = (left + right) / 2
    mouth_avg = (landmarks[face.MOUTH_CORNERS[0]] + landmarks[face.MOUTH_CORNERS[1]]).astype(np.float64) / 2
    eye_to_eye, eye_to_mouth = right - left, mouth_avg - eye_avg
    half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    centre = eye_avg + eye_to_mouth * 0.1
    side = max(8, int(round(2 * half)))  # whole pixels, so the crop and the paste-back line up exactly
    return Square(int(round(centre[0] - half)), int(round(centre[1] - half)), side)


def crop_square(frame: np.ndarray, square: Square, size: int) -> np.ndarray:
    """The square resampled to size x size RGB; parts outside the frame repeat its edge."""
    return cv2.warpAffine(frame, square.to_square(size), (size, size), flags=cv2.INTER_AREA
                          if square.side > size else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def solve_pose(points_2d: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares scaled orthographic fit of the 5 standard 3D points to image points (y up): translation,
    scale (upstream POS)."""
    n = len(points_2d)
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3], a[0::2, 3] = STANDARD_5, 1
    a[1::2, 4:7], a[1::2, 7] = STANDARD_5, 1
    k = np.linalg.lstsq(a, points_2d.reshape(-1), rcond=None)[0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


def align_for_recon(crop: np.ndarray, crop_landmarks_5: np.ndarray) -> np.ndarray:
    """(224, 224, 3) RGB uint8: the crop scaled and shifted as upstream's align_img (resize by s, then a 224 window
    placed by the fitted translation)."""
    h0, w0 = crop.shape[:2]
    flipped = crop_landmarks_5.copy()
    flipped[:, 1] = h0 - 1 - flipped[:, 1]
    t, s = solve_pose(flipped)
    s = RESCALE / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - RECON_SIZE / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - RECON_SIZE / 2 + (h0 / 2 - t[1]) * s)
    sx, sy = w / w0, h / h0  # PIL's resize, as upstream: pixel centres aligned
    matrix = np.array([[sx, 0, 0.5 * sx - 0.5 - left], [0, sy, 0.5 * sy - 0.5 - up]], dtype=np.float64)
    return cv2.warpAffine(crop, matrix, (RECON_SIZE, RECON_SIZE), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def feather_mask(size: int) -> np.ndarray:
    """(size, size) float32: 1 in the middle, a smooth ramp to exactly 0 at every edge of the square."""
    ramp = max(2, int(round(FEATHER * size)))
    axis = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    edge = np.clip(axis / ramp, 0.0, 1.0)
    edge = edge * edge * (3 - 2 * edge)  # smoothstep: no visible kink where the ramp ends
    return np.minimum(edge[:, None], edge[None, :])


class PasteBack:
    """Blends rendered squares into full frames; the square's placement and mask are fixed for the job."""

    def __init__(self, square: Square, frame_shape: tuple[int, int]):
        height, width = frame_shape
        x0, y0, side = square.x0, square.y0, square.side
        self.src = (x0, y0, side)
        self.dst = (max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side))
        mask = feather_mask(side)
        dx0, dy0, dx1, dy1 = self.dst
        self.weight = mask[dy0 - y0 : dy1 - y0, dx0 - x0 : dx1 - x0, None]

    def __call__(self, frame: np.ndarray, rendered: np.ndarray) -> np.ndarray:
        """A copy of frame with ``rendered`` (S x S RGB uint8 of the job's square) blended in."""
        x0, y0, side = self.src
        dx0, dy0, dx1, dy1 = self.dst
        if dx1 <= dx0 or dy1 <= dy0:
            return frame.copy()
        resized = cv2.resize(rendered, (side, side), interpolation=cv2.INTER_CUBIC)
        patch = resized[dy0 - y0 : dy1 - y0, dx0 - x0 : dx1 - x0].astype(np.float32)
        out = frame.copy()
        region = out[dy0:dy1, dx0:dx1].astype(np.float32)
        out[dy0:dy1, dx0:dx1] = np.clip(region + (patch - region) * self.weight + 0.5, 0, 255).astype(np.uint8)
        return out
