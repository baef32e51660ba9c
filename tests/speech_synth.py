"""Speech with known phonemes and their times, from eSpeak NG (the library and voices ship in the
`espeakng-loader` wheel; no system install). Used by the lip-sync instrument test: the sentence is known, so
each phoneme's time is known, and the output video can be checked phoneme class by phoneme class.

eSpeak NG reports each phoneme as it synthesises it (a phoneme event with its sample position), in its own
phoneme names ("m", "u:", "'aI" with stress marks, "_" for pauses).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS
PHONEME_EVENTS = 0x0001  # espeakINITIALIZE_PHONEME_EVENTS
DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: an error returns instead of exiting the process
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
RATE_PARAMETER = 1  # espeakRATE, words per minute


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h)."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    name: str  # eSpeak's phoneme name without stress marks
    start: float  # seconds
    end: float


@dataclass(frozen=True)
class Utterance:
    samples: np.ndarray  # float32 mono in [-1, 1]
    rate: int
    phonemes: list[Phoneme]


class _Speaker:
    """One process-wide eSpeak NG instance (the library keeps global state): calls are serialised."""

    def __init__(self):
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.rate = self._lib.espeak_Initialize(SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                                PHONEME_EVENTS | DONT_EXIT)
        if self.rate <= 0:
            raise RuntimeError("eSpeak NG did not start")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _Callback(self._receive)  # kept referenced: the library calls it later
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _receive(self, wav, count, events):
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                self._events.append((events[i].sample, events[i].id.split(b"\0")[0].decode("ascii", "replace")))
            i += 1
        return 0

    def say(self, text: str, voice: str, words_per_minute: int) -> Utterance:
        with self._lock:
            self._chunks, self._events = [], []
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"no eSpeak NG voice {voice!r}")
            self._lib.espeak_SetParameter(RATE_PARAMETER, words_per_minute, 0)
            data = text.encode()
            self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
            self._lib.espeak_Synchronize()
            samples = np.concatenate(self._chunks).astype(np.float32) / 32768.0
            events = list(self._events)
        ends = [sample for sample, _ in events[1:]] + [len(samples)]
        phonemes = [Phoneme(name.strip("',"), start / self.rate, end / self.rate)
                    for (start, name), end in zip(events, ends)]
        return Utterance(samples, self.rate, phonemes)


_speaker: _Speaker | None = None


def speak(text: str, voice: str = "en-us", words_per_minute: int = 150, pad_seconds: float = 0.3) -> Utterance:
    """`text` spoken by `voice` (e.g. "en-us", "en-us+f3"), with `pad_seconds` of silence before and after
    (phoneme times include the padding)."""
    global _speaker
    if _speaker is None:
        _speaker = _Speaker()
    said = _speaker.say(text, voice, words_per_minute)
    pad = np.zeros(int(pad_seconds * said.rate), np.float32)
    return Utterance(np.concatenate([pad, said.samples, pad]), said.rate,
                     [Phoneme(p.name, p.start + pad_seconds, p.end + pad_seconds) for p in said.phonemes])
