"""Speech loading through PyAV: any of WAV/MP3/M4A/OGG/FLAC, mixed to mono (the channels' mean; non-finite
samples silenced), at 48 kHz for the output track and 16 kHz for analysis.

Two forms with one interface (duration, n_samples, analysis_samples/analysis_pcm, output_chunks): `Audio` holds
the 48 kHz samples in memory (clips, fixtures); `StreamedAudio` (from `open_audio`, what renders use) keeps only
the 16 kHz int16 analysis track and decodes the file again, chunk by chunk, while the video is encoded, so an
hour of speech costs 115 MB instead of 690 MB (48 kHz float32) + 230 MB (16 kHz float32).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from scipy.signal import resample_poly

from schemas.errors import AudioTooLong, EmptyAudio, NotAudio, SilentAudio, UnreadableInput

OUTPUT_RATE = 48_000
ANALYSIS_RATE = 16_000
# Container names as FFmpeg's demuxers report them (recognised by content, not by file extension).
ALLOWED_CONTAINERS = {"wav", "mp3", "mov,mp4,m4a,3gp,3g2,mj2", "ogg", "flac"}
# Below this peak level (about -80 dBFS) we call the recording silent: nothing to lip-sync.
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 mono at OUTPUT_RATE, in [-1, 1]

    @property
    def sample_rate(self) -> int:
        return OUTPUT_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / OUTPUT_RATE

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    def analysis_samples(self) -> np.ndarray:
        """Mono float32 at 16 kHz, the rate the phoneme recogniser and the audio features expect."""
        return resample_poly(self.samples, ANALYSIS_RATE, OUTPUT_RATE).astype(np.float32)

    def analysis_pcm(self) -> np.ndarray:
        """The 16 kHz analysis track as int16 PCM (what the phone recogniser reads)."""
        return to_pcm16(self.analysis_samples())

    def output_chunks(self) -> Iterator[np.ndarray]:
        """The 48 kHz output track, float32, in chunks (here: all of it at once)."""
        yield self.samples

    def trimmed(self, seconds: float) -> "Audio":
        return Audio(self.samples[: int(round(seconds * OUTPUT_RATE))])


@dataclass(frozen=True, eq=False)
class StreamedAudio:
    """Speech as a render needs it without holding it: its 16 kHz int16 analysis track, its length, and its
    file, decoded again in chunks for the output track (the same samples `load_audio` gives)."""

    path: Path
    n_samples: int  # at OUTPUT_RATE
    pcm_16k: np.ndarray  # int16 mono at ANALYSIS_RATE
    max_seconds: float

    @property
    def sample_rate(self) -> int:
        return OUTPUT_RATE

    @property
    def duration(self) -> float:
        return self.n_samples / OUTPUT_RATE

    def analysis_pcm(self) -> np.ndarray:
        return self.pcm_16k

    def analysis_samples(self) -> np.ndarray:
        """Mono float32 at 16 kHz (a full copy: engines that can, read analysis_pcm instead)."""
        return self.pcm_16k.astype(np.float32) / 32767

    def output_chunks(self) -> Iterator[np.ndarray]:
        """Exactly n_samples of 48 kHz float32, decoded from the file as they are asked for."""
        left = self.n_samples
        with _opened(self.path) as container:
            for chunk in _decoded_chunks(container, self.path, self.max_seconds):
                if left <= 0:
                    return
                yield chunk[:left]
                left -= len(chunk)
        if left > 0:  # the file changed since it was opened: keep the promised length, in silence
            yield np.zeros(left, np.float32)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 PCM, as the phone recogniser has always been fed."""
    return (np.clip(samples.astype(np.float32, copy=False), -1.0, 1.0) * 32767).astype("<i2")


def load_audio(path: str | Path, max_seconds: float = 600.0) -> Audio:
    """The whole speech in memory at 48 kHz (short clips, fixtures); renders use open_audio."""
    path = Path(path)
    with _opened(path) as container:
        chunks = list(_decoded_chunks(container, path, max_seconds))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    _check_not_empty_or_silent(path, samples.size, float(np.max(np.abs(samples))) if samples.size else 0.0)
    return Audio(samples)


def open_audio(path: str | Path, max_seconds: float = 600.0) -> StreamedAudio:
    """Read the speech once for its length, peak and 16 kHz analysis track, keeping none of the 48 kHz samples."""
    path = Path(path)
    downsampler = _Downsampler()
    peak = 0.0
    with _opened(path) as container:
        for chunk in _decoded_chunks(container, path, max_seconds):
            if chunk.size:
                peak = max(peak, float(np.max(np.abs(chunk))))
                downsampler.feed(chunk)
    _check_not_empty_or_silent(path, downsampler.fed, peak)
    return StreamedAudio(path, downsampler.fed, downsampler.finish(), max_seconds)


def _check_not_empty_or_silent(path: Path, n_samples: int, peak: float) -> None:
    if n_samples == 0:
        raise EmptyAudio(f"The audio {path} contains no samples.")
    if peak < SILENCE_PEAK:
        raise SilentAudio(f"The audio {path} is silent: there is no speech to lip-sync.")


