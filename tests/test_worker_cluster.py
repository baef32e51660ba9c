"""Workers as `avatar-renderer worker` subprocesses sharing one group on the embedded broker: partitions are
shared, a worker killed with SIGKILL mid-job loses nothing (another completes it, one output object), and
SIGTERM drains (the job in flight finishes, its offset is committed, the process leaves)."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import job_ids_in, read_topic, worker_env
from cli.submit import build_request, publish

pytestmark = pytest.mark.slow


def current_partitions(worker, topic: str | None = None) -> set[int]:
    """Partitions the worker owns now (of `topic` only, when given: a worker also owns lane partitions)."""
    owned: set[int] = set()
    for entry in worker.logs():
        if entry.get("msg") not in ("partitions assigned", "partitions revoked", "partitions lost"):
            continue
        topics = entry.get("topics") or [topic] * len(entry["partitions"])
        changed = {p for p, t in zip(entry["partitions"], topics) if topic is None or t == topic}
        if entry["msg"] == "partitions assigned":
            owned |= changed
        else:
            owned -= changed
    return owned


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_workers_share_partitions_and_survive_a_sigkill(broker, topics, clips, tmp_path, spawn_worker):
    out_dir = tmp_path / "renders"
    env = worker_env(broker, topics, clips, out_dir)
    workers = [spawn_worker(env, f"w{i}") for i in range(3)]
    wait_until(lambda: all(current_partitions(w, topics.requested) for w in workers), 120,
               "all three workers to own a partition")
    owned = [current_partitions(w, topics.requested) for w in workers]
    assert sorted(p for s in owned for p in s) == [0, 1, 2]

    short = [build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=128) for _ in range(6)]
    for i, request in enumerate(short):
        publish(broker, topics, request, partition=i % 3)
    ids = {r["jobId"] for r in short}
    done = read_topic(broker, topics.completed, until=lambda r: ids <= job_ids_in(r), timeout=120)
    assert ids <= job_ids_in(done)
    # Rendered from the real_time normal lane, whose partitions the sticky assignor spreads over the workers
    # (balancing the count of all the partitions each owns, lanes and public topic together): each job by the
    # owner of the lane partition the router put it in. (Which partition a job lands in follows its random id,
    # so "at least two workers rendered" would fail now and then by chance.)
    lane = f"{topics.lane_prefix}.real_time.normal"
    lane_owner = {p: w.name for w in workers for p in current_partitions(w, lane)}
    assert sorted(lane_owner) == [0, 1, 2] and len(set(lane_owner.values())) >= 2, lane_owner
    routed = read_topic(broker, lane, until=lambda r: ids <= {x["key"] for x in r}, timeout=30)
    partition_of = {x["key"]: x["partition"] for x in routed}
    assert {r["value"]["jobId"]: r["value"]["workerId"] for r in done if r["value"]["jobId"] in ids} == \
        {job_id: lane_owner[partition_of[job_id]] for job_id in ids}

    # A long job; kill its worker while it renders.
    long_job = build_request(str(clips / "portrait.jpg"), str(clips / "minute.wav"), "real_time", size=256)
    publish(broker, topics, long_job)
    running = read_topic(broker, topics.status, timeout=60, until=lambda r: any(
        x["key"] == long_job["jobId"] and x["value"]["state"] == "running" for x in r))
    victim_name = next(x["value"]["workerId"] for x in running
                       if x["key"] == long_job["jobId"] and x["value"]["state"] == "running")
    victim = next(w for w in workers if w.name == victim_name)
    victim.kill(signal.SIGKILL)
    victim.process.wait(10)

    done = read_topic(broker, topics.completed, until=lambda r: long_job["jobId"] in job_ids_in(r), timeout=120)
    repeats = [r["value"] for r in done if r["value"]["jobId"] == long_job["jobId"]]
    assert {e["outputUri"] for e in repeats} == {(out_dir.resolve() / f"{long_job['jobId']}.mp4").as_uri()}
    survivors = {w.name for w in workers} - {victim_name}
    assert [e["workerId"] for e in repeats] == [repeats[0]["workerId"]] and repeats[0]["workerId"] in survivors
    assert not any(e.get("jobId") == long_job["jobId"] and e["msg"] == "job succeeded" for e in victim.logs())
    # The survivor logs "job succeeded" from the delivery callback of that completion, served by its next
    # poll(): the event can reach this reader a moment before the line reaches the log.
    wait_until(lambda: any(e.get("jobId") == long_job["jobId"] and e["msg"] == "job succeeded"
                           for w in workers if w.name in survivors for e in w.logs()),
               10, "the survivor to log the job's success")

    # Nothing lost: every job has a completion; one object per job, no leftovers.
    every = ids | {long_job["jobId"]}
    assert every <= job_ids_in(done)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{j}.mp4" for j in every)
    counts = Counter(r["value"]["jobId"] for r in done)
    assert all(counts[j] == 1 for j in ids), counts  # the short jobs were not re-rendered by the rebalance
    assert read_topic(broker, topics.dlq, timeout=1) == []


def test_sigterm_drains_the_job_in_flight_and_commits(broker, topics, clips, tmp_path, spawn_worker):
    env = worker_env(broker, topics, clips, tmp_path / "renders", DRAIN_GRACE_SECONDS=60)
    worker = spawn_worker(env, "drainer")
    wait_until(lambda: current_partitions(worker), 90, "the worker to join")
    job = build_request(str(clips / "portrait.jpg"), str(clips / "minute.wav"), "real_time", size=256)
    publish(broker, topics, job, partition=1)
    read_topic(broker, topics.status, timeout=60, until=lambda r: any(
        x["key"] == job["jobId"] and x["value"]["state"] == "running" for x in r))
    worker.kill(signal.SIGTERM)
    assert worker.process.wait(60) == 0
    done = read_topic(broker, topics.completed, until=lambda r: job["jobId"] in job_ids_in(r), timeout=10)
    assert job["jobId"] in job_ids_in(done)
    messages = [e["msg"] for e in worker.logs()]
    assert "draining" in messages and "worker stopped" in messages
    assert next(e for e in worker.logs() if e["msg"] == "draining")["inFlight"] == 1  # it drained a job, not nothing
    stopped = next(e for e in worker.logs() if e["msg"] == "worker stopped")
    assert stopped["gaveBack"] == 0

    consumer = Consumer({"bootstrap.servers": broker, "group.id": env["KAFKA_GROUP_ID"]})
    try:
        committed = consumer.committed([TopicPartition(topics.requested, 1)], timeout=10)
    finally:
        consumer.close()
    assert committed[0].offset == 1  # the drained job's offset, stored after its completion was acknowledged


def test_sigterm_gives_back_a_job_that_cannot_finish_in_the_grace_period(broker, topics, clips, tmp_path, spawn_worker):
    env = worker_env(broker, topics, clips, tmp_path / "renders", DRAIN_GRACE_SECONDS=0)
    first = spawn_worker(env, "quitter")
    wait_until(lambda: current_partitions(first), 90, "the worker to join")
    job = build_request(str(clips / "portrait.jpg"), str(clips / "minute.wav"), "real_time", size=256)
    publish(broker, topics, job, partition=2)
    read_topic(broker, topics.status, timeout=60, until=lambda r: any(
        x["key"] == job["jobId"] and x["value"]["state"] == "running" for x in r))
    first.kill(signal.SIGTERM)
    assert first.process.wait(30) == 0
    assert next(e for e in first.logs() if e["msg"] == "worker stopped")["gaveBack"] == 1
    second = spawn_worker(env, "successor")
    done = read_topic(broker, topics.completed, until=lambda r: job["jobId"] in job_ids_in(r), timeout=120)
    events = [r["value"] for r in done if r["value"]["jobId"] == job["jobId"]]
    assert events[-1]["workerId"] == "successor"
    assert second.process.poll() is None
