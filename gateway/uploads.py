"""Files sent to `POST /render/upload`: saved within the byte limits, recognised by content, and swept by age.

Each upload gets its own folder, `UPLOAD_DIR/<32 hex digits>/`, holding `avatar.<fmt>` and `audio.<fmt>`.
Folders are deleted once older than `UPLOAD_RETENTION_SECONDS` (default one day; 0 keeps them forever).
Sweeping by age rather than deleting when a job ends is deliberate: with Kafka the gateway is not told
reliably when a job is finally done, a job redelivered after a worker crash must still find its inputs,
and several gateway replicas may share one UPLOAD_DIR. The retention must outlast the longest queue wait.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Callable

from prometheus_client import Counter

from schemas.errors import InputTooLarge
from worker.security import SecurityPolicy, check_content

log = logging.getLogger(__name__)

UPLOAD_CHUNK = 1 << 20
UPLOAD_FOLDER = re.compile(r"^[0-9a-f]{32}$")  # only folders the gateway made are ever swept
SWEPT = Counter("avatar_api_uploads_swept_total", "Upload folders deleted after UPLOAD_RETENTION_SECONDS")


def save_upload(stream: BinaryIO, stem: Path, kind: str, policy: SecurityPolicy, label: str = "upload") -> Path:
    """Copy an upload to `stem` within the byte limit, recognise its format by content, name it by that format."""
    limit = policy.max_bytes(kind)
    stem.parent.mkdir(parents=True, exist_ok=True)
    received = 0
    with open(stem, "wb") as out:
        while chunk := stream.read(UPLOAD_CHUNK):
            received += len(chunk)
            if received > limit:
                raise InputTooLarge(f"The uploaded {kind} is over the {limit:,}-byte limit.")
            out.write(chunk)
    fmt = check_content(stem, kind, policy, label=label)
    final = stem.with_suffix("." + fmt)
    stem.rename(final)
    return final


class UploadSweeper:
    """Deletes upload folders older than the retention period; `run` repeats that while the gateway serves."""

    def __init__(self, upload_dir: Path, retention_seconds: int, clock: Callable[[], float] = time.time):
        self.upload_dir = upload_dir
        self.retention_seconds = retention_seconds
        self.clock = clock
        # Often enough that nothing outlives its retention by more than a tenth of it (at most 10 minutes).
        self.interval_seconds = min(max(retention_seconds / 10, 1.0), 600.0)

    def sweep(self) -> int:
        """Delete the expired folders now; returns how many went."""
        if self.retention_seconds <= 0 or not self.upload_dir.is_dir():
            return 0
        cutoff = self.clock() - self.retention_seconds
        removed = 0
        for folder in self.upload_dir.iterdir():
            try:
                expired = (UPLOAD_FOLDER.match(folder.name) and not folder.is_symlink() and folder.is_dir()
                           and folder.stat().st_mtime < cutoff)
            except FileNotFoundError:  # another replica swept it first
                continue
            if expired:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        if removed:
            SWEPT.inc(removed)
            log.info("swept expired uploads", extra={"fields": {"folders": removed}})
        return removed

    async def run(self) -> None:
        """Sweep at start and then every interval, off the event loop, until cancelled."""
        if self.retention_seconds <= 0:
            return
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except OSError as exc:  # a full or unmounted disk must not stop the gateway
                log.warning("could not sweep uploads: %s", exc)
            await asyncio.sleep(self.interval_seconds)
