"""How a render is delivered (issue 12, broadcast formats): the container and codec (`output`), the canvas the
avatar is placed on, the loudness it is brought to, and HLS segmenting. One object, one wire form, read the same
by the command line, the REST gateway, the MCP tool and the worker.

Wire form (render.requested.v1 and the REST body; every key optional):
    "output":   "mp4" (H.264 + AAC, default) | "webm" (VP9 + alpha, yuva420p) | "mov" (ProRes 4444 + alpha,
                yuva444p10le) | "hls" (fMP4 segments + playlist, while rendering)
    "canvas":   {"size": "1920x1080" | "1280x720" | "1080x1920", "x", "y", "scale", "background" | "backgroundUri"}
    "loudness": {"target": "ebu-r128" | "atsc-a85" | "web" | LUFS, "truePeak": dBTP}
    "hls":      {"segmentSeconds": 1 to 2 (default 2), "mp4": true to also store one MP4 at the end}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from schemas.errors import InvalidParameter

from .canvas import Canvas, Placer
from .loudness import LoudnessTarget

OUTPUTS = ("mp4", "webm", "mov", "hls")
ALPHA_OUTPUTS = ("webm", "mov")
EXTENSIONS = {"mp4": "mp4", "webm": "webm", "mov": "mov", "hls": "m3u8"}
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
               "hls": "application/vnd.apple.mpegurl"}
DEFAULT_SEGMENT_SECONDS = 2.0


@dataclass(frozen=True)
class Delivery:
    output: str = "mp4"
    canvas: Canvas | None = None
    loudness: LoudnessTarget | None = None
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS  # hls only
    hls_mp4: bool = False  # hls only: also one MP4 of the whole render at the end

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise InvalidParameter(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}.")
        if not isinstance(self.segment_seconds, (int, float)) or not 1.0 <= self.segment_seconds <= 2.0:
            raise InvalidParameter(f"HLS segments last 1 to 2 seconds, got {self.segment_seconds!r}.")
        if self.alpha and self.canvas is not None and (self.canvas.background or self.canvas.background_uri):
            raise InvalidParameter(f"An alpha output ({self.output}) is transparent around the person: "
                                   "leave out the canvas background, or ask for output mp4 or hls.")

    @property
    def alpha(self) -> bool:
        return self.output in ALPHA_OUTPUTS

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.output]

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.output]

    def to_wire(self) -> dict:
        """The request's keys for this delivery (only those that differ from the default)."""
        wire: dict = {}
        if self.output != "mp4":
            wire["output"] = self.output
        if self.canvas is not None:
            wire["canvas"] = self.canvas.to_wire()
        if self.loudness is not None:
            wire["loudness"] = self.loudness.to_wire()
        if self.output == "hls" and (self.segment_seconds != DEFAULT_SEGMENT_SECONDS or self.hls_mp4):
            wire["hls"] = {"segmentSeconds": self.segment_seconds, "mp4": self.hls_mp4}
        return wire

    @classmethod
    def from_wire(cls, payload: dict) -> "Delivery":
        """A request's `output`, `canvas`, `loudness` and `hls` keys (other keys are ignored)."""
        hls = payload.get("hls") or {}
        if not isinstance(hls, dict):
            raise InvalidParameter(f"hls must be an object {{segmentSeconds, mp4}}, got {hls!r}.")
        return cls(output=payload.get("output") or "mp4", canvas=Canvas.from_wire(payload.get("canvas")),
                   loudness=LoudnessTarget.from_wire(payload.get("loudness")),
                   segment_seconds=hls.get("segmentSeconds", DEFAULT_SEGMENT_SECONDS), hls_mp4=bool(hls.get("mp4")))


class Picture:
    """The video's frames as delivered: the framed video as it is, with an alpha matte (alpha outputs), and/or
    placed on a canvas (through the person matte, over the background or transparent)."""

    def __init__(self, delivery: Delivery, width: int, height: int, background_image: np.ndarray | None = None):
        self.delivery = delivery
        self.placer = None
        if delivery.canvas is not None:
            self.placer = Placer(delivery.canvas, width, height, background_image, transparent=delivery.alpha)
            self.width, self.height = delivery.canvas.width, delivery.canvas.height
        else:
            self.width, self.height = width, height
        self.needs_matte = delivery.alpha or self.placer is not None

    def frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        if not self.needs_matte:
            yield from frames
            return
        from .matte import TemporalMatte

        matte = TemporalMatte()
        for rgb in frames:
            alpha = matte(rgb)
            if self.placer is not None:
                yield self.placer(rgb, alpha)
            else:
                yield np.dstack([rgb, alpha])


def open_writer(delivery: Delivery, path: Path, *, fps, width: int, height: int, mode: str, audio,
                metadata: dict[str, str], on_segment: Callable | None = None):
    """The writer of this delivery's container: Mp4Writer, AlphaWriter (webm, mov) or HlsWriter."""
    if delivery.output == "hls":
        from .hls import HlsWriter

        return HlsWriter(path, fps=fps, width=width, height=height, mode=mode, audio=audio,
                         segment_seconds=delivery.segment_seconds, on_segment=on_segment, metadata=metadata)
    if delivery.alpha:
        from .alpha_writer import AlphaWriter

        return AlphaWriter(path, kind=delivery.output, fps=fps, width=width, height=height, mode=mode, audio=audio,
                           metadata=metadata)
    from .encoder import Mp4Writer

    return Mp4Writer(path, fps=fps, width=width, height=height, mode=mode, audio=audio, metadata=metadata)
