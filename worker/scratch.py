"""This worker's scratch folder under WORK_DIR, and removal of the folders that dead workers left behind.

Several workers may share WORK_DIR (one host, one volume). Each process works in its own `worker-<pid>-<tag>`
folder and holds an exclusive flock on the `.lock` file inside it for as long as it lives; the kernel drops
the lock when the process dies, however it dies (SIGKILL, OOM kill). At start a worker removes every
`worker-*` folder whose lock it can take: its owner is gone. Nothing else in WORK_DIR is touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from pathlib import Path

from schemas.errors import SettingsError

log = logging.getLogger(__name__)

PREFIX = "worker-"
LOCK = ".lock"


class Scratch:
    """A claimed scratch folder: `path`; `release()` removes it (a clean exit)."""

    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self._fd = lock_fd

    def release(self) -> None:
        if self._fd < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)  # closing drops the lock
        self._fd = -1


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on `path`, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_abandoned(work_dir: Path) -> list[Path]:
    """Remove the `worker-*` folders of work_dir whose owner process is gone; the removed folders."""
    removed = []
    for folder in sorted(work_dir.glob(f"{PREFIX}*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        fd = _lock(folder / LOCK)
        if fd is None:
            continue  # a live worker holds it (or it is not ours to read)
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    if removed:
        log.info("removed scratch folders of workers that are gone",
                 extra={"fields": {"folders": [f.name for f in removed]}})
    return removed


def claim(work_dir: Path) -> Scratch:
    """Clean up after dead workers, then create and lock this process's own folder under work_dir."""
    work_dir = Path(work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned(work_dir)
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Made and locked under a name other workers do not sweep, then renamed: never visible unlocked.
        staging = work_dir / f".claiming-{name}"
        staging.mkdir()
        fd = _lock(staging / LOCK)
        if fd is None:  # cannot happen for a folder just made; fail loudly rather than work unprotected
            raise OSError(f"cannot lock the scratch folder {staging}")
        path = work_dir / name
        staging.rename(path)
    except OSError as exc:  # a file, not a folder; under a file; no permission; a read-only or full disk
        problem = ("it, or a folder above it, is a file, not a folder"
                   if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror or str(exc))
        raise SettingsError(f"WORK_DIR={str(work_dir)!r} cannot hold this worker's scratch folder: {problem}.") from None
    return Scratch(path, fd)
