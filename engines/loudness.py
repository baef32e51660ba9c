"""Loudness (ITU-R BS.1770-4 / EBU R128): measure integrated loudness and true peak of a track, and bring a
track to a target loudness under a true-peak ceiling.

Everything works on the 48 kHz mono output track as a stream of chunks, so an hour of speech is measured and
levelled without holding it (the render path streams audio: engines/media_audio.py):

- `LoudnessMeter` is BS.1770's gated integrated loudness, computed block by block with pyloudnorm's K-weighting
  filters (the same filter coefficients, the same 400 ms blocks on a 100 ms step, the same -70 LUFS absolute and
  -10 LU relative gates: tested equal to `pyloudnorm.Meter.integrated_loudness` on the whole signal), plus the
  true peak: the largest magnitude of the signal upsampled 4x (BS.1770-4 Annex 2).
- `normalise` picks the gain that reaches the target; loudness that cannot be measured (under 0.4 s, or under
  the -70 LUFS gate) gets none, as there is no figure to start from.
- `level` applies a gain and a look-ahead true-peak limiter: the gain each sample needs to stay under the ceiling
  is spread over a 10 ms window (a minimum, then a moving average of half that width), so the gain never
  rises above what any peak nearby needs, and changes smoothly.
- `LeveledAudio` is an Audio (same interface as media_audio's) whose output track is the levelled one; the
  analysis track the engines read stays the input's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import lfilter, lfilter_zi, resample_poly

from schemas.errors import InvalidParameter

from .media_audio import OUTPUT_RATE

log = logging.getLogger(__name__)

# Named targets: integrated loudness (LUFS / LKFS) and the true-peak ceiling each recommendation sets (dBTP).
PRESETS = {
    "ebu-r128": (-23.0, -1.0),  # EBU R128 (European broadcast)
    "atsc-a85": (-24.0, -2.0),  # ATSC A/85 (US broadcast; LKFS = LUFS)
    "web": (-16.0, -1.0),  # streaming / web platforms' common speech target
}
MIN_TARGET, MAX_TARGET = -40.0, -5.0
MIN_CEILING, MAX_CEILING = -9.0, 0.0
DEFAULT_CEILING = -1.0
MAX_GAIN_DB = 40.0  # a nearly silent recording is not raised without bound

BLOCK_SECONDS, STEP_SECONDS = 0.4, 0.1  # BS.1770 gating blocks: 400 ms, 75 % overlap
ABSOLUTE_GATE, RELATIVE_GATE = -70.0, -10.0
OVERSAMPLE = 4  # true peak: 4x oversampling at 48 kHz (BS.1770-4 Annex 2)
_EDGE = 16  # input samples of context the 4x interpolation filter needs on each side (its half-length is 10)
LIMITER_WINDOW = 480  # 10 ms at 48 kHz: the limiter's look-ahead and release
LIMITER_MARGIN_DB = 0.5  # headroom under the ceiling for the gain's own modulation and the AAC encoder


@dataclass(frozen=True)
class LoudnessTarget:
    """What a request asks for: integrated loudness `lufs` with true peak at most `true_peak` dBTP."""

    lufs: float
    true_peak: float = DEFAULT_CEILING
    preset: str | None = None  # the preset's name when one was named

    @classmethod
    def parse(cls, target, true_peak=None) -> "LoudnessTarget":
        """`ebu-r128` | `atsc-a85` | `web` | a number of LUFS (-40 to -5), with an optional ceiling in dBTP (-9 to
        0; default: the preset's, or -1). Refusals: InvalidParameter naming the accepted forms."""
        preset = None
        if isinstance(target, str) and target.strip().lower() in PRESETS:
            preset = target.strip().lower()
            lufs, ceiling = PRESETS[preset]
        else:
            lufs, ceiling = _number(target, "loudness target"), DEFAULT_CEILING
            if not MIN_TARGET <= lufs <= MAX_TARGET:
                raise InvalidParameter(f"The loudness target must be {', '.join(PRESETS)} or a number of LUFS from "
                                       f"{MIN_TARGET:g} to {MAX_TARGET:g}, got {target!r}.")
        if true_peak is not None:
            ceiling = _number(true_peak, "true-peak ceiling")
            if not MIN_CEILING <= ceiling <= MAX_CEILING:
                raise InvalidParameter(f"The true-peak ceiling must be from {MIN_CEILING:g} to {MAX_CEILING:g} dBTP, "
                                       f"got {true_peak!r}.")
        return cls(float(lufs), float(ceiling), preset)

    def to_wire(self) -> dict:
        """The request's wire form: {"target": "ebu-r128" | -20.0, "truePeak": -1.0}."""
        return {"target": self.preset or self.lufs, "truePeak": self.true_peak}

    @classmethod
    def from_wire(cls, value) -> "LoudnessTarget | None":
        if value is None:
            return None
        if isinstance(value, dict):
            return cls.parse(value.get("target"), value.get("truePeak"))
        return cls.parse(value)


def _number(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"The {what} must be a number or a preset name, got {value!r}.") from None
    if not math.isfinite(number):
        raise InvalidParameter(f"The {what} must be a finite number, got {value!r}.")
    return number


@dataclass(frozen=True)
class Loudness:
    """A measurement: integrated loudness in LUFS (None when every block is under the -70 LUFS gate) and true
    peak in dBTP."""

    integrated: float | None
    true_peak: float

    def as_dict(self) -> dict:
        return {"integratedLufs": None if self.integrated is None else round(self.integrated, 2),
                "truePeakDbtp": round(self.true_peak, 2)}


class LoudnessMeter:
    """BS.1770 integrated loudness and true peak of a mono 48 kHz track fed in chunks of any size."""

    def __init__(self, rate: int = OUTPUT_RATE):
        import pyloudnorm  # K-weighting coefficients (the two biquads of BS.1770) for this rate

        filters = pyloudnorm.Meter(rate)._filters
        self._stages = [(f.b, f.a, f.passband_gain) for f in (filters["high_shelf"], filters["high_pass"])]
        self._states = [lfilter_zi(b, a) * 0.0 for b, a, _ in self._stages]
        self.rate = rate
        self._step = int(round(STEP_SECONDS * rate))
        self._steps: list[float] = []  # sum of squares of the K-weighted signal in each 100 ms step
        self._partial = 0.0  # of the step being filled
        self._filled = 0
        self._samples = 0
        self._peak = 0.0
        self._tail = np.zeros(0, np.float64)  # last samples, the true-peak interpolation's context
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def feed(self, chunk: np.ndarray) -> None:
        """Take the next samples (gathered into blocks of about 1 s before they are filtered: decoders hand
        over a few thousand samples at a time, and each filter call has a fixed cost)."""
        self._pending.append(np.asarray(chunk, np.float64).reshape(-1))
        self._pending_size += self._pending[-1].size
        if self._pending_size >= self.rate:
            self._feed_block()

    def _feed_block(self) -> None:
        chunk = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float64)
        self._pending, self._pending_size = [], 0
        if not chunk.size:
            return
        self._samples += chunk.size
        weighted = chunk
        for i, (b, a, gain) in enumerate(self._stages):
            weighted, self._states[i] = lfilter(b, a, weighted, zi=self._states[i])
            weighted = weighted * gain if gain != 1.0 else weighted
        squares = np.square(weighted)
        at = 0
        while at < squares.size:
            take = min(self._step - self._filled, squares.size - at)
            self._partial += float(np.sum(squares[at : at + take]))
            self._filled += take
            at += take
            if self._filled == self._step:
                self._steps.append(self._partial)
                self._partial, self._filled = 0.0, 0
        self._true_peak_of(np.concatenate([self._tail, chunk]), final=False)

    def _true_peak_of(self, block: np.ndarray, final: bool) -> None:
        """Peak of `block` upsampled 4x, over the samples whose interpolation has full context (all of them when
        final); the last 2 * _EDGE samples are kept as the next block's context."""
        if not block.size:
            return
        first = _EDGE if self._samples > block.size else 0  # the very first samples have no left context
        last = block.size if final else block.size - _EDGE
        if last > first:
            up = resample_poly(block, OVERSAMPLE, 1)
            self._peak = max(self._peak, float(np.max(np.abs(up[first * OVERSAMPLE : last * OVERSAMPLE]))),
                             float(np.max(np.abs(block[first:last]))))
            self._tail = block[max(0, last - _EDGE) :]
        else:
            self._tail = block

    def result(self) -> Loudness:
        self._feed_block()
        self._true_peak_of(self._tail, final=True)
        self._tail = np.zeros(0, np.float64)
        steps = self._steps + ([self._partial] if self._filled else [])
        block = int(round(BLOCK_SECONDS / STEP_SECONDS))
        seconds = self._samples / self.rate
        count = int(np.round((seconds - BLOCK_SECONDS) / STEP_SECONDS)) + 1  # as BS.1770 / pyloudnorm count them
        energy = np.array([sum(steps[j : j + block]) for j in range(max(0, count))]) / (BLOCK_SECONDS * self.rate)
        with np.errstate(divide="ignore"):
            blocks = -0.691 + 10 * np.log10(energy)
        gated = energy[blocks >= ABSOLUTE_GATE]
        integrated = None
        if gated.size:
            relative = -0.691 + 10 * math.log10(float(np.mean(gated))) + RELATIVE_GATE
            kept = energy[(blocks > relative) & (blocks > ABSOLUTE_GATE)]
            if kept.size:
                integrated = -0.691 + 10 * math.log10(float(np.mean(kept)))
        peak = 20 * math.log10(self._peak) if self._peak > 0 else -math.inf
        return Loudness(integrated, peak)


