"""Hostile records against the real embedded broker and a real worker (issue 8, bugs 3 and 4).

Rule: every record ends in exactly one of completed / failed+DLQ after bounded attempts, whatever it contains;
the events the worker produces stay small; the DLQ copy keeps the original bytes; no record blocks the valid
work behind it, and refusing a malformed record costs milliseconds, not a second.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from conftest import job_ids_in, read_topic, worker_env
from cli.submit import build_request
from schemas.events import ce_headers, encode

SMALL_EVENT = 64 * 1024  # every event the worker writes about a record stays far below the 1 MB limit


def producer(broker: str) -> Producer:
    return Producer({"bootstrap.servers": broker, "enable.idempotence": True, "acks": "all", "linger.ms": 5})


def send(prod: Producer, topic: str, value: bytes, key: bytes | None = None, partition: int = 0,
         headers: list | None = None) -> None:
    prod.produce(topic, value=value, key=key, partition=partition, headers=headers)


def flush(prod: Producer) -> None:
    assert prod.flush(30) == 0, "the broker did not acknowledge the test records"


def valid_request(clips: Path) -> dict:
    return build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=64)


class JobStepBug(BaseException):
    """Stands for a bug in the job step: not an Exception, so the step's own error handling lets it through."""


@pytest.fixture
def buggy_worker():
    """A real Worker on a thread whose render dies (JobStepBug) on jobs whose id is in `crash_ids`."""
    from worker.consumer import Worker
    from worker.settings import WorkerSettings

    started = []

    def start(env: dict, crash_ids: set[str]) -> tuple[Worker, threading.Thread]:
        worker = Worker(WorkerSettings.from_env(env))
        render = worker.step.render

        def render_with_a_bug(request):
            if any(job_id in str(request.out_path) for job_id in crash_ids):
                raise JobStepBug("a bug in the job step")
            return render(request)

        worker.step.render = render_with_a_bug
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker, thread

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(30)


