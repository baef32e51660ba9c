"""REST gateway and MCP server against the real embedded broker with a worker running: submit, poll, succeeded."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from engines.media_audio import OUTPUT_RATE, write_wav
from tests.conftest import worker_env
from tests.gateway_fixtures import kafka_gateway, wait_for
from tests.http_server import serve
from tests.mcp_client import render_and_wait
from tests.media_fixtures import PORTRAIT, speech_samples
from gateway.rest import create_app
from gateway.kafka_backend import KafkaBackend
from worker.security import SecurityPolicy


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    root = tmp_path / "inputs"
    root.mkdir()
    shutil.copy(PORTRAIT, root / "face.jpg")
    write_wav(root / "speech.wav", speech_samples()[: int(1.0 * OUTPUT_RATE)])
    Image.new("RGB", (160, 160), (90, 140, 90)).save(root / "lawn.png")  # no face in it
    return root


@pytest.fixture
def pipeline(broker, topics, inputs: Path, tmp_path: Path, start_worker):
    """A worker on the test's topics and a gateway backend following them."""
    env = worker_env(broker, topics, inputs, tmp_path / "renders", UPLOAD_DIR=str(tmp_path / "uploads"))
    with kafka_gateway(broker, topics, tmp_path / "renders", env, start_worker) as backend:
        yield env, backend, SecurityPolicy.from_env(env)





def test_rest_gateway_submits_through_kafka_and_reports_the_workers_status(pipeline, broker, topics, tmp_path: Path) -> None:
    env, backend, policy = pipeline
    with serve(create_app(backend, policy)) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        accepted = client.post("/render", json={"avatarPath": "face.jpg", "audioPath": "speech.wav",
                                                "qualityMode": "real_time", "size": 128,
                                                "deadline": "2099-01-01T00:00:00+02:00", "idempotencyKey": "k-1"})
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["output"] == (tmp_path / "renders" / f"{job['jobId']}.mp4").resolve().as_uri()
        status = wait_for(client, job["statusUrl"], timeout=90)
        assert status["state"] == "succeeded", status
        assert status["output"] == job["output"] and status["engine"] == "landmark-warp"
        assert status["timings"]["renderSeconds"] > 0 and "queueWaitSeconds" in status["timings"]
        assert (tmp_path / "renders" / f"{job['jobId']}.mp4").stat().st_size > 1000

        failing = client.post("/render", json={"avatarPath": "lawn.png", "audioPath": "speech.wav", "size": 128}).json()
        failed = wait_for(client, failing["statusUrl"], timeout=90)
        assert failed["state"] == "failed" and failed["error"]["code"] == "no_face"

        refused = client.post("/render", json={"avatarPath": "/etc/passwd", "audioPath": "speech.wav"})
        assert refused.status_code == 403

    # Another gateway replica learns both jobs from the status topic alone.
    replica = KafkaBackend(broker, topics, (tmp_path / "renders").resolve().as_uri())
    try:
        assert replica.wait_until_following(30)
        deadline = time.monotonic() + 20
        def state(job_id: str) -> str | None:
            return (replica.status(job_id) or {}).get("state")

        while time.monotonic() < deadline and not (state(job["jobId"]) == "succeeded"
                                                   and state(failing["jobId"]) == "failed"):
            time.sleep(0.2)
        assert replica.status(job["jobId"])["state"] == "succeeded"
        assert replica.status(failing["jobId"])["state"] == "failed"
    finally:
        replica.close()


def test_mcp_server_renders_through_kafka(pipeline, inputs: Path, tmp_path: Path) -> None:
    env, _, _ = pipeline
    job, status = render_and_wait({**env, "LOG_LEVEL": "WARNING"}, quality_mode="auto", timeout=120)
    assert status["state"] == "succeeded", status
    assert status["output"] == job["output"] == (tmp_path / "renders" / f"{job['jobId']}.mp4").resolve().as_uri()
    assert (tmp_path / "renders" / f"{job['jobId']}.mp4").is_file()


def test_the_worker_refuses_hostile_inputs_that_bypass_the_gateway(pipeline, inputs: Path, tmp_path: Path) -> None:
    """Requests published straight to the topic (no gateway checks) fail with the same reasons."""
    from gateway.backends import JobSpec

    _, backend, _ = pipeline
    (tmp_path / "secret.jpg").write_bytes(PORTRAIT.read_bytes())
    (inputs / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (inputs / "notes.jpg").write_text("not a picture at all")
    speech = (inputs / "speech.wav").as_uri()
    hostile = {
        "file:///etc/passwd": "path_not_allowed",
        (inputs / "escape.jpg").as_uri(): "path_not_allowed",
        (inputs / ".." / "secret.jpg").as_uri(): "path_not_allowed",
        "https://127.0.0.1/face.jpg": "url_not_allowed",
        "https://10.0.0.7/face.jpg": "url_not_allowed",
        (inputs / "notes.jpg").as_uri(): "unsupported_format",
    }
    jobs = {backend.submit(JobSpec(avatar_uri=uri, audio_uri=speech, size=128))["jobId"]: code
            for uri, code in hostile.items()}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(backend.status(j)["state"] != "failed" for j in jobs):
        time.sleep(0.2)
    got = {job: (backend.status(job).get("error") or {}).get("code") for job in jobs}
    assert got == jobs
    assert not list((tmp_path / "renders").glob("*.mp4"))