def measure(chunks: Iterable[np.ndarray]) -> Loudness:
    meter = LoudnessMeter()
    for chunk in chunks:
        meter.feed(chunk)
    return meter.result()


# ----------------------------------------------------------------------------- levelling

def _limit(block: np.ndarray, gain: float, ceiling: float) -> np.ndarray:
    """Gain, then the look-ahead limiter, over a whole block (the caller gives it enough context)."""
    scaled = block * gain
    up = np.abs(resample_poly(scaled, OVERSAMPLE, 1)).reshape(-1, OVERSAMPLE).max(axis=1)
    peak = np.maximum(np.abs(scaled), up)
    needed = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    # Each sample's gain is at most the smallest any peak within one window needs; averaging over half a window
    # keeps that true (every value averaged is the minimum over a window containing this sample).
    held = minimum_filter1d(needed, 2 * LIMITER_WINDOW + 1, mode="nearest")
    smooth = uniform_filter1d(held, LIMITER_WINDOW + 1, mode="nearest")
    return (scaled * np.minimum(smooth, needed)).astype(np.float32)


def level(chunks: Iterable[np.ndarray], gain_db: float, ceiling_dbtp: float, block: int = OUTPUT_RATE) -> Iterator[np.ndarray]:
    """The track `chunks` times `gain_db`, limited to `ceiling_dbtp` true peak (less LIMITER_MARGIN_DB), as chunks of
    `block` samples. Each block is computed with its neighbours' samples as context, so the result does not depend
    on where the input's chunks begin and end."""
    gain = 10 ** (gain_db / 20)
    ceiling = 10 ** ((ceiling_dbtp - LIMITER_MARGIN_DB) / 20)
    context = 2 * LIMITER_WINDOW + 2 * _EDGE
    buffer = np.zeros(0, np.float64)
    lead = 0  # samples at the buffer's start that are context (already emitted)
    for chunk in chunks:
        buffer = np.concatenate([buffer, np.asarray(chunk, np.float64).reshape(-1)])
        while buffer.size - lead >= block + context:
            done = _limit(buffer[: lead + block + context], gain, ceiling)
            yield done[lead : lead + block]
            buffer = buffer[lead + block - context :]
            lead = context
    if buffer.size > lead:
        yield _limit(buffer, gain, ceiling)[lead:]


