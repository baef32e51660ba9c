"""The front doors' Kafka backend: publish render.requested.v1, follow the status and completion topics.

Statuses come from the compacted status topic (keyed by jobId; queued/running/succeeded/failed, written by the
workers) merged with the durations of render.completed.v1, so GET /status can show timings. A follower thread
reads both topics from the beginning without a consumer group (every gateway replica sees every job), and
keeps the most recent MAX_TRACKED jobs in memory.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas import events
from schemas.errors import InvalidEvent
from engines.pipeline import InvalidParameter

from .backends import BackendUnavailable, JobSpec, requested_mode
from worker.settings import Topics, WorkerSettings
from worker.storage import open_storage

log = logging.getLogger(__name__)

MAX_TRACKED = 100_000
DURATION_NAMES = {"queueWaitSeconds", "fetchSeconds", "decodeSeconds", "renderSeconds", "framesSeconds",
                  "encodeSeconds", "uploadSeconds", "totalSeconds"}


class KafkaBackend:
    name = "kafka"

    def __init__(self, bootstrap_servers: str, topics: Topics, output_uri: str, s3_endpoint_url: str | None = None):
        self.topics = topics
        self.storage = open_storage(output_uri, s3_endpoint_url)
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all",
            "client.id": "avatar-renderer-gateway", "message.timeout.ms": 15000,
        })
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap_servers, "group.id": f"avatar-gateway-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "client.id": "avatar-renderer-gateway",
        })
        self._lock = threading.Lock()
        self._statuses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._stop = threading.Event()
        self._ready_at = 0.0
        self._assigned = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="status-follower", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls) -> "KafkaBackend":
        settings = WorkerSettings.from_env()
        return cls(settings.bootstrap_servers, settings.topics, settings.output_uri, settings.s3_endpoint_url)

    # ------------------------------------------------------------------ submitting

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        spec = spec.with_job_id()
        requested_at = events.now_iso()
        payload: dict[str, Any] = {
            "jobId": spec.job_id, "avatarUri": spec.avatar_uri, "audioUri": spec.audio_uri,
            "fps": spec.fps, "size": spec.size, "seed": spec.seed, "requestedAt": requested_at,
        }
        # No qualityMode given: the event carries none, so the worker's own default decides.
        optional = {"qualityMode": spec.quality_mode, "engine": spec.engine, "priority": spec.priority,
                    "deadline": spec.deadline, "idempotencyKey": spec.idempotency_key}
        payload.update({k: v for k, v in optional.items() if v is not None})
        status = {"jobId": spec.job_id, "state": "queued", "qualityMode": requested_mode(spec),
                  "outputUri": self.storage.uri_for(spec.job_id), "updatedAt": requested_at}
        # The queued status goes first, in the job's status partition, so a worker's "running" always follows it.
        errors: list[str] = []

        def delivered(err, _msg):
            if err is not None:
                errors.append(str(err))

        try:
            request_value = events.encode("render.requested.v1", payload)
            status_value = events.encode("render.status.v1", status)
        except InvalidEvent as exc:  # e.g. a resolved file:// URI longer than the schema allows
            raise InvalidParameter(f"The request cannot be published: {exc.message}.") from exc
        self._producer.produce(self.topics.status, key=spec.job_id, value=status_value,
                               headers=events.ce_headers("render.status.v1", spec.job_id), on_delivery=delivered)
        self._producer.produce(self.topics.requested, key=spec.job_id,
                               value=request_value,
                               headers=events.ce_headers("render.requested.v1", spec.job_id), on_delivery=delivered)
        remaining = self._producer.flush(15)
        if remaining or errors:
            raise BackendUnavailable(f"The render request could not be published: {'; '.join(errors) or 'timed out'}.")
        self._remember(status, prefer_existing=True)
        return self.status(spec.job_id) or self._shape(status)

    def ready(self) -> bool:
        if time.monotonic() - self._ready_at < 5:
            return True
        try:
            self._producer.list_topics(self.topics.requested, timeout=3)
        except KafkaException:
            return False
        self._ready_at = time.monotonic()
        return True

    # ------------------------------------------------------------------ statuses

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            status = self._statuses.get(job_id)
            return self._shape(status) if status else None

    def wait_until_following(self, timeout: float = 30) -> bool:
        return self._assigned.wait(timeout)

    def _shape(self, status: dict[str, Any]) -> dict[str, Any]:
        shaped = {k: v for k, v in status.items() if k not in ("outputUri", "durations")}
        shaped["output"] = status.get("outputUri") or self.storage.uri_for(status["jobId"])
        if status.get("durations"):
            shaped["timings"] = {k: v for k, v in status["durations"].items() if k in DURATION_NAMES}
        return shaped

    def _remember(self, update: dict[str, Any], prefer_existing: bool = False) -> None:
        job_id = update["jobId"]
        with self._lock:
            current = self._statuses.get(job_id)
            if current is None:
                self._statuses[job_id] = dict(update)
            elif not prefer_existing:
                # A late "queued" must not hide a job that already finished (records of two topics interleave).
                if current.get("state") in ("succeeded", "failed") and update.get("state") in ("queued", "running") \
                        and update.get("updatedAt", "") < current.get("updatedAt", ""):
                    return
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
                    self._consumer.assign(partitions)
                    self._assigned.set()
                    break
            except KafkaException as exc:
                log.warning("status topics not reachable yet: %s", exc)
            self._stop.wait(1)
        while not self._stop.is_set():
            message = self._consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("status follower: %s", message.error())
                continue
            try:
                value = json.loads(message.value() or b"null")
            except ValueError:
                continue
            if not isinstance(value, dict) or not isinstance(value.get("jobId"), str):
                continue
            if message.topic() == self.topics.completed:
                self._remember({"jobId": value["jobId"], "state": "succeeded", "durations": value.get("durations"),
                                "outputUri": value.get("outputUri"), "engine": value.get("engine"),
                                "mode": value.get("mode"), "bytes": value.get("bytes"), "sha256": value.get("sha256")})
            else:
                self._remember({k: v for k, v in value.items() if k != "workerId"})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self._consumer.close()
        except RuntimeError:
            pass
        self._producer.flush(5)
        self._producer = None  # destroys the client now, so it stops reconnecting to a broker that is gone
