"""`avatar-renderer worker`: the Kafka consumer loop.

One thread owns the consumer and producer callbacks (poll loop); renders run on a thread pool. A record's
partition is paused from the moment it is polled until its job's result is acknowledged, so each partition
has at most one job in flight and offsets advance in order; poll() keeps running meanwhile, so the worker
stays in its group however long a render takes. The offset is stored (then auto-committed) only after the
broker acknowledged the completion or failure event (and the DLQ copy): a crash before that redelivers the
request, and the re-render overwrites the same output object.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from . import metrics
from schemas.events import ce_headers, encode, now_iso
from .job_step import Outcome, run_job
from .settings import WorkerSettings
from .storage import open_storage

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    message: object  # confluent_kafka.Message
    revoked: bool = False
    outstanding: int = 0
    delivery_failed: bool = False
    outcome: Outcome | None = None
    started: float = field(default_factory=time.perf_counter)


def producer_config(settings: WorkerSettings) -> dict:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"{settings.worker_id}-producer",
        "enable.idempotence": True,  # acks=all, ordered, no duplicates from producer retries
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    }


def consumer_config(settings: WorkerSettings, stats_cb=None) -> dict:
    config = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.worker_id,
        "group.id": settings.group_id,
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 5),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        # A partition is re-fetched after every job (pause purges prefetched records): do not let the broker
        # hold each fetch for the 500 ms default when the topic is idle.
        "fetch.wait.max.ms": 50,
    }
    if settings.statistics_interval_ms and stats_cb:
        config["statistics.interval.ms"] = settings.statistics_interval_ms
        config["stats_cb"] = stats_cb
    return config


class Worker:
    def __init__(self, settings: WorkerSettings, storage=None):
        self.settings = settings
        self.topics = settings.topics
        self.storage = storage or open_storage(settings.output_uri, settings.s3_endpoint_url)
        self.stopping = threading.Event()  # SIGTERM: drain
        self.cancel = threading.Event()  # grace over: jobs stop retrying and are given back
        self.health = metrics.Health()
        self.pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="render")
        self.pending: dict[tuple[str, int], deque] = {}
        self.inflight: dict[tuple[str, int], InFlight] = {}
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.assigned: set[tuple[str, int]] = set()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        self.producer = Producer(producer_config(self.settings))
        self.consumer = Consumer(consumer_config(
            self.settings, lambda stats: metrics.record_lag(stats, self.topics.requested)))
        self.consumer.subscribe([self.topics.requested], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.health.reason = "joining the consumer group"
        log.info("worker started", extra={"fields": {"workerId": self.settings.worker_id,
                                                     "topic": self.topics.requested,
                                                     "group": self.settings.group_id,
                                                     "concurrency": self.settings.concurrency}})
        try:
            while not self.stopping.is_set():
                self._step(dispatch=True)
            self._drain()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
        return 0

    def _drain(self) -> None:
        """Finish in-flight jobs within the grace period, give back the rest, flush, commit, leave the group."""
        self.health.ready = False
        self.health.reason = "draining"
        log.info("draining", extra={"fields": {"inFlight": len(self.inflight), "graceSeconds": self.settings.drain_grace_seconds}})
        assignment = [TopicPartition(t, p) for t, p in self.assigned]
        if assignment:
            self.consumer.pause(assignment)
        self.pending.clear()
        deadline = time.monotonic() + self.settings.drain_grace_seconds
        while self.inflight and time.monotonic() < deadline:
            self._step(dispatch=False)
        self.cancel.set()
        given_back = [tp for tp, job in self.inflight.items() if job.outcome is None]
        self.producer.flush(15)
        self._collect()
        if given_back:
            log.warning("gave back jobs still rendering at the end of the grace period",
                        extra={"fields": {"partitions": [f"{t}[{p}]" for t, p in given_back]}})
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("final commit failed: %s", exc)
        self.consumer.close()  # leaves the group: its partitions move at once, not after a session timeout
        self.producer = None  # frees librdkafka's producer (and its broker connections) now
        log.info("worker stopped", extra={"fields": {"gaveBack": len(given_back)}})

    # ------------------------------------------------------------------ loop

    def _step(self, dispatch: bool) -> None:
        self.health.tick()
        message = self.consumer.poll(0.02 if self.inflight else 0.1)
        if message is not None:
            self._accept(message, dispatch)
        self._collect()
        if dispatch:
            self._dispatch()
        self.producer.poll(0)

    def _accept(self, message, dispatch: bool) -> None:
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", message.error())
            return
        if not dispatch:
            return  # draining: not started, offset not stored, so it is redelivered
        tp = (message.topic(), message.partition())
        if tp not in self.pending:
            self.pending[tp] = deque()
        self.pending[tp].append(message)
        self.consumer.pause([TopicPartition(*tp)])

    def _dispatch(self) -> None:
        for tp, backlog in list(self.pending.items()):
            if len(self.inflight) >= self.settings.concurrency:
                return
            if tp in self.inflight or not backlog:
                continue
            message = backlog.popleft()
            self.inflight[tp] = InFlight(message)
            self.pool.submit(self._job, tp, message)

    def _job(self, tp, message) -> None:
        metrics.IN_PROGRESS.inc()
        try:
            key = message.key().decode("utf-8", "replace") if message.key() else None
            kind, ts = message.timestamp()
            outcome = run_job(message.value(), key, ts / 1000 if kind and ts > 0 else None, self.settings,
                              self.storage, self.cancel, self._publish_running)
        except BaseException as exc:  # a bug must not lose the record: give it back
            log.exception("job crashed: %s", exc)
            outcome = Outcome("given_back", "unknown")
        finally:
            metrics.IN_PROGRESS.dec()
        self.done.put((tp, outcome))

    # ------------------------------------------------------------------ results

    def _collect(self) -> None:
        while True:
            try:
                tp, outcome = self.done.get_nowait()
            except queue.Empty:
                return
            job = self.inflight.get(tp)
            if job is None:
                continue
            job.outcome = outcome
            if outcome.state == "given_back":
                self._release(tp, store=False)
            else:
                self._publish_outcome(tp, job, outcome)

    def _publish_outcome(self, tp, job: InFlight, outcome: Outcome) -> None:
        message = job.message
        traceparent = outcome.request.traceparent if outcome.request else None
        records = []
        if outcome.state == "succeeded":
            records.append((self.topics.completed, encode("render.completed.v1", outcome.completion),
                            ce_headers("render.completed.v1", outcome.job_id, traceparent)))
            status = {"jobId": outcome.job_id, "state": "succeeded", "attempt": outcome.attempts,
                      "outputUri": outcome.completion["outputUri"], "engine": outcome.engine,
                      "mode": outcome.mode, "workerId": self.settings.worker_id, "updatedAt": now_iso()}
        else:
            failure = outcome.failure
            records.append((self.topics.failed, encode("render.failed.v1", failure),
                            ce_headers("render.failed.v1", outcome.job_id, traceparent)))
            status = {"jobId": outcome.job_id, "state": "failed", "attempt": outcome.attempts,
                      "error": {k: failure[k] for k in ("code", "message", "retryable")},
                      "workerId": self.settings.worker_id, "updatedAt": now_iso()}
            if outcome.dead_letter:
                records.append((self.topics.dlq, message.value(), self._dlq_headers(message, outcome)))
        self._produce_status(status, traceparent)
        job.outstanding = len(records)
        for topic, value, headers in records:
            self.producer.produce(topic, value=value, key=outcome.job_id.encode(), headers=headers,
                                  on_delivery=lambda err, msg, tp=tp: self._delivered(tp, err, msg))

    def _dlq_headers(self, message, outcome: Outcome) -> list:
        failure = outcome.failure
        own = [
            ("dlq_origin_topic", message.topic()),
            ("dlq_origin_partition", str(message.partition())),
            ("dlq_origin_offset", str(message.offset())),
            ("dlq_error_class", outcome.error_class),
            ("dlq_error_code", failure["code"]),
            ("dlq_error_message", failure["message"][:2000]),
            ("dlq_attempts", str(outcome.attempts)),
            ("dlq_worker_id", self.settings.worker_id),
            ("dlq_time", now_iso()),
        ]
        original = [(k, v) for k, v in (message.headers() or []) if not k.startswith("dlq_")]
        return original + [(k, v.encode()) for k, v in own]

    def _delivered(self, tp, err, msg) -> None:
        job = self.inflight.get(tp)
        if err is not None:
            metrics.PUBLISH_FAILURES.labels(msg.topic() if msg else "unknown").inc()
            log.error("event not acknowledged: %s", err)
        if job is None:
            return
        if err is not None:
            job.delivery_failed = True
        job.outstanding -= 1
        if job.outstanding > 0:
            return
        outcome = job.outcome
        if job.delivery_failed:
            self._release(tp, store=False, rewind=True)
            return
        label = outcome.state
        if outcome.state == "failed":
            code = outcome.failure["code"]
            label = "expired" if code == "deadline_exceeded" else "failed"
            metrics.DLQ.labels(code).inc()
            metrics.JOBS.labels("dead_lettered").inc()
        metrics.JOBS.labels(label).inc()
        log.info("job %s", label, extra={"job_id": outcome.job_id, "fields": {
            "attempt": outcome.attempts, "seconds": round(time.perf_counter() - job.started, 3),
            **({"code": outcome.failure["code"]} if outcome.failure else {"outputUri": outcome.completion["outputUri"]})}})
        metrics.RENDER_LATENCY.labels(outcome.mode, outcome.engine, label).observe(time.perf_counter() - job.started)
        self._release(tp, store=True)

    def _release(self, tp, store: bool, rewind: bool = False) -> None:
        job = self.inflight.pop(tp)
        message = job.message
        if tp in self.assigned and not job.revoked:
            partition = TopicPartition(message.topic(), message.partition(), message.offset() + (1 if store else 0))
            if store:
                self.consumer.store_offsets(offsets=[partition])
            elif rewind or job.outcome is None or job.outcome.state == "given_back":
                # Not done: fetch this record again (here or, after a rebalance, elsewhere).
                backlog = self.pending.setdefault(tp, deque())
                if not self.stopping.is_set():
                    backlog.appendleft(message)
            if not self.pending.get(tp) and not self.stopping.is_set():
                self.consumer.resume([TopicPartition(*tp)])

    def _publish_running(self, request, attempt: int) -> None:
        self._produce_status({"jobId": request.job_id, "state": "running", "attempt": attempt,
                              "qualityMode": request.quality_mode, "workerId": self.settings.worker_id,
                              "updatedAt": now_iso()}, request.traceparent)

    def _produce_status(self, status: dict, traceparent: str | None) -> None:
        def delivered(err, msg):
            if err is not None:
                metrics.PUBLISH_FAILURES.labels(self.topics.status).inc()
                log.warning("status event not acknowledged: %s", err)

        self.producer.produce(self.topics.status, key=status["jobId"].encode(), value=encode("render.status.v1", status),
                              headers=ce_headers("render.status.v1", status["jobId"], traceparent), on_delivery=delivered)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer, partitions) -> None:
        metrics.REBALANCES.labels("assign").inc()
        self.assigned.update((p.topic, p.partition) for p in partitions)
        metrics.ASSIGNED.set(len(self.assigned))
        self.health.ready = not self.stopping.is_set()
        self.health.reason = "ready"
        log.info("partitions assigned", extra={"fields": {"partitions": [p.partition for p in partitions]}})

    def _on_revoke(self, consumer, partitions, kind: str = "revoke") -> None:
        metrics.REBALANCES.labels(kind).inc()
        for p in partitions:
            tp = (p.topic, p.partition)
            self.assigned.discard(tp)
            self.pending.pop(tp, None)
            if tp in self.inflight:
                self.inflight[tp].revoked = True  # its result is still published; the new owner re-renders it
        metrics.ASSIGNED.set(len(self.assigned))
        log.info("partitions %s", "lost" if kind == "lost" else "revoked",
                 extra={"fields": {"partitions": [p.partition for p in partitions]}})

    def _on_lost(self, consumer, partitions) -> None:
        self._on_revoke(consumer, partitions, "lost")
