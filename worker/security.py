"""Input security shared by every front door (REST, MCP, CLI submit) and by the worker itself.

One implementation, so the gateway and the worker refuse exactly the same things:
- local files only under the configured allowed roots (resolved with symlinks followed, so `..` and links
  cannot escape), and only regular files;
- `https://` only to allow-listed hosts, and never to a loopback, private, link-local or otherwise
  non-public address: every address the name resolves to is checked, the download connects to a checked
  address (no second DNS lookup to rebind), and redirects are refused;
- byte limits before anything is decoded, and a content sniff (magic bytes) so formats are recognised by
  content, not by extension. Pixel and audio-length limits are enforced by engines.media_image / media_audio.

Every refusal is an engines.errors.InputError subclass with a stable code and one sentence: the gateways turn
it into a 4xx, the worker into a non-retryable failure event.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from schemas.errors import FetchFailed, InputError, InputNotFound, InputTooLarge, PathNotAllowed, UnsupportedFormat, UrlNotAllowed
from engines.settings import int_env

IMAGE, AUDIO = "image", "audio"
VIDEO = "video"  # a driving video (high_quality head motion)
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_AUDIO_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 200 * 1024 * 1024
DEFAULT_UPLOAD_RETENTION_SECONDS = 24 * 3600
SNIFF_BYTES = 64


@dataclass(frozen=True)
class SecurityPolicy:
    """Where inputs may come from and how big they may be (from the environment, see README)."""

    allowed_roots: tuple[Path, ...]
    upload_dir: Path
    allowed_url_hosts: frozenset[str] = field(default_factory=frozenset)
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    fetch_timeout: float = 20.0
    upload_retention_seconds: int = DEFAULT_UPLOAD_RETENTION_SECONDS  # 0: keep uploads forever

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SecurityPolicy":
        """From the settings mapping the entry point passes in (this module never reads os.environ)."""
        upload_dir = Path(env.get("UPLOAD_DIR") or "out/uploads").expanduser().resolve()
        raw_roots = [r for r in env.get("ALLOWED_INPUT_ROOTS", "").split(os.pathsep) if r.strip()]
        roots = [Path(r.strip()).expanduser().resolve() for r in raw_roots] or [Path.cwd().resolve()]
        if not any(upload_dir.is_relative_to(root) for root in roots):
            roots.append(upload_dir)  # uploads are always readable, wherever UPLOAD_DIR points
        hosts = frozenset(h.strip().lower() for h in env.get("ALLOWED_URL_HOSTS", "").split(",") if h.strip())
        return cls(
            allowed_roots=tuple(roots),
            upload_dir=upload_dir,
            allowed_url_hosts=hosts,
            max_image_bytes=int_env(env, "MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES, minimum=1, unit="bytes"),
            max_audio_bytes=int_env(env, "MAX_AUDIO_BYTES", DEFAULT_MAX_AUDIO_BYTES, minimum=1, unit="bytes"),
            max_video_bytes=int_env(env, "MAX_VIDEO_BYTES", DEFAULT_MAX_VIDEO_BYTES, minimum=1, unit="bytes"),
            upload_retention_seconds=int_env(env, "UPLOAD_RETENTION_SECONDS", DEFAULT_UPLOAD_RETENTION_SECONDS,
                                             unit="seconds"),
        )

    def max_bytes(self, kind: str) -> int:
        return {IMAGE: self.max_image_bytes, VIDEO: self.max_video_bytes}.get(kind, self.max_audio_bytes)


# --------------------------------------------------------------------------- local files


def local_path(reference: str, policy: SecurityPolicy) -> Path:
    """A plain path or file:// URI -> the resolved Path, if it is a regular file under an allowed root.

    Relative paths are taken relative to the first allowed root, never to the process's working directory.
    """
    if "\x00" in reference:
        raise PathNotAllowed("The input path contains a NUL byte.")
    raw = reference
    if reference.startswith("file:"):
        parts = urlsplit(reference)
        if parts.netloc not in ("", "localhost"):
            raise PathNotAllowed(f"file:// URIs must name a local path, not host {parts.netloc!r}.")
        raw = unquote(parts.path)
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = policy.allowed_roots[0] / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        # Decide "not allowed" before "not found", so probing outside the roots learns nothing.
        _require_under_roots(candidate.resolve(strict=False), reference, policy)
        raise InputNotFound(f"The input {reference} does not exist.") from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permission problems
        raise PathNotAllowed(f"The input {reference} cannot be resolved: {exc}.") from exc
    _require_under_roots(resolved, reference, policy)
    if not resolved.is_file():
        raise PathNotAllowed(f"The input {reference} is not a regular file.")
    return resolved


def _require_under_roots(resolved: Path, reference: str, policy: SecurityPolicy) -> None:
    if not any(resolved.is_relative_to(root) for root in policy.allowed_roots):
        raise PathNotAllowed(
            f"The input {reference} is outside the allowed input roots (set ALLOWED_INPUT_ROOTS to change them)."
        )


# --------------------------------------------------------------------------- content checks


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, format) recognised from a file's first bytes, or None. Decoders check the rest."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE, "png"
    if head.startswith(b"\xff\xd8\xff"):
        return IMAGE, "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE, "webp"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return AUDIO, "wav"
    if head.startswith(b"fLaC"):
        return AUDIO, "flac"
    if head.startswith(b"OggS"):
        return AUDIO, "ogg"
    if head[4:8] == b"ftyp":
        return AUDIO, "m4a"  # ISO base media; the decoder insists on an audio track
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return AUDIO, "mp3"
    return None


def sniff_video(head: bytes) -> str | None:
    """mp4 | mov | webm | mkv recognised from a file's first bytes, or None. An ISO base media file (ftyp) is
    also what M4A audio is: PyAV insists on a video track when the video is opened (engines/media_video.py)."""
    if head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head[4:8] in (b"moov", b"wide", b"mdat"):  # QuickTime files written without an ftyp atom
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, and WebM (its doctype "webm")
        return "webm" if b"webm" in head else "mkv"
    return None


FORMAT_NAMES = {IMAGE: "a PNG, JPEG or WebP image", AUDIO: "WAV, MP3, M4A, OGG or FLAC audio",
                VIDEO: "an MP4, MOV, WebM or MKV video"}


def check_content(path: Path, kind: str, policy: SecurityPolicy, label: str | None = None) -> str:
    """Enforce the byte limit and recognise the format from the first bytes; return the format name."""
    label = label or str(path)
    size = path.stat().st_size
    limit = policy.max_bytes(kind)
    if size > limit:
        raise InputTooLarge(f"The {kind} {label} is {size:,} bytes; the limit is {limit:,} bytes.")
    if size == 0:
        raise UnsupportedFormat(f"The {kind} {label} is an empty file.")
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    video = sniff_video(head) if kind == VIDEO else None
    found = (VIDEO, video) if video else sniff(head)
    if found is None or found[0] != kind:
        raise UnsupportedFormat(f"The {kind} {label} is not {FORMAT_NAMES[kind]} (recognised by content).")
    return found[1]


def check_local_input(reference: str, kind: str, policy: SecurityPolicy) -> Path:
    """Everything a local input must pass before a render may read it."""
    path = local_path(reference, policy)
    check_content(path, kind, policy, label=reference)
    return path


# --------------------------------------------------------------------------- https URLs


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_public(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, which must all be public; refuses otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlNotAllowed(f"The host {host} does not resolve: {exc.strerror}.") from exc
    addresses = sorted({info[4][0] for info in infos})
    private = [a for a in addresses if not _public(a)]
    if not addresses or private:
        raise UrlNotAllowed(
            f"The host {host} resolves to a loopback, private or link-local address ({', '.join(private)}); "
            "only public addresses may be fetched."
        )
    return addresses


def check_url(url: str, policy: SecurityPolicy) -> tuple[str, int, list[str]]:
    """Validate an https URL against the allow-list and the address rules; (host, port, addresses)."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise UrlNotAllowed(f"Only https:// URLs may be fetched, not {parts.scheme or 'a bare'}:// ({url}).")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlNotAllowed(f"The URL {url} has no host.")
    if parts.username or parts.password:
        raise UrlNotAllowed("URLs with credentials in them are not accepted.")
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    if literal and not _public(host):
        raise UrlNotAllowed(f"The URL {url} names a loopback, private or link-local address.")
    if host not in policy.allowed_url_hosts:
        raise UrlNotAllowed(
            f"The host {host} is not in the URL allow-list (set ALLOWED_URL_HOSTS to a comma-separated list)."
        )
    port = parts.port or 443
    return host, port, resolve_public(host, port)


