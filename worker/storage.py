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

    def put(self, job_id: str, source: Path) -> Stored:
        target = self.directory / object_name(job_id)
        partial = self.directory / f".{object_name(job_id)}.{uuid.uuid4().hex[:8]}.partial"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, partial)
            os.replace(partial, target)  # atomic: readers see the old object or the new one, never half
        except OSError as exc:
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass
            raise StorageError(f"Storing the output in {self.directory} failed: {exc}.") from exc
        return Stored(target.as_uri(), target.stat().st_size, file_sha256(target))


class S3Storage:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None):
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url
        self._client = None

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}/{object_name(job_id)}" if self.prefix else object_name(job_id)

    def uri_for(self, job_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(job_id)}"

    def put(self, job_id: str, source: Path) -> Stored:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        digest = file_sha256(source)
        try:
            self._client.upload_file(
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
