"""Wav2Lip's audio features in numpy/scipy: the published recipe, no librosa at run time.

16 kHz speech -> pre-emphasis (0.97) -> STFT (n_fft 800, hop 200, Hann window 800, centred with reflect
padding) -> magnitude -> 80 Slaney-style mel bands, 55-7600 Hz -> 20*log10 (floor 1e-5) - 20 dB ref level
-> symmetric normalisation of [-100 dB, 0 dB] onto [-4, 4], clipped. 80 mel columns per second; each video
frame gets the 16 columns starting at its own time (upstream's per-frame window).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16_000
PREEMPHASIS = 0.97
N_FFT = 800
HOP = 200
WINDOW = 800
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
AMP_FLOOR = 1e-5
STEPS_PER_FRAME = 16
COLUMNS_PER_SECOND = SAMPLE_RATE / HOP  # 80


def hz_to_mel(hz):
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, linear)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * (200.0 / 3))


@functools.lru_cache(maxsize=4)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters on the Slaney mel scale, each scaled to unit area ("slaney" norm)."""
    bin_hz = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def stft_magnitude(samples: np.ndarray) -> np.ndarray:
    """(n_fft//2+1, frames) magnitudes; frames centred on multiples of HOP (reflect-padded by n_fft/2)."""
    pad = N_FFT // 2
    x = np.asarray(samples, dtype=np.float64)
    if len(x) <= pad:  # reflect padding needs more samples than the pad; too-short clips are zero-extended
        x = np.pad(x, (0, pad + 1 - len(x)))
    x = np.pad(x, pad, mode="reflect")
    count = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(count, N_FFT), strides=(x.strides[0] * HOP, x.strides[0]), writeable=False
    )
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    return np.abs(np.fft.rfft(frames * window, n=N_FFT, axis=1)).T


def melspectrogram(samples_16k: np.ndarray) -> np.ndarray:
    """(80, columns) normalised log-mel spectrogram in [-4, 4] of 16 kHz mono speech."""
    emphasised = lfilter([1.0, -PREEMPHASIS], [1.0], np.asarray(samples_16k, dtype=np.float64))
    mel = mel_filterbank() @ stft_magnitude(emphasised)
    db = 20.0 * np.log10(np.maximum(AMP_FLOOR, mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS * (db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS
    return np.clip(scaled, -MAX_ABS, MAX_ABS).astype(np.float32)


def frame_windows(mel: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, 80, 16): for video frame i, the 16 columns from int(i * 80 / fps); past the end, the last 16.

    Spectrograms shorter than 16 columns are padded with silence (-4) on the right first.
    """
    if mel.shape[1] < STEPS_PER_FRAME:
        mel = np.pad(mel, ((0, 0), (0, STEPS_PER_FRAME - mel.shape[1])), constant_values=-MAX_ABS)
    last_start = mel.shape[1] - STEPS_PER_FRAME
    starts = np.minimum((np.arange(n_frames) * (COLUMNS_PER_SECOND / fps)).astype(np.int64), last_start)
    index = starts[:, None] + np.arange(STEPS_PER_FRAME)[None, :]
    return np.ascontiguousarray(np.transpose(mel[:, index], (1, 0, 2)))
