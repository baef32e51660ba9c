"""What the front doors (REST gateway, MCP server) submit render jobs through, and where they read status.

Two backends share one small interface:
- InProcessBackend renders with engines.pipeline.render on a thread pool and keeps statuses in memory. It is
  what `avatar-renderer mcp` and `avatar-renderer api` use when no broker is configured.
- KafkaBackend (gateway/kafka_backend.py) publishes render.requested.v1 events and follows the status topic.

A status is a plain dict, the same shape from both: jobId, state (queued|running|succeeded|failed), output,
qualityMode, and when known engine, mode, timings {...}, error {code, message, retryable}, updatedAt.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from schemas.errors import BackendUnavailable, RenderError
from engines.pipeline import RenderRequest, render

from worker.inputs import fetch_input
from worker.logs import current_job_id
from worker.security import AUDIO, IMAGE, SecurityPolicy

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed")
# Idempotency keys map to job ids deterministically, so a retried submission names the same job and output.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c5a59-2b0e-4d0e-9a53-5f0b8c6f6b11")


def requested_mode(spec: "JobSpec") -> str:
    """The mode a job asks for: its own, else DEFAULT_QUALITY_MODE (what the render will use), else auto."""
    return spec.quality_mode or os.environ.get("DEFAULT_QUALITY_MODE", "").strip() or "auto"


def job_id_for(idempotency_key: str | None) -> str:
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key)) if idempotency_key else str(uuid.uuid4())


@dataclass(frozen=True)
class JobSpec:
    """A render job as a front door accepted it: inputs already checked by worker.security."""

    avatar_uri: str
    audio_uri: str
    quality_mode: str | None = None
    engine: str | None = None
    fps: int = 25
    size: int = 512
    seed: int = 0
    priority: int | None = None
    deadline: str | None = None  # RFC 3339
    idempotency_key: str | None = None
    job_id: str = field(default="")

    def with_job_id(self) -> "JobSpec":
        if self.job_id:
            return self
        return replace(self, job_id=job_id_for(self.idempotency_key))


class JobBackend(Protocol):
    name: str

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        """Accept the job (spec.job_id set) and return its first status (state queued, output URI known)."""

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The latest status of a job, or None when this backend has never heard of it."""

    def ready(self) -> bool:
        """Whether submissions can be accepted now."""

    def close(self) -> None: ...


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class InProcessBackend:
    """Renders jobs in this process on a small thread pool; statuses live in memory (lost on restart)."""

    name = "in-process"

    def __init__(self, policy: SecurityPolicy, output: Path | str, workers: int = 1, s3_endpoint_url: str | None = None):
        """output: a directory, or an output URI (file:///dir or s3://bucket/prefix) as the worker takes it."""
        from worker.storage import open_storage

        self.policy = policy
        self.s3_endpoint_url = s3_endpoint_url
        uri = output if isinstance(output, str) and "://" in output else Path(output).resolve().as_uri()
        self.storage = open_storage(uri, s3_endpoint_url)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self._lock = threading.Lock()
        self._statuses: dict[str, dict[str, Any]] = {}

    def output_uri(self, job_id: str) -> str:
        return self.storage.uri_for(job_id)

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        spec = spec.with_job_id()
        with self._lock:
            existing = self._statuses.get(spec.job_id)
            if existing is not None and existing["state"] != "failed":
                return dict(existing)  # the same idempotency key again: the job already exists
            status = {
                "jobId": spec.job_id, "state": "queued", "output": self.output_uri(spec.job_id),
                "qualityMode": requested_mode(spec), "submittedAt": _now(), "updatedAt": _now(),
            }
            self._statuses[spec.job_id] = status
            first = dict(status)
        self._pool.submit(self._run, spec, time.monotonic())
        return first

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            status = self._statuses.get(job_id)
            return dict(status) if status is not None else None

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self._statuses[job_id].update(fields, updatedAt=_now())

    def _run(self, spec: JobSpec, queued_at: float) -> None:
        token = current_job_id.set(spec.job_id)
        started = time.monotonic()
        self._update(spec.job_id, state="running")
        try:
            with tempfile.TemporaryDirectory(prefix="avatar-inputs-") as scratch:
                # Checked again here: a file may have changed since the front door looked at it.
                face = fetch_input(spec.avatar_uri, IMAGE, self.policy, Path(scratch), self.s3_endpoint_url)
                audio = fetch_input(spec.audio_uri, AUDIO, self.policy, Path(scratch), self.s3_endpoint_url)
                result = render(RenderRequest(
                    face_path=face, audio_path=audio, out_path=Path(scratch) / "out.mp4",
                    mode=spec.quality_mode, engine=spec.engine, fps=spec.fps, size=spec.size, seed=spec.seed,
                ))
                stored = self.storage.put(spec.job_id, Path(result.output))
        except RenderError as exc:
            log.info("render failed: %s", exc.message, extra={"fields": {"code": exc.code}})
            self._update(spec.job_id, state="failed",
                         error={"code": exc.code, "message": exc.message, "retryable": exc.retryable})
        except Exception as exc:  # noqa: BLE001 - a status must always reach a final state
            log.exception("render crashed")
            self._update(spec.job_id, state="failed",
                         error={"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "retryable": True})
        else:
            self._update(
                spec.job_id, state="succeeded", output=stored.uri, bytes=stored.bytes, sha256=stored.sha256,
                engine=result.engine, mode=result.mode, frames=result.frames,
                audioSeconds=result.audio_seconds,
                timings={
                    "queueWaitSeconds": round(started - queued_at, 3), "renderSeconds": result.render_seconds,
                    "decodeSeconds": result.decode_seconds, "framesSeconds": result.frames_seconds,
                    "encodeSeconds": result.encode_seconds, "firstFrameSeconds": result.first_frame_seconds,
                },
            )
        finally:
            current_job_id.reset(token)


def backend_from_env(policy: SecurityPolicy, choice: str = "auto") -> JobBackend:
    """kafka when KAFKA_BOOTSTRAP_SERVERS is set (or asked for), otherwise render in this process."""
    if choice == "kafka" or (choice == "auto" and os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        from .kafka_backend import KafkaBackend

        return KafkaBackend.from_env()
    # Same output settings as the worker: OUTPUT_URI (file:///dir or s3://bucket/prefix), else OUTPUT_DIR.
    output = os.environ.get("OUTPUT_URI", "").strip() or Path(os.environ.get("OUTPUT_DIR") or "out/renders")
    return InProcessBackend(policy, output, workers=int(os.environ.get("RENDER_THREADS", "1")),
                            s3_endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)
