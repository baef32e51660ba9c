"""Input security: allowed roots, symlinks, URL rules, byte limits and content sniffing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engines.settings import SettingsError
from tests.media_fixtures import PORTRAIT, SPEECH
from worker import security
from worker.security import (
    AUDIO,
    IMAGE,
    InputNotFound,
    InputTooLarge,
    PathNotAllowed,
    SecurityPolicy,
    UnsupportedFormat,
    UrlNotAllowed,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(PORTRAIT, inputs / "face.jpg")
    shutil.copy(SPEECH, inputs / "speech.wav")
    return inputs


@pytest.fixture
def policy(root: Path, tmp_path: Path) -> SecurityPolicy:
    return SecurityPolicy.from_env(
        {"ALLOWED_INPUT_ROOTS": str(root), "UPLOAD_DIR": str(tmp_path / "uploads"), "ALLOWED_URL_HOSTS": "cdn.example.com,localhost"}
    )


def test_files_under_the_root_are_accepted_as_resolved_uris(root: Path, policy: SecurityPolicy) -> None:
    assert security.check_reference(str(root / "face.jpg"), IMAGE, policy) == (root / "face.jpg").resolve().as_uri()
    assert security.check_reference("speech.wav", AUDIO, policy) == (root / "speech.wav").resolve().as_uri()
    assert security.check_reference((root / "speech.wav").as_uri(), AUDIO, policy).endswith("/speech.wav")
    inner = root / "sub"
    inner.mkdir()
    assert security.check_local_input(str(inner / ".." / "face.jpg"), IMAGE, policy) == (root / "face.jpg").resolve()


@pytest.mark.parametrize(
    "reference",
    ["/etc/passwd", "file:///etc/passwd", "../../../../../../etc/passwd", "{root}/../../../etc/passwd", "file://evil.host/x.jpg"],
)
def test_paths_outside_the_roots_are_refused(reference: str, root: Path, policy: SecurityPolicy) -> None:
    with pytest.raises(PathNotAllowed, match="outside the allowed input roots|local path"):
        security.check_reference(reference.format(root=root), IMAGE, policy)


def test_symlink_escaping_the_root_is_refused_and_one_inside_is_followed(root: Path, tmp_path: Path, policy: SecurityPolicy) -> None:
    outside = tmp_path / "secret.jpg"
    shutil.copy(PORTRAIT, outside)
    (root / "escape.jpg").symlink_to(outside)
    (root / "alias.jpg").symlink_to(root / "face.jpg")
    (root / "linkdir").symlink_to(tmp_path)
    with pytest.raises(PathNotAllowed):
        security.check_reference(str(root / "escape.jpg"), IMAGE, policy)
    with pytest.raises(PathNotAllowed):
        security.check_reference(str(root / "linkdir" / "secret.jpg"), IMAGE, policy)
    assert security.check_local_input(str(root / "alias.jpg"), IMAGE, policy) == (root / "face.jpg").resolve()


def test_missing_and_non_regular_files(root: Path, policy: SecurityPolicy) -> None:
    with pytest.raises(InputNotFound):
        security.check_reference(str(root / "nope.jpg"), IMAGE, policy)
    with pytest.raises(PathNotAllowed, match="outside"):  # probing outside the roots says "not allowed"
        security.check_reference("/nonexistent-dir/x.jpg", IMAGE, policy)
    (root / "dir.jpg").mkdir()
    with pytest.raises(PathNotAllowed, match="regular file"):
        security.check_reference(str(root / "dir.jpg"), IMAGE, policy)
    with pytest.raises(PathNotAllowed, match="NUL"):
        security.check_reference("face\x00.jpg", IMAGE, policy)


def test_formats_are_recognised_by_content_not_extension(root: Path, policy: SecurityPolicy) -> None:
    shutil.copy(SPEECH, root / "speech.jpg")
    shutil.copy(PORTRAIT, root / "face.wav")
    (root / "notes.png").write_text("hello, not an image")
    (root / "empty.png").write_bytes(b"")
    for name, kind in [("speech.jpg", IMAGE), ("face.wav", AUDIO), ("notes.png", IMAGE), ("empty.png", IMAGE)]:
        with pytest.raises(UnsupportedFormat):
            security.check_reference(str(root / name), kind, policy)
    assert security.check_content(root / "speech.jpg", AUDIO, policy) == "wav"
    assert security.check_content(root / "face.wav", IMAGE, policy) == "jpeg"


def test_byte_limits(root: Path, tmp_path: Path) -> None:
    small = SecurityPolicy.from_env({"ALLOWED_INPUT_ROOTS": str(root), "UPLOAD_DIR": str(tmp_path / "u"),
                                     "MAX_IMAGE_BYTES": "1000", "MAX_AUDIO_BYTES": "2000"})
    with pytest.raises(InputTooLarge, match="limit is 1,000 bytes"):
        security.check_reference(str(root / "face.jpg"), IMAGE, small)
    with pytest.raises(InputTooLarge, match="limit is 2,000 bytes"):
        security.check_reference(str(root / "speech.wav"), AUDIO, small)


def test_policy_from_env(tmp_path: Path) -> None:
    policy = SecurityPolicy.from_env({"ALLOWED_INPUT_ROOTS": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}",
                                      "UPLOAD_DIR": str(tmp_path / "up"), "ALLOWED_URL_HOSTS": " CDN.example.com , x.org"})
    assert policy.allowed_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve(), (tmp_path / "up").resolve())
    assert policy.allowed_url_hosts == {"cdn.example.com", "x.org"}
    for bad in ({"MAX_IMAGE_BYTES": "lots"}, {"MAX_AUDIO_BYTES": "-1"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            SecurityPolicy.from_env(bad)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1/face.jpg", "Only https"),
        ("http://cdn.example.com/face.jpg", "Only https"),
        ("ftp://cdn.example.com/face.jpg", "Only https|use a path"),
        ("gopher://cdn.example.com/face.jpg", "use a path"),
        ("https://127.0.0.1/face.jpg", "loopback, private or link-local"),
        ("https://10.1.2.3/face.jpg", "loopback, private or link-local"),
        ("https://192.168.0.10/face.jpg", "loopback, private or link-local"),
        ("https://169.254.169.254/latest/meta-data", "loopback, private or link-local"),
        ("https://[::1]/face.jpg", "loopback, private or link-local"),
        ("https://[::ffff:127.0.0.1]/face.jpg", "loopback, private or link-local"),
        ("https://localhost/face.jpg", "loopback, private or link-local"),  # allow-listed, but resolves to 127.0.0.1
        ("https://evil.example.org/face.jpg", "not in the URL allow-list"),
        ("https://user:pw@cdn.example.com/face.jpg", "credentials"),
        ("s3://", "must be s3://bucket/key"),
        ("s3://bucket", "must be s3://bucket/key"),
        ("s3:///key.jpg", "must be s3://bucket/key"),
    ],
)
def test_urls_are_refused_with_a_reason(url: str, reason: str, policy: SecurityPolicy) -> None:
    with pytest.raises(UrlNotAllowed, match=reason):
        security.check_reference(url, IMAGE, policy)


def test_a_whole_s3_uri_passes_to_the_workers_storage_layer(policy: SecurityPolicy) -> None:
    assert security.check_reference("s3://bucket/faces/a%20b.jpg", IMAGE, policy) == "s3://bucket/faces/a%20b.jpg"


def test_address_rules() -> None:
    assert security._public("93.184.216.34")
    for private in ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                    "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "224.0.0.1"]:
        assert not security._public(private), private
    with pytest.raises(UrlNotAllowed, match="resolves to a loopback"):
        security.resolve_public("localhost", 443)
