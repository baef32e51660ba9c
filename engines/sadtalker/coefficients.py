"""Speech -> a 25 fps track of 70 3DMM coefficients (64 expression, 3 angles, 3 translations), as upstream's
generate_batch.py + test_audio2coeff.py, with our Wav2Lip mel (engines/wav2lip/mel.py, upstream's features):

- mel windows: 16 columns per frame starting two frames early (upstream's `i - 2`), clamped at both ends;
- blinks: a seeded random blink-ratio track (upstream generate_blink_seq_randomly);
- expression: audio2exp per frame, conditioned on the source's expression and the blink ratio;
- pose: audio2pose decodes seeded noise for the pose style 32 frames at a time, relative to the source pose,
  smoothed by a Savitzky-Golay filter (13 frames, order 2); in still mode the source pose is kept;
- mapping windows: each video frame (any fps) gets 27 coefficient frames around its own time at 25 fps,
  interpolated, clamped at the ends (upstream's semantic radius 13).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import savgol_filter

from . import COEFF_FPS, SEMANTIC_RADIUS
from .audio_nets import LATENT, SEQ_LEN

MEL_COLUMNS_PER_SECOND = 80
MEL_STEPS = 16
EXPRESSION_CHUNK = 64  # frames per audio2exp call


def coefficient_frames(duration_seconds: float) -> int:
    """25 fps frames covering the audio (at least 2: the source frame plus one)."""
    return max(2, math.ceil(duration_seconds * COEFF_FPS))


def mel_windows(mel: np.ndarray, frames: int) -> np.ndarray:
    """(frames, 80, 16): frame i reads columns from int(80 * (i - 2) / 25), indices clamped into the mel."""
    starts = (MEL_COLUMNS_PER_SECOND * (np.arange(frames) - 2) / COEFF_FPS).astype(np.int64)
    index = np.clip(starts[:, None] + np.arange(MEL_STEPS)[None, :], 0, mel.shape[1] - 1)
    return np.ascontiguousarray(np.transpose(mel[:, index], (1, 0, 2)))


def blink_ratio(frames: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, 1): 5-frame blinks (0.5, 0.9, 1, 0.9, 0.5) at random gaps of 10..70 frames; none under 21 frames."""
    ratio = np.zeros((frames, 1), dtype=np.float32)
    if frames <= 20:
        return ratio
    frame = 0
    while True:
        gap = int(rng.integers(min(10, frames), max(min(10, frames) + 1, min(frames // 2, 70))))
        if frame + gap + 5 > frames - 1:
            return ratio
        ratio[frame + gap : frame + gap + 5, 0] = (0.5, 0.9, 1.0, 0.9, 0.5)
        frame += gap + 5


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    window = 13 if len(pose) >= 13 else (len(pose) - 1) // 2 * 2 + 1
    return savgol_filter(pose, window, 2, axis=0) if window > 2 else pose


def coefficient_track(models, source: np.ndarray, mel: np.ndarray, frames: int, pose_style: int, still: bool,
                      seed: int, device: str = "cpu") -> np.ndarray:
    """(frames, 70) float32 at 25 fps; ``source`` is the portrait's 70 coefficients."""
    import torch

    rng = np.random.default_rng(seed)
    windows = torch.from_numpy(mel_windows(mel, frames)).unsqueeze(1).to(device)
    ref_exp = torch.from_numpy(source[:64]).float().to(device)
    ratio = torch.from_numpy(blink_ratio(frames, rng)).to(device)
    with torch.inference_mode():
        expression = torch.cat([
            models.audio2exp(windows[i : i + EXPRESSION_CHUNK], ref_exp.expand(len(windows[i : i + EXPRESSION_CHUNK]), -1),
                             ratio[i : i + EXPRESSION_CHUNK])
            for i in range(0, frames, EXPRESSION_CHUNK)]).cpu().numpy()
        ref_pose = torch.from_numpy(source[64:70]).float().to(device)
        chunks = (frames - 1) // SEQ_LEN + 1
        noise = torch.from_numpy(rng.standard_normal((chunks, LATENT)).astype(np.float32)).to(device)
        motion = models.audio2pose.motion(windows[1:], ref_pose, pose_style, noise).cpu().numpy()
    pose = source[64:70][None] + np.concatenate([np.zeros((1, 6), np.float32), motion])
    pose = np.repeat(source[64:70][None], frames, axis=0) if still else smooth_pose(pose)
    return np.concatenate([expression, pose], axis=1).astype(np.float32)


def mapping_windows(track: np.ndarray, n_frames: int, fps: float, start: int = 0) -> np.ndarray:
    """(n_frames, 70, 27) for video frames start .. start + n_frames - 1: frame i (at i / fps s) gets the track at
    25 fps frames t - 13 .. t + 13 around its time t, linearly interpolated and clamped to the track. Asked for a
    batch at a time, so a long clip never holds every window."""
    centre = np.arange(start, start + n_frames) * (COEFF_FPS / fps)
    at = np.clip(centre[:, None] + np.arange(-SEMANTIC_RADIUS, SEMANTIC_RADIUS + 1)[None, :], 0, len(track) - 1)
    low = np.floor(at).astype(np.int64)
    high = np.minimum(low + 1, len(track) - 1)
    frac = (at - low)[..., None].astype(np.float32)
    windows = track[low] * (1 - frac) + track[high] * frac  # (n, 27, 70)
    return np.ascontiguousarray(windows.transpose(0, 2, 1)).astype(np.float32)


def source_window(source: np.ndarray) -> np.ndarray:
    """(1, 70, 27): the source's coefficients repeated over the window (upstream transform_semantic_1)."""
    return np.repeat(source[None, :, None], 2 * SEMANTIC_RADIUS + 1, axis=2).astype(np.float32)
