"""Inputs the engine tests build: the bundled portrait and speech, slices of it, and synthetic signals."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engines.media_audio import OUTPUT_RATE, load_audio, write_wav
from engines import SAMPLES

PORTRAIT = SAMPLES / "portrait.jpg"
SPEECH = SAMPLES / "speech.wav"


def speech_samples() -> np.ndarray:
    return load_audio(SPEECH).samples


def speech_with_pause(path: Path, before: float = 2.0, pause: float = 1.2, after: float = 2.0) -> Path:
    """Speech, then silence, then speech again: the mouth must close in the middle."""
    speech = speech_samples()
    first = speech[: int(before * OUTPUT_RATE)]
    second = speech[int(3.0 * OUTPUT_RATE) : int((3.0 + after) * OUTPUT_RATE)]
    silence = np.zeros(int(pause * OUTPUT_RATE), np.float32)
    return write_wav(path, np.concatenate([first, silence, second]))


def encode_audio(path: Path, samples: np.ndarray, rate: int, codec: str, container_format: str, layout: str = "mono") -> Path:
    """Encode float samples with PyAV into any container/codec (MP3, M4A, OGG, FLAC test inputs).
    Frames go in as planar float; PyAV converts them to whatever sample format the encoder takes."""
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame_size = stream.codec_context.frame_size or 1024
        data = np.tile(samples.astype(np.float32)[None, :], (channels, 1))
        for start in range(0, data.shape[1], frame_size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start : start + frame_size]), format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def tone(seconds: float, rate: int = OUTPUT_RATE, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
