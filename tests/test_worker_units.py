"""Worker pieces without a broker: settings validation, storage naming and overwrite, input URIs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engines.settings import SettingsError
from worker.inputs import fetch_input
from worker.security import PathNotAllowed, SecurityPolicy, UrlNotAllowed
from worker.settings import WorkerSettings
from worker.storage import FileStorage, S3Storage, open_storage

SAMPLES = Path(__file__).resolve().parent.parent / "engines" / "samples"


def test_settings_defaults_and_topics():
    settings = WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert settings.topics.requested == "avatar.render.requested" and settings.topics.dlq == "avatar.render.dlq"
    assert settings.output_uri.startswith("file:///") and settings.concurrency == 1
    assert settings.models.default_quality_mode == "auto"


@pytest.mark.parametrize("env, names", [
    ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
    ({"MAX_ATTEMPTS": "many"}, "MAX_ATTEMPTS"),
    ({"OUTPUT_URI": "ftp://x/y"}, "OUTPUT_URI"),
    ({"TOPIC_DLQ": "avatar.render.requested"}, "TOPIC_"),
    ({"DEFAULT_QUALITY_MODE": "best"}, "DEFAULT_QUALITY_MODE"),
])
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        WorkerSettings.from_env(env)


def test_file_storage_names_output_after_job_and_overwrites(tmp_path):
    storage = open_storage((tmp_path / "out").as_uri())
    assert isinstance(storage, FileStorage)
    source = tmp_path / "a.mp4"
    source.write_bytes(b"first")
    first = storage.put("job-1", source)
    source.write_bytes(b"second version")
    second = storage.put("job-1", source)
    assert first.uri == second.uri == (tmp_path / "out" / "job-1.mp4").as_uri()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["job-1.mp4"]
    assert second.sha256 == hashlib.sha256(b"second version").hexdigest() and second.bytes == 14


def test_s3_storage_key_from_job_id():
    storage = open_storage("s3://renders/team/a", "http://minio:9000")
    assert isinstance(storage, S3Storage) and storage.endpoint_url == "http://minio:9000"
    assert storage.uri_for("job-9") == "s3://renders/team/a/job-9.mp4"


def test_inputs_only_under_allowed_roots(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "face.jpg").write_bytes((SAMPLES / "portrait.jpg").read_bytes())
    (root / "escape.jpg").symlink_to(SAMPLES / "portrait.jpg")
    policy = SecurityPolicy.from_env({"ALLOWED_INPUT_ROOTS": str(root), "UPLOAD_DIR": str(root / "uploads")})
    assert fetch_input((root / "face.jpg").as_uri(), "image", policy, tmp_path / "scratch") == root / "face.jpg"
    with pytest.raises(PathNotAllowed):
        fetch_input((root / "escape.jpg").as_uri(), "image", policy, tmp_path / "scratch")
    with pytest.raises(PathNotAllowed):
        fetch_input(f"file://{root}/../../etc/hostname", "image", policy, tmp_path / "scratch")
    with pytest.raises(UrlNotAllowed):
        fetch_input("https://not-allowed.example.com/face.jpg", "image", policy, tmp_path / "scratch")
    with pytest.raises(UrlNotAllowed):
        fetch_input("ftp://host/face.jpg", "image", policy, tmp_path / "scratch")
