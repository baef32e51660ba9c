"""Mouth frame sheets of the built-in engine, one PNG per viseme class: each row a face, each column the
viseme at a growing strength (rest at the left), so a person can judge whether the shapes read as speech.

    .venv/bin/python -m cli.mouth_sheets --out out/mouth-sheets [--face PHOTO ...] [--size 512]

Without --face it uses the sample faces shipped by installed packages (scikit-image's astronaut, which is the
bundled portrait, and matplotlib's Grace Hopper) and synthetic variations of them (grey, dim warm light,
rolled head, a small photo enlarged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from engines import SAMPLES
from engines.framing import frame_photo
from engines.media_image import load_portrait
from engines.mouth_warp import MouthRig

CELL = 176  # pixels per sheet cell
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)

# Viseme class -> pose at full strength: (opening, width, press, labiodental, tongue).
CLASSES: dict[str, tuple[float, float, float, float, float]] = {
    "open-AA": (1.0, 0.1, 0.0, 0.0, 0.0),
    "rounded-OO": (0.35, -0.95, 0.0, 0.0, 0.0),
    "spread-EE": (0.4, 0.8, 0.0, 0.0, 0.0),
    "labiodental-FV": (0.12, 0.2, 0.0, 1.0, 0.0),
    "bilabial-MBP": (0.0, 0.0, 1.0, 0.0, 0.0),
    "tongue-L-TH": (0.4, 0.15, 0.0, 0.0, 1.0),
}


def sample_faces() -> dict[str, np.ndarray]:
    """The faces installed packages ship, plus synthetic variations of them (RGB uint8 photos)."""
    astronaut = load_portrait(SAMPLES / "portrait.jpg")
    faces = {"astronaut": astronaut}
    try:
        import matplotlib.cbook

        hopper_path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        faces["hopper"] = load_portrait(Path(hopper_path))
    except (ImportError, OSError):
        pass
    for name, photo in list(faces.items()):
        faces[f"{name}-variant"] = synthetic_variant(name, photo)
    return faces


def synthetic_variant(name: str, photo: np.ndarray) -> np.ndarray:
    """A different-looking face from one photo: the astronaut dim, warm and small (enlarged by the framing);
    Hopper grey with her head rolled 20 degrees."""
    if name == "astronaut":
        dim = np.clip(photo.astype(np.float32) * np.array([0.62, 0.48, 0.40]) ** 1.2, 0, 255).astype(np.uint8)
        return cv2.resize(dim, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    height, width = grey.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 20, 1.0)
    return cv2.warpAffine(grey, turn, (width, height), borderMode=cv2.BORDER_REPLICATE)


def mouth_cell(rig: MouthRig, portrait: np.ndarray, pose: tuple[float, ...]) -> np.ndarray:
    region = portrait.copy()
    region[rig.y0 : rig.y1, rig.x0 : rig.x1] = rig.render(portrait, *pose)
    half = 0.95 * rig.mouth_width
    cx, cy = rig.center_x, rig.corner_y + 0.1 * rig.mouth_width
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    crop = region[y0 : int(cy + half), x0 : int(cx + half)]
    return cv2.resize(crop, (CELL, CELL), interpolation=cv2.INTER_CUBIC)


def write_sheets(faces: dict[str, np.ndarray], out_dir: Path, size: int) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rigs = []
    for photo in faces.values():
        framed = frame_photo(photo, size)
        rigs.append((MouthRig(framed.landmarks, size, framed.portrait), framed.portrait))
    written = []
    for label, full in CLASSES.items():
        rows = []
        for rig, portrait in rigs:
            cells = [mouth_cell(rig, portrait, tuple(strength * value for value in full)) for strength in STRENGTHS]
            rows.append(np.hstack(cells))
        sheet = np.vstack(rows)
        path = out_dir / f"mouth-{label}.png"
        cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.mouth_sheets", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/mouth-sheets"))
    parser.add_argument("--face", type=Path, action="append", help="a portrait (repeatable); default: sample faces")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    try:
        faces = {path.stem: load_portrait(path) for path in args.face} if args.face else sample_faces()
        paths = write_sheets(faces, args.out, args.size)
    except Exception as error:  # a user's bad photo: one sentence, no traceback
        print(f"mouth sheets failed: {error}", file=sys.stderr)
        return 2
    print("\n".join(f"{path}  (rows: {', '.join(faces)})" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
