"""Inference backends behind one call: (mel (B,1,80,16), faces (B,6,96,96)) float32 -> (B,3,96,96) float32.

TensorRT (FP16, see trt_build/) when a GPU, the tensorrt package and an engine built for this checkpoint on
this GPU are all present; otherwise torch, on CUDA when available, else CPU.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class TorchRunner:
    label = "torch"

    def __init__(self, model, device: str = "cpu"):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.label = f"torch-{self.device.type}"

    def __call__(self, mel: np.ndarray, faces: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(mel)).to(self.device),
                             torch.from_numpy(np.ascontiguousarray(faces)).to(self.device))
        return out.float().cpu().numpy()


def torch_device(prefer_cuda: bool) -> str:
    import torch

    return "cuda" if prefer_cuda and torch.cuda.is_available() else "cpu"


_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


def load_runner(checkpoint: Path, cuda: bool, tensorrt: bool, backend: str = "auto"):
    """A runner for ``checkpoint``, shared per process (loading costs seconds; the runners are stateless).

    backend: "auto" (TensorRT if an engine is cached, else torch), "torch" or "tensorrt" (error if absent).
    """
    stat = checkpoint.stat()
    key = (str(checkpoint.resolve()), stat.st_mtime_ns, stat.st_size, cuda, tensorrt, backend)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()  # one checkpoint at a time: a 36M-parameter model each
            _cache[key] = _build_runner(checkpoint, cuda, tensorrt, backend)
        return _cache[key]


def _build_runner(checkpoint: Path, cuda: bool, tensorrt: bool, backend: str):
    from .checkpoint import CheckpointError, load_wav2lip

    if backend in ("auto", "tensorrt") and cuda and tensorrt:
        from engines.tensorrt_cache import find_engine

        engine_path = find_engine(checkpoint)
        if engine_path is not None:
            from engines.tensorrt_runner import TensorRTRunner

            log.info("wav2lip: TensorRT engine %s", engine_path)
            return TensorRTRunner(engine_path)
        if backend == "tensorrt":
            raise CheckpointError(f"no TensorRT engine is built for {checkpoint} on this GPU; run `avatar-renderer trt-build`")
        log.info("wav2lip: no TensorRT engine built for this checkpoint and GPU; using torch")
    elif backend == "tensorrt":
        raise CheckpointError("the TensorRT backend needs an NVIDIA GPU and the tensorrt package")
    return TorchRunner(load_wav2lip(checkpoint), torch_device(cuda))
