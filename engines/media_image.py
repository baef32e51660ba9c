"""Portrait loading: format recognised by content, EXIF orientation honoured, alpha flattened, pixel limit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from schemas.errors import ImageTooLarge, NotAnImage, UnreadableInput

# Formats are recognised from the file's bytes, never from its extension.
ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
DEFAULT_MAX_PIXELS = 40_000_000


def load_portrait(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "portrait") -> np.ndarray:
    """Return the image as an RGB uint8 array (H, W, 3), upright, with transparency composited on white.
    `what` names the image in errors (the canvas background is read by this loader too)."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise UnreadableInput(f"Cannot read the {what} {path}: {exc.strerror or exc}.") from exc
    with handle:
        if path.stat().st_size == 0:
            raise NotAnImage(f"The {what} {path} is an empty file (0 bytes).")
        try:
            with warnings.catch_warnings():
                # We enforce our own, stricter limit below before anything is decoded.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle, formats=ALLOWED_IMAGE_FORMATS)
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLarge(
                        f"The {what} {path} is {width}x{height} pixels; the limit is {max_pixels:,} pixels."
                    )
                image = ImageOps.exif_transpose(image)
                image.load()
        except ImageTooLarge:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise NotAnImage(
                f"The {what} {path} is not a PNG, JPEG or WebP image."
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise NotAnImage(f"The {what} {path} is a damaged image: {exc}.") from exc
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
