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

The track is streamed (StreamedMouthTrack): phones are recognised an utterance at a time (utterance_spans), in
the phone process while frames render (engines/phone_process.py), and each frame is handed over as soon as the
steps it depends on are known, with exactly the values smoothing the whole clip at once would give. The
loudness envelope (and so the mouth's loudness scale, the closure dips and the head's nods) is the whole
clip's, computed before the first frame.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from scipy.signal import find_peaks

from .media_audio import ANALYSIS_RATE, to_pcm16
from .phonemes import PHONE_HOP_SECONDS, Phone, recognise_phones

HOP = int(ANALYSIS_RATE * PHONE_HOP_SECONDS)  # 160 samples: one analysis step = one phone frame
WINDOW = 400  # 25 ms analysis window
LEAD_SECONDS = 0.03  # lips lead the sound slightly
COARTICULATION_SECONDS = 0.035  # Gaussian sigma of target blending
DYNAMIC_RANGE_DB = 35.0  # loudness range mapped onto closed..open
BLOCK_STEPS = 6000  # analysis windows computed 60 s at a time (memory flat in audio length)
SIGMA_STEPS = COARTICULATION_SECONDS / PHONE_HOP_SECONDS
# Utterances for the phone recogniser (utterance_spans): the first ends at the quietest step 0.5-1.0 s in, later
# ones double in length up to 30 s; IN_FLIGHT are being recognised ahead of the frames.
FIRST_UTTERANCE_STEPS = (50, 100)
MAX_UTTERANCE_STEPS = 3000
IN_FLIGHT = 2

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


def _windows(samples_16k: np.ndarray, steps: int, first_step: int = 0) -> Iterator[np.ndarray]:
    """The WINDOW-sample window centred on each 10 ms step from `first_step` on (zeros past either end),
    float32, BLOCK_STEPS steps at a time: an hour of windows at once would be 1.2 GB in float64. int16 PCM is
    read as /32767."""
    for first in range(first_step, first_step + steps, BLOCK_STEPS):
        count = min(BLOCK_STEPS, first_step + steps - first)
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


def spectral_width(samples_16k: np.ndarray, steps: int, first_step: int = 0) -> np.ndarray:
    """Spread-vs-rounded proxy: share of 1.5-3.5 kHz energy (front vowels, high F2) against 250-1 kHz, for
    `steps` steps from `first_step` on."""
    freqs = np.fft.rfftfreq(WINDOW, 1 / ANALYSIS_RATE)
    high, low = [], []
    for frames in _windows(samples_16k, steps, first_step):
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


def dip_steps(envelope: np.ndarray) -> np.ndarray:
    """Steps where the sound suggests a stop or nasal closure: short, deep loudness dips inside speech (before
    the phones' veto, see closure_dips)."""
    with warnings.catch_warnings():  # flat stretches (silence) are peaks of no prominence: not closures anyway
        warnings.filterwarnings("ignore", message="some peaks have a prominence of 0")
        dips, _ = find_peaks(-envelope, prominence=DIP_PROMINENCE, wlen=2 * DIP_WINDOW_STEPS + 1,
                             width=(None, DIP_MAX_STEPS), rel_height=0.3)
    return dips[envelope[dips] <= DIP_CEILING]


