"""The GFPGAN stage of high_quality mode: restore the face of every frame, a batch at a time.

Each frame's face is aligned from the landmarks it carries (align.py), the batch of 512x512 crops goes through
GFPGANv1Clean in one call (RGB scaled to [-1, 1] as upstream's helper does; fp16 autocast on CUDA), and every
restored crop is pasted back into its own frame. The landmarks pass through unchanged: restoration does not
move the face. Aligning and pasting are OpenCV/numpy work that releases the GIL, so the frames of a batch are
prepared and finished on a small thread pool while the network's call stays one batch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..base import EngineJob, Holding
from ..files import remembered_sha256
from ..stages import FrameStage, Pair, batches, torch_device
from . import FACE_SIZE
from .align import alignment, face_mask, paste_back, warp_face


class GfpganStage(FrameStage):
    name = "gfpgan"
    description = "GFPGAN v1.4 face restoration (faces aligned from Face Mesh landmarks, feathered paste-back)"

    model = None
    pool: ThreadPoolExecutor | None = None

    @property
    def checkpoint(self) -> Path:
        return self.settings.gfpgan_ckpt

    def required_checkpoints(self) -> list[Path]:
        return [self.checkpoint]

    @property
    def fp16(self) -> bool:
        """Half precision on CUDA: convolutions and linears in fp16 under autocast, the demodulation sums in
        fp32 (see stylegan2.ModulatedConv2d). On a CPU fp16 is slower, so fp32."""
        return self.hardware.cuda

    def _load(self) -> Holding:
        from .checkpoint import load_gfpgan

        device = torch_device(self.hardware.cuda)
        self.model = load_gfpgan(self.checkpoint, device)
        self.pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="gfpgan")
        return Holding(device=device, precision="fp16" if self.fp16 else "fp32",
                       backend="torch-cuda" if self.hardware.cuda else "torch-cpu", batch_size=self.batch_size,
                       checkpoints={str(self.checkpoint): remembered_sha256(self.checkpoint)})

    def warm_up(self) -> None:
        """On CUDA one face through the network (kernel selection, lazy CUDA init); on a CPU that would cost
        seconds and gain nothing, so just load."""
        self.load()
        if self.hardware.cuda:
            self.restore(np.full((1, FACE_SIZE, FACE_SIZE, 3), 128, np.uint8))

    def _release(self) -> None:
        on_cuda = self.hardware.cuda
        self.model = None
        if self.pool is not None:
            self.pool.shutdown()
        self.pool = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def restore(self, faces: np.ndarray) -> np.ndarray:
        """GFPGAN over aligned crops: uint8 RGB (n, 512, 512, 3) in, the same out."""
        import torch

        model = self.model
        device = next(model.parameters()).device
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=self.fp16):
            batch = torch.from_numpy(np.ascontiguousarray(faces)).to(device).permute(0, 3, 1, 2).float()
            out = model(batch / 127.5 - 1.0)
            pixels = ((out.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()

    def transform(self, job: EngineJob, pairs: Iterable[Pair]) -> Iterator[Pair]:
        self.load()
        pool = self.pool
        for chunk in batches(pairs, self.batch_size):
            matrices = list(pool.map(lambda pair: alignment(pair[1]), chunk))
            crops = list(pool.map(warp_face, [frame for frame, _ in chunk], matrices))
            restored = self.restore(np.stack(crops))
            finished = pool.map(_finish, chunk, matrices, restored)
            for (_, landmarks), frame in zip(chunk, finished):
                yield frame, landmarks


def _finish(pair: Pair, matrix: np.ndarray, face: np.ndarray) -> np.ndarray:
    frame, landmarks = pair
    return paste_back(frame, face, matrix, face_mask(landmarks, matrix))
