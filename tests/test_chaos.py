"""Chaos suite (issue 13): the fleet under SIGKILL storms, hostile records, a broker killed and restarted on
durable storage, an object store that goes down mid-upload and a worker stalled past its jobs' deadlines.

Everything is real and on 127.0.0.1: `avatar-renderer worker` subprocesses, the embedded Tansu broker (the
session's, or one of the test's own on `--storage-engine s3://BUCKET/`), and moto's S3 server (inputs, renders
and Tansu's storage). Each scenario writes its figures to out/chaos/<name>.json and prints them: records
submitted, jobs completed, lost (must be 0), duplicate completions, DLQ'd (by reason code), worker crashes
(SIGKILLs we sent, and any exit we did not cause), peak RSS growth of the one worker that lives throughout.

The short form runs in `make test` (bounded, under 2 minutes here). The long form, `pytest -m chaos
tests/test_chaos.py`, is larger and adds the broker restart, the store outage and the stall; its figures are in
README "Chaos suite".
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Producer

from cli.broker import create_topics, free_port, start_broker
from cli.submit import build_request
from conftest import REPO, read_topic, worker_env
from schemas.events import ce_headers, encode
from worker.settings import Topics

AWS = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos-secret", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_REGION": "us-east-1"}


@pytest.fixture
def long_form(request):
    """Skips unless the chaos marker was selected (`-m chaos`): the long form is not part of `make test`."""
    selected = request.config.getoption("markexpr") or ""
    if "chaos" not in selected or "not chaos" in selected:
        pytest.skip("the long chaos form runs with `pytest -m chaos tests/test_chaos.py`")


# ----------------------------------------------------------------------------- S3 (moto) that can go down


class S3Server:
    """moto's S3 server on a fixed loopback port; stop() takes it down, start() brings it back with its objects
    (moto keeps them in this process)."""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def s3(clips, monkeypatch):
    """The S3 server with buckets `inputs` (the portrait and 1 s speech), `renders` and `tansu`."""
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)  # boto3 here and, through worker_env, in the workers
    server = S3Server()
    client = boto3.client("s3", endpoint_url=server.endpoint)
    for bucket in ("inputs", "renders", "tansu"):
        client.create_bucket(Bucket=bucket)
    client.upload_file(str(clips / "portrait.jpg"), "inputs", "portrait.jpg")
    client.upload_file(str(clips / "short.wav"), "inputs", "short.wav")
    yield server
    server.stop()


# ----------------------------------------------------------------------------- records, hostile and valid


def hostile_records(n: int) -> list[tuple[str, bytes, list]]:
    """n records that must each end on the DLQ once: (expected code, value, headers)."""
    def request(**fields) -> dict:
        base = {"jobId": str(uuid.uuid4()), "avatarUri": "s3://inputs/portrait.jpg",
                "audioUri": "s3://inputs/short.wav", "qualityMode": "real_time", "size": 64}
        return {**base, **fields}

    def kinds():
        yield "malformed_json", b"{not json", []
        yield "malformed_json", b"[" * 50_000, []
        yield "schema_violation", json.dumps(request(outputPath="/etc/cron.d/x")).encode(), []
        yield "schema_violation", json.dumps(request(qualityMode="ultra")).encode(), []
        yield "schema_violation", json.dumps(request(jobId="x" * 5000)).encode(), []
        body = request()
        yield "unsupported_event_version", json.dumps(body).encode(), \
            [("ce_type", b"avatar.render.requested.v2"), ("ce_specversion", b"1.0")]
        yield "unsupported_event_version", json.dumps(request()).encode(), [("ce_specversion", b"2.0")]
        yield "path_not_allowed", json.dumps(request(avatarUri="file:///etc/passwd")).encode(), []
        yield "input_not_found", json.dumps(request(audioUri="s3://inputs/missing.wav")).encode(), []
        yield "no_live_pool", json.dumps(request(qualityMode="high_quality")).encode(), []

    out = []
    while len(out) < n:
        for kind in kinds():
            if len(out) < n:
                out.append(kind)
    return out


class Publisher:
    """Publishes records to the public topic and remembers where each landed (topic partition, offset)."""

    def __init__(self, broker: str, topics: Topics):
        self.topics = topics
        self.producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "acks": "all",
                                  "message.max.bytes": 2_000_000, "message.timeout.ms": 120_000})
        self.placed: dict[str, tuple[int, int]] = {}  # name -> (partition, offset)

    def send(self, name: str, value: bytes, key: bytes | None, headers: list) -> None:
        def delivered(err, msg):
            assert err is None, err
            self.placed[name] = (msg.partition(), msg.offset())

        self.producer.produce(self.topics.requested, value=value, key=key, headers=headers, on_delivery=delivered)
        self.producer.poll(0)

    def job(self, request: dict) -> str:
        self.send(request["jobId"], encode("render.requested.v1", request), request["jobId"].encode(),
                  ce_headers("render.requested.v1", request["jobId"]))
        return request["jobId"]

    def flush(self) -> None:
        assert self.producer.flush(120) == 0


def s3_job(size: int = 64, **extra) -> dict:
    return build_request("s3://inputs/portrait.jpg", "s3://inputs/short.wav", "real_time", size=size, **extra)


# ----------------------------------------------------------------------------- figures


def rss_mb(pid: int) -> float:
    """Resident set of a process (VmRSS), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tally(broker: str, topics: Topics, valid: set[str], hostile: dict[str, tuple[str, tuple[int, int]]],
          timeout: float) -> dict:
    """Read completed / failed / DLQ until every valid job and hostile record ended (or timeout): the figures."""
    def ended(completed, failed, dlq) -> tuple[set[str], set[tuple[int, int]]]:
        jobs = {r["value"]["jobId"] for r in completed + failed if isinstance(r["value"], dict)}
        origins = set()
        for r in dlq:
            h = r["headers"]
            if "route_origin_offset" in h:  # refused in a lane: where the publisher put it
                origins.add((int(h["route_origin_partition"]), int(h["route_origin_offset"])))
            elif h.get("dlq_origin_topic") == topics.requested:
                origins.add((int(h["dlq_origin_partition"]), int(h["dlq_origin_offset"])))
        return jobs & valid, origins

    deadline = time.monotonic() + timeout
    while True:
        completed = read_topic(broker, topics.completed, timeout=3)
        failed = read_topic(broker, topics.failed, timeout=3)
        dlq = read_topic(broker, topics.dlq, timeout=3, raw=True)  # values as sent: some nest too deep for json
        jobs, origins = ended(completed, failed, dlq)
        hostile_done = {where for _, where in hostile.values()} <= origins
        if (jobs == valid and hostile_done) or time.monotonic() > deadline:
            break
        time.sleep(2)
    completions = Counter(r["value"]["jobId"] for r in completed if r["value"]["jobId"] in valid)
    dlq_copies = Counter()
    for r in dlq:
        h = r["headers"]
        where = (h.get("route_origin_partition") or h.get("dlq_origin_partition"),
                 h.get("route_origin_offset") or h.get("dlq_origin_offset"))
        dlq_copies[where] += 1
    wrong_code = {name: (code, r["headers"]["dlq_error_code"]) for name, (code, (p, o)) in hostile.items()
                  for r in dlq if (r["headers"].get("route_origin_partition") or r["headers"]["dlq_origin_partition"],
                                   r["headers"].get("route_origin_offset") or r["headers"]["dlq_origin_offset"])
                  == (str(p), str(o)) and r["headers"]["dlq_error_code"] != code}
    failed_valid = Counter(r["value"]["code"] for r in failed if r["value"]["jobId"] in valid)
    failed_ids = {r["value"]["jobId"] for r in failed if r["value"]["jobId"] in valid}
    return {
        "submitted": len(valid) + len(hostile),
        "validJobs": len(valid),
        "hostileRecords": len(hostile),
        "completed": len(set(completions)),
        "failedValid": dict(failed_valid),
        "lost": len(valid - jobs) + len({where for _, where in hostile.values()} - origins),
        "duplicateCompletions": sum(n - 1 for n in completions.values()),
        "completedAndFailed": len(set(completions) & failed_ids),  # two different ends of one job
        "dlq": dict(Counter(r["headers"]["dlq_error_code"] for r in dlq)),
        "duplicateDlqCopies": sum(n - 1 for n in dlq_copies.values()),
        "wrongDlqCode": wrong_code,
    }


