"""HLS while rendering: fMP4 (CMAF) segments of 1-2 s and an EVENT playlist, written as the frames are encoded, with
a callback for every segment the moment it is finished, so a player (or a newsroom system) can start while the
render goes on. When the render ends the playlist gets its end tag; `remux_to_mp4` turns the segments into one
ordinary MP4 without encoding again.

FFmpeg's own HLS muxer (through PyAV) cuts the segments: at the first keyframe after each `segment_seconds`, and
the encoder puts a keyframe exactly every `segment_seconds`, so every segment has that length but the last.
Segments are written under a temporary name and renamed when complete (`temp_file`), and the playlist is
rewritten after each one: a segment the playlist names is whole.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

from schemas.errors import EncodeError

from .encoder import PROFILES, Mp4Writer, even, nvenc_usable
from .media_audio import OUTPUT_RATE

INIT_NAME = "init.mp4"
SEGMENT_PATTERN = "seg%05d.m4s"
MIN_SEGMENT, MAX_SEGMENT = 1.0, 2.0
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/iso.segment"
_ENTRY = re.compile(r"#EXTINF:([0-9.]+),[^\n]*\n([^#\n][^\n]*)")


@dataclass(frozen=True)
class Segment:
    """One finished segment: its number (from 0), file, length and start time in seconds."""

    index: int
    path: Path
    duration: float
    start: float

    @property
    def name(self) -> str:
        return self.path.name


def playlist_entries(text: str) -> list[tuple[float, str]]:
    """(duration, uri) of each segment a media playlist lists, in order."""
    return [(float(d), uri.strip()) for d, uri in _ENTRY.findall(text)]


class HlsWriter(Mp4Writer):
    """RGB frames + an Audio track to an HLS playlist (`path`, e.g. .../index.m3u8) with fMP4 segments beside it
    (init.mp4, seg00000.m4s, ...); `on_segment(Segment)` is called once per segment, in order, on the thread that
    writes the frames."""

    def __init__(self, path: str | Path, *, fps, width: int, height: int, mode: str, audio,
                 segment_seconds: float = 2.0, on_segment: Callable[[Segment], None] | None = None,
                 use_nvenc: bool | None = None, metadata: dict[str, str] | None = None):
        if not MIN_SEGMENT <= segment_seconds <= MAX_SEGMENT:
            raise ValueError(f"segment_seconds {segment_seconds} outside {MIN_SEGMENT}..{MAX_SEGMENT}")
        self.path = Path(path)
        self.folder = self.path.parent
        self.fps = Fraction(fps)
        self.width, self.height = even(width), even(height)
        self._start(audio)  # Mp4Writer's counters and streamed audio
        self.on_segment = on_segment or (lambda segment: None)
        self.segments: list[Segment] = []
        self._seen_playlist: tuple[int, int] | None = None
        profile = PROFILES[mode]
        use_nvenc = nvenc_usable() if use_nvenc is None else use_nvenc
        self.codec_name = "h264_nvenc" if use_nvenc else "libx264"
        gop = max(1, round(segment_seconds * self.fps))
        self.segment_seconds = float(gop / self.fps)  # whole frames: 2 s at 29.97 is 60 frames, 2.002 s
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w", format="hls", options={
                "hls_time": f"{self.segment_seconds:.6f}", "hls_segment_type": "fmp4", "hls_playlist_type": "event",
                "hls_list_size": "0", "hls_flags": "independent_segments+temp_file",
                "hls_fmp4_init_filename": INIT_NAME, "hls_segment_filename": str(self.folder / SEGMENT_PATTERN)})
            self._container.metadata.update(metadata or {})
            options = dict(profile.nvenc_options if use_nvenc else profile.x264_options)
            if not use_nvenc:
                options["sc_threshold"] = "0"  # keyframes only at segment starts: segments of equal length
            self._video = self._container.add_stream(self.codec_name, rate=self.fps, options=options)
            self._video.width, self._video.height = self.width, self.height
            self._video.pix_fmt = "yuv420p"
            self._video.bit_rate = profile.bit_rate
            self._video.codec_context.time_base = 1 / self.fps
            self._video.codec_context.gop_size = gop
            self._video.codec_context.color_range = 1
            self._video.codec_context.colorspace = 6
            self._audio_stream = self._container.add_stream("aac", rate=OUTPUT_RATE, layout="mono",
                                                            options=profile.aac_options)
            self._audio_stream.bit_rate = profile.audio_bit_rate
        except (av.error.FFmpegError, OSError) as exc:
            raise EncodeError(f"Cannot open the HLS encoder for {self.path}: {exc}") from exc

    def write(self, rgb: np.ndarray) -> None:
        super().write(rgb)
        self._announce()

    def close(self) -> None:
        super().close()  # flushes the encoders; the muxer writes the last segment and the end tag
        self._announce()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the files are being thrown away anyway
            pass
        for name in [INIT_NAME, self.path.name, *(s.name for s in self.segments)]:
            (self.folder / name).unlink(missing_ok=True)
        for leftover in self.folder.glob("seg*.m4s*"):
            leftover.unlink(missing_ok=True)

    def _announce(self) -> None:
        """Call on_segment for each segment the playlist lists that was not announced yet (the playlist is only
        read again when its size or time changed)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        mark = (stat.st_mtime_ns, stat.st_size)
        if mark == self._seen_playlist:
            return
        self._seen_playlist = mark
        entries = playlist_entries(self.path.read_text())
        for duration, uri in entries[len(self.segments):]:
            start = sum(s.duration for s in self.segments)
            segment = Segment(len(self.segments), self.folder / uri, duration, start)
            self.segments.append(segment)
            self.on_segment(segment)


def remux_to_mp4(playlist: str | Path, out_path: str | Path) -> Path:
    """The playlist's segments as one MP4 (moov first), the same packets, no encoding."""
    playlist, out_path = Path(playlist), Path(out_path)
    folder = playlist.parent
    joined = out_path.with_name(f".{out_path.name}.fmp4")
    try:
        with open(joined, "wb") as whole:  # init + segments in order: one fragmented MP4
            whole.write((folder / INIT_NAME).read_bytes())
            for _, uri in playlist_entries(playlist.read_text()):
                whole.write((folder / uri).read_bytes())
        with av.open(str(joined)) as source, av.open(str(out_path), "w", format="mp4",
                                                      options={"movflags": "+faststart"}) as target:
            streams = {}
            for stream in source.streams:
                streams[stream.index] = target.add_stream_from_template(stream)
            for packet in source.demux():
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                target.mux(packet)
    except (av.error.FFmpegError, OSError) as exc:
        out_path.unlink(missing_ok=True)
        raise EncodeError(f"Joining the HLS segments into {out_path} failed: {exc}") from exc
    finally:
        joined.unlink(missing_ok=True)
    return out_path