class _Downsampler:
    """resample_poly(x, 1, 3) (48 -> 16 kHz) of a stream fed in chunks, equal to one call on the whole signal:
    output k depends on inputs 3k-30 .. 3k+30 only (the filter's half-length is 10 * 3), so each block is
    computed with those neighbours and only its exact outputs kept. Stored as int16 PCM (to_pcm16)."""

    HALF = 30
    BLOCK = 10 * OUTPUT_RATE

    def __init__(self):
        self.fed = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._start = 0  # input index of the buffer's first sample (a multiple of 3)
        self._next = 0  # next output index
        self._parts: list[np.ndarray] = []

    def feed(self, chunk: np.ndarray) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self.fed += len(chunk)
        if self._buffered >= self.BLOCK:
            self._emit(final=False)

    def finish(self) -> np.ndarray:
        """The whole 16 kHz track; parts are freed as they are copied (an hour never sits here twice)."""
        self._emit(final=True)
        track = np.empty(sum(len(part) for part in self._parts), "<i2")
        filled = 0
        self._parts.reverse()
        while self._parts:
            part = self._parts.pop()
            track[filled : filled + len(part)] = part
            filled += len(part)
        return track

    def _emit(self, final: bool) -> None:
        block = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)
        end = self._start + len(block)
        last = math.ceil(end / 3) if final else (end - self.HALF - 1) // 3 + 1
        if last > self._next:
            low = resample_poly(block, ANALYSIS_RATE, OUTPUT_RATE)
            offset = self._start // 3
            self._parts.append(to_pcm16(low[self._next - offset : last - offset]))
            self._next = last
        keep_from = max(self._start, 3 * self._next - self.HALF)
        block = block[keep_from - self._start :]
        self._buffer, self._buffered, self._start = [block], len(block), keep_from


@contextmanager
def _opened(path: Path):
    """The audio container, with one clear error for a missing, empty or non-audio file."""
    try:
        size = path.stat().st_size
        open(path, "rb").close()
    except OSError as exc:
        raise UnreadableInput(f"Cannot read the audio {path}: {exc.strerror or exc}.") from exc
    if size == 0:
        raise EmptyAudio(f"The audio {path} is an empty file (0 bytes).")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise NotAudio(f"The audio {path} is not a readable WAV, MP3, M4A, OGG or FLAC file.") from exc
    with container:
        if container.format.name not in ALLOWED_CONTAINERS or not container.streams.audio:
            raise NotAudio(f"The audio {path} is not a WAV, MP3, M4A, OGG or FLAC file with an audio track.")
        yield container


def _decoded_chunks(container: av.container.InputContainer, path: Path, max_seconds: float) -> Iterator[np.ndarray]:
    """Mono float32 48 kHz chunks in [-1, 1], as decoded (a few thousand samples each)."""
    stream = container.streams.audio[0]
    to_float = av.AudioResampler(format="fltp")  # the decoder's rate and channels, as planar float
    resampler = av.AudioResampler(format="flt", layout="mono", rate=OUTPUT_RATE)
    limit = int(max_seconds * OUTPUT_RATE)
    total = 0
    try:
        for frame in container.decode(stream):
            for planar in to_float.resample(frame):
                for out in resampler.resample(_mono(planar)):
                    chunk = np.clip(out.to_ndarray().reshape(-1).astype(np.float32, copy=False), -1.0, 1.0)
                    total += chunk.size
                    yield chunk
            if total > limit:
                raise AudioTooLong(f"The audio {path} is longer than the {max_seconds:g} s limit.")
        for out in resampler.resample(None):
            yield np.clip(out.to_ndarray().reshape(-1).astype(np.float32, copy=False), -1.0, 1.0)
    except av.error.FFmpegError as exc:
        if not total:
            raise NotAudio(f"The audio {path} is damaged and cannot be decoded: {exc}.") from exc
        # A truncated tail still leaves usable speech; keep what decoded.


def _mono(planar: av.AudioFrame) -> av.AudioFrame:
    """A planar float frame as one channel: the mean of its channels, after non-finite samples (NaN, Inf in float
    WAVs) become silence and the rest is clipped to [-1, 1]. An explicit mean because FFmpeg's own mono downmix
    adds the channels at -3 dB each: dual-mono stereo came out 3 dB louder (and clipped), six channels 9 dB."""
    samples = np.clip(np.nan_to_num(planar.to_ndarray(), nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    mono = av.AudioFrame.from_ndarray(samples.mean(axis=0, dtype=np.float32)[None, :], format="fltp", layout="mono")
    mono.sample_rate, mono.pts, mono.time_base = planar.sample_rate, planar.pts, planar.time_base
    return mono


def write_wav(path: str | Path, samples: np.ndarray, rate: int = OUTPUT_RATE) -> Path:
    """Write mono float samples as 16-bit PCM WAV (bench clips and test fixtures)."""
    import wave

    path = Path(path)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path
