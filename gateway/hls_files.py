"""HLS over the REST gateway: GET /renders/{jobId}/{name} serves a job's playlist and segments while it renders
(a player pointed at /renders/{jobId}/index.m3u8 starts with the first stored segment), and the other delivered
files by name. Relative segment URIs in the playlist resolve to the same route.

- file:// storage: the file itself (FileResponse: Range, ETag).
- s3:// storage: the playlist's text is read and returned (a redirect would make the player resolve segment
  names against the bucket, unsigned); every other file is a 307 to a presigned GET URL.
Only the names the worker writes are served (worker/broadcast.py), so no other object can be reached.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.errors import OutputNotAvailable, StorageError, UnknownJob
from worker.storage import FileStorage, S3Storage

from .downloads import Download

NAMES = re.compile(r"^(index\.m3u8|index\.mp4|init\.mp4|seg[0-9]{5}\.m4s)$")
MEDIA_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4", ".m4s": "video/iso.segment",
               ".webm": "video/webm", ".mov": "video/quicktime"}


def media_type(name: str) -> str:
    return next((kind for suffix, kind in MEDIA_TYPES.items() if name.endswith(suffix)), "application/octet-stream")


def locate_file(job_id: str, name: str, status: dict[str, Any] | None, storage, expiry_seconds: int) -> Download | bytes:
    """A job's HLS file: a local path, a presigned URL, or (the playlist on s3://) its bytes. UnknownJob for a job
    nobody knows; OutputNotAvailable for a failed job, a name the worker never writes, or a file not stored yet."""
    if status is None:
        raise UnknownJob(f"No job {job_id} is known.")
    if status.get("state") == "failed":
        raise OutputNotAvailable(f"Job {job_id} failed; it has no output.")
    if not NAMES.match(name):
        raise OutputNotAvailable(f"Job {job_id} has no file {name!r} (index.m3u8, init.mp4, segNNNNN.m4s, index.mp4).")
    object_name = f"{job_id}/{name}"
    if isinstance(storage, FileStorage):
        path = storage.local_path(storage.uri_of(object_name))
        if path is None or not path.is_file():
            raise OutputNotAvailable(f"{name} of job {job_id} is not stored (yet).")
        return Download(path=path)
    if isinstance(storage, S3Storage):
        try:
            if name.endswith(".m3u8"):
                return storage.read_named(object_name)
            return Download(url=storage.presigned_get(storage.uri_of(object_name), expiry_seconds))
        except OutputNotAvailable:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. NoSuchKey while the first segment is not there yet
            raise OutputNotAvailable(f"{name} of job {job_id} is not stored (yet): {exc}.") from exc
    raise StorageError(f"Storage {storage!r} cannot serve HLS files.")
