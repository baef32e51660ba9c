"""What the front doors (REST gateway, MCP server) submit render jobs through, and where they read status.

Two backends share one small interface:
- InProcessBackend runs jobs through the worker's own job step (worker.job_step.JobStep: same input fetching,
  retries, deadline, metrics and timings as the Kafka worker) on a thread pool, and keeps statuses in memory.
  It is what `avatar-renderer mcp` and `avatar-renderer api` use when no broker is configured.
- KafkaBackend (gateway/kafka_backend.py) publishes render.requested.v1 events and follows the status topic.

A status is a plain dict, the same shape from both (`status_view`): jobId, state (queued|running|succeeded|
failed), output (where the video is, or will be while queued or running; none once failed), qualityMode, and
when known attempt, engine, mode, bytes, sha256, timings {TIMING_KEYS},
error {code, message, retryable}, updatedAt. Both keep render.status.v1-shaped records and shape them here.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Protocol
from urllib.parse import unquote, urlsplit

from engines.delivery import Delivery
from engines.face_choice import FaceChoice
from engines.files import file_sha256
from engines.settings import int_env
from schemas.errors import BackendUnavailable, IdempotencyConflict, from_exception
from schemas.events import RenderRequested, now_iso, parse_time
from schemas.frame_rate import fps_wire
from worker.job_step import TIMING_KEYS, JobStep, Outcome, Render, failure_event, pipeline_render, queued_status
from worker.settings import WorkerSettings
from worker.broadcast import output_name
from worker.storage import open_storage

log = logging.getLogger(__name__)

# Idempotency keys map to job ids deterministically, so a retried submission names the same job and output.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c5a59-2b0e-4d0e-9a53-5f0b8c6f6b11")


@dataclass(frozen=True)
class BackendSettings:
    """Where a front door sends jobs: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else RENDER_THREADS threads
    here; `worker` holds what both need (bootstrap, topics, OUTPUT_URI/OUTPUT_DIR, S3_ENDPOINT_URL, retries,
    WORK_DIR, model settings with DEFAULT_QUALITY_MODE, the input policy), read as the worker reads them."""

    kafka_configured: bool
    render_threads: int
    worker: WorkerSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "BackendSettings":
        env = dict(env)
        return cls(
            kafka_configured=bool(env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()),
            render_threads=int_env(env, "RENDER_THREADS", 1, 1),
            worker=WorkerSettings.from_env(env),
        )


def requested_mode(spec: "JobSpec", default_mode: str = "auto") -> str:
    """The mode a job asks for: its own, else the default the render will use (DEFAULT_QUALITY_MODE)."""
    return spec.quality_mode or default_mode or "auto"


def face_from_request(value) -> FaceChoice:
    """A request's `face`: the wire form ("largest", {"index": N}, {"box": [x, y, w, h]}) or, in a form field or an
    MCP string, the command line's (`index:N`, `box:X,Y,W,H`); None means largest. Bad values: InvalidParameter."""
    if isinstance(value, str) and value.strip() != "largest":
        return FaceChoice.parse(value)
    return FaceChoice.from_wire(value.strip() if isinstance(value, str) else value)


def job_id_for(idempotency_key: str | None) -> str:
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key)) if idempotency_key else str(uuid.uuid4())


