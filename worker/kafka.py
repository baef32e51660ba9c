"""The one place Kafka clients are configured and built, and where a render request is published.

Used by the worker (worker/consumer.py), the gateways' Kafka backend, `avatar-renderer submit`, the demo and
the worker bench. Every client logs through Python logging with repeats rate-limited, so a broker that is down
gives one line now and then instead of librdkafka's "Connection refused" every few milliseconds.
`ensure_broker_reachable` answers quickly whether a broker is there at all, with one sentence when not.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaException, Producer

from schemas.errors import BackendUnavailable
from schemas.events import ce_headers, encode

from .settings import Topics, WorkerSettings

log = logging.getLogger(__name__)

REPEAT_SECONDS = 30.0  # the same librdkafka message is logged at most once per this many seconds


class _OncePerInterval(logging.Filter):
    """Drops a librdkafka log line seen (digits aside) less than REPEAT_SECONDS ago."""

    def __init__(self, interval: float = REPEAT_SECONDS):
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval) < self.interval:
                return False
            self._last[key] = now
            if len(self._last) > 1000:  # a bounded memory, whatever the broker says
                self._last.clear()
        return True


librdkafka_log = logging.getLogger("librdkafka")
librdkafka_log.addFilter(_OncePerInterval())


def client_config(bootstrap: str, client_id: str, **extra: Any) -> dict:
    """What every client shares: the bootstrap address, a client id, and logs through Python logging."""
    return {"bootstrap.servers": bootstrap, "client.id": client_id, "logger": librdkafka_log, **extra}


def producer_config(settings: WorkerSettings) -> dict:
    """The worker's producer."""
    return client_config(
        settings.bootstrap_servers, f"{settings.worker_id}-producer",
        **{"enable.idempotence": True,  # acks=all, ordered, no duplicates from producer retries
           "acks": "all", "linger.ms": 5, "message.timeout.ms": 30000},
    )


def consumer_config(settings: WorkerSettings, stats_cb: Callable[[str], None] | None = None) -> dict:
    """The worker's consumer: a group member that stores offsets only after a job's events are acknowledged."""
    config = client_config(
        settings.bootstrap_servers, settings.worker_id,
        **{"group.id": settings.group_id,
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
           "fetch.wait.max.ms": 50},
    )
    if settings.statistics_interval_ms and stats_cb:
        config["statistics.interval.ms"] = settings.statistics_interval_ms
        config["stats_cb"] = stats_cb
    return config


def request_producer(bootstrap: str, client_id: str, **extra: Any) -> Producer:
    """A producer for render requests (gateway, submit, demo, bench): idempotent, acks=all."""
    return Producer(client_config(bootstrap, client_id, **{"enable.idempotence": True, "acks": "all",
                                                           "message.timeout.ms": 15000, **extra}))


def reader(bootstrap: str, client_id: str, **extra: Any) -> Consumer:
    """A consumer that reads topics by assignment (no group membership, nothing committed)."""
    return Consumer(client_config(bootstrap, client_id, **{"group.id": f"{client_id}-{uuid.uuid4().hex[:12]}",
                                                           "enable.auto.commit": False,
                                                           "auto.offset.reset": "earliest", **extra}))


def ensure_broker_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise BackendUnavailable (one sentence naming KAFKA_BOOTSTRAP_SERVERS) unless a broker answers in time."""
    probe = Producer({"bootstrap.servers": bootstrap, "client.id": "avatar-renderer-probe",
                      "log_level": 0,  # silent: the sentence below says what the log lines would
                      "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000))})
    try:
        probe.list_topics(timeout=timeout)
    except KafkaException:
        raise BackendUnavailable(
            f"No Kafka broker answered at {bootstrap} within {timeout:g} s: start one (`avatar-renderer broker`) "
            f"or point KAFKA_BOOTSTRAP_SERVERS at a running broker."
        ) from None
    finally:
        del probe


def publish_request(producer: Producer, topics: Topics, request: dict, *, status: dict | None = None,
                    raw: bytes | None = None, partition: int | None = None, timeout: float = 15.0) -> None:
    """Publish a render.requested.v1 event keyed by its jobId, after its `queued` status when one is given.

    The status goes first, in the job's status partition, so a worker's "running" always follows it. `raw`
    publishes those bytes as the request value unchecked (tests of malformed records). Raises InvalidEvent
    when the request or status breaks its schema, BackendUnavailable when the broker does not acknowledge.
    """
    job_id = request.get("jobId") or str(uuid.uuid4())
    value = raw if raw is not None else encode("render.requested.v1", request)
    status_value = encode("render.status.v1", status) if status is not None else None
    errors: list[str] = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(str(err))

    if status_value is not None:
        producer.produce(topics.status, key=job_id.encode(), value=status_value,
                         headers=ce_headers("render.status.v1", job_id), on_delivery=delivered)
    placement = {} if partition is None else {"partition": partition}
    producer.produce(topics.requested, key=job_id.encode(), value=value, on_delivery=delivered,
                     headers=ce_headers("render.requested.v1", job_id, request.get("traceparent")),
                     **placement)
    if producer.flush(timeout) or errors:
        raise BackendUnavailable(
            f"The broker did not acknowledge the render request: {'; '.join(errors) or f'no answer in {timeout:g} s'}.")


def ensure_fleet_topics(bootstrap: str, topics: Topics, lanes: list[str], timeout: float = 15.0) -> None:
    """Create the lanes (as many partitions as the request topic, else 3) and the compacted workers topic
    when missing, as a worker starts; a broker that forbids it (ACLs) leaves it to whoever made the others."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap, "avatar-renderer-admin"))
    existing = admin.list_topics(timeout=timeout).topics
    requested = existing.get(topics.requested)
    partitions = len(requested.partitions) if requested is not None and requested.partitions else 3
    # Replication factor -1: the broker's default.replication.factor (a production cluster's 3, the embedded
    # broker's 1), never a hard-coded 1 that would make a lane the one unreplicated topic of a cluster.
    wanted = [NewTopic(lane, partitions, -1) for lane in lanes if lane not in existing]
    if topics.workers not in existing:
        wanted.append(NewTopic(topics.workers, 1, -1, config={"cleanup.policy": "compact"}))
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                log.warning("could not create topic %s: %s", name, exc.args[0].str())
    deadline = time.monotonic() + timeout
    names = {t.topic for t in wanted}
    while not names <= set(admin.list_topics(timeout=timeout).topics) and time.monotonic() < deadline:
        time.sleep(0.1)