def report(name: str, figures: dict) -> dict:
    out = REPO / "out" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nchaos {name}: {json.dumps(figures)}")
    return figures


# ----------------------------------------------------------------------------- SIGKILL storm + hostile records


def run_storm(broker, topics, spawn_worker, s3: S3Server, tmp_path: Path, *, workers: int, jobs: int,
              hostile: int, kills: int, kill_every: float, timeout: float) -> dict:
    env = worker_env(broker, topics, Path(tmp_path), tmp_path / "renders", WORKER_WARMUP="0",
                     S3_ENDPOINT_URL=s3.endpoint, OUTPUT_URI="s3://renders/chaos", HEARTBEAT_SECONDS="1",
                     MAX_ATTEMPTS="5", **AWS)
    fleet = [spawn_worker(env, f"w{i}") for i in range(workers)]
    steady = fleet[0]  # never killed: its memory is measured
    steady.wait_for_log("partitions assigned", 120)
    started = time.monotonic()
    publisher = Publisher(broker, topics)
    valid, bad = set(), {}
    poison = hostile_records(hostile)
    for i in range(max(jobs, hostile)):
        if i < jobs:
            valid.add(publisher.job(s3_job()))
        if i < hostile:
            code, value, headers = poison[i]
            publisher.send(f"hostile-{i}", value, f"hostile-{i}".encode(), headers)
    publisher.flush()
    bad = {f"hostile-{i}": (poison[i][0], publisher.placed[f"hostile-{i}"]) for i in range(hostile)}
    rss_start = None  # taken once the steady worker finished a job (engines loaded), so growth is per job

    killed, unexpected, spawned = 0, 0, workers
    rng = random.Random(13)
    last_kill = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = read_topic(broker, topics.completed, timeout=1)
        if valid <= {r["value"]["jobId"] for r in done} and killed >= kills:  # a quick machine still gets its kills
            break
        if rss_start is None and any(e.get("msg") == "job succeeded" for e in steady.logs()):
            rss_start = rss_mb(steady.process.pid)
        if killed < kills and time.monotonic() - last_kill >= kill_every:
            victims = [w for w in fleet[1:] if w.process.poll() is None]
            if victims:
                victim = rng.choice(victims)
                victim.kill(signal.SIGKILL)
                victim.process.wait(10)
                killed += 1
                fleet.append(spawn_worker(env, f"w{spawned}"))
                spawned += 1
            last_kill = time.monotonic()
        time.sleep(0.5)
    figures = tally(broker, topics, valid, bad, timeout=max(10.0, deadline - time.monotonic()))
    unexpected = sum(1 for w in fleet if w.process.poll() is not None and w.process.returncode != -signal.SIGKILL)
    objects = boto3.client("s3", endpoint_url=s3.endpoint).list_objects_v2(Bucket="renders", Prefix="chaos/")
    figures.update({"workers": workers, "sigkills": killed, "unexpectedExits": unexpected,
                    "objectsStored": objects.get("KeyCount", 0), "seconds": round(time.monotonic() - started, 1),
                    "steadyWorkerRssMb": [round(rss_start or 0), round(rss_mb(steady.process.pid))]})
    figures["rssGrowthMb"] = (figures["steadyWorkerRssMb"][1] - figures["steadyWorkerRssMb"][0]) if rss_start else None
    return figures