def onset_closures(envelope: np.ndarray) -> np.ndarray:
    """Speech starting after a pause: the lips meet just before it (an utterance-initial M/B/P is made there)."""
    closed = np.zeros(len(envelope), bool)
    quiet = envelope < ONSET_QUIET
    loud_soon = maximum_filter1d(envelope, ONSET_RISE_STEPS, origin=-(ONSET_RISE_STEPS // 2)) > ONSET_LOUD
    for step in np.flatnonzero(quiet[:-1] & ~quiet[1:] & loud_soon[1:]):
        closed[max(0, step - CLOSURE_STEPS) : step + 1] = True
    return closed


def _close_at_dips(closed: np.ndarray, dips: np.ndarray, lips_apart: np.ndarray | None, offset: int = 0) -> None:
    """Mark each dip's closure in `closed`, unless the phones say the lips stay apart there (lips_apart is
    indexed from step `offset`)."""
    for step in dips:
        if lips_apart is not None and lips_apart[step - offset]:
            continue
        closed[max(0, step - CLOSURE_STEPS) : step + CLOSURE_STEPS + 1] = True


def closure_dips(envelope: np.ndarray, lips_apart: np.ndarray | None = None) -> np.ndarray:
    """Steps of stop and nasal closures found in the sound: dips not vetoed by the phones, and speech onsets."""
    closed = onset_closures(envelope)
    _close_at_dips(closed, dip_steps(envelope), lips_apart)
    return closed


def utterance_spans(envelope: np.ndarray) -> list[tuple[int, int]]:
    """How the speech is cut into utterances for the phone recogniser, as (first, end) steps. The first is short
    (it ends at the quietest step between FIRST_UTTERANCE_STEPS), so the first frame waits only for it; each
    later one is up to twice as long as the one before (at most MAX_UTTERANCE_STEPS), so recognition keeps
    ahead of rendering, and ends at the quietest step of its second half, so few words are cut."""
    steps, spans, first = len(envelope), [], 0
    low, high = FIRST_UTTERANCE_STEPS
    while steps - first > high:
        cut = first + low + int(np.argmin(envelope[first + low : first + high]))
        spans.append((first, cut))
        first, length = cut, min(2 * (cut - first), MAX_UTTERANCE_STEPS)
        low, high = length // 2, length
    spans.append((first, steps))
    return spans


class StreamedMouthTrack:
    """The mouth track of a clip, made as the phones of successive utterances arrive.

    Per 10 ms step, the phones' targets (or, in an utterance where none were heard, the loudness and spectral
    stand-ins) are written into whole-clip arrays, which are smoothed (co-articulation) and sampled per video
    frame. A frame is final once every step its values depend on is: its own span, its neighbours' (the press
    eases over them) and the smoothing kernel's reach. Those values are exactly what smoothing the whole clip
    at once would give, so where the utterances are cut is the only thing streaming changes.

    `wait_for(i)` returns once frame i is final, waiting for the next utterance's phones when needed;
    `opening`, `width`, `press`, `labiodental` and `tongue` hold the final frames' values (and zeros after
    them); `envelope` is whole from the start. Utterances are recognised by `recogniser` (an object with
    `submit(pcm) -> pending` whose `pending.result()` gives the phones and `pending.cancel()` drops them: the phone
    process, so recognition runs beside rendering), IN_FLIGHT of them ahead; without one, in the calling
    thread. `close()` drops what is still queued when a job stops early.
    """

    def __init__(self, samples_16k: np.ndarray, fps: float, n_frames: int, use_phones: bool = True,
                 recogniser=None):
        self._samples, self._fps, self.n_frames = samples_16k, fps, n_frames
        self._use_phones, self._recogniser = use_phones, recogniser
        envelope = loudness_envelope(samples_16k)
        self._envelope_steps, steps = envelope, len(envelope)
        self._voiced = np.clip(envelope * 4.0, 0.0, 1.0)
        self._dips = dip_steps(envelope)
        self._closed = onset_closures(envelope)
        self._sigmas = {"opening": SIGMA_STEPS, "width": 1.5 * SIGMA_STEPS, "labiodental": SIGMA_STEPS,
                        "tongue": SIGMA_STEPS}
        self._raw = {name: np.zeros(steps, np.float32) for name in self._sigmas}
        self._smooth = {name: np.zeros(steps, np.float32) for name in self._sigmas}
        self._reach = max(int(4.0 * sigma + 0.5) for sigma in self._sigmas.values()) + CLOSURE_STEPS + 1
        self.envelope = _per_video_frame(gaussian_filter1d(envelope, SIGMA_STEPS), fps, np.arange(n_frames))
        self.opening, self.width, self.press, self.labiodental, self.tongue = (
            np.zeros(n_frames, np.float32) for _ in range(5))
        self._shut = np.zeros(n_frames, bool)
        self.used_phones = False
        self.ready = 0  # frames [0, ready) are final
        self._final_steps = 0  # steps whose smoothed values are final
        self._spans = iter(utterance_spans(envelope))
        self._pending: list = []
        self._submit_ahead()

    def wait_for(self, frame: int) -> None:
        """Return once frame `frame` is final."""
        while frame >= self.ready and self._pending:
            (first, end), pending = self._pending.pop(0)
            phones = pending.result() if pending is not None else []
            self._submit_ahead()
            self._add_utterance(first, end, phones, last=not self._pending)

    def close(self) -> None:
        """Drop the utterances still queued for recognition (a job stopped early leaves no work behind)."""
        for _, pending in self._pending:
            if pending is not None:
                pending.cancel()
        self._pending = []

    def whole(self) -> MouthTrack:
        """Every frame (waiting for all the phones)."""
        self.wait_for(self.n_frames - 1)
        return MouthTrack(opening=self.opening, width=self.width, envelope=self.envelope,
                          used_phones=self.used_phones, press=self.press, labiodental=self.labiodental,
                          tongue=self.tongue)

    def _submit_ahead(self) -> None:
        while len(self._pending) < IN_FLIGHT and (span := next(self._spans, None)) is not None:
            pending = None
            if self._use_phones:
                pcm = _pcm16(self._samples[span[0] * HOP : span[1] * HOP])  # the last span reaches the end
                pending = self._recogniser.submit(pcm) if self._recogniser is not None else _InThread(pcm)
            self._pending.append((span, pending))

    def _add_utterance(self, first: int, end: int, phones: list[Phone], last: bool) -> None:
        envelope, voiced = self._envelope_steps[first:end], self._voiced[first:end]
        raw = self._raw
        if any(p.label != "SIL" for p in phones):
            self.used_phones = True
            targets = phone_targets(phones, end - first)  # phone times are from the utterance's start
            # Loudness gates and scales the viseme: open vowels in loud speech open most, pauses close.
            raw["opening"][first:end] = targets.opening * (0.25 + 0.75 * envelope) * voiced
            raw["width"][first:end] = targets.width * voiced
            raw["labiodental"][first:end] = targets.labiodental * voiced
            raw["tongue"][first:end] = targets.tongue * voiced
            self._closed[first:end] |= targets.closed
            lips_apart = targets.lips_apart
        else:  # no phones heard: loudness opens the mouth, spectral balance stands in for width
            raw["opening"][first:end] = envelope ** 1.3
            raw["width"][first:end] = spectral_width(self._samples, end - first, first) * envelope
            lips_apart = None
        dips = self._dips[(self._dips >= first) & (self._dips < end)]
        _close_at_dips(self._closed, dips, lips_apart, offset=first)
        steps = len(self._envelope_steps)
        final = steps if last else max(self._final_steps, end - self._reach)
        self._smooth_steps(self._final_steps, final)
        self._final_steps = final
        if last:
            ready = self.n_frames
        else:  # frame f reads steps up to the end of frame f + 1 (its neighbour's press), lip lead included
            ready = int(np.floor(((final - 1) * PHONE_HOP_SECONDS - LEAD_SECONDS) * self._fps)) - 2
        self._finish_frames(self.ready, min(self.n_frames, max(self.ready, ready)))

    def _smooth_steps(self, lo: int, hi: int) -> None:
        """Smoothed values of steps [lo, hi), from the raw values around them (exactly as the whole clip)."""
        if hi <= lo:
            return
        reach = self._reach
        src_lo, src_hi = max(0, lo - reach), min(len(self._envelope_steps), hi + reach)
        for name, sigma in self._sigmas.items():
            smoothed = gaussian_filter1d(self._raw[name][src_lo:src_hi], sigma)
            self._smooth[name][lo:hi] = smoothed[lo - src_lo : hi - src_lo]

    def _finish_frames(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        # A closure shorter than a video frame must still show on one: a frame is shut when any step it covers is.
        around = np.arange(max(0, lo - 1), min(self.n_frames, hi + 1))
        self._shut[around] = _any_in_frames(self._closed, self._fps, around)
        frames = np.arange(lo, hi)
        shut = self._shut[frames]
        opening = _per_video_frame(self._smooth["opening"], self._fps, frames)
        opening[shut] = 0.0
        self.opening[lo:hi] = opening
        self.width[lo:hi] = _per_video_frame(self._smooth["width"], self._fps, frames)
        # Lips ease into and out of the press over the neighbouring frames (the clip's ends count as their own
        # neighbours).
        before = self._shut[np.maximum(frames - 1, 0)]
        after = self._shut[np.minimum(frames + 1, self.n_frames - 1)]
        self.press[lo:hi] = np.maximum(shut, NEIGHBOUR_PRESS * (before | shut | after))
        for name in ("labiodental", "tongue"):
            values = _per_video_frame(self._smooth[name], self._fps, frames)
            getattr(self, name)[lo:hi] = np.where(shut, 0.0, values)
        self.ready = hi


class _InThread:
    """An utterance recognised when its phones are asked for, in the asking thread."""

    def __init__(self, pcm: np.ndarray):
        self._pcm = pcm

    def result(self) -> list[Phone]:
        return recognise_phones(self._pcm)

    def cancel(self) -> None:
        """Nothing was started."""


def mouth_track(samples_16k: np.ndarray, fps: float, n_frames: int, use_phones: bool = True,
                recogniser=None) -> MouthTrack:
    """The whole clip's mouth track at once (engines that render frame by frame use StreamedMouthTrack)."""
    return StreamedMouthTrack(samples_16k, fps, n_frames, use_phones, recogniser).whole()


def _pcm16(samples_16k: np.ndarray) -> np.ndarray:
    """What the recogniser is sent: int16 PCM as it is, float samples converted (media_audio.to_pcm16)."""
    return samples_16k if samples_16k.dtype == np.int16 else to_pcm16(samples_16k)


def _any_in_frames(mask: np.ndarray, fps: float, frames: np.ndarray) -> np.ndarray:
    """Per video frame of `frames`: whether any 10 ms step of its span (shifted earlier by the lip lead) is set.
    Only the steps those frames cover are read: the streamed track asks for a few frames at a time."""
    starts = np.floor((frames / fps + LEAD_SECONDS) / PHONE_HOP_SECONDS).astype(int)
    stops = np.maximum(starts + 1, np.floor(((frames + 1) / fps + LEAD_SECONDS) / PHONE_HOP_SECONDS).astype(int))
    starts, stops = np.clip(starts, 0, len(mask)), np.clip(stops, 0, len(mask))
    if not len(frames):
        return np.zeros(0, bool)
    first = int(starts.min())
    counts = np.concatenate([[0], np.cumsum(mask[first : int(stops.max())])])
    return (counts[stops - first] - counts[starts - first]) > 0


def _any_in_video_frame(mask: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Per video frame of a clip: whether any 10 ms step of its span (shifted by the lip lead) is set."""
    return _any_in_frames(mask, fps, np.arange(n_frames))


def _per_video_frame(track: np.ndarray, fps: float, frames: np.ndarray) -> np.ndarray:
    """Sample a 100 Hz track at each video frame's midpoint, shifted earlier by the lip lead (0 past its end).
    Only the steps around those times are read (the same values as interpolating over the whole track)."""
    times = (frames + 0.5) / fps + LEAD_SECONDS
    if not len(frames):
        return np.zeros(0, np.float32)
    first = max(0, int(np.floor(times.min() / PHONE_HOP_SECONDS)) - 1)
    end = min(len(track), int(np.floor(times.max() / PHONE_HOP_SECONDS)) + 3)
    if end <= first:  # every time is past the track's end
        return np.zeros(len(frames), np.float32)
    steps = np.arange(first, end) * PHONE_HOP_SECONDS
    return np.interp(times, steps, track[first:end], left=0.0, right=0.0).astype(np.float32)