def fetch_https(url: str, kind: str, dest_dir: Path, policy: SecurityPolicy) -> Path:
    """Download an allowed https URL into dest_dir, within the byte limit, without following redirects.

    Connects to an address already checked by resolve_public (Host header and TLS SNI keep the name), so a
    DNS answer that changes between check and connect cannot point the download at an internal service.
    """
    import httpx

    host, port, addresses = check_url(url, policy)
    parts = urlsplit(url)
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{netloc}:{port}").geturl()
    limit = policy.max_bytes(kind)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{kind}-{uuid.uuid4().hex}"
    try:
        with httpx.Client(timeout=policy.fetch_timeout, follow_redirects=False) as client:
            headers = {"Host": host if port == 443 else f"{host}:{port}"}
            with client.stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as response:
                if response.is_redirect:
                    raise UrlNotAllowed(f"The URL {url} redirects elsewhere; redirects are not followed.")
                if response.status_code != 200:
                    raise FetchFailed(f"Fetching {url} answered HTTP {response.status_code}.")
                declared = int(response.headers.get("content-length") or 0)
                if declared > limit:
                    raise InputTooLarge(f"The {kind} at {url} is {declared:,} bytes; the limit is {limit:,} bytes.")
                received = 0
                with open(dest, "wb") as out:
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > limit:
                            raise InputTooLarge(f"The {kind} at {url} is over the {limit:,}-byte limit.")
                        out.write(chunk)
    except httpx.HTTPError as exc:
        dest.unlink(missing_ok=True)
        raise FetchFailed(f"Fetching {url} failed: {exc}.") from exc
    except InputError:
        dest.unlink(missing_ok=True)
        raise
    try:
        check_content(dest, kind, policy, label=url)
    except InputError:
        dest.unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------- one entry point


