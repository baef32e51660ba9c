"""REST gateway (`avatar-renderer api`): POST /render, POST /render/upload, GET /status/{jobId}, /engines,
/healthz, /readyz, /metrics, OpenAPI docs at /docs.

The gateway never renders and never chooses output paths: it checks inputs with worker.security, hands the
job to a JobBackend (Kafka, or in-process when no broker is configured) and reports the status it keeps.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, Security, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.errors import InputError
from engines.pipeline import MAX_FPS, MAX_SIZE, MIN_FPS, MIN_SIZE

from .engine_catalog import engine_catalog
from .backends import BackendUnavailable, JobBackend, JobSpec, requested_mode
from worker.security import AUDIO, IMAGE, SecurityPolicy, check_reference
from .uploads import UploadSweeper, save_upload

REQUESTS = Counter("avatar_api_requests_total", "REST gateway requests", ["route", "method", "status"])
LATENCY = Histogram("avatar_api_request_duration_seconds", "REST gateway request latency", ["route", "method"])
REFUSALS = Counter("avatar_api_refusals_total", "Render submissions refused, by reason code", ["code"])
SUBMITTED = Counter("avatar_api_jobs_submitted_total", "Render jobs accepted by the gateway", ["backend"])

# A refusal's code decides its HTTP status; every other InputError is 422.
STATUS_BY_CODE = {
    "path_not_allowed": 403, "url_not_allowed": 403, "input_too_large": 413, "unsupported_format": 415,
}
QualityMode = Literal["auto", "real_time", "high_quality"]


class RenderBody(BaseModel):
    """The seed's body, plus the optional fields of a render.requested.v1 event."""

    model_config = ConfigDict(extra="forbid")
    avatarPath: str = Field(min_length=1, max_length=2048, description="portrait: path under an allowed root, file://, https:// (allow-listed) or s3://")
    audioPath: str = Field(min_length=1, max_length=2048, description="speech: same forms as avatarPath")
    qualityMode: QualityMode | None = Field(None, description="default: DEFAULT_QUALITY_MODE (auto)")
    engine: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="force one engine by name (see GET /engines)")
    fps: int = Field(25, ge=MIN_FPS, le=MAX_FPS)
    size: int = Field(512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=2, description="output width and height")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    priority: int | None = Field(None, ge=0, le=9)
    deadline: AwareDatetime | None = Field(None, description="RFC 3339 with a time zone; a job not started by then fails fast")
    idempotencyKey: str | None = Field(None, min_length=1, max_length=200,
                                       description="the same key names the same job and output")

    @field_validator("avatarPath", "audioPath")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL bytes")
        return value


class Accepted(BaseModel):
    jobId: str
    output: str = Field(description="URI the video will be written to")
    qualityMode: str
    statusUrl: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = Field(None, description="per-field problems of an invalid request")


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    jobId: str
    state: Literal["queued", "running", "succeeded", "failed"]
    output: str | None = None
    qualityMode: str | None = None
    engine: str | None = None
    mode: str | None = None
    timings: dict[str, float] | None = None
    error: dict[str, Any] | None = None
    updatedAt: str | None = None


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 413, 415, 422, 503)}


def _refusal(code: str, message: str, status: int | None = None) -> JSONResponse:
    REFUSALS.labels(code).inc()
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status or STATUS_BY_CODE.get(code, 422))


