"""Inputs of a render request, by URI, to local files the render may read.

Bare paths and file:// (under ALLOWED_INPUT_ROOTS, symlinks resolved; a relative path is taken relative to the
first allowed root) and https:// (ALLOWED_URL_HOSTS only) are checked by
worker.security, the one implementation every front door shares; s3:// is downloaded here with boto3 (the
worker's own credentials; S3_ENDPOINT_URL for MinIO). Every input passes the same byte limit and content sniff.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

from schemas.errors import FetchFailed, InputNotFound, InputTooLarge, UrlNotAllowed

from .security import AUDIO, IMAGE, VIDEO, SecurityPolicy, check_content, materialise, s3_bucket_and_key

__all__ = ["AUDIO", "IMAGE", "VIDEO", "FetchFailed", "fetch_input"]


def fetch_input(uri: str, kind: str, policy: SecurityPolicy, scratch: Path, s3_endpoint_url: str | None = None) -> Path:
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "s3":
        path = _fetch_s3(uri, kind, policy, scratch, s3_endpoint_url)
        check_content(path, kind, policy, label=uri)
        return path
    if scheme not in ("", "file", "https"):
        raise UrlNotAllowed(f"The {kind} URI {uri} must be a path or use file://, s3:// or https://.")
    # A bare path means file:// (as at the REST and MCP doors), with the same checks: under ALLOWED_INPUT_ROOTS,
    # symlinks resolved; a relative one is taken relative to the first allowed root, never the working directory.
    return materialise(uri, kind, policy, scratch)


def _fetch_s3(uri: str, kind: str, policy: SecurityPolicy, scratch: Path, endpoint: str | None) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = s3_bucket_and_key(uri, kind)
    client = boto3.client("s3", endpoint_url=endpoint)
    scratch.mkdir(parents=True, exist_ok=True)
    dest = scratch / f"{kind}-{uuid.uuid4().hex}"
    limit = policy.max_bytes(kind)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head.get("ContentLength", 0) > limit:

            raise InputTooLarge(f"The {kind} {uri} is {head['ContentLength']:,} bytes; the limit is {limit:,} bytes.")
        client.download_file(bucket, key, str(dest))
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status in (403, 404):
            raise InputNotFound(f"The {kind} {uri} does not exist or is not readable (HTTP {status}).") from exc
        raise FetchFailed(f"Reading {uri} failed: {exc}.") from exc
    except BotoCoreError as exc:
        raise FetchFailed(f"Reading {uri} failed: {exc}.") from exc
    return dest
