"""What accelerators this machine has, found without importing heavy libraries unless they are installed."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    tensorrt: bool = False
    nvenc: bool = False


@functools.lru_cache(maxsize=2)
def detect(force_cpu: bool = False) -> Hardware:
    """This machine's accelerators (remembered per process); force_cpu (AVATAR_FORCE_CPU) ignores any GPU."""
    if force_cpu:
        return Hardware(cuda=False)
    cuda = _cuda_available()
    tensorrt = cuda and importlib.util.find_spec("tensorrt") is not None
    from .encoder import nvenc_usable

    return Hardware(cuda=cuda, tensorrt=tensorrt, nvenc=nvenc_usable())


def _cuda_available() -> bool:
    if not os.path.exists("/proc/driver/nvidia/version") and not os.path.exists("/dev/nvidiactl"):
        return False
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())
