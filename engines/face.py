"""Face analysis on MediaPipe Face Mesh (478 landmarks; the model ships inside the mediapipe wheel).

Finds the largest face, returns its landmarks in pixels, and frames a portrait: a square crop around the face,
resized to the output size, with the landmarks carried into the crop's coordinates.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from schemas.errors import NoFaceFound

# mediapipe 0.10.14 calls a protobuf API that warns on every graph run; the warning is not ours to fix.
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)

# Landmark indices of the Face Mesh topology (canonical_face_model_uv_visualization in the MediaPipe docs).
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
UPPER_INNER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER_LIP = [308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]
MOUTH_CORNERS = (61, 291)
INNER_LIP_MID = (13, 14)  # upper, lower
CHIN = 152
NOSE_TIP = 1
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# Per eye: upper lid (corner to corner), lower lid.
RIGHT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [263, 466, 388, 387, 386, 385, 384, 398, 362]
LEFT_EYE_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]


@dataclass(frozen=True)
class FramedPortrait:
    image: np.ndarray  # RGB uint8 (size, size, 3)
    landmarks: np.ndarray  # float32 (478, 2) in image pixels


class FaceAnalyzer:
    """Thread-safe wrapper around one Face Mesh graph (MediaPipe graphs must not be run concurrently)."""

    def __init__(self, max_faces: int = 5):
        import mediapipe as mp

        self._lock = threading.Lock()
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5
        )
        # Full-range detector for faces too small for Face Mesh's own short-range detector.
        self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray:
        """(478, 2) pixel landmarks of the largest face; NoFaceFound when there is none."""
        found = self._mesh_landmarks(rgb)
        if found is None:
            found = self._landmarks_via_detector(rgb)
        if found is None:
            raise NoFaceFound("No face was found in the portrait; use a clear, front-facing photo of one person.")
        return found

    def _mesh_landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        with self._lock:
            result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return None
        height, width = rgb.shape[:2]
        faces = [
            np.array([(p.x * width, p.y * height) for p in face.landmark], dtype=np.float32)
            for face in result.multi_face_landmarks
        ]
        return max(faces, key=lambda pts: float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1])))

    def _landmarks_via_detector(self, rgb: np.ndarray) -> np.ndarray | None:
        """Find a small face with the full-range detector, then run Face Mesh on an enlarged crop of it."""
        with self._lock:
            result = self._detector.process(np.ascontiguousarray(rgb))
        if not result.detections:
            return None
        height, width = rgb.shape[:2]
        boxes = [d.location_data.relative_bounding_box for d in result.detections]
        box = max(boxes, key=lambda b: b.width * b.height)
        cx, cy = (box.xmin + box.width / 2) * width, (box.ymin + box.height / 2) * height
        side = max(box.width * width, box.height * height) * 2.5
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
        crop = rgb[y0:y1, x0:x1]
        scale = 512 / max(crop.shape[:2])
        enlarged = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        found = self._mesh_landmarks(enlarged)
        if found is None:
            return None
        return found / scale + np.array([x0, y0], dtype=np.float32)


_shared: FaceAnalyzer | None = None
_shared_lock = threading.Lock()


def shared_analyzer() -> FaceAnalyzer:
    """One analyzer per process: building a graph costs more than running it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FaceAnalyzer()
        return _shared


def square_around_face(landmarks: np.ndarray, image_shape: tuple[int, ...]) -> tuple[float, float, float]:
    """(x0, y0, side) of a square crop: about three face-heights wide where the image allows, at least 1.6,
    with the face a little above centre, as in a head-and-shoulders shot."""
    height, width = image_shape[:2]
    x_min, y_min = landmarks.min(axis=0)
    x_max, y_max = landmarks.max(axis=0)
    extent = max(x_max - x_min, y_max - y_min)
    side = float(np.clip(3.0 * extent, 1.6 * extent, max(min(width, height), 1.6 * extent)))
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2 + 0.15 * extent
    x0 = float(np.clip(cx - side / 2, min(0.0, width - side), max(0.0, width - side)))
    y0 = float(np.clip(cy - side / 2, min(0.0, height - side), max(0.0, height - side)))
    return x0, y0, side


def frame_portrait(rgb: np.ndarray, size: int, analyzer: FaceAnalyzer | None = None) -> FramedPortrait:
    analyzer = analyzer or shared_analyzer()
    landmarks = analyzer.landmarks(rgb)
    x0, y0, side = square_around_face(landmarks, rgb.shape)
    scale = size / side
    # One affine warp crops, scales and pads (edge pixels repeated) where the square leaves the image.
    matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    framed = cv2.warpAffine(rgb, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    framed_landmarks = ((landmarks - np.array([x0, y0], dtype=np.float32)) * scale).astype(np.float32)
    return FramedPortrait(framed, framed_landmarks)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap divided by mouth width: about 0 when closed, 0.3-0.6 wide open. Used by tests and QA."""
    upper, lower = landmarks[INNER_LIP_MID[0]], landmarks[INNER_LIP_MID[1]]
    left, right = landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]
    return float(np.linalg.norm(lower - upper) / max(np.linalg.norm(right - left), 1e-6))