def create_app(backend: JobBackend, policy: SecurityPolicy, api_keys: frozenset[str] = frozenset()) -> FastAPI:
    sweeper = UploadSweeper(policy.upload_dir, policy.upload_retention_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        sweeping = asyncio.create_task(sweeper.run())
        try:
            yield
        finally:
            sweeping.cancel()

    app = FastAPI(
        title="Avatar Renderer", version="1.0", lifespan=lifespan,
        description="Portrait + speech -> lip-synced talking-head MP4. Submit a job, then poll its status.",
    )
    app.state.backend, app.state.policy = backend, policy
    # Uploads may be at most one image and one audio file, plus form fields.
    app.add_middleware(BodyLimit, max_bytes=policy.max_image_bytes + policy.max_audio_bytes + 64 * 1024)
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when API_KEYS is set")

    def require_key(key: str | None = Security(key_header)) -> None:
        if not (key and any(hmac.compare_digest(key.encode(), k.encode()) for k in api_keys)):
            raise HTTPException(401, detail={"code": "unauthorized", "message": "A valid X-API-Key header is required."})

    # Without API_KEYS the spec declares no security at all, so the docs do not promise auth that is not there.
    auth = [Depends(require_key)] if api_keys else []

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _refusal(exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
        REFUSALS.labels("invalid_request").inc()
        return JSONResponse({"error": {"code": "invalid_request", "message": f"Invalid request: {summary}.",
                                       "details": jsonable_encoder(details)}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"code": "http_error", "message": str(exc.detail)}
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(path, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(path, request.method, str(response.status_code)).inc()
        return response

    def accept(request: Request, spec: JobSpec) -> JSONResponse:
        if not backend.ready():
            return _refusal("unavailable", "The job queue is not reachable; try again shortly.", 503)
        try:
            status = backend.submit(spec.with_job_id())
        except BackendUnavailable as exc:
            return _refusal("unavailable", str(exc), 503)
        SUBMITTED.labels(backend.name).inc()
        body = Accepted(
            jobId=status["jobId"], output=status["output"], qualityMode=status.get("qualityMode") or requested_mode(spec),
            statusUrl=str(request.url_for("get_status", jobId=status["jobId"])),
        )
        return JSONResponse(body.model_dump(), status_code=202)

    @app.post("/render", status_code=202, response_model=Accepted, responses=ERRORS, dependencies=auth)
    def submit_render(body: RenderBody, request: Request) -> JSONResponse:
        """Queue a render of files the server can already read (paths under its allowed roots or URLs)."""
        spec = JobSpec(
            avatar_uri=check_reference(body.avatarPath, IMAGE, policy),
            audio_uri=check_reference(body.audioPath, AUDIO, policy),
            quality_mode=body.qualityMode, engine=body.engine, fps=body.fps, size=body.size, seed=body.seed,
            priority=body.priority, deadline=body.deadline.isoformat() if body.deadline else None,
            idempotency_key=body.idempotencyKey,
        )
        return accept(request, spec)

    @app.post("/render/upload", status_code=202, response_model=Accepted, responses=ERRORS,
              dependencies=auth)
    def submit_upload(
        request: Request,
        avatar: UploadFile = File(description="portrait: PNG, JPEG or WebP"),
        audio: UploadFile = File(description="speech: WAV, MP3, M4A, OGG or FLAC"),
        qualityMode: QualityMode | None = Form(None),
        engine: str | None = Form(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$"),
        fps: int = Form(25, ge=MIN_FPS, le=MAX_FPS),
        size: int = Form(512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=2),
        seed: int = Form(0, ge=0, le=2**32 - 1),
        idempotencyKey: str | None = Form(None, min_length=1, max_length=200),
    ) -> JSONResponse:
        """Queue a render of an uploaded portrait and speech file (saved in the server's upload folder)."""
        folder = policy.upload_dir / uuid.uuid4().hex
        try:
            face = save_upload(avatar.file, folder / "avatar", IMAGE, policy, _upload_label(avatar))
            speech = save_upload(audio.file, folder / "audio", AUDIO, policy, _upload_label(audio))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        spec = JobSpec(avatar_uri=face.as_uri(), audio_uri=speech.as_uri(), quality_mode=qualityMode, engine=engine,
                       fps=fps, size=size, seed=seed, idempotency_key=idempotencyKey)
        return accept(request, spec)

    @app.get("/status/{jobId}", response_model=JobStatus, responses={404: {"model": ErrorBody}, 401: {"model": ErrorBody}},
             dependencies=auth, name="get_status")
    def get_status(jobId: str) -> JSONResponse:
        """State (queued, running, succeeded, failed), output URI, engine, timings or the failure reason."""
        status = backend.status(jobId)
        if status is None:
            return JSONResponse({"error": {"code": "unknown_job", "message": f"No job {jobId} is known."}}, status_code=404)
        return JSONResponse(JobStatus.model_validate(status).model_dump(exclude_none=True))

    @app.get("/engines", dependencies=auth, responses={401: {"model": ErrorBody}})
    def engines() -> list[dict[str, Any]]:
        """Engines in this build and whether each can run on the gateway's machine."""
        return engine_catalog()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "backend": backend.name}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    def readyz() -> JSONResponse:
        if backend.ready():
            return JSONResponse({"status": "ready", "backend": backend.name})
        return JSONResponse({"error": {"code": "unavailable", "message": "The job queue is not reachable."}}, status_code=503)

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _upload_label(upload: UploadFile) -> str:
    return f"upload {upload.filename!r}" if upload.filename else "upload"


class BodyLimit:
    """ASGI middleware: refuse request bodies over a byte limit with 413, before they are spooled to disk."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            # Whatever the app answers once the body went over the limit (FastAPI turns the parse error into
            # a 400) is replaced by one 413 naming the limit.
            if received <= self.max_bytes:
                return await send(message)
            if message["type"] == "http.response.start":
                await _too_large(send, self.max_bytes)

        try:
            await self.app(scope, limited, guarded_send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = JSONResponse({"error": {"code": "input_too_large", "message": f"The request body is over the {limit:,}-byte limit."}}).body
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def api_keys_from_env() -> frozenset[str]:
    return frozenset(k.strip() for k in os.environ.get("API_KEYS", "").split(",") if k.strip())


def run_api(args: Any) -> int:
    """`avatar-renderer api`: serve the gateway with uvicorn until interrupted."""
    import uvicorn

    from .backends import backend_from_env

    policy = SecurityPolicy.from_env()
    backend = backend_from_env(policy, args.backend)
    app = create_app(backend, policy, api_keys_from_env())
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        backend.close()
    return 0
