"""The one place Kafka clients are configured and built, and where a render request is published.

Used by the worker (worker/consumer.py), the gateways' Kafka backend, `avatar-renderer submit`, the demo and
the worker bench. Every client logs through Python logging with repeats rate-limited, so a broker that is down
gives one line now and then instead of librdkafka's "Connection refused" every few milliseconds.
`RequestPublisher` is the gateways' request producer, replaced when a broker lost its state under it.
`ensure_broker_reachable` answers quickly whether a broker is there at all, with one sentence when not.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

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


class RequestPublisher:
    """A request producer for a long-lived front door (the gateways' Kafka backend), replaced when it breaks.

    An idempotent producer does not outlive a broker that lost its producer state (a memory broker restarted,
    such as the embedded one): librdkafka either calls it fatal (OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID
    with messages in flight; seen by the error callback or raised at produce) or retries the unknown producer id
    until every message times out. So the producer is replaced before the next request when it reported a fatal
    error or lost every broker (a fresh producer costs one InitProducerId), and after a request it failed to
    publish; the request that failed is answered BackendUnavailable, the next ones use the new producer.
    Thread-safe: requests publish concurrently, one replaces."""

    def __init__(self, bootstrap: str, client_id: str, **extra: Any):
        self._build = lambda on_error: request_producer(bootstrap, client_id, error_cb=on_error, **extra)
        self._lock = threading.Lock()
        self._generation = 0
        self._broken: str | None = None  # why the current producer must be replaced (None: it is sound)
        self._answered = -1  # the last generation a broker answered (one that never did is not replaced in vain)
        self._producer: Producer | None = self._new()

    def _new(self) -> Producer:
        generation = self._generation
        return self._build(lambda error: self.note_error(error, generation))

    def note_error(self, error: KafkaError, generation: int | None = None) -> None:
        """The producer's error callback (tests inject errors here). A fatal error, or every broker gone (one
        that comes back may not know this producer), has the producer replaced before its next use."""
        if error.fatal():
            log.error("the request producer hit a fatal error: %s", error)
            self._mark(generation, f"fatal error {error}")
            return
        librdkafka_log.warning("producer: %s", error)  # "Connection refused" and the like: rate-limited
        if error.code() == KafkaError._ALL_BROKERS_DOWN and generation in (None, self._answered):
            self._mark(generation, "every broker went away (one that comes back may not know it)")

    def _mark(self, generation: int | None, reason: str) -> None:
        """The producer of `generation` (None: the current one) must be replaced; a retired one's news is old."""
        with self._lock:
            if generation in (None, self._generation) and self._broken is None:
                self._broken = reason

    @property
    def broken(self) -> str | None:
        """Why the current producer will be replaced before its next use; None while it is sound."""
        with self._lock:
            producer, generation = self._producer, self._generation
        if producer is not None:
            try:
                producer.poll(0)  # serves the error callbacks queued since it was last used
            except KafkaException as exc:
                self._mark(generation, f"fatal error {exc.args[0]}")
        with self._lock:
            return self._broken

    def producer(self) -> tuple[Producer, int]:
        """The producer to use now (a new one when the current one broke) and its generation."""
        if self.broken is None:
            with self._lock:
                if self._producer is not None and self._broken is None:
                    return self._producer, self._generation
        with self._lock:
            if self._producer is None:
                raise BackendUnavailable("The request publisher is closed.")
            if self._broken is not None:
                log.warning("replacing the request producer: %s", self._broken)
                self._generation += 1
                self._broken = None
                self._producer = self._new()  # the old one is freed once the requests still using it are done
            return self._producer, self._generation

    def publish(self, topics: Topics, request: dict, **kwargs: Any) -> None:
        """publish_request with the current producer; a producer that failed it is replaced for the next one."""
        producer, generation = self.producer()
        try:
            publish_request(producer, topics, request, **kwargs)
        except KafkaException as exc:
            if not exc.args[0].fatal():
                raise
            self._mark(generation, f"fatal error {exc.args[0]}")  # raised at produce/flush
            raise BackendUnavailable(f"The broker did not take the render request: {exc.args[0].str()}.") from None
        except BackendUnavailable as exc:
            self._mark(generation, f"a request was not acknowledged ({exc.message})")
            raise
        self._answered = generation

    def list_topics(self, topic: str | None = None, timeout: float = 3.0):
        """The producer's view of the cluster (a readiness probe); KafkaException when no broker answers."""
        producer, generation = self.producer()
        metadata = producer.list_topics(topic, timeout=timeout)
        self._answered = generation
        return metadata

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(timeout)


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
