"""Render and encode at once: the engine's frames are made on the calling thread and encoded on another.

The engine runs on the caller's thread (its per-thread state, e.g. the phone decoder, stays warm between
jobs); one encoder thread takes the frames from a bounded queue (QUEUE_FRAMES deep, so a fast engine never
holds more than that many frames ahead of a slow encoder) and writes them in order, so the file is byte for
byte the one a sequential loop writes. Whichever side fails, the other is stopped, the encoder thread is
joined before `pump` returns or raises, and the first error is raised (the engine's if both failed).

Timings in the overlapped case (they add up to more than the wall time when the two sides overlap):
- frames_seconds: time the caller spent inside the engine's iterator (waiting on a full queue excluded);
- encode_seconds: time the encoder thread spent inside `writer.write` (colour conversion, encode, mux);
- first_frame_at: `time.perf_counter()` when the engine handed over its first frame.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

QUEUE_FRAMES = 8
_END = object()  # tells the encoder thread that no more frames come


class FrameWriter(Protocol):
    def write(self, rgb: np.ndarray) -> None: ...


@dataclass
class PipeTimings:
    frames: int = 0
    frames_seconds: float = 0.0
    encode_seconds: float = 0.0
    first_frame_at: float | None = None


def pump(frames: Iterable[np.ndarray], writer: FrameWriter, depth: int = QUEUE_FRAMES) -> PipeTimings:
    """Write every frame of `frames` with `writer.write`, rendering the next frames while earlier ones encode.
    Frames must not be changed by the engine after it yields them (each is queued as it is)."""
    timings = PipeTimings()
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []
    failed = threading.Event()

    def encode() -> None:
        try:
            while (frame := handoff.get()) is not _END:
                tick = time.perf_counter()
                writer.write(frame)
                timings.encode_seconds += time.perf_counter() - tick
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread and raised there
            failure.append(exc)
            failed.set()
            while handoff.get() is not _END:  # keep taking frames so the caller never blocks on a full queue
                pass

    encoder = threading.Thread(target=encode, name="frame-encoder", daemon=True)
    encoder.start()
    iterator = iter(frames)
    try:
        tick = time.perf_counter()
        for frame in iterator:
            ready = time.perf_counter()
            timings.frames_seconds += ready - tick
            if timings.first_frame_at is None:
                timings.first_frame_at = ready
            if failed.is_set():
                break
            handoff.put(frame)
            timings.frames += 1
            tick = time.perf_counter()
    finally:
        handoff.put(_END)
        encoder.join()
        close = getattr(iterator, "close", None)
        if close is not None:  # a generator stopped early runs its cleanup now, not at garbage collection
            close()
    if failure:
        raise failure[0]
    return timings
