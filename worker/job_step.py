"""The one job step: a render request to an outcome: deadline, fetch inputs, render, store, retry with backoff.

The Kafka worker (worker/consumer.py) and the gateways' in-process backend (gateway/backends.py) both run jobs
through a JobStep, so both fetch inputs the same way, retry the same errors, honour the deadline, record the
same metrics and report the same timings (`timings()`: the completion event's `durations`, /status `timings`).

Runs on a worker thread; it publishes nothing itself. Its caller turns the Outcome into events or statuses.
The render itself is injected (`render(RenderRequest) -> RenderResult`), so the entry point decides which
engines a process holds.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable

from engines.face_choice import FaceChoice
from engines.pipeline import RenderRequest, RenderResult
from engines.settings import ModelSettings
from schemas.errors import DeadlineExceeded, InvalidEvent, RenderError, from_exception
from schemas.events import RenderRequested, now_iso, parse_request, record_job_id, safe_job_id

from . import metrics
from .broadcast import SegmentUploader, delivery_of, store_output, with_local_background
from .inputs import AUDIO, IMAGE, VIDEO, fetch_input
from .logs import current_job_id
from .settings import WorkerSettings

log = logging.getLogger(__name__)

Render = Callable[[RenderRequest], RenderResult]

# The keys of a job's timings, in seconds, the same in render.completed.v1 `durations` and in /status `timings`.
TIMING_KEYS = ("queueWaitSeconds", "fetchSeconds", "decodeSeconds", "renderSeconds", "framesSeconds",
               "firstFrameSeconds", "encodeSeconds", "uploadSeconds", "totalSeconds")


@dataclass
class Outcome:
    state: str  # succeeded | failed | given_back (stopped between attempts; no events, no offset)
    job_id: str
    request: RenderRequested | None = None
    completion: dict | None = None  # render.completed.v1
    failure: dict | None = None  # render.failed.v1
    dead_letter: bool = False
    error_class: str = ""
    attempts: int = 1
    mode: str = "unknown"
    engine: str = "unknown"


def pipeline_render(models: ModelSettings, engines=None) -> Render:
    """engines.pipeline.render over `engines` (the process's EngineRegistry), else over one built here once."""
    from engines.pipeline import render
    from engines.registry import EngineRegistry

    return partial(render, engines=engines if engines is not None else EngineRegistry.for_settings(models))


def timings(result: RenderResult, queue_wait: float, fetch: float, upload: float, total: float) -> dict[str, float]:
    """The one timings dict of a finished job (keys TIMING_KEYS)."""
    return {
        "queueWaitSeconds": round(queue_wait, 3),
        "fetchSeconds": round(fetch, 3),
        "decodeSeconds": result.decode_seconds,
        "renderSeconds": result.render_seconds,
        "framesSeconds": result.frames_seconds,
        "firstFrameSeconds": result.first_frame_seconds,
        "encodeSeconds": result.encode_seconds,
        "uploadSeconds": round(upload, 3),
        "totalSeconds": round(total, 3),
    }


def queued_status(job_id: str, quality_mode: str, output_uri: str | None = None) -> dict:
    """The render.status.v1 event of a job just accepted (every front door and `submit` publish this one)."""
    status = {"jobId": job_id, "state": "queued", "qualityMode": quality_mode, "updatedAt": now_iso()}
    if output_uri:
        status["outputUri"] = output_uri
    return status


def failure_event(job_id: str, request: RenderRequested | None, exc: RenderError, attempt: int,
                  worker_id: str) -> dict:
    """The render.failed.v1 event of a job that ends with `exc`."""
    payload = {
        "jobId": job_id,
        "code": exc.code,
        "message": exc.message,
        "retryable": bool(exc.retryable),
        "attempt": attempt,
        "errorClass": type(exc).__name__,
        "deadLettered": True,
        "workerId": worker_id,
        "failedAt": now_iso(),
    }
    if request and request.idempotency_key:
        payload["idempotencyKey"] = request.idempotency_key
    return payload


def refused(exc: InvalidEvent, value: bytes | None, key: bytes | None, worker_id: str) -> Outcome:
    """The failed (dead-lettered) Outcome of a record that can never be rendered, under a bounded job id."""
    job_id = safe_job_id(exc.job_id) if exc.job_id else record_job_id(value, key)
    return Outcome("failed", job_id, failure=failure_event(job_id, None, exc, 1, worker_id), dead_letter=True,
                   error_class=type(exc).__name__)


class JobStep:
    """Runs jobs with one worker's settings, storage and render function; built once, shared by threads."""

    def __init__(self, settings: WorkerSettings, storage, render: Render):
        self.settings = settings
        self.storage = storage
        self.render = render

    def run_record(self, value: bytes | None, key: bytes | None, record_time: float | None, cancel: threading.Event,
                   on_running: Callable[[RenderRequested, int], None] = lambda request, attempt: None) -> Outcome:
        """A Kafka record's value: parsed (a bad record fails at once, for the DLQ), then run()."""
        try:
            request = parse_request(value)
        except InvalidEvent as exc:
            return refused(exc, value, key, self.settings.worker_id)
        return self.run(request, cancel, on_running, record_time)

    def run(self, request: RenderRequested, cancel: threading.Event,
            on_running: Callable[[RenderRequested, int], None] = lambda request, attempt: None,
            enqueued_at: float | None = None) -> Outcome:
        """Attempts until success, a permanent error, MAX_ATTEMPTS or the deadline; `cancel` stops the backoff.

        enqueued_at: epoch seconds the job was queued, when the request carries no requestedAt.
        """
        picked_up = time.time()
        started = time.perf_counter()
        settings = self.settings
        if request.quality_mode is None:
            request = dataclasses.replace(request, quality_mode=settings.models.default_quality_mode)
        token = current_job_id.set(request.job_id)
        try:
            enqueued = request.requested_at.timestamp() if request.requested_at else enqueued_at
            queue_wait = max(0.0, picked_up - enqueued) if enqueued else 0.0
            if enqueued:
                metrics.QUEUE_WAIT.observe(queue_wait)
            attempt = 0
            while True:
                attempt += 1
                try:
                    if request.deadline and datetime.now(timezone.utc) > request.deadline:
                        raise DeadlineExceeded(
                            f"The request's deadline {request.deadline.isoformat()} passed before it was rendered.")
                    on_running(request, attempt)
                    completion = self._attempt(request, attempt, queue_wait, started, on_running)
                    return Outcome("succeeded", request.job_id, request, completion=completion, attempts=attempt,
                                   mode=completion["mode"], engine=completion["engine"])
                except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome
                    if not isinstance(exc, RenderError):
                        log.exception("unexpected error rendering the job")
                    exc = from_exception(exc)
                    retry = exc.retryable and attempt < settings.max_attempts
                    log.warning("attempt %d failed: %s", attempt, exc.message,
                                extra={"fields": {"code": exc.code, "attempt": attempt, "willRetry": retry}})
                    if retry:
                        metrics.RETRIES.labels(exc.code).inc()
                        backoff = min(settings.retry_backoff_max_seconds,
                                      settings.retry_backoff_seconds * 2 ** (attempt - 1))
                        if cancel.wait(backoff):
                            return Outcome("given_back", request.job_id, request, attempts=attempt)
                        continue
                    return Outcome("failed", request.job_id, request,
                                   failure=failure_event(request.job_id, request, exc, attempt, settings.worker_id),
                                   dead_letter=True, error_class=type(exc).__name__, attempts=attempt,
                                   mode=request.quality_mode)
        finally:
            current_job_id.reset(token)

    def _attempt(self, request: RenderRequested, attempt: int, queue_wait: float, started: float,
                 on_running: Callable = lambda request, attempt, progress=None: None) -> dict:
        settings = self.settings
        scratch = Path(settings.work_dir) / f"{request.job_id}-{uuid.uuid4().hex[:8]}"
        try:
            tick = time.perf_counter()
            delivery = delivery_of(getattr(request, "delivery", None))  # output, canvas, loudness, hls (issue 12)
            face = fetch_input(request.avatar_uri, IMAGE, settings.inputs, scratch, settings.s3_endpoint_url)
            audio = fetch_input(request.audio_uri, AUDIO, settings.inputs, scratch, settings.s3_endpoint_url)
            delivery = with_local_background(delivery, settings, scratch)  # checked and fetched like the portrait
            driving_video = getattr(request, "driving_video", None)  # high_quality head motion, fetched alike
            driving = (fetch_input(driving_video, VIDEO, settings.inputs, scratch, settings.s3_endpoint_url)
                       if driving_video else None)
            fetch_seconds = time.perf_counter() - tick
            # hls: each segment is stored and announced (a running status with `segment`) as soon as it is finished
            segments = SegmentUploader(self.storage, request.job_id,
                                       lambda progress: on_running(request, attempt, progress=progress))
            out_path = scratch / ("hls/index.m3u8" if delivery.output == "hls" else f"out.{delivery.extension}")
            result = self.render(RenderRequest(
                face_path=face, audio_path=audio, out_path=out_path, mode=request.quality_mode,
                engine=request.engine, fps=request.fps, size=request.size, seed=request.seed,
                face=FaceChoice.from_wire(request.face), framing=request.framing or "crop",
                delivery=delivery, on_segment=segments if delivery.output == "hls" else None,
                driving_path=driving,
            ))
            tick = time.perf_counter()
            stored, delivered = store_output(self.storage, request.job_id, delivery, result)
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
            "engineDetails": result.engine_details,
            "frames": result.frames,
            "fps": result.fps,
            "size": result.size,
            "audioSeconds": result.audio_seconds,
            "bytes": stored.bytes,
            "sha256": stored.sha256,
            "attempt": attempt,
            "durations": timings(result, queue_wait, fetch_seconds, upload_seconds, time.perf_counter() - started),
            "workerId": settings.worker_id,
            "completedAt": now_iso(),
        }
        if result.frame_rate:  # the exact rate ("30000/1001"); fps is its plain number (29.97)
            completion["frameRate"] = result.frame_rate
        completion.update(framing_fields(result))
        completion.update(delivered)  # outputFormat, loudness, and for hls segments / mp4Uri (worker/broadcast.py)
        if request.idempotency_key:
            completion["idempotencyKey"] = request.idempotency_key
        if request.requested_mode:  # the router resolved auto (or a default) into this lane's mode
            completion["requestedMode"] = request.requested_mode
        return completion


def framing_fields(result: RenderResult) -> dict:
    """faceUsed, upscaled, width, height of render.completed.v1, those the RenderResult knows (a result built
    without framing, e.g. by an injected render, leaves them empty: face_used {}, width/height 0)."""
    fields = {"faceUsed": getattr(result, "face_used", None) or None, "upscaled": getattr(result, "upscaled", None),
              "width": getattr(result, "width", 0) or None, "height": getattr(result, "height", 0) or None}
    return {k: v for k, v in fields.items() if v is not None}
