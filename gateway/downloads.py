"""Where a finished job's video can be fetched by someone outside the server (GET /renders/{jobId}, MCP results).

A job's output URI comes from its status: the completion event's `outputUri` with the Kafka backend, the job
step's with the in-process one. A front door serves only outputs inside its own storage (OUTPUT_URI), whatever
an event names:
- file:// (a local folder, or a volume shared with the workers): the REST gateway sends the file itself
  (VideoFile, Starlette's FileResponse: Range requests, ETag, Last-Modified); the MCP server, which runs on the
  user's machine, gives its local path.
- s3://: a presigned GET URL valid for DOWNLOAD_URL_EXPIRY_SECONDS (S3 serves Range requests itself); the REST
  route redirects to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable

from schemas.errors import HttpError, OutputNotAvailable, RenderError, StorageError, UnknownJob
from worker.storage import FileStorage, S3Storage

MEDIA_TYPE = "video/mp4"


@dataclass(frozen=True)
class Download:
    """A finished video: a local file (path) or a presigned URL (url, usable until expires_at, RFC 3339)."""

    path: Path | None = None
    url: str | None = None
    expires_at: str | None = None


class VideoFile(FileResponse):
    """Starlette's FileResponse with RFC 9110 Range handling: a Range header that does not parse (`bytes=abc`,
    `bytes=10-5`, another unit) is ignored and the whole file comes with 200, where Starlette answers a plain-text
    400; no range within the file is 416 with the JSON error body and `Content-Range: bytes */size`."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no ranges: the whole file
        except RangeNotSatisfiable:
            # Raised before the answer starts, so the gateway's HTTPException handler answers it.
            raise HTTPException(416, {"code": HttpError.code, "message": f"No range of {http_range!r} lies within "
                                      f"the file ({file_size:,} bytes)."},
                                headers={"Content-Range": f"bytes */{file_size}"}) from None


def locate(job_id: str, status: dict[str, Any] | None, storage, expiry_seconds: int) -> Download:
    """Where job_id's video can be fetched. UnknownJob for a job nobody knows; OutputNotAvailable while it is
    queued or running, when it failed, or when its output is not (or no longer) in this storage."""
    if status is None:
        raise UnknownJob(f"No job {job_id} is known.")
    state = status.get("state")
    if state == "failed":
        raise OutputNotAvailable(f"Job {job_id} failed; it has no video.")
    if state != "succeeded" or not status.get("output"):
        raise OutputNotAvailable(f"Job {job_id} is {state}; its video is not ready yet.")
    uri = status["output"]
    if isinstance(storage, S3Storage):
        try:
            url = storage.presigned_get(uri, expiry_seconds)
        except Exception as exc:  # noqa: BLE001 - e.g. botocore NoCredentialsError: say what failed
            raise StorageError(f"Signing a download URL for {uri} failed: {exc}.") from exc
        if url is not None:
            expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=expiry_seconds)
            return Download(url=url, expires_at=expires.isoformat().replace("+00:00", "Z"))
    elif isinstance(storage, FileStorage):
        path = storage.local_path(uri)
        if path is not None:
            if not path.is_file():
                raise OutputNotAvailable(f"The video of job {job_id} is no longer in storage.")
            return Download(path=path)
    raise OutputNotAvailable(f"The video of job {job_id} ({uri}) is not in this server's storage (OUTPUT_URI).")


def mcp_fetch_fields(status: dict[str, Any], storage, expiry_seconds: int) -> dict[str, Any]:
    """What an MCP result adds so a client can get the video: `path` (file:// storage, a file on the machine the
    MCP server runs on) or `url` and `urlExpiresAt` (s3://, a presigned HTTPS GET), and `fetch`, one sentence
    saying how."""
    state = status.get("state")
    if state == "failed":
        return {"fetch": "Nothing to fetch: the render failed (see error)."}
    if state != "succeeded":
        fields: dict[str, Any] = {}
        if isinstance(storage, FileStorage) and status.get("output"):
            path = storage.local_path(status["output"])
            if path is not None:
                fields["path"] = str(path)
        how = (f"open the MP4 file at {fields['path']}" if "path" in fields
               else "it gives the URL to download the MP4 from")
        return {**fields, "fetch": f"Not ready yet: poll get_render_status until state is succeeded, then {how}."}
    try:
        found = locate(status["jobId"], status, storage, expiry_seconds)
    except RenderError as exc:
        return {"fetch": f"The video cannot be fetched: {exc.message}"}
    if found.path is not None:
        return {"path": str(found.path), "fetch": f"Open the MP4 file at {found.path} (a file on this machine)."}
    return {"url": found.url, "urlExpiresAt": found.expires_at,
            "fetch": f"Download the MP4 with an HTTP GET of url (a presigned link; it stops working at "
                     f"{found.expires_at}; ask get_render_status again for a fresh one)."}
