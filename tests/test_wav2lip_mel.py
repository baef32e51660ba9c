"""Wav2Lip's audio features (numpy/scipy) against an independent computation with librosa, plus the
per-video-frame 16-column windows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from engines.wav2lip import mel as features

librosa = pytest.importorskip("librosa")


def reference_mel(samples: np.ndarray) -> np.ndarray:
    """The published recipe through librosa (centred STFT with reflect padding, as the librosa upstream used)."""
    emphasised = lfilter([1, -0.97], [1], samples.astype(np.float64))
    spectrum = np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spectrum)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_filterbank_matches_librosa_slaney():
    ours = features.mel_filterbank()
    theirs = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert ours.shape == (80, 401)
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_melspectrogram_matches_independent_computation(kind):
    if kind == "speech":
        from tests.wav2lip_fixtures import speech

        samples = speech(3.0).analysis_samples()
    else:
        samples = (np.random.default_rng(1).standard_normal(16000 + 123) * 0.05).astype(np.float32)
    ours = features.melspectrogram(samples)
    theirs = reference_mel(samples)
    assert ours.shape == theirs.shape == (80, 1 + len(samples) // 200)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    assert ours.min() >= -4 and ours.max() <= 4 and ours.std() > 0.3  # a real range, not a constant


def test_silence_maps_to_the_floor():
    assert np.all(features.melspectrogram(np.zeros(8000, dtype=np.float32)) == -4.0)


def test_frame_windows_take_16_columns_from_each_frames_time():
    mel = np.arange(80 * 100, dtype=np.float32).reshape(80, 100)
    windows = features.frame_windows(mel, fps=25, n_frames=30)
    assert windows.shape == (30, 80, 16)
    np.testing.assert_array_equal(windows[5], mel[:, 16:32])  # 5 frames * 80/25 columns per frame
    np.testing.assert_array_equal(windows[29], mel[:, 84:100])  # past the end: the last 16 columns
    at_30 = features.frame_windows(mel, fps=30, n_frames=10)
    np.testing.assert_array_equal(at_30[7], mel[:, 18:34])  # int(7 * 80 / 30) = 18


def test_short_audio_is_padded_with_silence():
    windows = features.frame_windows(np.zeros((80, 5), dtype=np.float32), fps=25, n_frames=2)
    assert windows.shape == (2, 80, 16)
    assert np.all(windows[:, :, :5] == 0) and np.all(windows[:, :, 5:] == -4)