class _NewOutputTrack:
    """An Audio built on `self.source` that changes only its output track (output_chunks): the length and the
    analysis track the engines read are the source's."""

    source: object  # media_audio.Audio | StreamedAudio

    @property
    def sample_rate(self) -> int:
        return OUTPUT_RATE

    @property
    def n_samples(self) -> int:
        return self.source.n_samples

    @property
    def duration(self) -> float:
        return self.source.duration

    def analysis_pcm(self) -> np.ndarray:
        return self.source.analysis_pcm()

    def analysis_samples(self) -> np.ndarray:
        return self.source.analysis_samples()


@dataclass(frozen=True, eq=False)
class LeveledAudio(_NewOutputTrack):
    """An Audio whose output track is `source`'s levelled by `gain_db` under `ceiling_dbtp`; everything else
    (length, the analysis track the engines read) is the source's."""

    source: object  # media_audio.Audio | StreamedAudio
    gain_db: float
    ceiling_dbtp: float

    def output_chunks(self) -> Iterator[np.ndarray]:
        return level(self.source.output_chunks(), self.gain_db, self.ceiling_dbtp)


class MeteredAudio(_NewOutputTrack):
    """An Audio measured while the encoder reads its output track, so a render without a loudness target
    neither decodes the track a second time nor waits for a measuring pass before its first frame. Everything
    else is the source's. `loudness()` is the measurement of the first pass that read the whole track (a
    fresh pass when none did)."""

    def __init__(self, source):
        self.source = source
        self._measured: Loudness | None = None

    def output_chunks(self) -> Iterator[np.ndarray]:
        meter, fed = LoudnessMeter(), 0
        for chunk in self.source.output_chunks():
            meter.feed(chunk)
            fed += chunk.size
            if fed >= self.n_samples and self._measured is None:  # the whole track has passed
                self._measured = meter.result()
            yield chunk

    def loudness(self) -> Loudness:
        if self._measured is None:
            self._measured = measure(self.source.output_chunks())
        return self._measured


