"""Broadcast canvases: the avatar video placed on a 1920x1080, 1280x720 (16:9) or 1080x1920 (9:16) picture, over a
background colour or image, or over nothing (transparent, for the alpha outputs).

Where it goes: `x`, `y` are the avatar's centre as fractions of the canvas (0.5, 0.5 is the middle), `scale` its
height as a fraction of the canvas height (left out: as large as fits whole). The part outside the canvas is
cut off. The person is laid over the background through its matte (engines/matte.py), so the background shows
around the person, not a box around the portrait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from schemas.errors import InvalidParameter

CANVASES = {"1920x1080": (1920, 1080), "1280x720": (1280, 720), "1080x1920": (1080, 1920)}
_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6})$")
DEFAULT_COLOUR = "#000000"


def parse_colour(text: str) -> tuple[int, int, int]:
    found = _COLOUR.match(text.strip()) if isinstance(text, str) else None
    if not found:
        raise InvalidParameter(f"A background colour is written #RRGGBB (e.g. #1a2b3c), got {text!r}.")
    value = found.group(1)
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@dataclass(frozen=True)
class Canvas:
    """A canvas request: its size name, where the avatar goes, and what is behind it."""

    size: str = "1920x1080"
    x: float = 0.5
    y: float = 0.5
    scale: float | None = None  # avatar height / canvas height; None: as large as fits whole
    background: str | None = None  # "#rrggbb"; None (and no image): black, or transparent for alpha outputs
    background_uri: str | None = None  # an image (checked like the portrait; fetched by the job step)

    def __post_init__(self):
        if self.size not in CANVASES:
            raise InvalidParameter(f"canvas must be one of {', '.join(CANVASES)}, got {self.size!r}.")
        for name, value in (("x", self.x), ("y", self.y)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InvalidParameter(f"canvas {name} is a fraction of the canvas from 0 to 1, got {value!r}.")
        if self.scale is not None and (not isinstance(self.scale, (int, float)) or not 0.05 <= self.scale <= 2.0):
            raise InvalidParameter(f"canvas scale (avatar height / canvas height) is from 0.05 to 2, got {self.scale!r}.")
        if self.background is not None:
            parse_colour(self.background)
        if self.background is not None and self.background_uri is not None:
            raise InvalidParameter("Give a canvas background colour or a background image, not both.")

    @property
    def width(self) -> int:
        return CANVASES[self.size][0]

    @property
    def height(self) -> int:
        return CANVASES[self.size][1]

    def to_wire(self) -> dict:
        wire = {"size": self.size, "x": self.x, "y": self.y}
        if self.scale is not None:
            wire["scale"] = self.scale
        if self.background is not None:
            wire["background"] = self.background
        if self.background_uri is not None:
            wire["backgroundUri"] = self.background_uri
        return wire

    @classmethod
    def from_wire(cls, value) -> "Canvas | None":
        """{"size", "x", "y", "scale", "background", "backgroundUri"} (or just the size's name) -> Canvas."""
        if value is None:
            return None
        if isinstance(value, str):
            return cls(size=value)
        if not isinstance(value, dict):
            raise InvalidParameter(f"canvas must be a size name or an object, got {value!r}.")
        known = {"size", "x", "y", "scale", "background", "backgroundUri"}
        unknown = set(value) - known
        if unknown:
            raise InvalidParameter(f"canvas takes {', '.join(sorted(known))}; unknown: {', '.join(sorted(unknown))}.")
        return cls(size=value.get("size", "1920x1080"), x=value.get("x", 0.5), y=value.get("y", 0.5),
                   scale=value.get("scale"), background=value.get("background"),
                   background_uri=value.get("backgroundUri"))


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to cover width x height and cut to it around its centre (no bars, no stretching)."""
    h, w = image.shape[:2]
    factor = max(width / w, height / h)
    scaled = cv2.resize(image, (max(width, round(w * factor)), max(height, round(h * factor))),
                        interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


class Placer:
    """Lays each frame (RGB) with its matte (uint8 alpha, 255 = person) onto the canvas.

    opaque: RGB over the background (colour or image); transparent: RGBA, alpha 0 outside the person."""

    def __init__(self, canvas: Canvas, video_width: int, video_height: int, background_image: np.ndarray | None = None,
                 transparent: bool = False):
        self.canvas, self.transparent = canvas, transparent
        width, height = canvas.width, canvas.height
        scale = canvas.scale if canvas.scale is not None else min(1.0, width / video_width * video_height / height)
        self.out_h = max(2, round(scale * height))
        self.out_w = max(2, round(video_width * self.out_h / video_height))
        left = round(canvas.x * width - self.out_w / 2)
        top = round(canvas.y * height - self.out_h / 2)
        # The visible part: canvas rows/columns [y0, y1) x [x0, x1), from the scaled frame's [sy0 ...) x [sx0 ...).
        self.x0, self.y0 = max(0, left), max(0, top)
        self.x1, self.y1 = min(width, left + self.out_w), min(height, top + self.out_h)
        self.sx0, self.sy0 = self.x0 - left, self.y0 - top
        if transparent:
            self.background = None
        elif background_image is not None:
            self.background = cover(background_image, width, height)
        else:
            self.background = np.empty((height, width, 3), np.uint8)
            self.background[:] = parse_colour(canvas.background or DEFAULT_COLOUR)

    @property
    def visible(self) -> bool:
        return self.x1 > self.x0 and self.y1 > self.y0

    def __call__(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        canvas = self.canvas
        if self.transparent:
            out = np.zeros((canvas.height, canvas.width, 4), np.uint8)
        else:
            out = self.background.copy()
        if not self.visible:
            return out
        size = (self.out_w, self.out_h)
        frame = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        matte = cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR)
        h, w = self.y1 - self.y0, self.x1 - self.x0
        frame = frame[self.sy0 : self.sy0 + h, self.sx0 : self.sx0 + w]
        matte = matte[self.sy0 : self.sy0 + h, self.sx0 : self.sx0 + w]
        region = out[self.y0 : self.y1, self.x0 : self.x1]
        if self.transparent:
            region[..., :3] = frame
            region[..., 3] = matte
        else:
            weight = matte.astype(np.float32) * (1 / 255)
            region[:] = cv2.blendLinear(frame, region, weight, 1 - weight)  # OpenCV's SIMD blend: 3x numpy's
        return out


def load_background(path: str | Path, max_pixels: int) -> np.ndarray:
    """A background image as RGB, read by the portrait's own loader (formats by content, EXIF, pixel limit)."""
    from .media_image import load_portrait

    return load_portrait(path, max_pixels, what="background image")
