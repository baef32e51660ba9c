"""Video with an alpha channel for compositing: WebM (VP9, `yuva420p`, Opus audio) and MOV (ProRes 4444,
`yuva444p10le`, 16-bit PCM audio), written from RGBA frames with PyAV (both encoders ship in its wheels).

The audio is handled as in the MP4 writer (engines/encoder.py): streamed, cut at each frame's exact end, so the
two tracks stay together at any rational frame rate.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from schemas.errors import EncodeError

from .encoder import Mp4Writer, even
from .media_audio import OUTPUT_RATE

ALPHA_FORMATS = {
    # format: (container, pixel format, audio codec, {mode: (video codec, its options)})
    "webm": ("webm", "yuva420p", "libopus", {
        "real_time": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "auto-alt-ref": "0"}),
        "high_quality": ("libvpx-vp9", {"deadline": "good", "cpu-used": "2", "row-mt": "1", "auto-alt-ref": "0",
                                        "crf": "24"}),
    }),
    # ProRes 4444 (profile 4) carries 10-bit 4:4:4 colour and alpha; intra-only. real_time uses FFmpeg's faster
    # ProRes encoder (prores_aw: 3.6x prores_ks in one run at 512 px), high_quality prores_ks at a fine quantiser.
    "mov": ("mov", "yuva444p10le", "pcm_s16le", {
        "real_time": ("prores_aw", {"profile": "4", "vendor": "apl0"}),
        "high_quality": ("prores_ks", {"profile": "4", "vendor": "apl0", "qscale": "4"}),
    }),
}
VP9_BIT_RATE = {"real_time": 2_000_000, "high_quality": 6_000_000}
OPUS_BIT_RATE = 96_000


class AlphaWriter(Mp4Writer):
    """RGBA frames + an Audio track to WebM VP9 (yuva420p) or MOV ProRes 4444 (yuva444p10le). Built on Mp4Writer
    (its audio interleaving, close and abort); only the container and the video stream differ."""

    def __init__(self, path: str | Path, *, kind: str, fps, width: int, height: int, mode: str, audio,
                 metadata: dict[str, str] | None = None):
        if kind not in ALPHA_FORMATS:
            raise ValueError(f"no alpha format {kind!r}")
        container_format, pix_fmt, audio_codec, per_mode = ALPHA_FORMATS[kind]
        codec, options = per_mode[mode]
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.width, self.height = even(width), even(height)
        self._start(audio)  # Mp4Writer's counters and streamed audio
        self.codec_name = codec
        self.pix_fmt = pix_fmt
        try:
            self._container = av.open(str(self.path), mode="w", format=container_format)
            self._container.metadata.update(metadata or {})
            self._video = self._container.add_stream(codec, rate=self.fps, options=options)
            self._video.width, self._video.height = self.width, self.height
            self._video.pix_fmt = pix_fmt
            if codec == "libvpx-vp9":
                self._video.bit_rate = VP9_BIT_RATE[mode]
                self._video.codec_context.gop_size = max(1, round(2 * self.fps))
            self._video.codec_context.time_base = 1 / self.fps
            self._video.codec_context.color_range = 1  # limited range, BT.601, as swscale converts RGB by default
            self._video.codec_context.colorspace = 6
            self._audio_stream = self._container.add_stream(audio_codec, rate=OUTPUT_RATE, layout="mono")
            if audio_codec == "libopus":
                self._audio_stream.bit_rate = OPUS_BIT_RATE
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"Cannot open the encoder for {self.path}: {exc}") from exc

    def write(self, rgba: np.ndarray) -> None:
        rgba = np.ascontiguousarray(rgba[: self.height, : self.width])
        frame = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=self.pix_fmt)
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        self._mux(self._video.encode(frame))
        self.frames_written += 1
        self._write_audio_until(self.frames_written / self.fps)
