"""Inference backends behind one call: (mel (B,1,80,16), faces (B,6,96,96)) float32 -> (B,3,96,96) float32.

TensorRT (FP16, see trt_build/) when a GPU, the tensorrt package and an engine built for this checkpoint on
this GPU are all present; otherwise torch, on CUDA when available, else CPU. The Wav2Lip engine builds one
runner in load() and owns it; nothing here caches models behind its back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from schemas.errors import CheckpointError

from . import WAV2LIP_IO

log = logging.getLogger(__name__)


class TorchRunner:
    def __init__(self, model, device: str = "cpu"):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.label = f"torch-{self.device.type}"
        self.precision = "fp32"

    def __call__(self, mel: np.ndarray, faces: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(mel)).to(self.device),
                             torch.from_numpy(np.ascontiguousarray(faces)).to(self.device))
        return out.float().cpu().numpy()

    def close(self) -> None:
        on_cuda = self.device.type == "cuda"
        self.model = None
        if on_cuda:
            self._torch.cuda.empty_cache()


def build_runner(checkpoint: Path, cuda: bool, tensorrt: bool, backend: str, trt_cache_dir: Path):
    """backend: "auto" (TensorRT if an engine is cached, else torch), "torch" or "tensorrt" (error if absent)."""
    from .checkpoint import load_wav2lip

    if backend in ("auto", "tensorrt") and cuda and tensorrt:
        from ..tensorrt_cache import find_engine

        engine_path = find_engine(checkpoint, trt_cache_dir)
        if engine_path is not None:
            from ..tensorrt_runner import TensorRTRunner

            log.info("wav2lip: TensorRT engine %s", engine_path)
            return TensorRTRunner(engine_path, WAV2LIP_IO)
        if backend == "tensorrt":
            raise CheckpointError(f"no TensorRT engine is built for {checkpoint} on this GPU; run `avatar-renderer trt-build`")
        log.info("wav2lip: no TensorRT engine built for this checkpoint and GPU; using torch")
    elif backend == "tensorrt":
        raise CheckpointError("the TensorRT backend needs an NVIDIA GPU and the tensorrt package")
    device = "cuda" if cuda else "cpu"
    return TorchRunner(load_wav2lip(checkpoint), device)
