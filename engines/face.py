"""Face analysis on MediaPipe (Face Mesh: 478 landmarks; the full-range face detector; both ship in the wheel).

Finds every face of a photo of any size, aspect and position, returns their landmarks in pixels, and frames a
portrait: a square around one face (eyes levelled when the head is rolled), resized to the output size, with
the landmarks carried into the square's coordinates.
"""

from __future__ import annotations

import math
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
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (263, 362)  # the subject's right eye is on the image's left

# The full-range detector sees a 192x192 copy of what it is given and reliably finds faces from about 8% of
# that width (measured on the bundled portrait), so big photos are searched in overlapping square tiles.
MIN_TILE = 480  # smallest tile: faces from about 40 px
MAX_TILES = 48  # a bound on the search's cost for very large photos (about 10 ms a tile on one core)
DETECTOR_INPUT = 384  # tiles are shrunk to this before detection (the detector shrinks them further anyway)
MESH_CROP = 512  # each face is meshed on a crop of this size, 2.5 face widths wide
LEVEL_ROLL_DEGREES = 10.0  # a head rolled further than this is turned upright when framed


@dataclass(frozen=True)
class Face:
    """One face: its 478 landmarks in the photo's pixels."""

    landmarks: np.ndarray  # float32 (478, 2)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """x, y, width, height of the landmarks' bounding box."""
        (x0, y0), (x1, y1) = self.landmarks.min(axis=0), self.landmarks.max(axis=0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)

    @property
    def roll_degrees(self) -> float:
        """Angle of the line through the eyes against the horizontal (positive: clockwise on screen)."""
        right = self.landmarks[list(RIGHT_EYE_CORNERS)].mean(axis=0)
        left = self.landmarks[list(LEFT_EYE_CORNERS)].mean(axis=0)
        return math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))


@dataclass(frozen=True)
class FramedPortrait:
    image: np.ndarray  # RGB uint8 (size, size, 3)
    landmarks: np.ndarray  # float32 (478, 2) in image pixels
    matrix: np.ndarray | None = None  # 2x3 affine from the photo's pixels to the square's
    side: float = 0.0  # the square's side in the photo's pixels (less than size: the face was upscaled)


