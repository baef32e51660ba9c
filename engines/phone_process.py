"""Phone recognition in a helper process, so that it runs on another core while the engine renders.

pocketsphinx holds the GIL while it decodes (measured: a Python thread beside a decode got a tenth of its usual
turns), so a recognising thread would stall the render thread instead of running beside it. Each rendering
process therefore keeps one child, `python -m engines.phone_worker` (started on first use, kept for later
jobs), that recognises the utterances handed to it while the engine renders the frames whose phones are already
known (engines/mouth_track.StreamedMouthTrack). The child builds its own decoder, which restores its start state
for every utterance (engines/phonemes.py), so it gives exactly the phones the calling thread would.

Why not multiprocessing: its spawned children import the parent's main module (the CLI, with mediapipe, OpenCV
and PyAV: 190 MB measured) before they run anything; this child imports numpy and pocketsphinx only (about
60 MB). The protocol is the child's (engines/phone_worker.py): a length-prefixed int16 utterance in, one JSON
line of phones out, in order.

One feeder thread sends the utterances one at a time, so an utterance still queued when its job stops can be
dropped (`PendingPhones.cancel`). When the child cannot be started or dies (killed for memory, say), the
utterance is recognised in the thread that asks for it instead: slower, the same phones; the next utterance
starts a fresh child.
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from .phone_worker import HEADER
from .phonemes import Phone, recognise_phones

log = logging.getLogger(__name__)


class PendingPhones:
    """The phones of one utterance, being recognised in the child; `result()` waits for them."""

    def __init__(self, pcm: np.ndarray, future: Future):
        self._pcm = pcm
        self._future = future

    def result(self) -> list[Phone]:
        try:
            return self._future.result()
        except ChildProcessError as exc:
            log.warning("phone recognition process unavailable (%s); recognising in this thread instead", exc)
            return recognise_phones(self._pcm)

    def cancel(self) -> None:
        """Not wanted any more (the job stopped): dropped unless the child has started on it."""
        self._future.cancel()


class PhoneProcess:
    """One child process recognising utterances in the order they are submitted (any thread may submit)."""

    def __init__(self):
        self._lock = threading.Condition()
        self._queue: collections.deque[tuple[np.ndarray, Future]] = collections.deque()
        self._child: subprocess.Popen | None = None
        self._feeder: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the child and build its decoder now (about half a second), so the first job does not wait."""
        self.submit(np.zeros(1600, np.int16)).result()

    def submit(self, pcm: np.ndarray) -> PendingPhones:
        """Queue `pcm` (16 kHz int16 mono: one utterance) for the child."""
        future: Future = Future()
        with self._lock:
            self._queue.append((np.ascontiguousarray(pcm, "<i2"), future))
            if self._feeder is None or not self._feeder.is_alive():
                self._closed = False
                self._feeder = threading.Thread(target=self._feed, name="phone-feeder", daemon=True)
                self._feeder.start()
            self._lock.notify()
        return PendingPhones(pcm, future)

    def close(self) -> None:
        """Stop the feeder and the child (queued utterances are recognised by whoever waits for them)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
            feeder = self._feeder
        if feeder is not None:
            feeder.join(10)
        while self._queue:
            _, future = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(ChildProcessError("the phone process was closed"))
        self._stop_child()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._child.pid if self._child is not None and self._child.poll() is None else None

    def _feed(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                pcm, future = self._queue.popleft()
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                phones = self._recognise(pcm)
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the waiting job recognises it itself
                self._stop_child()
                if not isinstance(exc, ChildProcessError):
                    exc = ChildProcessError(f"its answer was unreadable: {exc}")
                future.set_exception(exc)
            else:
                future.set_result(phones)

    def _recognise(self, pcm: np.ndarray) -> list[Phone]:
        child = self._running_child()
        try:
            child.stdin.write(HEADER.pack(pcm.size) + pcm.tobytes())
            child.stdin.flush()
            line = child.stdout.readline()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise ChildProcessError(f"it ended: {exc}") from exc
        if not line:
            raise ChildProcessError(f"it ended with code {child.wait()}")
        return [Phone(label, start, end) for label, start, end in json.loads(line)]

    def _running_child(self) -> subprocess.Popen:
        if self._child is None or self._child.poll() is not None:
            package_root = Path(__file__).resolve().parent.parent  # run from there, `-m engines...` finds it
            try:
                self._child = subprocess.Popen([sys.executable, "-m", "engines.phone_worker"], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, cwd=package_root)
            except OSError as exc:
                raise ChildProcessError(f"it could not start: {exc}") from exc
        return self._child

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            try:
                child.stdin.close()  # the child ends when its input does
            except OSError:
                pass
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


_shared = PhoneProcess()


def shared_phone_process() -> PhoneProcess:
    """The process-wide recogniser child (one per rendering process)."""
    return _shared
