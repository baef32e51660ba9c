"""What the video shows of the photo: `crop` (a size x size square around the face) or `original` (the whole
photo at its own aspect, `size` pixels high, the face animated in place).

Either way the engine renders a square around the chosen face. For `original` each rendered square is
turned, scaled and placed back over the photo through a feathered mask, so only the face region moves and
every pixel outside it is the photo's, frame after frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from schemas.errors import InvalidParameter, NoFaceFound

from .face import Face, FaceAnalyzer, frame_portrait, shared_analyzer
from .face_choice import FaceChoice

log = logging.getLogger(__name__)

FRAMINGS = ("crop", "original")
MAX_WIDTH = 4096  # `original` output width (a wide panorama at a large size would pass any encoder's limit)
MIN_RENDER, MAX_RENDER = 64, 2048  # the square the engine renders for `original`, in output pixels
FEATHER = 0.15  # the mask fades in over this share of the square's side from each edge


@dataclass(frozen=True)
class Framed:
    """The engine's square and how its frames become the video."""

    portrait: np.ndarray  # RGB uint8 (render_size, render_size, 3): what the engine animates
    landmarks: np.ndarray  # float32 (478, 2) in the square's pixels
    render_size: int
    width: int  # of the video
    height: int
    upscaled: bool  # the video shows the source at more than one output pixel per source pixel
    face_used: dict  # {"index", "box" [x, y, w, h] in source pixels, "facesFound", "others", "turned"}
    compositor: "Compositor | None" = field(default=None, repr=False)

    def frames(self, rendered: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The video's frames from the engine's squares (the squares themselves for `crop`)."""
        if self.compositor is None:
            yield from rendered
        else:
            for square in rendered:
                yield self.compositor(square)


def frame_photo(rgb: np.ndarray, size: int, framing: str = "crop", choice: FaceChoice = FaceChoice(),
                analyzer: FaceAnalyzer | None = None) -> Framed:
    """Find the photo's faces, pick one by ``choice`` and frame it for ``framing``."""
    if framing not in FRAMINGS:
        raise InvalidParameter(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}.")
    faces = find_faces(rgb, analyzer or shared_analyzer())
    if not faces:
        raise NoFaceFound("No face was found in the portrait; use a clear photo with a face at least 40 pixels wide.")
    index = choice.pick([face.box for face in faces])
    chosen = faces[index]
    face_used = {"index": index, "box": [round(v) for v in chosen.box], "facesFound": len(faces),
                 "others": len(faces) - 1, "turned": 0}
    if framing == "crop":
        framed = frame_portrait(rgb, size, landmarks=chosen.landmarks)
        return _said(Framed(framed.image, framed.landmarks, size, size, size, framed.side < size, face_used))
    return _said(_original(rgb, size, chosen, face_used))


def find_faces(rgb: np.ndarray, analyzer: FaceAnalyzer) -> list[Face]:
    """The photo's faces, left to right; when there are none, the photo is searched again turned a half and
    quarter turns (a scan or phone photo held the wrong way round), the faces mapped back to its pixels."""
    faces = analyzer.faces(rgb)
    for turns in (2, 1, 3):
        if faces:
            break
        back = cv2.invertAffineTransform(quarter_turn(turns, rgb.shape))
        found = analyzer.faces(np.ascontiguousarray(np.rot90(rgb, turns)))
        faces = sorted((Face(_apply(back, face.landmarks)) for face in found), key=lambda f: f.box[0] + f.box[2] / 2)
    return faces


def quarter_turn(turns: int, shape: tuple[int, ...]) -> np.ndarray:
    """2x3 affine from a photo's pixels to those of ``np.rot90(photo, turns)`` (counter-clockwise turns)."""
    height, width = shape[:2]
    return {
        0: np.array([[1.0, 0, 0], [0, 1, 0]]),
        1: np.array([[0.0, 1, 0], [-1, 0, width]]),
        2: np.array([[-1.0, 0, width], [0, -1, height]]),
        3: np.array([[0.0, -1, height], [1, 0, 0]]),
    }[turns % 4]


def _original(rgb: np.ndarray, size: int, chosen: Face, face_used: dict) -> Framed:
    # A face lying on its side or upside down turns the photo (losslessly) until it is within 45 degrees of
    # upright; the rest of the roll the engine's square levels, and the square is turned back when placed.
    turns = round(chosen.roll_degrees / 90) % 4
    if turns:
        landmarks = _apply(quarter_turn(turns, rgb.shape), chosen.landmarks)
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
        chosen = Face(landmarks)
        face_used["turned"] = 90 * turns
    photo_h, photo_w = rgb.shape[:2]
    height = size
    width = max(2, 2 * round(photo_w * size / photo_h / 2))
    if width > MAX_WIDTH:
        raise InvalidParameter(
            f"framing original of a {photo_w}x{photo_h} photo at size {size} would be {width} pixels wide; the "
            f"limit is {MAX_WIDTH}: use a smaller size or framing crop."
        )
    to_output = np.array([[width / photo_w, 0, 0], [0, height / photo_h, 0]])
    # The engine renders the face square at the size it will have in the video, so it is never resampled twice.
    probe = frame_portrait(rgb, MIN_RENDER, landmarks=chosen.landmarks)
    render_size = int(np.clip(2 * round(probe.side * height / photo_h / 2), MIN_RENDER, MAX_RENDER))
    framed = frame_portrait(rgb, render_size, landmarks=chosen.landmarks)
    square_to_output = _compose(to_output, cv2.invertAffineTransform(framed.matrix))
    interpolation = cv2.INTER_AREA if height < photo_h else cv2.INTER_CUBIC
    background = cv2.resize(rgb, (width, height), interpolation=interpolation)
    return Framed(framed.image, framed.landmarks, render_size, width, height, photo_h < size, face_used,
                  Compositor(background, square_to_output, render_size))


class Compositor:
    """Places each rendered square over the still background through a feathered mask. Only the square's
    footprint (its bounding box in the video) is touched; the mask is zero at its edges, so every pixel
    outside the face region is the background's, exactly."""

    def __init__(self, background: np.ndarray, square_to_output: np.ndarray, square: int):
        height, width = background.shape[:2]
        corners = _apply(square_to_output, np.array([[0, 0], [square, 0], [0, square], [square, square]], np.float32))
        self._x0, self._y0 = (int(max(0, math.floor(v))) for v in corners.min(axis=0))
        self._x1 = int(min(width, math.ceil(corners[:, 0].max())))
        self._y1 = int(min(height, math.ceil(corners[:, 1].max())))
        self._size = (self._x1 - self._x0, self._y1 - self._y0)
        self._matrix = square_to_output - np.array([[0, 0, self._x0], [0, 0, self._y0]])
        mask = cv2.warpAffine(feathered_mask(square), self._matrix, self._size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self._mask = mask[..., None]
        self._background = background
        self._under = background[self._y0 : self._y1, self._x0 : self._x1].astype(np.float32)

    def __call__(self, square: np.ndarray) -> np.ndarray:
        placed = cv2.warpAffine(square, self._matrix, self._size, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        blended = self._under + (placed.astype(np.float32) - self._under) * self._mask
        frame = self._background.copy()
        frame[self._y0 : self._y1, self._x0 : self._x1] = (blended + 0.5).astype(np.uint8)
        return frame

    @property
    def region(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of the only pixels that may change."""
        return self._x0, self._y0, self._x1, self._y1


def feathered_mask(side: int) -> np.ndarray:
    """float32 (side, side): 1 in the middle, easing to 0 over FEATHER of the side at each edge."""
    centres = np.arange(side, dtype=np.float32) + 0.5
    edge = np.minimum(centres, side - centres)  # distance of each pixel centre to the nearer edge
    ramp = np.clip(edge / (FEATHER * side), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible seam where the ramp meets the flat middle
    return np.minimum(ramp[:, None], ramp[None, :])


def _said(framed: Framed) -> Framed:
    if framed.upscaled:
        log.info("the %dx%d video enlarges the photo: it has fewer pixels than the video needs (face %s)",
                 framed.width, framed.height, framed.face_used)
    return framed


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine doing ``inner`` then ``outer``."""
    combined = outer[:, :2] @ inner
    combined[:, 2] += outer[:, 2]
    return combined


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
