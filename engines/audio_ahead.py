"""The output audio track encoded on a thread of its own, ahead of the video, for the writers in encoder.py.

Decoding the track, measuring it (loudness.MeteredAudio) and AAC took a quarter of the encoder thread's time,
and the encoder thread is what a real_time render waits for. PyAV lets go of the GIL while a codec works, so
the audio runs beside the video on another core.

The file stays byte for byte what one thread writes: the audio is cut into the same frames (AAC_FRAME samples,
the last one shorter) and encoded in the same order, and the writer muxes each frame's packets at the same
point as before (`take_until`): after the first video frame whose end lies at or past that audio frame's end.
At most AHEAD_FRAMES encoded frames (about 5 s) wait, so memory stays flat in audio length.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from schemas.errors import EncodeError

from .media_audio import OUTPUT_RATE

AHEAD_FRAMES = 256


@dataclass(frozen=True)
class _Encoded:
    start: int  # first sample of the frame
    samples: int  # its length; 0 for the encoder's flush
    packets: list


class AudioAhead:
    """Encodes `audio`'s output track with `stream` (of a container whose header is written) on its own thread,
    `frame_samples` at a time."""

    def __init__(self, audio, stream, frame_samples: int):
        self.frame_samples = frame_samples
        self._queue: queue.Queue = queue.Queue(maxsize=AHEAD_FRAMES)
        self._stop = threading.Event()
        self._next: _Encoded | None = None
        self._thread = threading.Thread(target=self._encode, args=(audio, stream), name="audio-encoder", daemon=True)
        self._thread.start()

    def take_until(self, end_sample: int) -> list:
        """Packets of the frames not taken yet that end at or before `end_sample` (whole frames only)."""
        packets = []
        while (item := self._peek()).samples == self.frame_samples and item.start + item.samples <= end_sample:
            packets.extend(item.packets)
            self._next = None
        return packets

    def take_rest(self) -> list:
        """Packets of every frame not taken yet (the shorter last frame included), before the flush."""
        packets = []
        while (item := self._peek()).samples:
            packets.extend(item.packets)
            self._next = None
        return packets

    def take_flush(self) -> list:
        """The encoder's last packets (after take_rest); the thread has ended."""
        packets = self._peek().packets
        self._thread.join()
        return packets

    def stop(self) -> None:
        """Stop encoding (the output is being thrown away); returns once the thread has ended."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblocks a thread waiting to put
            except queue.Empty:
                pass

    def _peek(self) -> _Encoded:
        if self._next is None:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            self._next = item
        return self._next

    def _encode(self, audio, stream) -> None:
        try:
            total, start = audio.n_samples, 0
            for chunk in _frames(audio.output_chunks(), self.frame_samples, total):
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
                frame.sample_rate = OUTPUT_RATE
                frame.pts = start
                frame.time_base = Fraction(1, OUTPUT_RATE)
                if not self._put(_Encoded(start, chunk.size, stream.encode(frame))):
                    return
                start += chunk.size
            self._put(_Encoded(start, 0, stream.encode(None)))
        except BaseException as exc:  # noqa: BLE001 - raised on the writer's thread when it takes audio
            self._put(exc)

    def _put(self, item) -> bool:
        """False once stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False


def _frames(chunks, frame_samples: int, total: int):
    """The first `total` samples of `chunks` in pieces of `frame_samples` (the last one shorter)."""
    pending, taken = np.zeros(0, np.float32), 0
    while taken < total:
        count = min(frame_samples, total - taken)
        while pending.size < count:
            chunk = next(chunks, None)
            if chunk is None:
                raise EncodeError(f"The audio track ended after {taken + pending.size} of its {total} samples.")
            pending = np.concatenate([pending, chunk])
        yield pending[:count]
        pending, taken = pending[count:], taken + count
