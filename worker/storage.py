"""Where finished MP4s go: a file:// directory (default) or an s3:// bucket (MinIO via S3_ENDPOINT_URL).

The object name is `<jobId>.mp4`, derived from the job id alone: a redelivered job overwrites the same
object instead of leaving a second one, so a completion event seen twice names the same output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from engines.files import file_sha256
from schemas.errors import StorageError


@dataclass(frozen=True)
class Stored:
    uri: str
    bytes: int
    sha256: str


def object_name(job_id: str) -> str:
    return f"{job_id}.mp4"


class FileStorage:
    def __init__(self, directory: Path):
        self.directory = directory

    def uri_for(self, job_id: str) -> str:
        return (self.directory / object_name(job_id)).as_uri()

    def uri_of(self, name: str) -> str:
        """The URI of the object `name` (e.g. `<jobId>/index.m3u8`, worker/broadcast.py)."""
        return (self.directory / name).as_uri()

    def probe(self) -> None:
        """Create the folder and write and remove one small file (OSError when that fails): a worker checks its
        OUTPUT_URI at start-up, so a folder it can never write is one line, not every job failing three times."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()

    def put(self, job_id: str, source: Path) -> Stored:
        return self.put_named(object_name(job_id), source)

    def put_named(self, name: str, source: Path, content_type: str = "video/mp4", job_id: str = "") -> Stored:
        """Store `source` as the object `name` (a path under the directory), atomically."""
        target = self.directory / name
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, partial)
            os.replace(partial, target)  # atomic: readers see the old object or the new one, never half
        except OSError as exc:
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass
            raise StorageError(f"Storing the output in {self.directory} failed: {exc}.") from exc
        return Stored(target.as_uri(), target.stat().st_size, file_sha256(target))

    def local_path(self, uri: str) -> Path | None:
        """The file a file:// output URI names, or None when it lies outside this storage's directory (a
        front door serves only its own outputs, whatever a completion event says)."""
        parts = urlsplit(uri)
        if parts.scheme != "file":
            return None
        path = Path(unquote(parts.path)).resolve()
        return path if path.is_relative_to(self.directory.resolve()) else None


class S3Storage:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None):
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url
        self._client = None

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}/{object_name(job_id)}" if self.prefix else object_name(job_id)

    def uri_for(self, job_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(job_id)}"

    def _s3(self):
        """One client for uploads and presigning; SigV4 (what MinIO and every AWS region accept, and the only
        signature whose presigned URLs carry their own expiry, at most 7 days)."""
        import boto3
        from botocore.config import Config

        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url,
                                        config=Config(signature_version="s3v4"))
        return self._client

    def presigned_get(self, uri: str, expires_seconds: int) -> str | None:
        """A presigned GET URL of an s3:// output URI valid for expires_seconds, or None when the URI is not an
        object of this bucket and prefix."""
        parts = urlsplit(uri)
        key = unquote(parts.path).lstrip("/")
        if parts.scheme != "s3" or parts.netloc != self.bucket or not key.startswith(f"{self.prefix}/" if self.prefix else ""):
            return None
        return self._s3().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_seconds)

    def uri_of(self, name: str) -> str:
        key = f"{self.prefix}/{name}" if self.prefix else name
        return f"s3://{self.bucket}/{key}"

    def put_named(self, name: str, source: Path, content_type: str, job_id: str = "") -> Stored:
        """Upload `source` as the object `name` under the prefix (HLS segments and playlists, webm, mov)."""
        from botocore.exceptions import BotoCoreError, ClientError

        digest = file_sha256(source)
        key = f"{self.prefix}/{name}" if self.prefix else name
        try:
            self._s3().upload_file(str(source), self.bucket, key, ExtraArgs={
                "ContentType": content_type, "Metadata": {"sha256": digest, "job-id": job_id}})
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"Uploading {name} to {self.uri_of(name)} failed: {exc}.") from exc
        return Stored(self.uri_of(name), source.stat().st_size, digest)

    def read_named(self, name: str) -> bytes:
        """The bytes of the object `name` (an HLS playlist the gateway serves, gateway/hls_files.py)."""
        key = f"{self.prefix}/{name}" if self.prefix else name
        return self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, job_id: str, source: Path) -> Stored:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = file_sha256(source)
        try:
            self._s3().upload_file(
                str(source), self.bucket, self._key(job_id),
                ExtraArgs={"ContentType": "video/mp4", "Metadata": {"sha256": digest, "job-id": job_id}},
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"Uploading the output to {self.uri_for(job_id)} failed: {exc}.") from exc
        return Stored(self.uri_for(job_id), source.stat().st_size, digest)


def open_storage(output_uri: str, s3_endpoint_url: str | None = None):
    parts = urlsplit(output_uri)
    if parts.scheme == "file":
        return FileStorage(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        return S3Storage(parts.netloc, unquote(parts.path), s3_endpoint_url)
    raise ValueError(f"unsupported output URI {output_uri!r}")
