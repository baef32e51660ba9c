"""The front doors' Kafka backend: publish render.requested.v1, follow the status and completion topics.

Statuses come from the compacted status topic (keyed by jobId; queued/running/succeeded/failed, written by the
workers) merged with the durations of render.completed.v1, so GET /status can show timings. A follower thread
reads both topics from the beginning without a consumer group (every gateway replica sees every job), and
keeps the most recent MAX_TRACKED jobs in memory. It follows the workers topic (heartbeats) too, so a job no
live pool serves is refused before it is queued (README "Routing").

A broker restarted without its state (the embedded memory broker): the request producer is replaced
(worker/kafka.py RequestPublisher) and the follower reads again every partition that now ends before its position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from schemas.errors import BackendUnavailable, InvalidEvent, InvalidParameter
from worker.job_step import queued_status
from worker.fleet import Fleet
from worker.kafka import RequestPublisher, reader
from worker.settings import Topics
from worker.broadcast import output_name
from worker.storage import open_storage

from .backends import JobSpec, conflict, fingerprint, merge_segment, requested_mode, status_view, succeeded_status

log = logging.getLogger(__name__)

MAX_TRACKED = 100_000


class KafkaBackend:
    name = "kafka"

    def __init__(self, bootstrap_servers: str, topics: Topics, output_uri: str, s3_endpoint_url: str | None = None,
                 default_mode: str = "auto", upload_dir: Path | None = None):
        """default_mode: the workers' DEFAULT_QUALITY_MODE, shown for jobs that ask for none; upload_dir: where
        the gateway saves uploads (their content, not their folder, is what an idempotency key promises)."""
        self.topics = topics
        self.default_mode = default_mode
        self.upload_dir = (upload_dir or Path("out/uploads")).resolve()
        self.storage = open_storage(output_uri, s3_endpoint_url)
        # Replaced when it breaks (a restarted broker without its producer state): worker/kafka.py RequestPublisher.
        self._publisher = RequestPublisher(bootstrap_servers, "avatar-renderer-gateway")
        self._consumer = reader(bootstrap_servers, "avatar-renderer-gateway", error_cb=self._follower_error)
        self._rewind_check = 0.0  # when to compare positions with the broker's logs again (0: no need)
        self._lock = threading.Lock()
        self._statuses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._fingerprints: OrderedDict[str, str] = OrderedDict()  # jobs this backend submitted
        self._stop = threading.Event()
        self._ready_at = 0.0
        self._assigned = threading.Event()
        self.fleet = Fleet()  # the workers' heartbeats, once the workers topic exists
        self._fleet_followed = False
        self._thread = threading.Thread(target=self._follow, name="status-follower", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submitting

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        spec = spec.with_job_id()
        if self.fleet.live():  # a fleet we can see: refuse now what none of its live pools serves (409/422)
            self.fleet.resolve(spec.quality_mode, spec.engine)
        mark = fingerprint(spec, self.upload_dir)
        with self._lock:
            known = self._fingerprints.get(spec.job_id)
            if known is not None and known != mark:
                raise conflict(spec)
            current = self._statuses.get(spec.job_id)
            if known is not None and current is not None and current.get("state") != "failed":
                return status_view(current, self.storage)  # the same request again: the job already exists
            self._fingerprints[spec.job_id] = mark
            while len(self._fingerprints) > MAX_TRACKED:
                self._fingerprints.popitem(last=False)
        status = queued_status(spec.job_id, requested_mode(spec, self.default_mode),
                               self.storage.uri_of(output_name(spec.job_id, spec.delivery)))  # .webm, /index.m3u8 ...
        try:
            self._publisher.publish(self.topics, spec.request_event(status["updatedAt"]), status=status)
        except Exception as exc:
            if known is None:
                with self._lock:
                    self._fingerprints.pop(spec.job_id, None)  # never published: the key names no job yet
            if isinstance(exc, InvalidEvent):  # e.g. a resolved file:// URI longer than the schema allows
                raise InvalidParameter(f"The request cannot be published: {exc.message}.") from exc
            raise
        self._remember(status, prefer_existing=True)
        return self.status(spec.job_id) or status_view(status, self.storage)

    def ready(self) -> bool:
        """The broker answers the request producer; a producer known broken is replaced first (not ready if
        the new one does not answer)."""
        if time.monotonic() - self._ready_at < 5 and self._publisher.broken is None:
            return True
        try:
            self._publisher.list_topics(self.topics.requested, timeout=3)
        except (KafkaException, BackendUnavailable):
            self._ready_at = 0.0
            return False
        self._ready_at = time.monotonic()
        return True

    # ------------------------------------------------------------------ statuses

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            status = self._statuses.get(job_id)
            return status_view(status, self.storage) if status else None

    def wait_until_following(self, timeout: float = 30) -> bool:
        return self._assigned.wait(timeout)

    def _remember(self, update: dict[str, Any], prefer_existing: bool = False) -> None:
        job_id = update["jobId"]
        with self._lock:
            current = self._statuses.get(job_id)
            if current is None:
                self._statuses[job_id] = dict(update)
                merge_segment(self._statuses[job_id], update)
            elif not prefer_existing:
                # A late "queued" must not hide a job that already finished (records of two topics interleave).
                if current.get("state") in ("succeeded", "failed") and update.get("state") in ("queued", "running") \
                        and update.get("updatedAt", "") < current.get("updatedAt", ""):
                    return
                merge_segment(current, update)  # an HLS segment event joins the job's `segments`
                current.update(update)
            self._statuses.move_to_end(job_id)
            while len(self._statuses) > MAX_TRACKED:
                self._statuses.popitem(last=False)

    def _follow(self) -> None:
        import json

        wanted = (self.topics.status, self.topics.completed)
        while not self._stop.is_set() and not self._assigned.is_set():
            try:
                metadata = self._consumer.list_topics(timeout=5)
                partitions = [TopicPartition(t, p, OFFSET_BEGINNING) for t in wanted if t in metadata.topics
                              for p in metadata.topics[t].partitions]
                if {tp.topic for tp in partitions} == set(wanted):
                    self._consumer.assign(partitions + self._fleet_partitions(metadata))
                    self._assigned.set()
                    break
            except KafkaException as exc:
                log.warning("status topics not reachable yet: %s", exc)
            self._stop.wait(1)
        fleet_checked = time.monotonic()
        while not self._stop.is_set():
            if not self._fleet_followed and time.monotonic() - fleet_checked > 10:
                fleet_checked = time.monotonic()
                try:  # the workers topic appears when the first worker starts
                    partitions = self._fleet_partitions(self._consumer.list_topics(self.topics.workers, timeout=5))
                    if partitions:
                        self._consumer.incremental_assign(partitions)
                except KafkaException as exc:
                    log.warning("workers topic not reachable: %s", exc)
            if self._rewind_check and time.monotonic() >= self._rewind_check:
                self._rewind_check = 0.0 if self._rewind_truncated() else time.monotonic() + 1
            message = self._consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("status follower: %s", message.error())
                continue
            if message.topic() == self.topics.workers:
                self.fleet.update(message.key(), message.value())
                continue
            try:
                value = json.loads(message.value() or b"null")
            except ValueError:
                continue
            if not isinstance(value, dict) or not isinstance(value.get("jobId"), str):
                continue
            if message.topic() == self.topics.completed:
                self._remember(succeeded_status(value))
            else:
                self._remember({k: v for k, v in value.items() if k != "workerId"})

    def _follower_error(self, error) -> None:
        """The follower's client errors (served by its poll, on the follower thread). Every broker gone: the one
        that comes back may have lost the topics' records (the embedded memory broker always does), so the
        positions are checked against its logs once it answers."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN or error.fatal():
            self._rewind_check = self._rewind_check or time.monotonic() + 1
        log.debug("status follower: %s", error)

    def _rewind_truncated(self) -> bool:
        """Read again from the beginning each followed partition whose log now ends before the follower's
        position (a broker restarted without its records: otherwise its new records up to the old position
        would never be seen). False while the broker cannot tell for the status and completion topics."""
        done = True
        try:
            assignment = self._consumer.assignment()
            positions = self._consumer.position(assignment)
        except KafkaException as exc:
            log.debug("status follower: positions unknown: %s", exc)
            return False
        for tp in positions:
            if tp.offset < 0:
                continue  # nothing read there yet: it starts from the beginning anyway
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=2)
            except KafkaException as exc:
                if tp.topic != self.topics.workers:  # gone until a worker creates it again: not waited for
                    log.debug("status follower: %s[%d] not answered: %s", tp.topic, tp.partition, exc)
                    done = False
                continue
            if high < tp.offset:
                log.warning("status follower: %s[%d] ends at %d, before offset %d (the broker lost its records); "
                            "reading it again from the beginning", tp.topic, tp.partition, high, tp.offset)
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        return done

    def _fleet_partitions(self, metadata) -> list[TopicPartition]:
        """The workers topic's partitions from the beginning, when it exists (then followed for good)."""
        topic = metadata.topics.get(self.topics.workers)
        if topic is None or topic.error is not None or not topic.partitions:
            return []
        self._fleet_followed = True
        return [TopicPartition(self.topics.workers, p, OFFSET_BEGINNING) for p in topic.partitions]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self._consumer.close()
        except RuntimeError:
            pass
        self._publisher.close(5)  # destroys the client now, so it stops reconnecting to a broker that is gone
