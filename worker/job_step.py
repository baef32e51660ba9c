"""One render job, from the request record to an outcome: validate, deadline, fetch, render, store, retry.

Runs on a worker thread; it publishes nothing itself. The consumer loop (worker/consumer.py) turns the
Outcome into events and stores the offset once they are acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from schemas.errors import DeadlineExceeded, InternalError, RenderError
from engines.pipeline import RenderRequest, render

from . import metrics
from schemas.errors import InvalidEvent
from schemas.events import RenderRequested, now_iso, parse_request
from .inputs import AUDIO, IMAGE, fetch_input
from .logs import current_job_id
from .settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    state: str  # succeeded | failed | given_back (drain stopped it between attempts; no events, no offset)
    job_id: str
    request: RenderRequested | None = None
    completion: dict | None = None
    failure: dict | None = None
    dead_letter: bool = False
    error_class: str = ""
    attempts: int = 1
    mode: str = "unknown"
    engine: str = "unknown"
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _failure(job_id: str, request: RenderRequested | None, exc: Exception, attempt: int, worker_id: str) -> dict:
    code = getattr(exc, "code", "internal_error")
    payload = {
        "jobId": job_id,
        "code": code,
        "message": getattr(exc, "message", str(exc)),
        "retryable": bool(getattr(exc, "retryable", False)),
        "attempt": attempt,
        "errorClass": type(exc).__name__,
        "deadLettered": True,
        "workerId": worker_id,
        "failedAt": now_iso(),
    }
    if request and request.idempotency_key:
        payload["idempotencyKey"] = request.idempotency_key
    return payload


def run_job(
    value: bytes | None,
    key: str | None,
    record_time: float | None,
    settings: WorkerSettings,
    storage,
    cancel: threading.Event,
    on_running: Callable[[RenderRequested, int], None] = lambda request, attempt: None,
) -> Outcome:
    picked_up = time.time()
    started = time.perf_counter()
    try:
        request = parse_request(value)
    except InvalidEvent as exc:
        job_id = exc.job_id or key or f"unparsed-{uuid.uuid4()}"
        exc.retryable = False
        out = Outcome("failed", job_id, failure=_failure(job_id, None, exc, 1, settings.worker_id), dead_letter=True,
                      error_class=type(exc).__name__)
        out.failure["code"] = exc.code
        return out

    if request.quality_mode is None:
        request = dataclasses.replace(request, quality_mode=settings.models.default_quality_mode)
    token = current_job_id.set(request.job_id)
    try:
        enqueued = request.requested_at.timestamp() if request.requested_at else record_time
        if enqueued:
            metrics.QUEUE_WAIT.observe(max(0.0, picked_up - enqueued))
        attempt = 0
        while True:
            attempt += 1
            try:
                if request.deadline and datetime.now(timezone.utc) > request.deadline:
                    raise DeadlineExceeded(f"The request's deadline {request.deadline.isoformat()} passed before it was rendered.")
                on_running(request, attempt)
                completion = _attempt(request, attempt, settings, storage, max(0.0, picked_up - (enqueued or picked_up)))
                completion["durations"]["totalSeconds"] = round(time.perf_counter() - started, 3)
                return Outcome("succeeded", request.job_id, request, completion=completion, attempts=attempt,
                               mode=completion["mode"], engine=completion["engine"],
                               seconds=time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an event
                if not isinstance(exc, RenderError):
                    log.exception("unexpected error rendering the job")
                    exc = InternalError(f"{type(exc).__name__}: {exc}")
                retry = exc.retryable and attempt < settings.max_attempts
                log.warning("attempt %d failed: %s", attempt, exc.message,
                            extra={"fields": {"code": exc.code, "attempt": attempt, "willRetry": retry}})
                if retry:
                    metrics.RETRIES.labels(exc.code).inc()
                    backoff = min(settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2 ** (attempt - 1))
                    if cancel.wait(backoff):
                        return Outcome("given_back", request.job_id, request, attempts=attempt)
                    continue
                return Outcome("failed", request.job_id, request,
                               failure=_failure(request.job_id, request, exc, attempt, settings.worker_id),
                               dead_letter=True, error_class=type(exc).__name__, attempts=attempt,
                               mode=request.quality_mode, seconds=time.perf_counter() - started)
    finally:
        current_job_id.reset(token)


def _attempt(request: RenderRequested, attempt: int, settings: WorkerSettings, storage, queue_wait: float) -> dict:
    scratch = Path(settings.work_dir) / f"{request.job_id}-{uuid.uuid4().hex[:8]}"
    try:
        tick = time.perf_counter()
        face = fetch_input(request.avatar_uri, IMAGE, settings.inputs, scratch, settings.s3_endpoint_url)
        audio = fetch_input(request.audio_uri, AUDIO, settings.inputs, scratch, settings.s3_endpoint_url)
        fetch_seconds = time.perf_counter() - tick
        result = render(
            RenderRequest(face_path=face, audio_path=audio, out_path=scratch / "out.mp4", mode=request.quality_mode,
                          engine=request.engine, fps=request.fps, size=request.size, seed=request.seed),
            settings.models,
        )
        tick = time.perf_counter()
        stored = storage.put(request.job_id, Path(result.output))
        upload_seconds = time.perf_counter() - tick
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for stage, seconds in (("fetch", fetch_seconds), ("decode", result.decode_seconds),
                           ("frames", result.frames_seconds), ("encode", result.encode_seconds),
                           ("upload", upload_seconds)):
        metrics.STAGE.labels(stage).observe(seconds)
    metrics.OUTPUT_BYTES.inc(stored.bytes)
    completion = {
        "jobId": request.job_id,
        "outputUri": stored.uri,
        "engine": result.engine,
        "mode": result.mode,
        "encoder": result.encoder,
        "frames": result.frames,
        "fps": result.fps,
        "size": result.size,
        "audioSeconds": result.audio_seconds,
        "bytes": stored.bytes,
        "sha256": stored.sha256,
        "attempt": attempt,
        "durations": {
            "queueWaitSeconds": round(queue_wait, 3),
            "fetchSeconds": round(fetch_seconds, 3),
            "decodeSeconds": result.decode_seconds,
            "renderSeconds": result.render_seconds,
            "framesSeconds": result.frames_seconds,
            "encodeSeconds": result.encode_seconds,
            "uploadSeconds": round(upload_seconds, 3),
        },
        "workerId": settings.worker_id,
        "completedAt": now_iso(),
    }
    if request.idempotency_key:
        completion["idempotencyKey"] = request.idempotency_key
    return completion
