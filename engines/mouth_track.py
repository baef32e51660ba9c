"""Per-video-frame mouth state from speech: how open (0..1), how wide (-1 rounded .. +1 spread), and three
viseme channels: lips pressed shut (M/B/P), lower lip under the upper teeth (F/V), tongue tip showing (L/TH).

Opening follows the loudness envelope (so the mouth rises and falls with the sound and closes in pauses),
shaped by the recognised phone: each phone has a viseme target, e.g. "AA" wide open, "UW" small and rounded,
"M/B/P" closed. Targets are blended with a short Gaussian (co-articulation: neighbouring sounds shape each
other) and lead the sound by a frame, as real lips move just before the sound is heard. Without phones (the
recogniser found nothing), spectral balance stands in for width.

Bilabials must close the lips for at least one video frame even mid-word. The phone recogniser finds only about
a third of them in synthetic speech (measured on espeak-ng sentences), so closures also come from the sound:
a short, deep dip of loudness inside speech is a stop or nasal closure, and closes the lips unless the
recogniser named a sound there that keeps them apart (a fricative, an approximant, or a tongue stop or
nasal: T, D, K, G, N, NG). Before speech that starts after a pause the lips meet too. On espeak-ng
sentences (two voices, 62 M/B/P) this shuts the lips at 51 of them; the recogniser alone found 20.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from scipy.signal import find_peaks

from .media_audio import ANALYSIS_RATE
from .phonemes import PHONE_HOP_SECONDS, Phone, recognise_phones

HOP = int(ANALYSIS_RATE * PHONE_HOP_SECONDS)  # 160 samples: one analysis step = one phone frame
WINDOW = 400  # 25 ms analysis window
LEAD_SECONDS = 0.03  # lips lead the sound slightly
COARTICULATION_SECONDS = 0.035  # Gaussian sigma of target blending
DYNAMIC_RANGE_DB = 35.0  # loudness range mapped onto closed..open
BLOCK_STEPS = 6000  # analysis windows computed 60 s at a time (memory flat in audio length)
PHONE_UTTERANCE_SECONDS = 60.0  # longer speech goes to the phone recogniser in utterances of this length

# (opening, width) viseme targets per ARPAbet phone; opening 0..1, width -1 (rounded) .. +1 (spread).
VISEMES: dict[str, tuple[float, float]] = {
    "AA": (1.0, 0.1), "AE": (0.85, 0.45), "AH": (0.7, 0.05), "AO": (0.85, -0.45), "AW": (0.85, -0.3),
    "AY": (0.85, 0.2), "EH": (0.65, 0.45), "ER": (0.45, -0.35), "EY": (0.55, 0.55), "IH": (0.45, 0.5),
    "IY": (0.35, 0.75), "OW": (0.6, -0.75), "OY": (0.6, -0.55), "UH": (0.45, -0.55), "UW": (0.3, -0.9),
    "B": (0.0, 0.0), "M": (0.0, 0.0), "P": (0.0, 0.0), "F": (0.12, 0.2), "V": (0.12, 0.2),
    "TH": (0.25, 0.2), "DH": (0.25, 0.2), "S": (0.15, 0.5), "Z": (0.15, 0.5), "SH": (0.25, -0.5),
    "ZH": (0.25, -0.5), "CH": (0.25, -0.45), "JH": (0.25, -0.45), "W": (0.2, -0.85), "R": (0.3, -0.4),
    "L": (0.35, 0.1), "D": (0.28, 0.2), "T": (0.28, 0.2), "N": (0.25, 0.15), "G": (0.35, 0.1),
    "K": (0.35, 0.1), "NG": (0.3, 0.1), "HH": (0.45, 0.0), "Y": (0.3, 0.5), "SIL": (0.0, 0.0),
}
BILABIALS = {"B", "M", "P"}
BILABIAL_HALF_STEPS = 3  # a recognised M/B/P shuts the lips for up to 3 steps each side of its middle
LABIODENTALS = {"F", "V"}
TONGUE_TIP = {"L", "TH", "DH"}  # the tongue tip shows between or behind the teeth
# Sounds during which the lips stay apart: a loudness dip inside one of them is not a closure (tongue stops
# and nasals included: the recogniser hears most of them right, and shutting a smiling portrait's lips at
# every T/D/K/G would make it look as if it mumbled).
LIPS_APART = {"S", "Z", "SH", "ZH", "CH", "JH", "F", "V", "TH", "DH", "L", "R", "W", "Y", "HH",
              "T", "D", "K", "G", "N", "NG"}
DIP_PROMINENCE = 0.22  # loudness (0..1) a dip must fall below both neighbouring peaks to count as a closure
DIP_WINDOW_STEPS = 30  # ... within this many 10 ms steps around it
DIP_CEILING = 0.72  # a dip that stays louder than this is a vowel transition, not a closure
DIP_MAX_STEPS = 15  # a dip wider than this (at half its depth) is a pause, where the mouth rests as it is
ONSET_QUIET, ONSET_LOUD, ONSET_RISE_STEPS = 0.1, 0.5, 6  # speech onset: from quiet to loud within 60 ms
NEIGHBOUR_PRESS = 0.5  # the frames either side of a shut one press halfway (lips ease in and out)
CLOSURE_STEPS = 2  # steps each side of a dip's deepest point that the lips stay shut


@dataclass(frozen=True)
class MouthTrack:
    opening: np.ndarray  # float32 (n_frames,), 0 closed .. 1 wide open
    width: np.ndarray  # float32 (n_frames,), -1 rounded .. +1 spread
    envelope: np.ndarray  # float32 (n_frames,), loudness 0..1 (drives nods too)
    used_phones: bool
    press: np.ndarray | None = None  # float32 (n_frames,), 1: lips pressed shut (M/B/P, closures)
    labiodental: np.ndarray | None = None  # float32 (n_frames,), 1: lower lip tucked under the upper teeth (F/V)
    tongue: np.ndarray | None = None  # float32 (n_frames,), 1: tongue tip up behind the upper teeth (L/TH)


def _windows(samples_16k: np.ndarray, steps: int) -> Iterator[np.ndarray]:
    """The WINDOW-sample window centred on each 10 ms step (zeros past either end), float32, BLOCK_STEPS
    steps at a time: an hour of windows at once would be 1.2 GB in float64. int16 PCM is read as /32767."""
    for first in range(0, steps, BLOCK_STEPS):
        count = min(BLOCK_STEPS, steps - first)
        start, stop = first * HOP - WINDOW // 2, (first + count - 1) * HOP + WINDOW // 2
        piece = np.zeros(stop - start, np.float32)
        inside = samples_16k[max(0, start) : max(0, min(len(samples_16k), stop))]
        piece[max(0, -start) : max(0, -start) + len(inside)] = inside
        if samples_16k.dtype == np.int16:
            piece /= 32767
        yield np.lib.stride_tricks.sliding_window_view(piece, WINDOW)[::HOP][:count]


def loudness_envelope(samples_16k: np.ndarray) -> np.ndarray:
    """Loudness per 10 ms step mapped to 0..1 over the clip's own dynamic range (float samples or int16 PCM)."""
    steps = max(1, len(samples_16k) // HOP + 1)
    rms = np.concatenate([np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
                          for frames in _windows(samples_16k, steps)])
    db = 20 * np.log10(rms)
    loud = np.percentile(db, 95)
    floor = max(np.percentile(db, 10), loud - DYNAMIC_RANGE_DB)
    if loud - floor < 6.0:  # almost constant level: treat it as steady speech
        floor = loud - DYNAMIC_RANGE_DB
    return np.clip((db - floor) / (loud - floor), 0.0, 1.0).astype(np.float32)


def spectral_width(samples_16k: np.ndarray, steps: int) -> np.ndarray:
    """Spread-vs-rounded proxy: share of 1.5-3.5 kHz energy (front vowels, high F2) against 250-1 kHz."""
    freqs = np.fft.rfftfreq(WINDOW, 1 / ANALYSIS_RATE)
    high, low = [], []
    for frames in _windows(samples_16k, steps):
        spectrum = np.abs(np.fft.rfft(frames * np.hanning(WINDOW), axis=1)) ** 2
        high.append(spectrum[:, (freqs >= 1500) & (freqs < 3500)].sum(axis=1))
        low.append(spectrum[:, (freqs >= 250) & (freqs < 1000)].sum(axis=1))
    ratio = np.log10((np.concatenate(high) + 1e-9) / (np.concatenate(low) + 1e-9))
    return np.clip(ratio + 0.5, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class PhoneTargets:
    """Per 10 ms step, what the recognised phones ask of the mouth."""

    opening: np.ndarray
    width: np.ndarray
    closed: np.ndarray  # bool: a bilabial
    labiodental: np.ndarray  # 0/1
    tongue: np.ndarray  # 0/1
    lips_apart: np.ndarray  # bool: a sound that keeps the lips apart


def phone_targets(phones: list[Phone], steps: int) -> PhoneTargets:
    """Per 10 ms step: viseme opening, width, and the masks of the viseme channels."""
    targets = PhoneTargets(np.zeros(steps, np.float32), np.zeros(steps, np.float32), np.zeros(steps, bool),
                           np.zeros(steps, np.float32), np.zeros(steps, np.float32), np.zeros(steps, bool))
    for phone in phones:
        first, last = int(phone.start / PHONE_HOP_SECONDS), int(np.ceil(phone.end / PHONE_HOP_SECONDS))
        targets.opening[first:last], targets.width[first:last] = VISEMES.get(phone.label, (0.35, 0.0))
        if phone.label in BILABIALS:  # lips shut through the middle of it (up to 60 ms), open into the vowel
            middle = (first + last) // 2
            targets.closed[max(first, middle - BILABIAL_HALF_STEPS) : max(middle + 1, min(last, middle + BILABIAL_HALF_STEPS))] = True
        targets.labiodental[first:last] = phone.label in LABIODENTALS
        targets.tongue[first:last] = phone.label in TONGUE_TIP
        targets.lips_apart[first:last] = phone.label in LIPS_APART
    return targets


def closure_dips(envelope: np.ndarray, lips_apart: np.ndarray | None = None) -> np.ndarray:
    """Steps of stop and nasal closures found in the sound: short, deep loudness dips inside speech."""
    with warnings.catch_warnings():  # flat stretches (silence) are peaks of no prominence: not closures anyway
        warnings.filterwarnings("ignore", message="some peaks have a prominence of 0")
        dips, _ = find_peaks(-envelope, prominence=DIP_PROMINENCE, wlen=2 * DIP_WINDOW_STEPS + 1,
                             width=(None, DIP_MAX_STEPS), rel_height=0.3)
    closed = np.zeros(len(envelope), bool)
    for step in dips:
        if envelope[step] > DIP_CEILING or (lips_apart is not None and lips_apart[step]):
            continue
        closed[max(0, step - CLOSURE_STEPS) : step + CLOSURE_STEPS + 1] = True
    # Speech starting after a pause: the lips meet just before it (an utterance-initial M/B/P is made there).
    quiet = envelope < ONSET_QUIET
    loud_soon = maximum_filter1d(envelope, ONSET_RISE_STEPS, origin=-(ONSET_RISE_STEPS // 2)) > ONSET_LOUD
    for step in np.flatnonzero(quiet[:-1] & ~quiet[1:] & loud_soon[1:]):
        closed[max(0, step - CLOSURE_STEPS) : step + 1] = True
    return closed


def mouth_track(samples_16k: np.ndarray, fps: float, n_frames: int, use_phones: bool = True) -> MouthTrack:
    envelope = loudness_envelope(samples_16k)
    steps = len(envelope)
    phones = _phones(samples_16k) if use_phones else []
    speech_phones = [p for p in phones if p.label != "SIL"]
    sigma = COARTICULATION_SECONDS / PHONE_HOP_SECONDS
    voiced = np.clip(envelope * 4.0, 0.0, 1.0)
    if speech_phones:
        targets = phone_targets(phones, steps)
        # Loudness gates and scales the viseme: open vowels in loud speech open most, pauses close.
        opening = gaussian_filter1d(targets.opening * (0.25 + 0.75 * envelope) * voiced, sigma)
        width = gaussian_filter1d(targets.width * voiced, sigma * 1.5)
        closed = targets.closed | closure_dips(envelope, targets.lips_apart)
        labiodental = gaussian_filter1d(targets.labiodental * voiced, sigma)
        tongue = gaussian_filter1d(targets.tongue * voiced, sigma)
    else:
        opening = gaussian_filter1d(envelope ** 1.3, sigma)
        width = gaussian_filter1d(spectral_width(samples_16k, steps) * envelope, sigma * 1.5)
        closed = closure_dips(envelope)
        labiodental = tongue = np.zeros(steps, np.float32)
    envelope_smooth = gaussian_filter1d(envelope, sigma)
    # A closure shorter than a video frame must still show on one: a frame is shut when any step it covers is.
    shut = _any_in_video_frame(closed, fps, n_frames)
    opening_frames = _per_video_frame(opening, fps, n_frames)
    opening_frames[shut] = 0.0
    # Lips ease into and out of the press over the neighbouring frames.
    press = np.maximum(shut.astype(np.float32), NEIGHBOUR_PRESS * maximum_filter1d(shut.astype(np.float32), 3))
    return MouthTrack(
        opening=opening_frames,
        width=_per_video_frame(width, fps, n_frames),
        envelope=_per_video_frame(envelope_smooth, fps, n_frames),
        used_phones=bool(speech_phones),
        press=press.astype(np.float32),
        labiodental=np.where(shut, 0.0, _per_video_frame(labiodental, fps, n_frames)).astype(np.float32),
        tongue=np.where(shut, 0.0, _per_video_frame(tongue, fps, n_frames)).astype(np.float32),
    )


def _phones(samples_16k: np.ndarray) -> list[Phone]:
    """Phones of the whole clip, recognised PHONE_UTTERANCE_SECONDS at a time (one utterance each), so the
    recogniser's buffers stay small however long the speech; a clip shorter than that is one utterance."""
    span = int(PHONE_UTTERANCE_SECONDS * ANALYSIS_RATE)
    phones: list[Phone] = []
    for start in range(0, len(samples_16k), span):
        offset = start / ANALYSIS_RATE
        phones += [Phone(p.label, p.start + offset, p.end + offset)
                   for p in recognise_phones(samples_16k[start : start + span])]
    return phones


def _any_in_video_frame(mask: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Per video frame: whether any 10 ms step of its span (shifted earlier by the lip lead) is set."""
    starts = np.floor((np.arange(n_frames) / fps + LEAD_SECONDS) / PHONE_HOP_SECONDS).astype(int)
    stops = np.maximum(starts + 1, np.floor((np.arange(1, n_frames + 1) / fps + LEAD_SECONDS) / PHONE_HOP_SECONDS).astype(int))
    counts = np.concatenate([[0], np.cumsum(mask)])
    return (counts[np.clip(stops, 0, len(mask))] - counts[np.clip(starts, 0, len(mask))]) > 0


def _per_video_frame(track: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Sample a 100 Hz track at each video frame's midpoint, shifted earlier by the lip lead."""
    times = (np.arange(n_frames) + 0.5) / fps + LEAD_SECONDS
    steps = np.arange(len(track)) * PHONE_HOP_SECONDS
    return np.interp(times, steps, track, left=0.0, right=0.0).astype(np.float32)