def check_storm(figures: dict, jobs: int) -> None:
    assert figures["lost"] == 0, figures
    assert figures["completed"] == jobs and not figures["failedValid"], figures
    assert figures["objectsStored"] == jobs, figures  # one object per job, however often it was rendered
    assert not figures["wrongDlqCode"], figures
    assert figures["unexpectedExits"] == 0, figures


@pytest.mark.slow
def test_chaos_short_sigkills_hostile_records_and_s3(broker, topics, spawn_worker, s3, tmp_path):
    """Short form (make test): 3 workers, 2 SIGKILLs, 8 valid jobs with S3 inputs and S3 output, 10 hostile
    records interleaved; nothing lost, every hostile record dead-lettered with its reason."""
    figures = report("short", run_storm(broker, topics, spawn_worker, s3, tmp_path, workers=3, jobs=8, hostile=10,
                                        kills=2, kill_every=1.5, timeout=100))
    check_storm(figures, 8)
    assert figures["sigkills"] == 2


@pytest.mark.chaos
def test_chaos_long_sigkill_storm(long_form, broker, topics, spawn_worker, s3, tmp_path):
    """Long form: 4 workers, 10 SIGKILLs every 3 s, 40 valid jobs and 120 hostile records interleaved."""
    figures = report("storm", run_storm(broker, topics, spawn_worker, s3, tmp_path, workers=4, jobs=40,
                                        hostile=120, kills=10, kill_every=3.0, timeout=420))
    check_storm(figures, 40)


