"""Base frames the lip-sync is painted over, each with its Face Mesh landmarks.

- still: the framed portrait, repeated (engines/stages.still_pairs).
- landmark-warp: the built-in engine's frames (blinks, slight head motion); landmarks are re-measured every
  few frames and interpolated in between, since the head moves.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np

from ..base import Engine, EngineJob
from ..stages import Pair
from .crops import face_box, int_box



def tracked(frames: Iterable[np.ndarray], detect: Callable[[np.ndarray], np.ndarray | None],
            first: np.ndarray, stride: int = 4) -> Iterator[Pair]:
    """Pair each frame with landmarks measured on every ``stride``-th frame (and the last one), linearly
    interpolated between measurements. A frame where detection fails keeps the previous landmarks."""
    previous = first
    pending: list[np.ndarray] = []

    def flush(measured: np.ndarray) -> Iterator[Pair]:
        nonlocal previous
        count = len(pending)
        for k, frame in enumerate(pending, start=1):
            t = k / count
            yield frame, ((1 - t) * previous + t * measured).astype(np.float32)
        previous = measured
        pending.clear()

    for frame in frames:
        pending.append(frame)
        if len(pending) == stride:
            found = detect(frame)
            yield from flush(previous if found is None else found)
    if pending:
        found = detect(pending[-1])
        yield from flush(previous if found is None else found)


def landmark_warp_frames(base: Engine, job: EngineJob, stride: int = 4) -> Iterator[Pair]:
    """The built-in engine's frames for the same job (blinks, head motion), with tracked landmarks."""
    from ..face import shared_analyzer

    analyzer = shared_analyzer()

    def detect(frame: np.ndarray) -> np.ndarray | None:
        try:
            return analyzer.landmarks(frame)
        except Exception:  # a warped frame without a detectable face keeps the last landmarks
            return None

    return tracked(base.render(job), detect, job.landmarks, stride)


def with_boxes(pairs: Iterable[Pair], frame_size: tuple[int, int], window: int = 5
               ) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]]:
    """(frame, landmarks, box) with each face box averaged over ``window`` frames centred on it (streamed:
    output lags input by window // 2 frames; the ends repeat the first / last box)."""
    half = window // 2
    past: deque[np.ndarray] = deque(maxlen=half)
    ahead: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()

    def emit() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        frame, landmarks, box = ahead[0]
        future = [item[2] for item in list(ahead)[1 : half + 1]]
        future += [(future[-1] if future else box)] * (half - len(future))
        history = list(past)
        history = [(history[0] if history else box)] * (half - len(history)) + history
        smoothed = np.mean(history + [box] + future, axis=0)
        past.append(box)
        ahead.popleft()
        return frame, landmarks, int_box(smoothed)

    for frame, landmarks in pairs:
        ahead.append((frame, landmarks, face_box(landmarks, frame_size)))
        if len(ahead) > half:
            yield emit()
    while ahead:
        yield emit()