@dataclass(frozen=True)
class JobSpec:
    """A render job as a front door accepted it: inputs already checked by worker.security."""

    avatar_uri: str
    audio_uri: str
    quality_mode: str | None = None
    engine: str | None = None
    fps: Fraction = Fraction(25)  # exact, as engines.pipeline.check_fps returns it
    size: int = 512
    seed: int = 0
    priority: int | None = None
    deadline: str | None = None  # RFC 3339
    idempotency_key: str | None = None
    job_id: str = field(default="")
    face: FaceChoice = FaceChoice()  # which face of the photo (part of the idempotency fingerprint, as every field)
    framing: str = "crop"
    delivery: Delivery = Delivery()  # output, canvas, loudness, hls (issue 12, engines/delivery.py)
    driving_video: str | None = None  # a checked driving video URI (high_quality head motion)

    def with_job_id(self) -> "JobSpec":
        if self.job_id:
            return self
        return replace(self, job_id=job_id_for(self.idempotency_key))

    def request_event(self, requested_at: str) -> dict[str, Any]:
        """The render.requested.v1 event of this job (no qualityMode given: the worker's default decides)."""
        payload: dict[str, Any] = {
            "jobId": self.job_id, "avatarUri": self.avatar_uri, "audioUri": self.audio_uri,
            "fps": fps_wire(self.fps), "size": self.size, "seed": self.seed, "requestedAt": requested_at,
        }
        optional = {"qualityMode": self.quality_mode, "engine": self.engine, "priority": self.priority,
                    "deadline": self.deadline, "idempotencyKey": self.idempotency_key,
                    "drivingVideo": self.driving_video}
        payload.update({k: v for k, v in optional.items() if v is not None})
        if self.face != FaceChoice():
            payload["face"] = self.face.to_wire()
        if self.framing != "crop":
            payload["framing"] = self.framing
        payload.update(self.delivery.to_wire())
        return payload

    def to_request(self, requested_at: datetime) -> RenderRequested:
        """The job as the job step takes it (what a worker parses from request_event)."""
        return RenderRequested(
            job_id=self.job_id, avatar_uri=self.avatar_uri, audio_uri=self.audio_uri,
            quality_mode=self.quality_mode, engine=self.engine, fps=self.fps, size=self.size, seed=self.seed,
            priority=5 if self.priority is None else self.priority, idempotency_key=self.idempotency_key,
            deadline=parse_time(self.deadline, "deadline") if self.deadline else None,
            requested_at=requested_at, traceparent=None, face=self.face.to_wire(), framing=self.framing,
            delivery=self.delivery.to_wire() or None, driving_video=self.driving_video,
        )


def fingerprint(spec: JobSpec, upload_dir: Path) -> str:
    """What an idempotency key promises stays the same: every parameter, and the inputs. An upload is saved to
    a fresh folder each time, so inputs under UPLOAD_DIR count by their content, other inputs by their URI."""

    def identity(uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme == "file":
            path = Path(unquote(parts.path))
            if path.is_relative_to(upload_dir):
                try:
                    return "sha256:" + file_sha256(path)
                except OSError:
                    pass
        return uri

    fields = {**asdict(spec), "job_id": "", "avatar_uri": identity(spec.avatar_uri),
              "audio_uri": identity(spec.audio_uri),
              "driving_video": identity(spec.driving_video) if spec.driving_video else None}
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()


def conflict(spec: JobSpec) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"The idempotency key {spec.idempotency_key!r} was already used for a job with other parameters "
        f"(job {spec.job_id}); use a new key for a different request.")


# ----------------------------------------------------------------------------- statuses, one shape

def succeeded_status(completion: dict[str, Any]) -> dict[str, Any]:
    """What a render.completed.v1 event adds to a job's status record."""
    status = {"jobId": completion["jobId"], "state": "succeeded"}
    for key in ("completedAt", "attempt", "outputUri", "engine", "engineDetails", "mode", "bytes", "sha256", "frames",
                "fps", "frameRate", "faceUsed", "upscaled", "width", "height", "audioSeconds", "durations",
                "outputFormat", "loudness", "segments", "mp4Uri"):
        if completion.get(key) is not None:
            status["updatedAt" if key == "completedAt" else key] = completion[key]
    if status.get("segments"):  # the latest segment too: its own status event may be read after the completion
        status["segment"] = status["segments"][-1]
    return status


def merge_segment(record: dict[str, Any], update: dict[str, Any]) -> None:
    """An HLS segment event (`segment`, worker/broadcast.py) added to a status record's `segments`, in order: a
    segment 0 starts the list again (a retried attempt announces its segments anew), one seen before is ignored."""
    segment = update.get("segment")
    if not isinstance(segment, dict) or not isinstance(segment.get("index"), int):
        return
    segments = [] if segment["index"] == 0 else list(record.get("segments") or [])
    if segment["index"] == len(segments):
        segments.append(segment)
    record["segments"] = segments


def failed_status(failure: dict[str, Any]) -> dict[str, Any]:
    """What a render.failed.v1 event makes of a job's status record."""
    return {"jobId": failure["jobId"], "state": "failed", "attempt": failure["attempt"],
            "error": {k: failure[k] for k in ("code", "message", "retryable")}, "updatedAt": failure["failedAt"]}


def status_view(record: dict[str, Any], storage) -> dict[str, Any]:
    """A status record (render.status.v1 fields, plus a completion's) as /status and get_render_status show it."""
    shaped = {k: v for k, v in record.items() if k not in ("outputUri", "durations", "workerId")}
    if record.get("state") != "failed":  # a failed job has no video: no URI that would name nothing
        shaped["output"] = record.get("outputUri") or storage.uri_for(record["jobId"])
    if record.get("durations"):
        shaped["timings"] = {k: v for k, v in record["durations"].items() if k in TIMING_KEYS}
    return shaped