# ----------------------------------------------------------------------------- the broker killed, on S3 storage


@pytest.mark.chaos
def test_chaos_broker_sigkill_and_restart_on_s3_storage(long_form, s3, spawn_worker, tmp_path, clips):
    """Tansu with `--storage-engine s3://tansu/` on moto: SIGKILLed mid-stream and restarted on the same port;
    the workers reconnect and every job published before and after completes."""
    broker_env = {**os.environ, **AWS, "AWS_ENDPOINT": s3.endpoint, "AWS_ALLOW_HTTP": "true"}
    port = free_port()
    log = tmp_path / "tansu.log"
    process = start_broker(port, log, storage="s3://tansu/", env=broker_env)
    broker = f"127.0.0.1:{port}"
    topics = Topics(*(f"durable.{kind}" for kind in ("requested", "completed", "failed", "status", "dlq")))
    try:
        create_topics(broker, topics)
        env = worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP="0", HEARTBEAT_SECONDS="1",
                         S3_ENDPOINT_URL=s3.endpoint, OUTPUT_URI="s3://renders/durable", MAX_ATTEMPTS="5", **AWS)
        workers = [spawn_worker(env, f"d{i}") for i in range(2)]
        workers[0].wait_for_log("partitions assigned", 120)
        started = time.monotonic()
        publisher = Publisher(broker, topics)
        valid = {publisher.job(s3_job()) for _ in range(12)}
        publisher.flush()
        read_topic(broker, topics.completed, until=lambda r: len(r) >= 3, timeout=120)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        time.sleep(2)
        process = start_broker(port, log, storage="s3://tansu/", env=broker_env, restart=True)
        valid |= {publisher.job(s3_job()) for _ in range(8)}
        publisher.flush()
        figures = tally(broker, topics, valid, {}, timeout=300)
        figures.update({"brokerSigkills": 1, "workers": 2, "seconds": round(time.monotonic() - started, 1),
                        "unexpectedExits": sum(w.process.poll() is not None for w in workers)})
        report("broker_restart", figures)
        assert figures["lost"] == 0 and figures["completed"] == len(valid), figures
        assert figures["unexpectedExits"] == 0, figures
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# ----------------------------------------------------------------------------- the object store down mid-upload


