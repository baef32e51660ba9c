"""H.264 + AAC MP4 writer on PyAV (libx264, or h264_nvenc when an NVIDIA encoder is usable).

Frames are encoded as they are rendered, so a long render never holds the whole video in memory. Audio is
encoded alongside, up to the time of the last video frame, so the file is interleaved for progressive play.

Timestamps are exact at any rational frame rate: the video time base is 1/fps itself (1001/30000 s at
30000/1001), frame i has pts i, and audio is cut at the exact sample of each frame's end, so a 10-minute file at
29.97 ends its video and audio within one frame, with no drift.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from schemas.errors import EncodeError
from .media_audio import OUTPUT_RATE, Audio

log = logging.getLogger(__name__)

AAC_FRAME = 1024  # samples per AAC frame


@dataclass(frozen=True)
class EncodeProfile:
    """Encoder settings of one quality mode, for libx264 and for NVENC."""

    bit_rate: int
    x264_options: dict[str, str]
    nvenc_options: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)
    aac_options: dict[str, str] = field(default_factory=dict)  # FFmpeg's native AAC encoder
    audio_bit_rate: int = 128_000  # mono AAC-LC at 48 kHz


PROFILES = {
    # Average bitrate with a VBV cap: a steady 2 Mbps stream, fastest preset. One x264 thread: with frame
    # threads, VBV rate control sees the sizes of frames still in flight, so two encodes of the same frames
    # differed; single-threaded, a redelivered job writes the same bytes (same sha256 in its completion).
    # The encoder was no slower in `bench` on 2 cores, where rendering keeps the other core busy.
    "real_time": EncodeProfile(
        bit_rate=2_000_000,
        x264_options={"preset": "ultrafast", "maxrate": "2000k", "bufsize": "2000k", "threads": "1"},
        nvenc_options={"preset": "p1", "tune": "ll", "rc": "cbr"},
        aac_options={"aac_coder": "fast"},  # 2x faster than the default two-loop search (bench)
        # Speech in mono needs no more; FFmpeg's AAC encoder works in proportion to the bit rate (10 s of speech:
        # 0.20 s at 128 kb/s, 0.12 s at 96 kb/s), which is a tenth of a real_time render's CPU at 256 px.
        audio_bit_rate=96_000,
    ),
    # Constant quality 18, capped near 6 Mbps.
    "high_quality": EncodeProfile(
        bit_rate=6_000_000,
        x264_options={"preset": "slow", "crf": "18", "maxrate": "6000k", "bufsize": "12000k"},
        nvenc_options={"preset": "p7", "tune": "hq", "rc": "vbr", "cq": "18", "maxrate": "6000k"},
    ),
}


@functools.lru_cache(maxsize=1)
def nvenc_usable() -> bool:
    """True when h264_nvenc can actually open (a driver and a GPU are there), not merely compiled in."""
    try:
        context = av.CodecContext.create("h264_nvenc", "w")
        context.width, context.height = 256, 256
        context.pix_fmt = "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
        return True
    except Exception:  # noqa: BLE001 - any failure to open means "not usable here"
        return False


def even(value: int) -> int:
    return value - (value % 2)


class Mp4Writer:
    """Write RGB frames + an Audio track to an H.264/AAC MP4 with the moov atom first (faststart)."""

    def __init__(
        self,
        path: str | Path,
        *,
        fps: Fraction | int,
        width: int,
        height: int,
        mode: str,
        audio: Audio,
        use_nvenc: bool | None = None,
        metadata: dict[str, str] | None = None,
    ):
        if mode not in PROFILES:
            raise ValueError(f"no encode profile for mode {mode!r}")
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.width, self.height = even(width), even(height)
        self._start(audio)
        profile = PROFILES[mode]
        use_nvenc = nvenc_usable() if use_nvenc is None else use_nvenc
        self.codec_name = "h264_nvenc" if use_nvenc else "libx264"
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"})
            self._container.metadata.update(metadata or {})
            self._video = self._container.add_stream(
                self.codec_name, rate=self.fps, options=profile.nvenc_options if use_nvenc else profile.x264_options
            )
            self._video.width, self._video.height = self.width, self.height
            self._video.pix_fmt = "yuv420p"
            self._video.bit_rate = profile.bit_rate
            self._video.codec_context.time_base = 1 / self.fps  # one tick a frame, exact at 30000/1001
            self._video.codec_context.gop_size = max(1, round(2 * self.fps))
            # cv2's RGB->I420 is BT.601 limited range; tag the stream so players decode the colours right.
            self._video.codec_context.color_range = 1  # AVCOL_RANGE_MPEG (limited)
            self._video.codec_context.colorspace = 6  # AVCOL_SPC_SMPTE170M (BT.601)
            self._audio_stream = self._container.add_stream("aac", rate=OUTPUT_RATE, layout="mono",
                                                            options=profile.aac_options)
            self._audio_stream.bit_rate = profile.audio_bit_rate
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"Cannot open the encoder for {self.path}: {exc}") from exc

    def _start(self, audio: Audio) -> None:
        """Frame and audio counters at zero (also for the writers built on this one: alpha, HLS)."""
        self.audio = audio
        self.frames_written = 0
        self._audio_cursor = 0
        self._audio_chunks = audio.output_chunks()  # 48 kHz float32 pieces, read as the video advances
        self._audio_pending = np.zeros(0, np.float32)

    @property
    def encoder_label(self) -> str:
        return self.codec_name

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            rgb = rgb[: self.height, : self.width]
        # OpenCV's SIMD colour conversion is several times faster than swscale's RGB path here.
        yuv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")  # no copy: the encoder copies it in
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        self._mux(self._video.encode(frame))
        self.frames_written += 1
        self._write_audio_until(self.frames_written / self.fps)

    def close(self) -> None:
        """Flush both encoders and finish the file (moov moved to the front)."""
        self._write_audio_until(None)
        self._mux(self._video.encode(None))
        self._mux(self._audio_stream.encode(None))
        self._container.close()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        self.path.unlink(missing_ok=True)

    def _write_audio_until(self, seconds: Fraction | None) -> None:
        total = self.audio.n_samples
        end = total if seconds is None else min(total, int(seconds * OUTPUT_RATE))
        while self._audio_cursor + AAC_FRAME <= end or (seconds is None and self._audio_cursor < end):
            chunk = self._next_audio(min(AAC_FRAME, end - self._audio_cursor))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = OUTPUT_RATE
            frame.pts = self._audio_cursor
            frame.time_base = Fraction(1, OUTPUT_RATE)
            self._mux(self._audio_stream.encode(frame))
            self._audio_cursor += len(chunk)

    def _next_audio(self, count: int) -> np.ndarray:
        """The next `count` output samples, taken from the audio's chunks as they come (a streamed file is
        decoded a little ahead of the video, never held whole)."""
        while self._audio_pending.size < count:
            self._audio_pending = np.concatenate([self._audio_pending, next(self._audio_chunks)])
        chunk, self._audio_pending = self._audio_pending[:count], self._audio_pending[count:]
        return chunk

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except av.error.FFmpegError as exc:
            raise EncodeError(f"Writing {self.path} failed: {exc}") from exc

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
