"""Where built TensorRT engines live: one file per (GPU name, TensorRT version, checkpoint SHA-256).

An engine is only valid for the GPU model and TensorRT version that built it, and for the weights it was
built from; all three are in its file name, so a driver upgrade or a new checkpoint simply misses the cache.
TRT_CACHE_DIR (default $MODEL_ROOT/trt) is the folder.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from engines.settings import ModelSettings


def cache_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ if env is None else env)
    if env.get("TRT_CACHE_DIR"):
        return Path(env["TRT_CACHE_DIR"]).expanduser()
    return ModelSettings.from_env(env).model_root / "trt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


@functools.lru_cache(maxsize=8)
def _checkpoint_sha256(path: str, mtime_ns: int, size: int) -> str:
    from engines.wav2lip.checkpoint import file_sha256

    return file_sha256(path)


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 of the checkpoint, remembered per (path, mtime, size) within a process."""
    stat = Path(path).stat()
    return _checkpoint_sha256(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def engine_filename(gpu_name: str, trt_version: str, checkpoint_sha: str, precision: str = "fp16") -> str:
    return f"wav2lip-{checkpoint_sha[:16]}-{_slug(gpu_name)}-trt{_slug(trt_version)}-{precision}.engine"


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device())


def tensorrt_version() -> str:
    import tensorrt

    return tensorrt.__version__


def engine_path(checkpoint: str | Path, gpu: str | None = None, trt_version: str | None = None,
                folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / engine_filename(
        gpu or gpu_name(), trt_version or tensorrt_version(), checkpoint_sha256(checkpoint)
    )


def find_engine(checkpoint: str | Path) -> Path | None:
    """The cached engine for this checkpoint on this GPU and TensorRT, or None."""
    path = engine_path(checkpoint)
    return path if path.is_file() else None