def test_poison_records_end_in_the_dlq_once_and_the_valid_job_behind_them_completes(
        broker, topics, clips, tmp_path, buggy_worker):
    crash_id = str(uuid.uuid4())
    base = valid_request(clips)
    poison = {
        "900 KB jobId": json.dumps({**base, "jobId": "j" * 900_000}).encode(),
        "900 KB non-ASCII avatarUri": json.dumps({**valid_request(clips), "avatarUri": "ü" * 450_000},
                                                 ensure_ascii=False).encode(),
        "100,000-deep array": b"[" * 100_000 + b"]" * 100_000,
        "100,000-deep array in an object": b'{"jobId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "900-deep array as jobId": b'{"jobId": ' + b"[" * 900 + b"]" * 900 + b"}",
        "job thread crash": json.dumps({**valid_request(clips), "jobId": crash_id}).encode(),
        "not JSON, 900 KB key": b"\xff\xfe not json",
    }
    v2 = valid_request(clips)
    poison["ce_type of another version"] = encode("render.requested.v1", v2)
    spec2 = valid_request(clips)
    poison["ce_specversion 2.0"] = encode("render.requested.v1", spec2)
    keys = {"not JSON, 900 KB key": b"k" * 900_000}
    headers = {"ce_type of another version": [("ce_type", b"avatar.render.requested.v2"), ("ce_specversion", b"1.0")],
               "ce_specversion 2.0": [("ce_type", b"avatar.render.requested.v1"), ("ce_specversion", b"2.0")]}
    good = valid_request(clips)
    prod = producer(broker)
    for name, value in poison.items():
        assert len(value) + len(keys.get(name, b"")) < 1_000_000
        send(prod, topics.requested, value, key=keys.get(name, b"poison"), partition=0, headers=headers.get(name))
    send(prod, topics.requested, encode("render.requested.v1", good), key=good["jobId"].encode(), partition=0,
         headers=ce_headers("render.requested.v1", good["jobId"]))
    flush(prod)

    _, thread = buggy_worker(worker_env(broker, topics, clips, tmp_path / "renders", MAX_ATTEMPTS=3), {crash_id})
    done = read_topic(broker, topics.completed, until=lambda r: good["jobId"] in job_ids_in(r), timeout=120)
    assert good["jobId"] in job_ids_in(done), "the valid job behind the poison records never completed"
    assert thread.is_alive(), "the worker loop died"

    read_topic(broker, topics.dlq, until=lambda r: len(r) >= len(poison), timeout=30, raw=True)
    time.sleep(2)  # a second copy of anything would arrive by now
    dlq = read_topic(broker, topics.dlq, until=lambda r: len(r) > len(poison), timeout=5, raw=True)
    assert sorted(r["value"] for r in dlq) == sorted(poison.values())  # each once, with its original bytes
    by_value = {r["value"]: r for r in dlq}
    assert by_value[poison["job thread crash"]]["headers"]["dlq_error_code"] == "internal_error"
    assert by_value[poison["job thread crash"]]["headers"]["dlq_attempts"] == "3"
    for name in ("ce_type of another version", "ce_specversion 2.0"):
        assert by_value[poison[name]]["headers"]["dlq_error_code"] == "unsupported_event_version", name
    assert not (tmp_path / "renders" / f"{v2['jobId']}.mp4").exists(), "a v2 event was rendered as v1"
    for name in ("100,000-deep array", "100,000-deep array in an object"):
        assert by_value[poison[name]]["headers"]["dlq_error_code"] == "malformed_json", name
    assert by_value[poison["900-deep array as jobId"]]["headers"]["dlq_error_code"] in ("malformed_json", "schema_violation")

    failed = read_topic(broker, topics.failed, until=lambda r: len(r) >= len(poison), timeout=30)
    assert len(failed) == len(poison)
    statuses = read_topic(broker, topics.status, timeout=5, until=lambda r: False)
    for record in failed + statuses + dlq:
        assert len(record["key"] or "") < 1000 and len(json.dumps(record["headers"])) < SMALL_EVENT
    for record in failed + statuses:
        assert len(json.dumps(record["value"])) < SMALL_EVENT
    long_id = next(r["value"] for r in failed if r["value"]["message"].startswith("render.requested.v1 invalid at jobId"))
    assert long_id["jobId"].startswith("unreadable-") and len(long_id["jobId"]) < 100
    assert thread.is_alive()


def test_a_flood_of_malformed_records_does_not_starve_valid_jobs(broker, topics, clips, tmp_path, start_worker):
    """300 malformed records among 5 valid jobs on every partition: refusals cost milliseconds each."""
    malformed, valid = 300, 5
    worker = start_worker(worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP=0))
    deadline = time.monotonic() + 60
    while not worker.worker.health.ready:  # the group is joined: time the records, not the start-up
        assert time.monotonic() < deadline, "the worker never joined its group"
        time.sleep(0.1)

    def finished() -> float:  # records this process's workers finished (acknowledged): dead-lettered or done
        return sum(REGISTRY.get_sample_value("avatar_jobs_total", {"outcome": o}) or 0
                   for o in ("dead_lettered", "succeeded"))

    def dead_lettered() -> float:
        return REGISTRY.get_sample_value("avatar_jobs_total", {"outcome": "dead_lettered"}) or 0

    before, before_dlq = finished(), dead_lettered()
    prod = producer(broker)
    goods = [valid_request(clips) for _ in range(valid)]
    started = time.monotonic()
    for i in range(malformed):
        kind = i % 3
        value = (b"{not json" if kind == 0 else json.dumps({"jobId": str(uuid.uuid4())}).encode() if kind == 1
                 else json.dumps({**valid_request(clips), "size": 513}).encode())
        send(prod, topics.requested, value, key=str(i).encode(), partition=i % 3)
        if i % 60 == 31:  # a valid job every 60 records, on partitions 1, 2, 0, 1, 2
            good = goods[i // 60]
            send(prod, topics.requested, encode("render.requested.v1", good), key=good["jobId"].encode(),
                 partition=(i // 60 + 1) % 3)
    flush(prod)
    published = time.monotonic() - started
    while dead_lettered() < before_dlq + malformed and time.monotonic() - started < 180:
        time.sleep(0.01)
    refused = time.monotonic() - started
    while finished() < before + malformed + valid and time.monotonic() - started < 180:
        time.sleep(0.01)
    seconds = time.monotonic() - started
    rate = (malformed + valid) / seconds
    print(f"\nflood: {malformed} malformed + {valid} valid records handled in {seconds:.1f} s = {rate:.1f} records/s; "
          f"the {malformed} malformed ones refused within {refused:.1f} s of the first publish "
          f"(publishing took {published:.1f} s)")
    ids = {g["jobId"] for g in goods}
    done = read_topic(broker, topics.completed, until=lambda r: ids <= job_ids_in(r), timeout=30)
    dlq = read_topic(broker, topics.dlq, until=lambda r: len(r) >= malformed, timeout=30)
    assert ids <= job_ids_in(done) and len(dlq) == malformed
    # The old worker paused, re-fetched and awaited acknowledgements record by record: ~25 s for these 300
    # refusals on this machine (~1 s per record in the chaos run), against ~1-2 s now. Generous for a slow,
    # busy machine, still far out of the old worker's reach.
    assert refused < 12, f"refusing {malformed} records took {refused:.1f} s"


def test_a_record_too_large_to_copy_whole_still_reaches_the_dlq_once(broker, topics, clips, tmp_path, start_worker):
    """A record just under the producer's 1,000,000-byte limit cannot be copied with the DLQ headers added:
    produce() raises MSG_SIZE_TOO_LARGE. The worker must neither die nor retry it forever: the DLQ gets it
    once, without the value (its size and SHA-256 in headers), and the valid job behind it completes."""
    import hashlib

    value = b"x" * 999_900
    good = valid_request(clips)
    prod = producer(broker)
    send(prod, topics.requested, value, key=b"big", partition=1)
    send(prod, topics.requested, encode("render.requested.v1", good), key=good["jobId"].encode(), partition=1)
    flush(prod)
    worker = start_worker(worker_env(broker, topics, clips, tmp_path / "renders", WORKER_WARMUP=0))
    done = read_topic(broker, topics.completed, until=lambda r: good["jobId"] in job_ids_in(r), timeout=90)
    assert good["jobId"] in job_ids_in(done) and worker.thread.is_alive()
    read_topic(broker, topics.dlq, until=lambda r: len(r) >= 1, timeout=30, raw=True)
    time.sleep(2)
    dlq = read_topic(broker, topics.dlq, until=lambda r: len(r) > 1, timeout=5, raw=True)
    assert len(dlq) == 1
    headers = dlq[0]["headers"]
    assert headers["dlq_error_code"] == "malformed_json" and headers["dlq_value_dropped_bytes"] == str(len(value))
    assert headers["dlq_value_sha256"] == hashlib.sha256(value).hexdigest() and not dlq[0]["value"]