@pytest.mark.chaos
def test_chaos_object_store_down_mid_upload(long_form, broker, topics, s3, spawn_worker, tmp_path):
    """S3 inputs and output; the store goes down for 4 s while jobs render and upload, then comes back:
    fetches and uploads are retried (storage_failed / fetch_failed are retryable), nothing is lost."""
    env = worker_env(broker, topics, tmp_path, tmp_path / "renders", WORKER_WARMUP="0", HEARTBEAT_SECONDS="1",
                     S3_ENDPOINT_URL=s3.endpoint, OUTPUT_URI="s3://renders/outage", MAX_ATTEMPTS="6",
                     RETRY_BACKOFF_SECONDS="0.5", RETRY_BACKOFF_MAX_SECONDS="4", **AWS)
    workers = [spawn_worker(env, f"s{i}") for i in range(2)]
    workers[0].wait_for_log("partitions assigned", 120)
    started = time.monotonic()
    publisher = Publisher(broker, topics)
    valid = {publisher.job(s3_job(size=128)) for _ in range(16)}
    publisher.flush()
    read_topic(broker, topics.completed, until=lambda r: len(r) >= 2, timeout=120)
    s3.stop()
    time.sleep(4)
    s3.start()
    figures = tally(broker, topics, valid, {}, timeout=240)
    retries = Counter(e.get("code") for w in workers for e in w.logs() if str(e.get("msg", "")).startswith("attempt"))
    figures.update({"storeDownSeconds": 4, "retriedAttempts": dict(retries), "workers": 2,
                    "seconds": round(time.monotonic() - started, 1)})
    report("store_down", figures)
    assert figures["lost"] == 0 and figures["completed"] == len(valid), figures
    assert sum(retries.values()) > 0, "the outage was never noticed"


# ----------------------------------------------------------------------------- a worker stalled past deadlines


@pytest.mark.chaos
def test_chaos_worker_stalled_past_the_deadlines(long_form, broker, topics, clips, spawn_worker, tmp_path):
    """SIGSTOP the only worker for 15 s (past its session timeout and its queued jobs' deadlines), then SIGCONT:
    it rejoins, the jobs whose deadline passed fail fast (deadline_exceeded), none is lost or left hanging."""
    env = worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP="0", HEARTBEAT_SECONDS="1")
    worker = spawn_worker(env, "staller")
    worker.wait_for_log("partitions assigned", 120)
    started = time.monotonic()
    publisher = Publisher(broker, topics)
    from datetime import datetime, timedelta, timezone

    deadline = (datetime.now(timezone.utc) + timedelta(seconds=10)).isoformat()
    valid = {publisher.job(build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time",
                                         size=128, deadline=deadline)) for _ in range(8)}
    publisher.flush()
    read_topic(broker, topics.completed, until=lambda r: len(r) >= 1, timeout=60)
    rss_start = rss_mb(worker.process.pid)
    worker.kill(signal.SIGSTOP)
    time.sleep(15)
    worker.kill(signal.SIGCONT)
    figures = tally(broker, topics, valid, {}, timeout=120)
    figures.update({"stalledSeconds": 15, "workers": 1, "seconds": round(time.monotonic() - started, 1),
                    "rssGrowthMb": round(rss_mb(worker.process.pid) - rss_start),
                    "unexpectedExits": int(worker.process.poll() is not None)})
    report("stall", figures)
    assert figures["lost"] == 0, figures
    assert set(figures["failedValid"]) <= {"deadline_exceeded"}, figures
    assert figures["completed"] + figures["failedValid"].get("deadline_exceeded", 0) >= len(valid), figures
    assert figures["unexpectedExits"] == 0


# ----------------------------------------------------------------------------- a producer that turns fatal


def _publish_and_wait(publisher, broker, topics, job: dict) -> list:
    """Publish `job` and read the completed topic until its completion is there (the records read)."""
    publisher.job(job)
    publisher.flush()
    return read_topic(broker, topics.completed, until=lambda r: job["jobId"] in {x["value"]["jobId"] for x in r})


