"""Upload folders are swept once older than UPLOAD_RETENTION_SECONDS, and only folders the gateway made."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from engines.settings import SettingsError
from tests.http_server import serve
from gateway.rest import create_app
from tests.gateway_fixtures import in_process_backend
from worker.security import SecurityPolicy
from gateway.uploads import UploadSweeper


def upload_folder(upload_dir: Path, age_seconds: float, name: str | None = None) -> Path:
    folder = upload_dir / (name or uuid.uuid4().hex)
    folder.mkdir(parents=True)
    (folder / "avatar.jpeg").write_bytes(b"\xff\xd8\xff")
    then = time.time() - age_seconds
    os.utime(folder, (then, then))
    return folder


def test_sweep_deletes_expired_upload_folders_only(tmp_path: Path) -> None:
    old, fresh = upload_folder(tmp_path, 7200), upload_folder(tmp_path, 60)
    foreign = upload_folder(tmp_path, 7200, name="operator-notes")  # not a name the gateway makes
    (tmp_path / "outside").mkdir()
    link = tmp_path / uuid.uuid4().hex
    link.symlink_to(tmp_path / "outside")
    os.utime(link, (time.time() - 7200,) * 2, follow_symlinks=False)

    assert UploadSweeper(tmp_path, retention_seconds=3600).sweep() == 1
    assert not old.exists()
    assert fresh.exists() and foreign.exists() and link.is_symlink() and (tmp_path / "outside").is_dir()


def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    old = upload_folder(tmp_path, 10 * 24 * 3600)
    assert UploadSweeper(tmp_path, retention_seconds=0).sweep() == 0
    assert old.exists()


def test_sweep_of_a_missing_upload_dir_is_a_no_op(tmp_path: Path) -> None:
    assert UploadSweeper(tmp_path / "never-made", retention_seconds=60).sweep() == 0


def test_retention_setting(tmp_path: Path) -> None:
    base = {"ALLOWED_INPUT_ROOTS": str(tmp_path), "UPLOAD_DIR": str(tmp_path / "up")}
    assert SecurityPolicy.from_env(base).upload_retention_seconds == 24 * 3600
    assert SecurityPolicy.from_env({**base, "UPLOAD_RETENTION_SECONDS": "0"}).upload_retention_seconds == 0
    for bad in ("-5", "1h"):
        with pytest.raises(SettingsError, match="UPLOAD_RETENTION_SECONDS"):
            SecurityPolicy.from_env({**base, "UPLOAD_RETENTION_SECONDS": bad})


def test_the_running_gateway_sweeps_expired_uploads(tmp_path: Path) -> None:
    env = {"ALLOWED_INPUT_ROOTS": str(tmp_path), "UPLOAD_DIR": str(tmp_path / "up"), "UPLOAD_RETENTION_SECONDS": "600"}
    policy = SecurityPolicy.from_env(env)
    old, fresh = upload_folder(policy.upload_dir, 3600), upload_folder(policy.upload_dir, 10)
    backend = in_process_backend(env, tmp_path / "renders")
    try:
        with serve(create_app(backend, policy)) as base_url:
            assert httpx.get(f"{base_url}/healthz").status_code == 200
            deadline = time.monotonic() + 10
            while old.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        backend.close()
    assert not old.exists() and fresh.exists()
