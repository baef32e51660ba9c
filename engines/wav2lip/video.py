"""A looping avatar video as the base under the lip-sync: decode, frame square around the face once (from
the first frame, so the framing does not jitter), track landmarks, and play it forwards then backwards for
as long as the speech lasts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from schemas.errors import InputError, NoFaceFound, NotAVideo
from ..face import shared_analyzer, square_around_face
from .sources import Pair, tracked

MAX_VIDEO_SECONDS = 60.0


@dataclass(frozen=True)
class AvatarVideo:
    frames: list[np.ndarray]  # RGB uint8 (size, size, 3), framed around the face
    landmarks: list[np.ndarray]  # (478, 2) per frame, in frame pixels
    fps: float


def _decode(path: Path, max_seconds: float) -> tuple[list[np.ndarray], float]:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise NotAVideo(f"The avatar video {path} cannot be read: {exc}.") from exc
    with container:
        if not container.streams.video:
            raise NotAVideo(f"The avatar video {path} has no video track.")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) > max_seconds * fps:
                raise NotAVideo(f"The avatar video {path} is longer than {max_seconds:g} s.")
    if not frames:
        raise NotAVideo(f"The avatar video {path} contains no frames.")
    return frames, fps


def load_avatar_video(path: str | Path, size: int, stride: int = 4,
                      max_seconds: float = MAX_VIDEO_SECONDS) -> AvatarVideo:
    raw, fps = _decode(Path(path), max_seconds)
    analyzer = shared_analyzer()
    first = analyzer.landmarks(raw[0])  # NoFaceFound names the problem for the user
    x0, y0, side = square_around_face(first, raw[0].shape)
    scale = size / side
    matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    framed = [cv2.warpAffine(f, matrix, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REPLICATE) for f in raw]
    first_framed = ((first - np.array([x0, y0], np.float32)) * scale).astype(np.float32)

    def detect(frame: np.ndarray) -> np.ndarray | None:
        try:
            return analyzer.landmarks(frame)
        except NoFaceFound:
            return None

    pairs = list(tracked(framed[1:], detect, first_framed, stride))
    return AvatarVideo([framed[0]] + [f for f, _ in pairs], [first_framed] + [lm for _, lm in pairs], fps)


def loop_index(i: int, out_fps: float, video_fps: float, count: int) -> int:
    """Source frame for output frame i: forwards, then backwards, repeating (no jump at the loop point)."""
    if count < 2:
        return 0
    k = int(i * video_fps / out_fps + 1e-9)
    period = 2 * (count - 1)
    m = k % period
    return m if m < count else period - m


def looping(video: AvatarVideo, out_fps: float) -> Iterator[Pair]:
    i = 0
    while True:
        k = loop_index(i, out_fps, video.fps, len(video.frames))
        yield video.frames[k], video.landmarks[k]
        i += 1


def render_avatar_video(video_path: str | Path, audio_path: str | Path, out_path: str | Path,
                        fps: int = 25, size: int = 512, engine=None) -> int:
    """Lip-sync ``audio_path`` onto a looping avatar video; writes an MP4 and returns the frame count."""
    from ..base import EngineJob
    from ..encoder import Mp4Writer
    from ..media_audio import load_audio
    from .engine import Wav2LipEngine

    engine = engine or Wav2LipEngine()
    video = load_avatar_video(video_path, size)
    audio = load_audio(audio_path)
    job = EngineJob(video.frames[0], video.landmarks[0], audio, fps, size)
    count = 0
    with Mp4Writer(Path(out_path), fps=fps, width=size, height=size, mode="real_time", audio=audio,
                   metadata={"comment": f"avatar-renderer engine={engine.name} mode=real_time base=video"}) as writer:
        for frame in engine.render(job, base_frames=looping(video, fps)):
            writer.write(frame)
            count += 1
    return count
