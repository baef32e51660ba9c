"""The one file hasher: SHA-256 of a file (hashlib.file_digest does the reading).

`remembered_sha256` memoises it per (path, mtime, size) within a process: checkpoints are hundreds of MB and
are hashed by the TensorRT engine cache and by `describe()`, so the second ask is free.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@functools.lru_cache(maxsize=64)
def _remembered(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def remembered_sha256(path: str | Path) -> str:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _remembered(str(resolved), stat.st_mtime_ns, stat.st_size)
