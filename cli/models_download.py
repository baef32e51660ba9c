"""Resumable, checked HTTP downloads of model files.

A download writes to ``<file>.part`` and resumes it with an HTTP Range request next time (a server that
ignores Range gets a fresh download). A host that cannot be reached at all (DNS, refused, timed out) is said
so plainly, since running again will not help there; "run again to resume" is kept for a cut-off transfer. The finished file is checked against the size the catalog records or,
failing that, the length the server declared, and against the SHA-256 where one is known; a mismatch deletes
the partial data (resuming corrupt bytes would never heal) and is an error. Only then is it moved into place.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from schemas.errors import DownloadError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    resumed_from: int  # bytes already there from an earlier, interrupted download


def _hash_file(path: Path, digest) -> None:
    """Feed the bytes already on disk into a running digest (a resumed download keeps hashing where it stopped;
    whole files are hashed by engines.files.file_sha256)."""
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)


def _progress(total: int | None, initial: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not enabled, leave=True)


def _transfer_failed(url: str, exc: httpx.HTTPError, received: int, unreachable_hint: str) -> DownloadError:
    """The sentence for a transport failure: host unreachable, transfer cut off (resumable), or other."""
    reason = str(exc) or type(exc).__name__
    unreachable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)) or (
        isinstance(exc, httpx.TimeoutException) and not received)
    if unreachable:
        hint = f"; {unreachable_hint}" if unreachable_hint else ""
        return DownloadError(f"could not reach the model host {urlsplit(url).netloc} ({reason}): this machine may have no "
                             f"access to it{hint}.")
    if received:
        return DownloadError(f"{url}: the transfer was cut off after {received} bytes ({reason}); "
                             "run the download again to resume.")
    return DownloadError(f"{url}: {reason}.")


def download(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
             progress: bool = True, timeout: float = 60.0, max_bytes: int | None = None,
             unreachable_hint: str = "") -> Downloaded:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); returns what was written, or raises DownloadError.

    ``unreachable_hint`` ends the message when the host cannot be reached (the caller knows the way around,
    e.g. a mirror)."""
    if not url.startswith(("https://", "http://")):
        raise DownloadError(f"only http(s) URLs can be downloaded, not {url}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    digest = hashlib.sha256()
    received = 0  # body bytes this attempt received
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
            if response.status_code == 416 and have and size == have:
                total = have  # the part is already complete
                _hash_file(part, digest)
            else:
                if response.status_code == 206 and have:
                    start = int(response.headers.get("content-range", "bytes 0-").split()[1].split("-")[0])
                    if start != have:
                        raise DownloadError(f"{url} resumed at byte {start}, not {have}")
                    _hash_file(part, digest)
                    mode = "ab"
                elif response.status_code == 200:
                    have, mode = 0, "wb"  # no Range support: start over
                else:
                    raise DownloadError(f"{url} answered HTTP {response.status_code}")
                length = response.headers.get("content-length")
                total = have + int(length) if length is not None else size
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise DownloadError(f"{url} is {total} bytes, more than the {max_bytes} allowed")
                written = have
                with open(part, mode) as handle, _progress(total, have, dest.name, progress) as bar:
                    for block in response.iter_bytes():  # as received: an interruption keeps every byte
                        handle.write(block)
                        digest.update(block)
                        written += len(block)
                        received += len(block)
                        bar.update(len(block))
                if total is not None and written != total:
                    raise DownloadError(f"{url} ended after {written} of {total} bytes; run the download again to resume")
                total = written
    except httpx.HTTPError as exc:
        raise _transfer_failed(url, exc, received, unreachable_hint) from exc
    resumed_from = have
    actual = digest.hexdigest()
    if size is not None and total != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: {total} bytes, expected {size}; the partial file was removed")
    if sha256 is not None and actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: SHA-256 {actual}, expected {sha256}; the partial file was removed")
    os.replace(part, dest)
    return Downloaded(dest, total, actual, resumed_from)
