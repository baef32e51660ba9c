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


# ----------------------------------------------------------------------------- the broker restarted under the gateway


def _render(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/render", json={"avatarPath": "face.jpg", "audioPath": "speech.wav", "qualityMode": "real_time",
                                        "size": 128, "idempotencyKey": key})


def test_the_rest_gateway_survives_a_restart_of_the_memory_broker(inputs: Path, tmp_path: Path, start_worker) -> None:
    """Found by a tester: the embedded (memory) broker stopped and started again on its port. The gateway's
    idempotent producer then kept retrying a producer id the new broker never issued, so every POST /render
    waited 15 s for a 503 while /readyz said ready; and the status follower, positioned past the end of the new
    (empty) logs, would not have seen the new jobs' statuses. Now the producer is replaced and the follower
    reads the shortened partitions again from the beginning."""
    import json

    from confluent_kafka import Producer

    from cli.broker import create_topics, free_port, start_broker
    from worker.settings import Topics

    port = free_port()
    process = start_broker(port, tmp_path / "tansu.log")
    broker = f"127.0.0.1:{port}"
    topics = Topics(*(f"restart.{kind}" for kind in ("requested", "completed", "failed", "status", "dlq")))
    env = worker_env(broker, topics, inputs, tmp_path / "renders", UPLOAD_DIR=str(tmp_path / "uploads"),
                     WORKER_WARMUP="0")
    backend = None
    try:
        create_topics(broker, topics)
        worker = start_worker(env)
        backend = KafkaBackend(broker, topics, (tmp_path / "renders").resolve().as_uri())
        assert backend.wait_until_following(30)
        with serve(create_app(backend, SecurityPolicy.from_env(env))) as base_url, \
                httpx.Client(base_url=base_url, timeout=30) as client:
            before = _render(client, "before-restart")
            assert before.status_code == 202, before.text
            assert wait_for(client, before.json()["statusUrl"], timeout=90)["state"] == "succeeded"
            filler = Producer({"bootstrap.servers": broker})  # every status and completion partition ahead
            for topic in (topics.status, topics.completed):
                for partition in range(3):
                    for n in range(3):
                        job = f"filler-{topic}-{partition}-{n}"
                        filler.produce(topic, key=job.encode(), partition=partition,
                                       value=json.dumps({"jobId": job, "state": "failed"}).encode())
            assert filler.flush(10) == 0
            del filler

            worker.stop()  # the gateway is under test here: a fresh worker renders after the restart
            process.terminate()
            process.wait(10)
            process = start_broker(port, tmp_path / "tansu.log", restart=True)  # memory: nothing kept
            create_topics(broker, topics)
            start_worker(env)

            started = time.monotonic()
            after = _render(client, "after-restart")
            assert after.status_code == 202, after.text
            assert time.monotonic() - started < 10
            status = wait_for(client, after.json()["statusUrl"], timeout=90)
            assert status["state"] == "succeeded", status
            assert (tmp_path / "renders" / f"{status['jobId']}.mp4").stat().st_size > 1000
            assert client.get("/readyz").status_code == 200
    finally:
        if backend is not None:
            backend.close()
        process.kill()
        process.wait(10)


def test_a_fatal_error_of_the_gateways_producer_is_survived(pipeline) -> None:
    """As the worker's (tests/test_chaos.py): a fatal producer error (OUT_OF_ORDER_SEQUENCE_NUMBER after a broker
    lost the producer's state), injected through the producer's error callback, has the producer replaced
    before the next request, which is accepted and rendered."""
    from confluent_kafka import KafkaError

    env, backend, policy = pipeline
    publisher = backend._publisher
    old, _ = publisher.producer()
    publisher.note_error(KafkaError(KafkaError._FATAL, "injected: sequence desynchronization", fatal=True))
    assert publisher.broken
    with serve(create_app(backend, policy)) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200  # the broken producer replaced, the new one answers
        accepted = _render(client, "after-fatal")
        assert accepted.status_code == 202, accepted.text
        assert wait_for(client, accepted.json()["statusUrl"], timeout=90)["state"] == "succeeded"
    assert publisher.producer()[0] is not old and publisher.broken is None
