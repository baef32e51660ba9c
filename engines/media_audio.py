"""Speech loading through PyAV: any of WAV/MP3/M4A/OGG/FLAC, mixed to mono, at 48 kHz for the output track
and 16 kHz for analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    def analysis_samples(self) -> np.ndarray:
        """Mono float32 at 16 kHz, the rate the phoneme recogniser and the audio features expect."""
        return resample_poly(self.samples, ANALYSIS_RATE, OUTPUT_RATE).astype(np.float32)

    def trimmed(self, seconds: float) -> "Audio":
        return Audio(self.samples[: int(round(seconds * OUTPUT_RATE))])


def load_audio(path: str | Path, max_seconds: float = 600.0) -> Audio:
    path = Path(path)
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
        samples = _decode_mono(container, path, max_seconds)
    if samples.size == 0:
        raise EmptyAudio(f"The audio {path} contains no samples.")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise SilentAudio(f"The audio {path} is silent: there is no speech to lip-sync.")
    return Audio(samples)


def _decode_mono(container: av.container.InputContainer, path: Path, max_seconds: float) -> np.ndarray:
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=OUTPUT_RATE)
    limit = int(max_seconds * OUTPUT_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                total += chunk.size
            if total > limit:
                raise AudioTooLong(f"The audio {path} is longer than the {max_seconds:g} s limit.")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        if not chunks:
            raise NotAudio(f"The audio {path} is damaged and cannot be decoded: {exc}.") from exc
        # A truncated tail still leaves usable speech; keep what decoded.
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)


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
