"""The contract of a stage in a chained engine (high_quality: FOMM motion -> Diff2Lip lips -> GFPGAN faces).

A stage is an Engine (own checkpoints, load(), describe(), close()) that transforms a stream of
(frame, landmarks) pairs: FOMM turns the still portrait into a moving head, Diff2Lip repaints the mouth of
each frame, GFPGAN restores the face of each frame. Streams are lazy iterators, so frames flow through the
chain a batch at a time and a long job never holds all its frames; each stage batches internally
(`batch_size`). The landmarks travel with the frames, so later stages know where the face is without
detecting it again.
"""

from __future__ import annotations

import abc
import itertools
from typing import Iterable, Iterator

import numpy as np

from .base import Engine, EngineJob

Pair = tuple[np.ndarray, np.ndarray]  # (RGB uint8 frame (size, size, 3), float32 (478, 2) Face Mesh landmarks)

CPU_BATCH, GPU_BATCH = 2, 16


def still_pairs(job: EngineJob) -> Iterator[Pair]:
    """The job's portrait and landmarks, job.frame_count times: the input of the first stage."""
    for _ in range(job.frame_count):
        yield job.portrait, job.landmarks


def batches(pairs: Iterable[Pair], size: int) -> Iterator[list[Pair]]:
    """Consecutive lists of at most ``size`` pairs."""
    stream = iter(pairs)
    while chunk := list(itertools.islice(stream, size)):
        yield chunk


def torch_device(cuda: bool) -> str:
    return "cuda:0" if cuda else "cpu"


class FrameStage(Engine):
    """One model of a chained engine. Subclasses implement transform(); render() runs the stage alone over
    the still portrait (what its own tests and `bench --hq` per-stage figures use)."""

    mode = "high_quality"
    needs_gpu = False  # the chained engine decides about the GPU (HQ_ALLOW_CPU); a stage runs where it is put

    halvings = 0  # set by the chained engine after a CUDA out-of-memory error: the next try uses smaller batches

    @property
    def batch_size(self) -> int:
        configured = self.settings.hq_batch or (GPU_BATCH if self.hardware.cuda else CPU_BATCH)
        return max(1, configured >> self.halvings)

    @abc.abstractmethod
    def transform(self, job: EngineJob, pairs: Iterable[Pair]) -> Iterator[Pair]:
        """Yield one output pair per input pair, in order (job.frame_count in all)."""

    def render(self, job: EngineJob) -> Iterator[np.ndarray]:
        self.load()
        for frame, _ in self.transform(job, still_pairs(job)):
            yield frame
