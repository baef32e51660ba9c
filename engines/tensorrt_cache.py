"""Where built TensorRT engines live: one file per (model, GPU name, TensorRT version, checkpoint SHA-256).

An engine is only valid for the GPU model and TensorRT version that built it, and for the weights it was
built from; all of them are in its file name, so a driver upgrade or a new checkpoint simply misses the cache.
The folder is ModelSettings.trt_cache_dir (TRT_CACHE_DIR, default $MODEL_ROOT/trt).
"""

from __future__ import annotations

import re
from pathlib import Path

from .files import remembered_sha256


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def engine_filename(gpu_name: str, trt_version: str, checkpoint_sha: str, precision: str = "fp16",
                    model: str = "wav2lip") -> str:
    return f"{model}-{checkpoint_sha[:16]}-{_slug(gpu_name)}-trt{_slug(trt_version)}-{precision}.engine"


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device())


def tensorrt_version() -> str:
    import tensorrt

    return tensorrt.__version__


def engine_path(checkpoint: str | Path, folder: Path, gpu: str | None = None, trt_version: str | None = None,
                model: str = "wav2lip") -> Path:
    return folder / engine_filename(gpu or gpu_name(), trt_version or tensorrt_version(),
                                    remembered_sha256(checkpoint), model=model)


def find_engine(checkpoint: str | Path, folder: Path, model: str = "wav2lip") -> Path | None:
    """The cached engine for this checkpoint on this GPU and TensorRT, or None."""
    path = engine_path(checkpoint, folder, model=model)
    return path if path.is_file() else None