def normalise(audio, target: LoudnessTarget, measured: Loudness):
    """(LeveledAudio, its loudness): the gain that brings `measured` to the target, corrected once more when the
    limiter took loudness away (a second measuring pass over the levelled track). Loudness that cannot be measured
    (under 0.4 s, or every block under the -70 LUFS gate) gets no gain: there is no figure to reach the target
    from; the true-peak ceiling still holds."""
    if measured.integrated is None:
        gain = 0.0
    else:
        gain = min(MAX_GAIN_DB, target.lufs - measured.integrated)
    leveled = LeveledAudio(audio, gain, target.true_peak)
    if measured.true_peak + gain <= target.true_peak - LIMITER_MARGIN_DB - 0.1:  # the limiter never acts:
        return leveled, Loudness(None if measured.integrated is None else measured.integrated + gain,
                                 measured.true_peak + gain)  # a plain gain, whose effect is exact
    result = measure(leveled.output_chunks())
    for _ in range(2):  # limiting lowers loudness a little; raise the gain by what was lost (twice at most)
        if result.integrated is None or abs(result.integrated - target.lufs) <= 0.2 or gain >= MAX_GAIN_DB:
            break
        gain = min(MAX_GAIN_DB, gain + target.lufs - result.integrated)
        leveled = LeveledAudio(audio, gain, target.true_peak)
        result = measure(leveled.output_chunks())
    return leveled, result


def prepare(audio, target: LoudnessTarget | None):
    """(the audio to encode, the loudness report of the render): the input measured; with a target, the output
    track levelled to it. Report: {"input": {integratedLufs, truePeakDbtp}, "output": {...}, and with a target
    "target": {integratedLufs, truePeakDbtp, preset}, "gainDb"}. (Renders without a target measure the track
    as it is encoded instead: MeteredAudio, metered_report.)"""
    measured = measure(audio.output_chunks())
    if target is None:
        return audio, _untouched_report(measured)
    report = {"input": measured.as_dict()}
    leveled, delivered = normalise(audio, target, measured)
    report.update(output=delivered.as_dict(), gainDb=round(leveled.gain_db, 2),
                  target={"integratedLufs": target.lufs, "truePeakDbtp": target.true_peak, "preset": target.preset})
    if measured.integrated is None:
        log.warning("loudness not measurable (shorter than 0.4 s or under the -70 LUFS gate): no gain applied")
    elif delivered.integrated is not None and abs(delivered.integrated - target.lufs) > 1.0:
        log.warning("loudness %.1f LUFS delivered instead of %.1f: the %.1f dBTP ceiling leaves no room",
                    delivered.integrated, target.lufs, target.true_peak)
    return leveled, report


def metered_report(audio: MeteredAudio) -> dict:
    """The loudness report of a render without a target (as prepare's)."""
    return _untouched_report(audio.loudness())


def _untouched_report(measured: Loudness) -> dict:
    """The report of a track delivered as it came: input and output are the same measurement."""
    return {"input": measured.as_dict(), "output": measured.as_dict()}