class JobBackend(Protocol):
    name: str
    storage: Any  # worker.storage FileStorage | S3Storage: where the outputs are (OUTPUT_URI), for downloads

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        """Accept the job (spec.job_id set) and return its first status (state queued, output URI known).
        The same idempotency key with other parameters: IdempotencyConflict."""

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The latest status of a job, or None when this backend has never heard of it."""

    def ready(self) -> bool:
        """Whether submissions can be accepted now."""

    def close(self) -> None: ...


class InProcessBackend:
    """Runs jobs in this process through the job step on a small thread pool; statuses live in memory."""

    name = "in-process"

    def __init__(self, settings: WorkerSettings, threads: int = 1, render: Render | None = None):
        """settings: the job step's, as the worker reads them (input policy, OUTPUT_URI, retries, WORK_DIR, model
        settings); render: RenderRequest -> RenderResult (default: engines.pipeline.render over a registry
        built here)."""
        self.settings = settings
        self.storage = open_storage(settings.output_uri, settings.s3_endpoint_url)
        self.step = JobStep(settings, self.storage, render or pipeline_render(settings.models))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._statuses: dict[str, dict[str, Any]] = {}
        self._fingerprints: dict[str, str] = {}

    def output_uri(self, job_id: str) -> str:
        return self.storage.uri_for(job_id)

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        spec = spec.with_job_id()
        mark = fingerprint(spec, self.settings.inputs.upload_dir)
        with self._lock:
            existing = self._statuses.get(spec.job_id)
            if existing is not None:
                if self._fingerprints.get(spec.job_id) != mark:
                    raise conflict(spec)
                if existing["state"] != "failed":
                    return status_view(existing, self.storage)  # the same request again: the job already exists
            status = queued_status(spec.job_id, requested_mode(spec, self.settings.models.default_quality_mode),
                                   self.storage.uri_of(output_name(spec.job_id, spec.delivery)))
            status["submittedAt"] = status["updatedAt"]
            self._statuses[spec.job_id] = status
            self._fingerprints[spec.job_id] = mark
            first = status_view(status, self.storage)
        self._pool.submit(self._run, spec, time.time())
        return first

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            status = self._statuses.get(job_id)
            return status_view(status, self.storage) if status is not None else None

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self._cancel.set()  # jobs waiting to retry stop now
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _update(self, job_id: str, fields: dict[str, Any]) -> None:
        with self._lock:
            merge_segment(self._statuses[job_id], fields)
            self._statuses[job_id].update(fields, updatedAt=fields.get("updatedAt") or now_iso())

    def _run(self, spec: JobSpec, queued_at: float) -> None:
        def running(request: RenderRequested, attempt: int, progress: dict | None = None) -> None:
            self._update(spec.job_id, {"state": "running", "attempt": attempt, "qualityMode": request.quality_mode,
                                       **(progress or {})})  # progress: an HLS segment stored (worker/broadcast.py)

        try:
            outcome = self.step.run(spec.to_request(datetime.fromtimestamp(queued_at, timezone.utc)),
                                    self._cancel, running)
        except Exception as exc:  # noqa: BLE001 - a bug in the job step: the status must still end
            log.exception("job step crashed")
            outcome = Outcome("failed", spec.job_id, failure=failure_event(
                spec.job_id, None, from_exception(exc), 1, self.settings.worker_id))
        if outcome.state == "succeeded":
            self._update(spec.job_id, succeeded_status(outcome.completion))
        elif outcome.failure is not None:
            self._update(spec.job_id, failed_status(outcome.failure))
        else:  # given back: the backend is closing
            stopped = BackendUnavailable("The gateway stopped before the job finished.")
            self._update(spec.job_id, {"state": "failed", "error": {
                "code": stopped.code, "message": stopped.message, "retryable": True}})


def open_backend(settings: BackendSettings, choice: str = "auto", engines=None) -> JobBackend:
    """kafka when asked for, or on auto when KAFKA_BOOTSTRAP_SERVERS is set; otherwise render in this process
    (with `engines`, the process's engine registry, when the entry point built one)."""
    if choice == "kafka" or (choice == "auto" and settings.kafka_configured):
        from .kafka_backend import KafkaBackend

        worker = settings.worker
        return KafkaBackend(worker.bootstrap_servers, worker.topics, worker.output_uri, worker.s3_endpoint_url,
                            default_mode=worker.models.default_quality_mode, upload_dir=worker.inputs.upload_dir)
    worker = settings.worker
    return InProcessBackend(worker, threads=settings.render_threads, render=pipeline_render(worker.models, engines))