class FaceAnalyzer:
    """Thread-safe wrapper around one Face Mesh graph and one detector (MediaPipe graphs must not be run
    concurrently)."""

    def __init__(self, max_faces: int = 5):
        import mediapipe as mp

        self._lock = threading.Lock()
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5
        )
        # Full-range detector for faces too small for Face Mesh's own short-range detector.
        self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray:
        """(478, 2) pixel landmarks of the largest face; NoFaceFound when there is none. Fast on a framed
        portrait (one Face Mesh run); searches the whole photo only when that finds nothing."""
        found = self._mesh_faces(rgb)
        if not found:
            found = self.faces(rgb)
        if not found:
            raise NoFaceFound("No face was found in the portrait; use a clear, front-facing photo of one person.")
        return largest(found).landmarks

    def faces(self, rgb: np.ndarray) -> list[Face]:
        """Every face of the photo, left to right by the centre of its box. Candidates come from Face Mesh on
        the whole photo (big faces) and the full-range detector on overlapping tiles (small ones). Each one not
        already upright and confirmed by the detector is meshed on an enlarged crop of its own, turned until
        its eyes are level, and kept only when the detector sees an upright face there (Face Mesh alone fits
        a mesh to an upside-down face too)."""
        detections = self._detections(rgb)
        found: list[Face] = []
        candidates = []
        for face in self._mesh_faces(rgb):
            # Upright already and where the detector saw an upright face: kept as it is (the common portrait).
            if abs(face.roll_degrees) < LEVEL_ROLL_DEGREES and any(
                _overlap(face.box, box) > 0.5 and abs(roll) < math.radians(20) for box, roll in detections
            ):
                found.append(face)
            else:
                candidates.append((face.box, math.radians(face.roll_degrees)))
        for box, roll in candidates + detections:
            if any(_overlap(box, face.box) > 0.3 for face in found):
                continue
            face = self._settle(rgb, box, roll)
            if face is not None and not any(_overlap(face.box, other.box) > 0.3 for other in found):
                found.append(face)
        return sorted(found, key=lambda face: face.box[0] + face.box[2] / 2)

    def _settle(self, rgb: np.ndarray, box, roll: float, tries: int = 3) -> Face | None:
        for _ in range(tries):
            crop, to_crop = _level_crop(rgb, box, roll)
            meshed = self._mesh_faces(crop)
            if not meshed:
                return None
            face = Face(_apply(cv2.invertAffineTransform(to_crop), largest(meshed).landmarks))
            turn = math.radians(face.roll_degrees) - roll
            if abs(math.atan2(math.sin(turn), math.cos(turn))) < math.radians(LEVEL_ROLL_DEGREES):
                return face if self._upright_face_in(crop) else None
            box, roll = face.box, math.radians(face.roll_degrees)
        return None

    def _upright_face_in(self, crop: np.ndarray) -> bool:
        """Whether the detector (trained on upright faces) sees a face in the middle of a levelled crop."""
        small = cv2.resize(crop, (DETECTOR_INPUT, DETECTOR_INPUT), interpolation=cv2.INTER_AREA)
        with self._lock:
            result = self._detector.process(small)
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            if abs(rel.xmin + rel.width / 2 - 0.5) < 0.25 and abs(rel.ymin + rel.height / 2 - 0.5) < 0.25:
                return True
        return False

    def _mesh_faces(self, rgb: np.ndarray) -> list[Face]:
        with self._lock:
            result = self._mesh.process(np.ascontiguousarray(rgb))
        height, width = rgb.shape[:2]
        return [
            Face(np.array([(p.x * width, p.y * height) for p in face.landmark], dtype=np.float32))
            for face in result.multi_face_landmarks or []
        ]

    def _detections(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """(box, roll in radians from the eye keypoints) of every detection over the tiles, duplicates
        (the same face seen by overlapping tiles) dropped in favour of the higher score."""
        scored = []
        for x, y, side in _tiles(rgb.shape):
            tile = rgb[y : y + side, x : x + side]
            shrink = min(1.0, DETECTOR_INPUT / side)
            if shrink < 1.0:
                tile = cv2.resize(tile, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
            with self._lock:
                result = self._detector.process(np.ascontiguousarray(tile))
            th, tw = tile.shape[:2]
            for detection in result.detections or []:
                rel = detection.location_data.relative_bounding_box
                box = (x + rel.xmin * tw / shrink, y + rel.ymin * th / shrink, rel.width * tw / shrink,
                       rel.height * th / shrink)
                right, left = detection.location_data.relative_keypoints[:2]
                roll = math.atan2((left.y - right.y) * th, (left.x - right.x) * tw)
                scored.append((detection.score[0], box, roll))
        kept: list[tuple[tuple[float, float, float, float], float]] = []
        for _, box, roll in sorted(scored, key=lambda item: -item[0]):
            if not any(_overlap(box, other) > 0.3 for other, _ in kept):
                kept.append((box, roll))
        return kept


def _level_crop(rgb: np.ndarray, box, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """A MESH_CROP square, 2.5 face widths wide around the face in ``box``, turned by -``roll`` so its eyes
    are level (Face Mesh's own detector misses faces rolled past about 45 degrees); and the 2x3 affine from
    the photo to it."""
    x, y, w, h = box
    to_crop = _similarity((x + w / 2, y + h / 2), -roll, MESH_CROP / (2.5 * max(w, h)), (MESH_CROP / 2, MESH_CROP / 2))
    crop = cv2.warpAffine(rgb, to_crop, (MESH_CROP, MESH_CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, to_crop


def largest(faces: list[Face]) -> Face:
    return max(faces, key=lambda face: face.box[2] * face.box[3])


def _tiles(shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(x, y, side) of square tiles overlapping by half, at sides halving from the photo's short side."""
    height, width = shape[:2]
    side, tiles = min(height, width), []
    while True:
        level = [(x, y, side) for y in _starts(height, side) for x in _starts(width, side)]
        if tiles and (side < MIN_TILE or len(tiles) + len(level) > MAX_TILES):
            return tiles
        tiles += level
        side //= 2


def _starts(length: int, side: int) -> list[int]:
    count = max(1, math.ceil((length - side) / (side / 2)) + 1)
    return sorted({round(i * (length - side) / max(1, count - 1)) for i in range(count)})


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area: 1 when one box holds the other."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1e-6, min(a[2] * a[3], b[2] * b[3]))


def _similarity(centre, angle: float, scale: float, target) -> np.ndarray:
    """2x3 affine: rotate by ``angle`` radians and scale about ``centre``, which lands on ``target``."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[c, -s], [s, c]])
    offset = np.asarray(target, np.float64) - linear @ np.asarray(centre, np.float64)
    return np.hstack([linear, offset[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


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


def frame_portrait(rgb: np.ndarray, size: int, analyzer: FaceAnalyzer | None = None,
                   landmarks: np.ndarray | None = None) -> FramedPortrait:
    """The square around the face (the largest, unless its landmarks are given), resized to size x size.
    A head rolled more than LEVEL_ROLL_DEGREES is turned upright about the face's centre."""
    if landmarks is None:
        landmarks = (analyzer or shared_analyzer()).landmarks(rgb)
    roll = Face(landmarks).roll_degrees
    if abs(roll) > LEVEL_ROLL_DEGREES:
        # Square taken in the levelled frame, centred on the face (no shifting to stay inside the photo).
        centre = landmarks.mean(axis=0)
        level = _similarity(centre, -math.radians(roll), 1.0, centre)
        upright = _apply(level, landmarks)
        _, _, side = square_around_face(upright, rgb.shape)
        (x_min, y_min), (x_max, y_max) = upright.min(axis=0), upright.max(axis=0)
        extent = max(x_max - x_min, y_max - y_min)
        x0, y0 = (x_min + x_max) / 2 - side / 2, (y_min + y_max) / 2 + 0.15 * extent - side / 2
        scale = size / side
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]]) @ np.vstack([level, [0, 0, 1]])
    else:
        x0, y0, side = square_around_face(landmarks, rgb.shape)
        scale = size / side
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    # One affine warp crops, scales (turns) and pads (edge pixels repeated) where the square leaves the image.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    framed = cv2.warpAffine(rgb, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return FramedPortrait(framed, _apply(matrix, landmarks), matrix, side)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap divided by mouth width: about 0 when closed, 0.3-0.6 wide open. Used by tests and QA."""
    upper, lower = landmarks[INNER_LIP_MID[0]], landmarks[INNER_LIP_MID[1]]
    left, right = landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]
    return float(np.linalg.norm(lower - upper) / max(np.linalg.norm(right - left), 1e-6))
