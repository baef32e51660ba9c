"""Phone recognition in a helper process, so that it runs on another core while the engine renders.

pocketsphinx holds the GIL while it decodes (measured: a Python thread beside a decode got a tenth of its usual
turns), so a recognising thread would stall the render thread instead of running beside it. Each rendering
process therefore keeps one child process (spawned on first use, kept for later jobs) that recognises the
utterances handed to it, while the engine renders the frames whose phones are already known
(engines/mouth_track.StreamedMouthTrack). The child builds its own decoder, which restores its start state for
every utterance (engines/phonemes.py), so it gives exactly the phones the calling thread would.

When the child cannot be started, or dies (killed for memory, say), the utterance is recognised in the calling
thread instead: slower, the same phones, and the next job tries a fresh child.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .phonemes import Phone, recognise_phones

log = logging.getLogger(__name__)


def _child_start() -> None:
    """In the child: leave Ctrl-C to the parent (which stops the job), and build the decoder now."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recognise_phones(np.zeros(1600, np.int16))


class PendingPhones:
    """The phones of one utterance, being recognised in the child; `result()` waits for them."""

    def __init__(self, pcm: np.ndarray, future: Future | None):
        self._pcm = pcm
        self._future = future

    def result(self) -> list[Phone]:
        if self._future is not None:
            try:
                return self._future.result()
            except BrokenProcessPool:
                log.warning("the phone recognition process died; recognising in this thread instead")
        return recognise_phones(self._pcm)


class PhoneProcess:
    """One child process recognising utterances in the order they are submitted (any thread may submit)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the child and build its decoder now (about a second), so the first job does not wait for it."""
        self.submit(np.zeros(1600, np.int16)).result()

    def submit(self, pcm: np.ndarray) -> PendingPhones:
        """Start recognising `pcm` (16 kHz int16 mono: one utterance) in the child."""
        with self._lock:
            pool = self._pool_or_none()
            if pool is not None:
                try:
                    return PendingPhones(pcm, pool.submit(recognise_phones, pcm))
                except (BrokenProcessPool, RuntimeError):  # died since the last job: a fresh one next time
                    self._pool = None
        return PendingPhones(pcm, None)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _pool_or_none(self) -> ProcessPoolExecutor | None:
        if self._pool is None:
            try:  # spawn, not fork: the worker process has broker and encoder threads a fork would copy mid-call
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_child_start)
            except (OSError, RuntimeError) as exc:
                log.warning("cannot start the phone recognition process (%s); recognising in the render thread", exc)
                return None
        return self._pool


_shared = PhoneProcess()


def shared_phone_process() -> PhoneProcess:
    """The process-wide recogniser child (one per rendering process)."""
    return _shared