def test_a_fatal_producer_error_is_survived(broker, topics, clips, tmp_path, start_worker, caplog):
    """Seen in the broker-restart scenario: a restarted broker without the idempotent producer's state answers
    OUT_OF_ORDER_SEQUENCE_NUMBER, which is fatal for that producer and used to end the worker's loop. The worker
    now replaces its producer and sends again what was not acknowledged. (The fatal error is injected here
    through the producer's error callback; the broker-restart scenario does not produce it every time.)"""
    from confluent_kafka import KafkaError

    worker = start_worker(worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP="0"))
    first = build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=64)
    publisher = Publisher(broker, topics)
    _publish_and_wait(publisher, broker, topics, first)
    old = worker.worker.producer
    worker.worker._note_fatal(KafkaError(KafkaError._FATAL, "injected: sequence desynchronization", fatal=True))
    second = build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=64)
    done = _publish_and_wait(publisher, broker, topics, second)
    assert second["jobId"] in {x["value"]["jobId"] for x in done}
    assert worker.worker.producer is not old and worker.thread.is_alive()
    assert any("replacing it" in r.getMessage() for r in caplog.records)


def test_a_redelivered_completed_job_is_answered_not_rendered_again(broker, topics, clips, tmp_path, start_worker):
    """Seen in the stall scenario: a worker frozen mid-render loses its partition, resumes, completes the job
    and gets the partition back; the redelivered record then failed `deadline_exceeded` although the video was
    made. A worker now answers a redelivery of a job it completed with the same completion event."""
    worker = start_worker(worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP="0"))
    job = build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=64)
    publisher = Publisher(broker, topics)
    _publish_and_wait(publisher, broker, topics, job)
    publisher.job(job)  # the same record again, as a redelivery would bring it
    publisher.flush()
    done = read_topic(broker, topics.completed, until=lambda r: len(r) >= 2, timeout=30)
    # The same event, completedAt and durations included: sent again, not rendered again.
    assert len(done) == 2 and done[0]["value"] == done[1]["value"]
    assert worker.thread.is_alive()


def test_succeeded_is_not_announced_before_the_completion_is_stored(broker, topics, clips, tmp_path, start_worker):
    """The status topic's "succeeded" (what GET /status shows) is sent once the completion event is acknowledged.
    Sent before it, a gateway could show "succeeded" without the completion's timings and sizes, or for a job
    whose completion never got out. Here the completion cannot even be queued until the test allows it."""
    import threading

    worker = start_worker(worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP="0"))
    allowed = threading.Event()
    refused = threading.Event()
    produce = worker.worker._produce

    def completion_held(topic, *args):
        if topic == topics.completed and not allowed.is_set():
            refused.set()
            return False  # as if the producer's queue were full: the worker sends it again a second later
        return produce(topic, *args)

    worker.worker._produce = completion_held
    job = build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=64)
    publisher = Publisher(broker, topics)
    publisher.job(job)
    publisher.flush()
    try:
        assert refused.wait(60), "the worker never tried to send the completion"
        statuses = read_topic(broker, topics.status, timeout=3)
        assert [x["value"]["state"] for x in statuses if x["key"] == job["jobId"]][-1] == "running"
    finally:
        allowed.set()  # a failed check still lets the worker finish and stop
    done = read_topic(broker, topics.completed, until=lambda r: job["jobId"] in {x["value"]["jobId"] for x in r})
    assert [x["value"]["jobId"] for x in done] == [job["jobId"]]
    statuses = read_topic(broker, topics.status, timeout=30, until=lambda r: any(
        x["key"] == job["jobId"] and x["value"]["state"] == "succeeded" for x in r))
    assert [x["value"]["state"] for x in statuses if x["key"] == job["jobId"]][-1] == "succeeded"
