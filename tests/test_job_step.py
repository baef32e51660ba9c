"""One job step, one place for Kafka clients (issue 8): the in-process backend and the Kafka worker report the
same timings and share retries and the deadline; an idempotency key reused with other parameters is refused
with 409 by both backends; `submit` and the Kafka clients say plainly when no broker is there.

Real broker (Tansu), real HTTP client against uvicorn, real files, the real console script."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from conftest import CLI, job_ids_in, read_topic, records_on, worker_env
from cli.submit import build_request, publish
from gateway.kafka_backend import KafkaBackend
from gateway.rest import create_app
from schemas.errors import BackendUnavailable
from tests.gateway_fixtures import in_process_backend
from tests.http_server import serve
from worker.job_step import TIMING_KEYS
from worker.kafka import ensure_broker_reachable, request_producer
from worker.security import SecurityPolicy


def dead_address() -> str:
    """host:port of a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def job_env(clips: Path, tmp_path: Path, **extra) -> dict[str, str]:
    return {"ALLOWED_INPUT_ROOTS": str(clips), "UPLOAD_DIR": str(tmp_path / "uploads"),
            **{k: str(v) for k, v in extra.items()}}


def wait_final(client: httpx.Client, url: str, timeout: float = 90, until=None) -> dict:
    until = until or (lambda status: status["state"] in ("succeeded", "failed"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(url)
        assert response.status_code == 200, response.text
        if until(response.json()):
            return response.json()
        time.sleep(0.1)
    raise AssertionError(f"no such status in {timeout} s; last {response.json()}")


class InProcessGateway:
    """The REST gateway over the in-process backend, and a client to it."""

    def __init__(self, env: dict[str, str], output_dir: Path):
        self.backend = in_process_backend(env, output_dir)
        self._serving = serve(create_app(self.backend, SecurityPolicy.from_env(env)))
        self.client = httpx.Client(base_url=self._serving.__enter__(), timeout=30)

    def close(self) -> None:
        self.client.close()
        self._serving.__exit__(None, None, None)
        self.backend.close()


@pytest.fixture
def gateway():
    opened: list[InProcessGateway] = []

    def open_gateway(env: dict[str, str], output_dir: Path) -> InProcessGateway:
        opened.append(InProcessGateway(env, output_dir))
        return opened[-1]

    yield open_gateway
    for each in opened:
        each.close()


def render_body(**extra) -> dict:
    return {"avatarPath": "portrait.jpg", "audioPath": "short.wav", "size": 64, **extra}


# ----------------------------------------------------------------------------- one job step

def test_in_process_status_and_the_completion_event_carry_the_same_timings(
        broker, topics, clips, tmp_path, start_worker, gateway) -> None:
    api = gateway(job_env(clips, tmp_path), tmp_path / "in-process")
    accepted = api.client.post("/render", json=render_body())
    assert accepted.status_code == 202, accepted.text
    status = wait_final(api.client, accepted.json()["statusUrl"])
    assert status["state"] == "succeeded", status

    start_worker(worker_env(broker, topics, clips, tmp_path / "worker"))
    request = build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=64)
    publish(broker, topics, request)
    done = read_topic(broker, topics.completed, until=lambda r: request["jobId"] in job_ids_in(r), timeout=90)
    event = next(r["value"] for r in done if r["value"]["jobId"] == request["jobId"])

    assert set(status["timings"]) == set(event["durations"]) == set(TIMING_KEYS)
    assert status["timings"]["firstFrameSeconds"] > 0 and event["durations"]["firstFrameSeconds"] > 0
    assert status["timings"]["fetchSeconds"] >= 0 and status["timings"]["totalSeconds"] >= status["timings"]["renderSeconds"]


def test_the_in_process_backend_retries_a_transient_storage_failure(clips, tmp_path, gateway) -> None:
    blocked = tmp_path / "renders"
    blocked.write_text("a file where the output directory should be")  # mkdir fails: a real storage error
    api = gateway(job_env(clips, tmp_path, MAX_ATTEMPTS=30, RETRY_BACKOFF_SECONDS=0.3, RETRY_BACKOFF_MAX_SECONDS=0.6),
                  blocked)
    accepted = api.client.post("/render", json=render_body())
    assert accepted.status_code == 202, accepted.text
    url = accepted.json()["statusUrl"]
    retrying = wait_final(api.client, url, timeout=60,
                          until=lambda s: s["state"] != "queued" and s.get("attempt", 1) >= 2 or s["state"] == "failed")
    assert retrying["state"] == "running", retrying
    blocked.unlink()  # the "outage" ends
    status = wait_final(api.client, url)
    assert status["state"] == "succeeded", status
    assert status["attempt"] >= 2
    assert (blocked / f"{status['jobId']}.mp4").stat().st_size == status["bytes"]


def test_the_in_process_backend_honours_the_deadline(clips, tmp_path, gateway) -> None:
    api = gateway(job_env(clips, tmp_path), tmp_path / "renders")
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    accepted = api.client.post("/render", json=render_body(deadline=past.isoformat()))
    assert accepted.status_code == 202, accepted.text
    status = wait_final(api.client, accepted.json()["statusUrl"])
    assert status["state"] == "failed"
    assert status["error"]["code"] == "deadline_exceeded" and status["error"]["retryable"] is False
    assert not (tmp_path / "renders" / f"{status['jobId']}.mp4").exists()


# ----------------------------------------------------------------------------- idempotency

def test_an_idempotency_key_reused_with_other_parameters_is_a_409_in_process(clips, tmp_path, gateway) -> None:
    api = gateway(job_env(clips, tmp_path), tmp_path / "renders")
    first = api.client.post("/render", json=render_body(idempotencyKey="order-7"))
    again = api.client.post("/render", json=render_body(idempotencyKey="order-7"))
    assert first.status_code == again.status_code == 202
    assert first.json()["jobId"] == again.json()["jobId"]

    other = api.client.post("/render", json=render_body(idempotencyKey="order-7", size=128))
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_conflict" and "order-7" in other.json()["error"]["message"]
    assert wait_final(api.client, first.json()["statusUrl"])["state"] == "succeeded"

    # An upload sent again is saved to a fresh folder: the same bytes are the same request, other bytes are not.
    def upload(audio: Path):
        files = {"avatar": ("face.jpg", (clips / "portrait.jpg").read_bytes(), "image/jpeg"),
                 "audio": ("speech.wav", audio.read_bytes(), "audio/wav")}
        return api.client.post("/render/upload", files=files, data={"idempotencyKey": "upload-1", "size": "64"})

    sent, resent = upload(clips / "short.wav"), upload(clips / "short.wav")
    assert sent.status_code == resent.status_code == 202, resent.text
    assert sent.json()["jobId"] == resent.json()["jobId"]
    changed = upload(clips / "long.wav")
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"


def test_an_idempotency_key_reused_with_other_parameters_is_a_409_through_kafka(broker, topics, clips, tmp_path) -> None:
    env = job_env(clips, tmp_path)
    backend = KafkaBackend(broker, topics, (tmp_path / "renders").resolve().as_uri(),
                           upload_dir=tmp_path / "uploads")
    try:
        with serve(create_app(backend, SecurityPolicy.from_env(env))) as url, httpx.Client(base_url=url, timeout=30) as client:
            first = client.post("/render", json=render_body(idempotencyKey="kafka-order-9"))
            again = client.post("/render", json=render_body(idempotencyKey="kafka-order-9"))
            assert first.status_code == again.status_code == 202, again.text
            assert first.json()["jobId"] == again.json()["jobId"]
            other = client.post("/render", json=render_body(idempotencyKey="kafka-order-9", seed=3))
            assert other.status_code == 409, other.text
            assert other.json()["error"]["code"] == "idempotency_conflict"
    finally:
        backend.close()
    assert records_on(broker, topics.requested) == 1  # published once, the conflict never
    requests = read_topic(broker, topics.requested, until=lambda r: len(r) >= 1, timeout=30)
    assert [r["value"]["jobId"] for r in requests] == [first.json()["jobId"]]


# ----------------------------------------------------------------------------- no broker

def test_submit_without_a_broker_says_so_in_one_line(clips, tmp_path) -> None:
    address = dead_address()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": address}
    started = time.monotonic()
    done = subprocess.run([str(CLI), "submit", "--face", str(clips / "portrait.jpg"), "--audio",
                           str(clips / "short.wav")], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "KAFKA_BOOTSTRAP_SERVERS" in lines[0] and address in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert elapsed < 15, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("flags,expected", [
    (["--engine", "nosuch"], "error: Unknown engine 'nosuch'; this build has: "),
    (["--engine", "landmark-warp", "--mode", "high_quality"],
     "error: Engine landmark-warp serves real_time, not high_quality; drop the engine or the mode."),
])
def test_submit_refuses_what_the_other_front_doors_refuse_before_looking_for_a_broker(clips, flags, expected):
    """As REST and MCP: an unknown engine, or an engine with a mode it does not serve, is never published (here
    there is no broker at all: the refusal comes first)."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": dead_address()}
    done = subprocess.run([str(CLI), "submit", "--face", str(clips / "portrait.jpg"), "--audio",
                           str(clips / "short.wav"), *flags], env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and errors[0].startswith(expected), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_broker_check_and_quiet_client_logs(broker, caplog) -> None:
    ensure_broker_reachable(broker, timeout=5)  # a broker is there: no error
    address = dead_address()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="KAFKA_BOOTSTRAP_SERVERS"):
        ensure_broker_reachable(address, timeout=1)
    assert time.monotonic() - started < 5

    # A client of a broker that is down logs "Connection refused" now and then, not every few milliseconds.
    with caplog.at_level(logging.DEBUG, logger="librdkafka"):
        producer = request_producer(address, "quiet-test")
        producer.produce("anything", value=b"x")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            producer.poll(0.1)
        del producer
    refused = [r for r in caplog.records if r.name == "librdkafka" and "refused" in r.getMessage()]
    assert 1 <= len(refused) <= 2, [r.getMessage() for r in refused]


def test_a_bad_render_threads_is_one_line_naming_it(tmp_path) -> None:
    env = {**os.environ, "RENDER_THREADS": "x", "API_PORT": dead_address().split(":")[1]}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    try:
        done = subprocess.run([str(CLI), "api"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        raise AssertionError("the gateway started despite RENDER_THREADS=x") from None
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: RENDER_THREADS='x' is not a whole number."]
