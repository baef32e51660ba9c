"""`avatar-renderer worker`: the Kafka consumer loop.

One thread owns the consumer and the producer callbacks (the poll loop); renders run on a thread pool, at
most one per partition and WORKER_CONCURRENCY in all. Records a poll returns are kept, in offset order, per
partition (a partition is paused only when too many wait), so the next record never waits for a re-fetch.
A record is checked on the poll thread first: one that cannot be rendered (CloudEvents headers of another
type or version, not JSON, schema violation) is refused there at once, without a render slot. Events are
published without waiting for the previous record's acknowledgement; a partition's offset advances (stored,
and committed at once) only over records whose completion or failure (and DLQ copy) the broker acknowledged,
so a crash redelivers from the first unfinished record and a re-render overwrites the same output object.

The worker is also the fleet's router (README "Routing"): it consumes the public request topic together
with its pool's lanes, in one consumer group. A request is checked on the poll thread, its mode resolved
against the fleet's live heartbeats (worker/fleet.py), and it is moved, unchanged but for qualityMode and
requestedMode, to the lane `<mode>.<priority>`; its offset advances once the lane holds it. Lane records are
rendered, urgent first (LanePicker). The worker announces itself on the workers topic every HEARTBEAT_SECONDS.

Every record ends in exactly one of completed / failed+DLQ after bounded attempts, whatever it contains:
echoed ids and messages are bounded (schemas.events.safe_job_id, truncate), a job thread that dies on a
record is retried MAX_ATTEMPTS times and then dead-lettered, and a produce() that raises never ends the loop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.errors import InternalError, InvalidEvent, NoLivePool, RenderError
from schemas.events import ce_headers, check_headers, encode, header_dict, now_iso, parse_request, record_job_id, \
    safe_job_id, truncate

from . import metrics, scratch
from .fleet import Capabilities, Fleet, LanePicker, heartbeat, lane_topic, lane_topics, local_capabilities, parse_lane, \
    priority_class
from .job_step import JobStep, Outcome, Render, failure_event, pipeline_render, refused
from .kafka import consumer_config, ensure_fleet_topics, librdkafka_log, producer_config, reader
from .settings import SERVED_MODES, WorkerSettings
from .storage import open_storage

log = logging.getLogger(__name__)


MAX_BUFFERED_RECORDS = 200  # per partition: more waiting than this pauses the partition's fetches
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
MAX_REMEMBERED_COMPLETIONS = 1000  # jobs this worker completed (~2 KB each): a redelivery is answered, not rendered


@dataclass
class Record:
    """One polled record, from poll until its offset is stored."""

    message: object  # confluent_kafka.Message
    state: str = "queued"  # queued -> running -> publishing -> done; unsent: its events are sent again
    crashes: int = 0  # times a job thread died on it; dead-lettered at MAX_ATTEMPTS
    revoked: bool = False
    outstanding: int = 0
    delivery_failed: bool = False
    outcome: Outcome | None = None
    started: float = field(default_factory=time.perf_counter)
    resend_at: float = 0.0
    route: tuple | None = None  # a routed request: (lane topic, value, headers) to publish there
    final_status: tuple | None = None  # (succeeded/failed status event, traceparent), sent once the outcome's
    # events are acknowledged: a reader of the status topic never sees "succeeded" before the completion exists

    @property
    def tp(self) -> tuple[str, int]:
        return self.message.topic(), self.message.partition()

    @property
    def size(self) -> int:
        return len(self.message.value() or b"") + len(self.message.key() or b"")


class Worker:
    def __init__(self, settings: WorkerSettings, storage=None, render: Render | None = None,
                 capabilities: Capabilities | None = None):
        """capabilities: what this worker serves (default: this machine's, from its settings' engine registry)."""
        # This process's own scratch folder under WORK_DIR; the folders of workers that died are removed.
        self.scratch = scratch.claim(settings.work_dir)
        settings = dataclasses.replace(settings, work_dir=self.scratch.path)
        self.settings = settings
        self.topics = settings.topics
        self.storage = storage or open_storage(settings.output_uri, settings.s3_endpoint_url)
        if capabilities is None or render is None:
            from engines.registry import EngineRegistry

            registry = EngineRegistry.for_settings(settings.models)
            capabilities = capabilities or local_capabilities(settings, registry)
            render = render or pipeline_render(settings.models, registry)
        self.step = JobStep(settings, self.storage, render)
        self.capabilities = capabilities
        self.lanes = lane_topics(self.topics.lane_prefix, capabilities.modes)
        self.fleet = Fleet()
        self.picker = LanePicker(settings.lane_max_skips)
        self.fleet_reader: Consumer | None = None
        self.fleet_synced_at: float | None = None  # when the workers topic was read to its end
        self.next_heartbeat = 0.0
        self.started_at = time.monotonic()
        self.stopping = threading.Event()  # SIGTERM: drain
        self.cancel = threading.Event()  # grace over: jobs stop retrying and are given back
        self.health = metrics.Health()
        self.pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="render")
        self.records: dict[tuple[str, int], deque[Record]] = {}  # per partition, in offset order
        self.running: set[tuple[str, int]] = set()  # partitions with a job on the pool
        self.paused: set[tuple[str, int]] = set()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.assigned: set[tuple[str, int]] = set()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.producer_fatal = None  # a fatal producer error (KafkaError): the producer is replaced
        self.retired_producers: list[Producer] = []
        self.completed_here: OrderedDict[str, Outcome] = OrderedDict()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        subscribed = [self.topics.requested, *self.lanes]
        ensure_fleet_topics(self.settings.bootstrap_servers, self.topics, self.lanes)
        self.producer = self._new_producer()
        self._heartbeat()  # announced before joining, so routers see this pool as soon as it can take work
        self.fleet_reader = reader(self.settings.bootstrap_servers, f"{self.settings.worker_id}-fleet",
                                   **{"enable.partition.eof": True})
        workers = self.fleet_reader.list_topics(self.topics.workers, timeout=10).topics[self.topics.workers]
        self.fleet_reader.assign([TopicPartition(self.topics.workers, p, OFFSET_BEGINNING)
                                  for p in workers.partitions])  # no group: every partition, from the start
        self.consumer = Consumer(consumer_config(
            self.settings, lambda stats: [metrics.record_lag(stats, topic) for topic in subscribed]))
        self.consumer.subscribe(subscribed, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.health.reason = "joining the consumer group"
        log.info("worker started", extra={"fields": {"workerId": self.settings.worker_id,
                                                     "topic": self.topics.requested, "lanes": self.lanes,
                                                     "pool": self.capabilities.pool,
                                                     "modes": list(self.capabilities.modes),
                                                     "group": self.settings.group_id,
                                                     "concurrency": self.settings.concurrency}})
        try:
            while not self.stopping.is_set():
                self._step(dispatch=True)
            self._drain()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.scratch.release()
        return 0

    def _busy(self) -> list[Record]:
        """Records being rendered or published (not yet acknowledged)."""
        return [r for backlog in self.records.values() for r in backlog if r.state in ("running", "publishing", "unsent")]

    def _drain(self) -> None:
        """Finish in-flight jobs within the grace period, give back the rest, flush, commit, leave the group."""
        self.health.ready = False
        self.health.reason = "draining"
        log.info("draining", extra={"fields": {"inFlight": len(self._busy()),
                                               "graceSeconds": self.settings.drain_grace_seconds}})
        assignment = [TopicPartition(t, p) for t, p in self.assigned]
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + self.settings.drain_grace_seconds
        while self._busy() and time.monotonic() < deadline:
            self._step(dispatch=False)
        self.cancel.set()
        given_back = sorted({r.tp for r in self._busy() if r.state == "running"})
        self._heartbeat(leaving=True)  # a tombstone: routers stop counting this worker at once
        try:
            self.producer.flush(15)
        except KafkaException as exc:
            log.error("final flush failed: %s", exc)
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
        self.fleet_reader.close()
        self.producer = None  # frees librdkafka's producer (and its broker connections) now
        log.info("worker stopped", extra={"fields": {"gaveBack": len(given_back)}})

    # ------------------------------------------------------------------ loop

    def _step(self, dispatch: bool) -> None:
        self.health.tick()
        for message in self.consumer.consume(100, 0.02 if self.running else 0.1):
            self._accept(message, dispatch)
        self._follow_fleet()
        if time.monotonic() >= self.next_heartbeat:
            self._heartbeat()
        self._collect()
        self._resend()
        if dispatch:
            self._route_waiting()
            self._dispatch()
        try:
            self.producer.poll(0)
        except KafkaException as exc:
            self._note_fatal(exc.args[0])
        if self.producer_fatal is not None:
            self._replace_producer()

    def _new_producer(self) -> Producer:
        return Producer({**producer_config(self.settings), "error_cb": self._note_fatal})

    def _note_fatal(self, error) -> None:
        if error.fatal():
            self.producer_fatal = error
        else:  # e.g. "Connection refused" while the broker is down: rate-limited like librdkafka's own lines
            librdkafka_log.warning("producer: %s", error)

    def _replace_producer(self) -> None:
        """A fatal error ends an idempotent producer for good (seen when a broker restarts without its
        producer state: OUT_OF_ORDER_SEQUENCE_NUMBER). Start a new one; events not acknowledged are sent again
        (their outcome is known: nothing is rendered twice), the offsets still wait for them."""
        log.error("the producer hit a fatal error; replacing it and sending unacknowledged events again: %s",
                  self.producer_fatal)
        self.producer_fatal = None
        self.retired_producers.append(self.producer)  # kept, never polled again: its callbacks never run
        self.producer = self._new_producer()
        now = time.monotonic()
        for backlog in self.records.values():
            for record in backlog:
                if record.state == "publishing":
                    record.state, record.outstanding, record.resend_at = "unsent", 0, now

    def _resend(self) -> None:
        """Publish again the events of records the broker did not acknowledge (the outcome is known: no re-render)."""
        now = time.monotonic()
        for backlog in self.records.values():
            for record in backlog:
                if record.state == "unsent" and record.resend_at <= now:
                    if record.route is not None:
                        self._publish_route(record)
                    else:
                        self._publish_outcome(record, record.outcome)

    def _accept(self, message, dispatch: bool) -> None:
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", message.error())
            return
        if not dispatch:
            return  # draining: not started, offset not stored, so it is redelivered
        record = Record(message)
        if record.tp not in self.assigned:
            return  # polled just before a revoke
        backlog = self.records.setdefault(record.tp, deque())
        backlog.append(record)
        refusal = self._refusal(message)
        if refusal is not None:
            record.outcome = refusal
            self._publish_outcome(record, refusal)
        if len(backlog) >= MAX_BUFFERED_RECORDS or sum(r.size for r in backlog) >= MAX_BUFFERED_BYTES:
            self.consumer.pause([TopicPartition(*record.tp)])
            self.paused.add(record.tp)

    def _refusal(self, message) -> Outcome | None:
        """A failed Outcome for a record that can never be rendered (checked here, on the poll thread, so a
        flood of them costs no render slot and no thread hop), else None."""
        try:
            check_headers(message.headers())
            parse_request(message.value())
            return None
        except InvalidEvent as exc:
            return refused(exc, message.value(), message.key(), self.settings.worker_id)
        except Exception:  # noqa: BLE001 - a parser bug: let the job thread meet it (crashes are bounded there)
            log.exception("checking a record failed unexpectedly")
            return None

    def _dispatch(self) -> None:
        """Start lane records on free render slots: urgent lanes first (LanePicker), the oldest record first
        within a priority, one job per partition."""
        while len(self.running) < self.settings.concurrency:
            heads: dict[str, list[Record]] = {}
            for tp, backlog in self.records.items():
                lane = parse_lane(self.topics.lane_prefix, tp[0])
                if lane is None or tp in self.running:
                    continue
                record = next((r for r in backlog if r.state == "queued"), None)
                if record is not None:
                    heads.setdefault(lane[1], []).append(record)
            if not heads:
                return
            priority = self.picker.order(set(heads))[0]
            self.picker.took(priority, set(heads))
            record = min(heads[priority], key=lambda r: r.started)
            if self._completed_before(record):
                continue
            record.state = "running"
            record.started = time.perf_counter()
            self.running.add(record.tp)
            self.pool.submit(self._job, record)

    def _completed_before(self, record: Record) -> bool:
        """A redelivered record of a job this worker completed (its completion acknowledged), e.g. after it lost
        and got back the partition while rendering it (a stall, a rebalance): its completion is published again
        (the same event: a duplicate, harmless) instead of rendering it again, or failing it for a deadline that
        passed meanwhile."""
        try:
            job_id = parse_request(record.message.value()).job_id
        except Exception:  # noqa: BLE001 - whatever it is, the job thread will say
            return False
        outcome = self.completed_here.get(job_id)
        if outcome is None:
            return False
        log.info("job already completed by this worker: its completion is sent again, not rendered again",
                 extra={"job_id": job_id})
        record.outcome = outcome
        self._publish_outcome(record, outcome)
        return True

    # ------------------------------------------------------------------ the fleet and routing

    def _heartbeat(self, leaving: bool = False) -> None:
        """Announce this worker (or, leaving, its tombstone) on the workers topic; never raises."""
        self.next_heartbeat = time.monotonic() + self.settings.heartbeat_seconds
        worker_id = self.settings.worker_id
        value = None
        if not leaving:
            queued: dict[str, int] = {}
            for tp, backlog in self.records.items():
                if parse_lane(self.topics.lane_prefix, tp[0]):
                    queued[tp[0]] = queued.get(tp[0], 0) + sum(r.state == "queued" for r in backlog)
            beat = heartbeat(worker_id, self.capabilities, self.settings.heartbeat_seconds,
                             {"inFlight": len(self.running), "concurrency": self.settings.concurrency,
                              "queued": queued, "assignedPartitions": len(self.assigned)})
            value = json.dumps(beat, separators=(",", ":")).encode()
        self.fleet.update(worker_id.encode(), value)  # this worker counts itself without a round trip

        def delivered(err, msg):
            if err is not None:
                metrics.PUBLISH_FAILURES.labels(self.topics.workers).inc()

        self._produce(self.topics.workers, value, worker_id.encode(), [], delivered)

    def _follow_fleet(self) -> None:
        """Read the workers topic (other workers' heartbeats) without blocking the loop."""
        for message in self.fleet_reader.consume(100, 0):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF and self.fleet_synced_at is None:
                    self.fleet_synced_at = time.monotonic()
                continue
            if message.key() != self.settings.worker_id.encode():
                self.fleet.update(message.key(), message.value())

    def _route_waiting(self) -> None:
        """Move waiting requests of the public topic to their lanes, in offset order per partition.

        Until the workers topic has been read to its end, and for three heartbeats after this worker started
        (other pools may still be starting), a request no live pool serves waits instead of being refused.
        """
        warm = time.monotonic() - self.started_at
        synced = self.fleet_synced_at is not None or warm > 5.0
        if not synced:
            return
        patient = warm < 3 * self.settings.heartbeat_seconds
        for tp, backlog in self.records.items():
            if tp[0] != self.topics.requested:
                continue
            for record in backlog:
                if record.state != "queued":
                    continue
                if not self._route(record, patient):
                    break  # waits for a pool; later records of the partition wait behind it

    def _route(self, record: Record, patient: bool) -> bool:
        """Publish one request to its lane (or refuse it: no live pool); False when it should wait."""
        message = record.message
        try:
            request = parse_request(message.value())
            mode = self.fleet.resolve(request.quality_mode, request.engine)
        except RenderError as exc:
            if isinstance(exc, NoLivePool) and patient:
                return False
            if isinstance(exc, InvalidEvent):
                record.outcome = refused(exc, message.value(), message.key(), self.settings.worker_id)
            else:
                record.outcome = Outcome("failed", request.job_id, request, dead_letter=True,
                                         error_class=type(exc).__name__, mode=request.quality_mode or "unknown",
                                         failure=failure_event(request.job_id, request, exc, 1, self.settings.worker_id))
            log.warning("request refused by the router: %s", exc.message,
                        extra={"job_id": safe_job_id(record.outcome.job_id), "fields": {"code": exc.code}})
            self._publish_outcome(record, record.outcome)
            return True
        priority = priority_class(request.priority)
        lane = lane_topic(self.topics.lane_prefix, mode, priority)
        # The value travels as it is (a DLQ copy is always the publisher's bytes); the decision is in headers.
        headers = [(k, v) for k, v in (message.headers() or []) if not k.startswith("route_")]
        headers += [(k, v.encode()) for k, v in (
            ("route_mode", mode), ("route_requested_mode", request.quality_mode or "default"),
            ("route_origin_topic", message.topic()), ("route_origin_partition", str(message.partition())),
            ("route_origin_offset", str(message.offset())), ("route_worker_id", self.settings.worker_id),
            ("route_time", now_iso()))]
        record.route = (lane, message.value(), headers)
        record.outcome = Outcome("routed", request.job_id, request, mode=mode)
        self._publish_route(record)
        return True

    def _routed(self, request, headers):
        """A lane record's request with the router's decision (headers route_mode, route_requested_mode)."""
        found = header_dict(headers)
        mode = found.get("route_mode")
        if mode not in SERVED_MODES:
            return request  # not routed (a record put on a lane by hand): as it says
        return dataclasses.replace(request, quality_mode=mode,
                                   requested_mode=found.get("route_requested_mode") or "default")

    def _publish_route(self, record: Record) -> None:
        record.state = "publishing"
        record.outstanding = 0
        record.delivery_failed = False
        lane, value, headers = record.route
        # Keyed by jobId, like every event of the job: its partition in the lane is the key's hash.
        if self._produce(lane, value, safe_job_id(record.outcome.job_id).encode(), headers,
                         lambda err, msg, record=record: self._delivered(record, err, msg)):
            record.outstanding += 1
        else:
            record.delivery_failed = True
            self._finished(record)

    def _job(self, record: Record) -> None:
        message = record.message
        metrics.IN_PROGRESS.inc()
        crash = None
        outcome = None
        try:
            kind, ts = message.timestamp()
            try:
                request = self._routed(parse_request(message.value()), message.headers())
            except InvalidEvent as exc:
                outcome = refused(exc, message.value(), message.key(), self.settings.worker_id)
            else:
                outcome = self.step.run(request, self.cancel, self._publish_running,
                                        ts / 1000 if kind and ts > 0 else None)
        except BaseException as exc:  # noqa: BLE001 - a bug must not lose the record, nor block its partition
            log.exception("job crashed: %s", exc)
            crash = exc
        finally:
            metrics.IN_PROGRESS.dec()
            self.done.put((record, outcome, crash))

    # ------------------------------------------------------------------ results

    def _collect(self) -> None:
        while True:
            try:
                record, outcome, crash = self.done.get_nowait()
            except queue.Empty:
                return
            self.running.discard(record.tp)
            if crash is not None:
                outcome = self._after_crash(record, crash)
            if outcome is None or outcome.state == "given_back":
                record.state = "queued"  # not done: run again (after a crash, or by the next owner)
                continue
            record.outcome = outcome
            self._publish_outcome(record, outcome)

    def _after_crash(self, record: Record, crash: BaseException) -> Outcome | None:
        """Run the record again, or, at MAX_ATTEMPTS crashes, its failed Outcome for the DLQ."""
        record.crashes += 1
        if record.crashes < self.settings.max_attempts:
            metrics.RETRIES.labels(InternalError.code).inc()
            return None
        message = record.message
        try:
            request = parse_request(message.value())
            job_id = request.job_id
        except Exception:  # noqa: BLE001 - whatever the record is, it is dead-lettered now
            request, job_id = None, record_job_id(message.value(), message.key())
        exc = InternalError(truncate(f"The job crashed {record.crashes} times on this record "
                                     f"({type(crash).__name__}: {crash}); it is dead-lettered."))
        return Outcome("failed", job_id, request,
                       failure=failure_event(job_id, request, exc, record.crashes, self.settings.worker_id),
                       dead_letter=True, error_class=type(exc).__name__, attempts=record.crashes)

    def _publish_outcome(self, record: Record, outcome: Outcome) -> None:
        record.state = "publishing"
        record.outstanding = 0
        record.delivery_failed = False
        message = record.message
        traceparent = outcome.request.traceparent if outcome.request else None
        job_id = safe_job_id(outcome.job_id)
        events = []
        if outcome.state == "succeeded":
            events.append((self.topics.completed, encode("render.completed.v1", outcome.completion),
                           ce_headers("render.completed.v1", job_id, traceparent)))
            status = {"jobId": job_id, "state": "succeeded", "attempt": outcome.attempts,
                      "outputUri": outcome.completion["outputUri"], "engine": outcome.engine,
                      "mode": outcome.mode, "workerId": self.settings.worker_id, "updatedAt": now_iso()}
        else:
            failure = {**outcome.failure, "jobId": job_id, "message": truncate(outcome.failure["message"])}
            events.append((self.topics.failed, encode("render.failed.v1", failure),
                           ce_headers("render.failed.v1", job_id, traceparent)))
            status = {"jobId": job_id, "state": "failed", "attempt": outcome.attempts,
                      "error": {k: failure[k] for k in ("code", "message", "retryable")},
                      "workerId": self.settings.worker_id, "updatedAt": now_iso()}
            if outcome.dead_letter:
                events.append((self.topics.dlq, message.value(), self._dlq_headers(message, outcome, failure)))
        record.final_status = (status, traceparent)
        for topic, value, headers in events:
            if self._produce(topic, value, job_id.encode(), headers,
                             lambda err, msg, record=record: self._delivered(record, err, msg)):
                record.outstanding += 1
            else:
                record.delivery_failed = True
        if record.outstanding == 0:
            self._finished(record)

    def _produce(self, topic: str, value: bytes | None, key: bytes, headers: list, on_delivery) -> bool:
        """producer.produce that never raises: False when the event could not even be queued.

        A DLQ copy too large for the producer (the original record plus our headers) is sent again without
        the original headers, then, if the value alone is too large, without the value (its size and SHA-256
        in headers): a record must reach the DLQ in some form rather than block its partition.
        """
        attempts = [headers]
        if topic == self.topics.dlq:
            own = [(k, v) for k, v in headers if k.startswith("dlq_")]
            attempts.append(own)
            if value:
                import hashlib

                attempts.append(own + [("dlq_value_dropped_bytes", str(len(value)).encode()),
                                       ("dlq_value_sha256", hashlib.sha256(value).hexdigest().encode())])
        for n, attempt_headers in enumerate(attempts):
            if n == 2:
                value = None
            for _ in range(3):
                try:
                    self.producer.produce(topic, value=value, key=key, headers=attempt_headers, on_delivery=on_delivery)
                    return True
                except BufferError:  # the local queue is full: let deliveries drain it, then try again
                    self.producer.poll(0.5)
                except (KafkaException, ValueError, TypeError) as exc:
                    if isinstance(exc, KafkaException) and exc.args[0].fatal():
                        self.producer_fatal = exc.args[0]
                    too_large = isinstance(exc, KafkaException) and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
                    log.error("could not publish to %s: %s", topic, truncate(str(exc), 300))
                    if not too_large:
                        metrics.PUBLISH_FAILURES.labels(topic).inc()
                        return False
                    break  # too large: the next, smaller form
            else:
                metrics.PUBLISH_FAILURES.labels(topic).inc()
                return False
        metrics.PUBLISH_FAILURES.labels(topic).inc()
        return False

    def _dlq_headers(self, message, outcome: Outcome, failure: dict) -> list:
        own = [
            ("dlq_origin_topic", message.topic()),
            ("dlq_origin_partition", str(message.partition())),
            ("dlq_origin_offset", str(message.offset())),
            ("dlq_error_class", outcome.error_class),
            ("dlq_error_code", failure["code"]),
            ("dlq_error_message", failure["message"]),
            ("dlq_attempts", str(outcome.attempts)),
            ("dlq_worker_id", self.settings.worker_id),
            ("dlq_time", now_iso()),
        ]
        original = [(k, v) for k, v in (message.headers() or []) if not k.startswith("dlq_")]
        return original + [(k, v.encode()) for k, v in own]

    def _delivered(self, record: Record, err, msg) -> None:
        if err is not None:
            metrics.PUBLISH_FAILURES.labels(msg.topic() if msg else "unknown").inc()
            log.error("event not acknowledged: %s", err)
            record.delivery_failed = True
        record.outstanding -= 1
        if record.outstanding == 0:
            self._finished(record)

    def _finished(self, record: Record) -> None:
        """Every event of the record is acknowledged (or could not be sent): done, or unsent to send again."""
        outcome = record.outcome
        if record.delivery_failed:
            record.state = "unsent"  # sent again by _resend, a second from now; the offset waits for it
            record.resend_at = time.monotonic() + 1.0
            return
        record.state = "done"
        if record.final_status is not None:
            self._produce_status(*record.final_status)
        if outcome.state == "succeeded":
            self.completed_here[outcome.job_id] = outcome
            while len(self.completed_here) > MAX_REMEMBERED_COMPLETIONS:
                self.completed_here.popitem(last=False)
        if outcome.state == "routed":
            metrics.ROUTED.labels(*parse_lane(self.topics.lane_prefix, record.route[0])).inc()
            log.info("job routed", extra={"job_id": safe_job_id(outcome.job_id), "fields": {
                "lane": record.route[0], "requestedMode": outcome.request.quality_mode or "default"}})
            self._advance(record.tp)
            return
        label = outcome.state
        if outcome.state == "failed":
            code = outcome.failure["code"]
            label = "expired" if code == "deadline_exceeded" else "failed"
            metrics.DLQ.labels(code).inc()
            metrics.JOBS.labels("dead_lettered").inc()
        metrics.JOBS.labels(label).inc()
        log.info("job %s", label, extra={"job_id": safe_job_id(outcome.job_id), "fields": {
            "attempt": outcome.attempts, "seconds": round(time.perf_counter() - record.started, 3),
            **({"code": outcome.failure["code"]} if outcome.failure else {"outputUri": outcome.completion["outputUri"]})}})
        metrics.RENDER_LATENCY.labels(outcome.mode, outcome.engine, label).observe(time.perf_counter() - record.started)
        self._advance(record.tp)

    def _advance(self, tp) -> None:
        """Store the offset after the partition's leading finished records; resume it when few wait."""
        backlog = self.records.get(tp)
        if backlog is None or tp not in self.assigned:
            return  # revoked: the next owner starts from the last committed offset
        last = None
        while backlog and backlog[0].state == "done":
            last = backlog.popleft()
        if last is not None:
            offset = [TopicPartition(tp[0], tp[1], last.message.offset() + 1)]
            try:
                self.consumer.store_offsets(offsets=offset)
                # Commit now rather than at the next auto-commit tick (up to 1 s later): a worker killed in
                # that window would make the partition's next owner render finished jobs again.
                self.consumer.commit(offsets=offset, asynchronous=True)
            except KafkaException as exc:
                log.warning("could not store the offset of %s[%d]: %s", tp[0], tp[1], exc)
        if (tp in self.paused and not self.stopping.is_set() and len(backlog) < MAX_BUFFERED_RECORDS // 2
                and sum(r.size for r in backlog) < MAX_BUFFERED_BYTES // 2):
            self.consumer.resume([TopicPartition(*tp)])
            self.paused.discard(tp)

    def _publish_running(self, request, attempt: int, progress: dict | None = None) -> None:
        """A running status; with `progress` (an HLS segment just stored: playlistUri, segment, segments) one
        such status per segment, in order (worker/broadcast.py)."""
        self._produce_status({"jobId": request.job_id, "state": "running", "attempt": attempt,
                              "qualityMode": request.quality_mode, "workerId": self.settings.worker_id,
                              "updatedAt": now_iso(), **(progress or {})}, request.traceparent)

    def _produce_status(self, status: dict, traceparent: str | None) -> None:
        """Status events are informational: one that cannot be sent is logged and counted, never raised."""
        def delivered(err, msg):
            if err is not None:
                metrics.PUBLISH_FAILURES.labels(self.topics.status).inc()
                log.warning("status event not acknowledged: %s", err)

        job_id = safe_job_id(status["jobId"])
        try:
            value = encode("render.status.v1", {**status, "jobId": job_id})
        except InvalidEvent as exc:
            log.error("status event not sent: %s", exc.message)
            return
        self._produce(self.topics.status, value, job_id.encode(),
                      ce_headers("render.status.v1", job_id, traceparent), delivered)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer, partitions) -> None:
        metrics.REBALANCES.labels("assign").inc()
        self.assigned.update((p.topic, p.partition) for p in partitions)
        metrics.ASSIGNED.set(len(self.assigned))
        self.health.ready = not self.stopping.is_set()
        self.health.reason = "ready"
        log.info("partitions assigned", extra={"fields": {"partitions": [p.partition for p in partitions],
                                                          "topics": [p.topic for p in partitions]}})

    def _on_revoke(self, consumer, partitions, kind: str = "revoke") -> None:
        metrics.REBALANCES.labels(kind).inc()
        for p in partitions:
            tp = (p.topic, p.partition)
            self.assigned.discard(tp)
            self.paused.discard(tp)
            for record in self.records.pop(tp, ()):
                record.revoked = True  # a running job's result is still published; the new owner redoes it
        metrics.ASSIGNED.set(len(self.assigned))
        log.info("partitions %s", "lost" if kind == "lost" else "revoked",
                 extra={"fields": {"partitions": [p.partition for p in partitions],
                                   "topics": [p.topic for p in partitions]}})

    def _on_lost(self, consumer, partitions) -> None:
        self._on_revoke(consumer, partitions, "lost")
