"""A driving video (a recording whose head motion drives the portrait, high_quality only), read with PyAV.

`open_driving_video` checks everything before a render starts: a video track, its length and frame size within
the limits, a face on its first frame. That face gives the crop: the same square around the face the portrait
gets (engines/face.py frame_portrait), kept for the whole video so the head's own movement stays in it.
`DrivingVideo.frames(fps)` then decodes lazily, one frame at a time (a long video is never held in memory), and
resamples it to the render's frame rate: output frame i is the video frame showing at i / fps seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from schemas.errors import ImageTooLarge, InputNotFound, InputTooLarge, NoFaceFound, UnreadableInput

from .face import FaceAnalyzer, frame_portrait, shared_analyzer
from .framing import find_faces


@dataclass(frozen=True)
class DrivingVideo:
    """A checked driving video and the square its frames are cropped to."""

    path: Path
    size: int  # side of the square frames, in pixels (the render's square)
    matrix: np.ndarray = field(repr=False)  # 2x3 affine from the video's pixels to the square's
    seconds: float  # declared length (0 when the container does not say)
    max_seconds: float  # decoding stops with InputTooLarge past this point, whatever the header declared

    def frames(self, fps: Fraction) -> Iterator[np.ndarray]:
        """RGB uint8 (size, size, 3) squares at `fps`; ends when the video ends (the FOMM stage holds the last)."""
        step = Fraction(1) / Fraction(fps)
        shown = 0  # output frames yielded so far
        previous = None
        first_time = None
        for rgb, time in _decode(self.path):
            first_time = time if first_time is None else first_time
            since_start = time - first_time
            if since_start > self.max_seconds:
                raise InputTooLarge(f"The driving video {self.path.name} runs past {self.max_seconds:g} s "
                                    "(MAX_AUDIO_SECONDS).")
            # Output frames due before this video frame shows the one before it.
            while previous is not None and shown * step < since_start:
                yield previous
                shown += 1
            previous = self._crop(rgb)
        if previous is not None:
            yield previous

    def _crop(self, rgb: np.ndarray) -> np.ndarray:
        scale = abs(float(np.linalg.det(self.matrix[:, :2]))) ** 0.5
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return cv2.warpAffine(rgb, self.matrix, (self.size, self.size), flags=interpolation,
                              borderMode=cv2.BORDER_REPLICATE)


def open_driving_video(path: str | Path, size: int, max_seconds: float, max_pixels: int,
                       analyzer: FaceAnalyzer | None = None) -> DrivingVideo:
    """Check a driving video and find the crop around the (largest) face of its first frame.

    Refused: no video track or undecodable (unreadable_input), longer than `max_seconds` (input_too_large),
    frames of more than `max_pixels` (image_too_large), no face on the first frame (no_face)."""
    import av

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InputNotFound(f"The driving video {path} does not exist.")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise UnreadableInput(f"The driving video {name} has no video track.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise ImageTooLarge(f"The driving video {name} is {width}x{height}; frames may have at most "
                                    f"{max_pixels:,} pixels (MAX_IMAGE_PIXELS).")
            seconds = _declared_seconds(container, stream)
            if seconds > max_seconds:
                raise InputTooLarge(f"The driving video {name} is {seconds:.1f} s long; the limit is "
                                    f"{max_seconds:g} s (MAX_AUDIO_SECONDS).")
    except av.error.FFmpegError as error:
        raise UnreadableInput(f"The driving video {name} cannot be read: {error}.") from None
    first = next((rgb for rgb, _time in _decode(path)), None)
    if first is None:
        raise UnreadableInput(f"The driving video {name} has no frames that decode.")
    faces = find_faces(first, analyzer or shared_analyzer())
    if not faces:
        raise NoFaceFound(f"No face was found on the first frame of the driving video {name}; it must show a "
                          "face from its first frame.")
    largest = max(faces, key=lambda face: face.box[2] * face.box[3])
    framed = frame_portrait(first, size, landmarks=largest.landmarks)
    return DrivingVideo(path, size, framed.matrix, seconds, max_seconds)


def _declared_seconds(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return 0.0


def _decode(path: Path) -> Iterator[tuple[np.ndarray, Fraction]]:
    """(RGB frame, its time in seconds) in presentation order; a damaged stream is unreadable_input."""
    import av

    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0]
            for index, frame in enumerate(container.decode(stream)):
                if frame.pts is not None and frame.time_base is not None:
                    time = Fraction(frame.pts) * Fraction(frame.time_base)
                else:  # no timestamps: take the declared average rate
                    time = Fraction(index) / Fraction(stream.average_rate or 25)
                yield frame.to_ndarray(format="rgb24"), time
    except av.error.FFmpegError as error:
        raise UnreadableInput(f"The driving video {path.name} cannot be decoded: {error}.") from None