def s3_bucket_and_key(uri: str, kind: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; UrlNotAllowed without both (`s3://`, `s3://bucket`)."""
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise UrlNotAllowed(f"The {kind} URI {uri} must be s3://bucket/key.")
    return bucket, key


def check_reference(reference: str, kind: str, policy: SecurityPolicy) -> str:
    """Validate an input reference as a front door accepts it; returns its canonical URI.

    Local paths become file:// URIs of the resolved file; https URLs are checked (allow-list, addresses) but
    not downloaded here; s3:// passes to the worker's storage layer, which has its own credentials.
    """
    if not isinstance(reference, str) or not reference.strip():
        raise PathNotAllowed(f"The {kind} reference is empty.")
    scheme = urlsplit(reference).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        return check_local_input(reference, kind, policy).as_uri()
    if scheme in ("https", "http"):
        check_url(reference, policy)  # refuses http:// with its own reason
        return reference
    if scheme == "s3":
        s3_bucket_and_key(reference, kind)
        return reference
    raise UrlNotAllowed(f"The {kind} reference {reference} uses {scheme}://; use a path, file://, https:// or s3://.")


def materialise(reference: str, kind: str, policy: SecurityPolicy, scratch: Path) -> Path:
    """A local Path a render may read: local inputs checked in place, https inputs downloaded to scratch."""
    scheme = urlsplit(reference).scheme.lower()
    if scheme in ("", "file"):
        return check_local_input(reference, kind, policy)
    if scheme == "https":
        return fetch_https(reference, kind, scratch, policy)
    raise UrlNotAllowed(f"The {kind} reference {reference} cannot be read here (scheme {scheme}://).")
