"""REST gateway (`avatar-renderer api`): POST /render, POST /render/upload, GET /status/{jobId}, GET /renders/{jobId}
(the video, gateway/downloads.py), /engines, /healthz, /readyz, /metrics, OpenAPI docs at /docs (gateway/docs.py).

The gateway never renders and never chooses output paths: it checks inputs with worker.security and the
engine choice with the engine registry, hands the job to a JobBackend (Kafka, or in-process when no broker
is configured) and reports the status it keeps. Every failure it reports is a schemas.errors.RenderError,
answered with that error's HTTP status and a body {"error": {"code", "message"}}.
"""

from __future__ import annotations

import asyncio
import hmac
import shutil
import socket
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Mapping

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.errors import (BackendUnavailable, HttpError, InvalidRequest, RenderError, SettingsError, Unauthorized,
                           UnknownJob, catalog)
from engines.pipeline import FRAMINGS, MAX_FPS, MAX_SIZE, MIN_FPS, MIN_SIZE, check_fps
from schemas.frame_rate import TEXT_PATTERN as FPS_TEXT
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from worker.security import AUDIO, IMAGE, VIDEO, SecurityPolicy, check_reference

from .backends import JobBackend, JobSpec, face_from_request, requested_mode
from .body_limit import BodyLimit
from .hls_files import locate_file, media_type
from .delivery_request import OUTPUT_HELP, CanvasBody, HlsBody, LoudnessBody, Output, delivery_from_wire
from .docs import KEY_HEADER, add_docs
from .downloads import MEDIA_TYPE, VideoFile, locate
from .engine_catalog import engine_catalog
from .request_types import FaceBox, FaceIndex, Int, NotBool, OptionalInt
from .settings import GatewaySettings
from .uploads import UploadSweeper, save_upload

REQUESTS = Counter("avatar_api_requests_total", "REST gateway requests", ["route", "method", "status"])
LATENCY = Histogram("avatar_api_request_duration_seconds", "REST gateway request latency", ["route", "method"])
REFUSALS = Counter("avatar_api_refusals_total", "Render submissions refused, by reason code", ["code"])
SUBMITTED = Counter("avatar_api_jobs_submitted_total", "Render jobs accepted by the gateway", ["backend"])

UPLOAD_PATH = "/render/upload"  # the one route whose body may be large (BodyLimit)
QualityMode = Literal["auto", "real_time", "high_quality"]
Framing = Literal[FRAMINGS]  # crop (a square around the face) | original (the whole photo)
# A number, or an exact fraction "N/D"; engines.pipeline.check_fps reads either (29.97 means 30000/1001).
FrameRate = Annotated[Annotated[int, Field(ge=MIN_FPS, le=MAX_FPS)] | Annotated[float, Field(ge=MIN_FPS, le=MAX_FPS)]
                      | Annotated[str, Field(pattern=FPS_TEXT)], NotBool]
FPS_HELP = 'frames a second, 1-60: 25, 29.97 (= 30000/1001) or an exact fraction "30000/1001"'


class RenderBody(BaseModel):
    """The seed's body, plus the optional fields of a render.requested.v1 event."""

    model_config = ConfigDict(extra="forbid")
    avatarPath: str = Field(min_length=1, max_length=2048, description="portrait: path under an allowed root, file://, https:// (allow-listed) or s3://")
    audioPath: str = Field(min_length=1, max_length=2048, description="speech: same forms as avatarPath")
    qualityMode: QualityMode | None = Field(None, description="default: DEFAULT_QUALITY_MODE (auto)")
    engine: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="force one engine by name (see GET /engines)")
    fps: FrameRate = Field(25, description=FPS_HELP)
    face: Literal["largest"] | FaceIndex | FaceBox = Field("largest", description="which face of the photo to animate")
    framing: Framing = Field("crop", description="crop: a size x size square around the face; original: the whole photo")
    size: Int = Field(512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=2, description="output width and height")
    seed: Int = Field(0, ge=0, le=2**32 - 1)
    priority: OptionalInt = Field(None, ge=0, le=9)
    deadline: AwareDatetime | None = Field(None, description="RFC 3339 with a time zone; a job not started by then fails fast")
    idempotencyKey: str | None = Field(None, min_length=1, max_length=200,
                                       description="the same key names the same job and output")
    # Broadcast formats (issue 12): gateway/delivery_request.py
    output: Output = Field("mp4", description=OUTPUT_HELP)
    canvas: CanvasBody | None = Field(None, description="place the avatar on a 16:9 or 9:16 canvas")
    loudness: LoudnessBody | None = Field(None, description="bring the speech to a loudness target (BS.1770)")
    hls: HlsBody | None = Field(None, description="output hls: segment length, and whether to store one MP4 too")
    drivingVideo: str | None = Field(None, min_length=1, max_length=2048,
                                     description="a driving video (MP4, MOV, WebM, MKV; same forms as avatarPath) whose "
                                                 "head motion drives the portrait; high_quality engines only")

    @field_validator("avatarPath", "audioPath", "drivingVideo")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL bytes")
        return value


class Accepted(BaseModel):
    jobId: str
    output: str = Field(description="URI the video will be written to (server-side; fetch it with GET /renders/{jobId} once succeeded)")
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
    output: str | None = Field(None, description="where the video is (succeeded) or will be (queued, running); absent when failed")
    download: str | None = Field(None, description="succeeded only: absolute URL of GET /renders/{jobId}, the video")
    qualityMode: str | None = None
    engine: str | None = None
    mode: str | None = None
    timings: dict[str, float] | None = None
    error: dict[str, Any] | None = None
    updatedAt: str | None = None


# A submission may fail with any 4xx/5xx of the error tree (schemas.errors.catalog), or an invalid request (422).
ERRORS = {status: {"model": ErrorBody} for status in sorted({row["httpStatus"] for row in catalog()} | {422})}


def _error_response(error: RenderError) -> JSONResponse:
    """The one place a failure becomes an HTTP answer: its http_status, and a body carrying its code and message."""
    REFUSALS.labels(error.code).inc()
    return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.http_status)


def create_app(backend: JobBackend, policy: SecurityPolicy, settings: GatewaySettings | None = None,
               engines: EngineRegistry | None = None) -> FastAPI:
    """The gateway app. `engines` is this process's registry (what /engines lists and what engine names a
    request may ask for); left out, one is built from default model settings."""
    settings = settings or GatewaySettings()
    if engines is None:
        engines = EngineRegistry.for_settings(ModelSettings.from_env({}))
    sweeper = UploadSweeper(policy.upload_dir, policy.upload_retention_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        sweeping = asyncio.create_task(sweeper.run())
        try:
            yield
        finally:
            sweeping.cancel()

    app = FastAPI(
        title="Avatar Renderer", version="1.0", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None,
        description="Portrait + speech -> lip-synced talking-head MP4. Submit a job, then poll its status.",
    )
    app.state.backend, app.state.policy, app.state.engines = backend, policy, engines
    # Uploads may be at most one image and one audio file, plus form fields; every other route takes small JSON.
    upload_limit = policy.max_image_bytes + policy.max_audio_bytes + 64 * 1024
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit if path == UPLOAD_PATH
                       else settings.max_json_body_bytes)
    key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="required when API_KEYS is set")
    api_keys = [k.encode() for k in settings.api_keys]

    def require_key(key: str | None = Security(key_header)) -> None:
        # Every key is compared (in constant time), so the answer's timing says nothing about which matched.
        if not (key and sum(hmac.compare_digest(key.encode(), k) for k in api_keys)):
            raise Unauthorized(f"A valid {KEY_HEADER} header is required.")

    # Without API_KEYS the spec declares no security at all, so the docs do not promise auth that is not there.
    auth = [Depends(require_key)] if api_keys else []
    add_docs(app, auth, keys_required=bool(api_keys))

    @app.exception_handler(RenderError)
    async def _render_error(_: Request, exc: RenderError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
        REFUSALS.labels(InvalidRequest.code).inc()
        return JSONResponse({"error": {"code": InvalidRequest.code, "message": f"Invalid request: {summary}.",
                                       "details": jsonable_encoder(details)}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"code": HttpError.code, "message": str(exc.detail)}
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
        """Submit a checked job; any RenderError (unavailable, idempotency_conflict ...) reaches _render_error."""
        if not backend.ready():
            raise BackendUnavailable("The job queue is not reachable; try again shortly.")
        status = backend.submit(spec.with_job_id())
        SUBMITTED.labels(backend.name).inc()
        body = Accepted(
            jobId=status["jobId"], output=status.get("output") or backend.storage.uri_for(status["jobId"]), qualityMode=status.get("qualityMode") or requested_mode(spec, engines.settings.default_quality_mode),
            statusUrl=str(request.url_for("get_status", jobId=status["jobId"])),
        )
        return JSONResponse(body.model_dump(), status_code=202)

    @app.post("/render", status_code=202, response_model=Accepted, responses=ERRORS, dependencies=auth)
    def submit_render(body: RenderBody, request: Request) -> JSONResponse:
        """Queue a render of files the server can already read (paths under its allowed roots or URLs)."""
        engines.check_request(body.qualityMode, body.engine)
        if body.drivingVideo is not None:
            engines.check_driving_video(body.qualityMode, body.engine)
        spec = JobSpec(
            avatar_uri=check_reference(body.avatarPath, IMAGE, policy),
            audio_uri=check_reference(body.audioPath, AUDIO, policy),
            quality_mode=body.qualityMode, engine=body.engine, fps=check_fps(body.fps), size=body.size, seed=body.seed,
            face=face_from_request(body.face if isinstance(body.face, str) else body.face.model_dump()),
            framing=body.framing, priority=body.priority, deadline=body.deadline.isoformat() if body.deadline else None,
            idempotency_key=body.idempotencyKey,
            delivery=delivery_from_wire(body.model_dump(include={"output", "canvas", "loudness", "hls"}), policy),
            driving_video=check_reference(body.drivingVideo, VIDEO, policy) if body.drivingVideo else None,
        )
        return accept(request, spec)

    @app.post(UPLOAD_PATH, status_code=202, response_model=Accepted, responses=ERRORS,
              dependencies=[*auth, Depends(_only_declared_form_fields)])
    def submit_upload(
        request: Request,
        avatar: UploadFile = File(description="portrait: PNG, JPEG or WebP"),
        audio: UploadFile = File(description="speech: WAV, MP3, M4A, OGG or FLAC"),
        qualityMode: QualityMode | None = Form(None),
        engine: str | None = Form(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$"),
        fps: str = Form("25", description=FPS_HELP),
        face: str = Form("largest", description="largest, index:N or box:X,Y,W,H"),
        framing: Framing = Form("crop"),
        size: int = Form(512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=2),
        seed: int = Form(0, ge=0, le=2**32 - 1),
        idempotencyKey: str | None = Form(None, min_length=1, max_length=200),
        output: Output = Form("mp4", description=OUTPUT_HELP),
        canvas: Literal["1920x1080", "1280x720", "1080x1920"] | None = Form(None, description="centred, as large as fits"),
        background: str | None = Form(None, pattern=r"^#?[0-9a-fA-F]{6}$", description="canvas colour #RRGGBB"),
        loudness: str | None = Form(None, description="ebu-r128, atsc-a85, web or a number of LUFS"),
    ) -> JSONResponse:
        """Queue a render of an uploaded portrait and speech file (saved in the server's upload folder)."""
        engines.check_request(qualityMode, engine)
        fps, choice = check_fps(fps), face_from_request(face)  # refused before the upload is saved
        delivery = delivery_from_wire({"output": output, "loudness": {"target": loudness} if loudness else None,
                                       "canvas": {"size": canvas or "1920x1080", "background": background}
                                       if canvas or background else None}, policy)
        folder = policy.upload_dir / uuid.uuid4().hex
        try:
            face = save_upload(avatar.file, folder / "avatar", IMAGE, policy, _upload_label(avatar))
            speech = save_upload(audio.file, folder / "audio", AUDIO, policy, _upload_label(audio))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        spec = JobSpec(avatar_uri=face.as_uri(), audio_uri=speech.as_uri(), quality_mode=qualityMode, engine=engine,
                       fps=fps, size=size, seed=seed, idempotency_key=idempotencyKey, face=choice, framing=framing,
                       delivery=delivery)
        return accept(request, spec)

    @app.get("/status/{jobId}", response_model=JobStatus, responses={404: {"model": ErrorBody}, 401: {"model": ErrorBody}},
             dependencies=auth, name="get_status")
    def get_status(jobId: str, request: Request) -> JSONResponse:
        """State (queued, running, succeeded, failed), output URI, engine, timings or the failure reason; once
        succeeded, `download`: the URL of the video (GET /renders/{jobId})."""
        status = backend.status(jobId)
        if status is None:
            raise UnknownJob(f"No job {jobId} is known.")
        if status["state"] == "succeeded":
            status = {**status, "download": str(request.url_for("get_render", jobId=jobId))}
        return JSONResponse(JobStatus.model_validate(status).model_dump(exclude_none=True))

    @app.get("/renders/{jobId}", dependencies=auth, name="get_render", response_class=FileResponse, responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "the MP4 (Accept-Ranges: bytes)"},
        206: {"content": {MEDIA_TYPE: {}}, "description": "the byte ranges asked for"},
        307: {"description": "s3:// storage: redirect to a presigned GET URL"},
        401: {"model": ErrorBody}, 404: {"model": ErrorBody},
        416: {"model": ErrorBody, "description": "no asked-for range lies within the file (a Range header that "
                                                 "does not parse is ignored: 200, the whole file)"}})
    def get_render(jobId: str, request: Request) -> Response:
        """The finished MP4 of a succeeded job, with Range requests (seeking players, resumed downloads); for s3://
        storage a 307 redirect to a presigned URL (DOWNLOAD_URL_EXPIRY_SECONDS). 404 `output_not_available`
        while the job is queued or running, or when it failed. An HLS job: 307 to its playlist,
        /renders/{jobId}/index.m3u8, whose segment names resolve next to it (also while it renders)."""
        status = backend.status(jobId)
        if status and status.get("state") != "failed" and str(status.get("output", "")).endswith("/index.m3u8"):
            return RedirectResponse(str(request.url_for("get_render_file", jobId=jobId, name="index.m3u8")), 307)
        found = locate(jobId, status, backend.storage, settings.download_url_expiry_seconds)
        if found.url is not None:
            return RedirectResponse(found.url, status_code=307)
        # VideoFile (Starlette's FileResponse) answers Range (206, several ranges as multipart/byteranges, 416;
        # a malformed Range header is ignored), If-Range, ETag and Last-Modified itself.
        kind = media_type(found.path.name)  # video/mp4, video/webm, video/quicktime, the HLS playlist (issue 12)
        return VideoFile(found.path, media_type=kind if kind != "application/octet-stream" else MEDIA_TYPE,
                         filename=f"{jobId}{found.path.suffix}", content_disposition_type="inline")

    # HEAD (size and validators without the body) answered by the same function; one OpenAPI operation is enough.
    app.add_api_route("/renders/{jobId}", get_render, methods=["HEAD"], dependencies=auth, include_in_schema=False)

    @app.get("/renders/{jobId}/{name}", dependencies=auth, name="get_render_file", response_class=FileResponse,
             responses={307: {"description": "s3:// storage: redirect to a presigned GET URL"},
                        401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
    def get_render_file(jobId: str, name: str) -> Response:
        """An HLS job's files while it renders and after: `index.m3u8` (point a player here), `init.mp4`,
        `segNNNNN.m4s`, and `index.mp4` when asked for (gateway/hls_files.py)."""
        found = locate_file(jobId, name, backend.status(jobId), backend.storage, settings.download_url_expiry_seconds)
        if isinstance(found, bytes):
            return Response(found, media_type=media_type(name), headers={"Cache-Control": "no-cache"})
        if found.url is not None:
            return RedirectResponse(found.url, status_code=307)
        # The playlist changes while the job runs: players must ask again, not cache it.
        headers = {"Cache-Control": "no-cache"} if name.endswith(".m3u8") else None
        return VideoFile(found.path, media_type=media_type(name), headers=headers)

    @app.get("/engines", dependencies=auth, responses={401: {"model": ErrorBody}})
    def list_engines() -> list[dict[str, Any]]:
        """Engines in this build and whether each can run on the gateway's machine."""
        return engine_catalog(engines)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "backend": backend.name}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    def readyz() -> JSONResponse:
        if backend.ready():
            return JSONResponse({"status": "ready", "backend": backend.name})
        error = BackendUnavailable("The job queue is not reachable.")
        return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.http_status)

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _only_declared_form_fields(request: Request) -> None:
    """Refuse form fields the upload route does not take, as the JSON route refuses unknown keys (a typo such as
    `qualitymode` must not be silently ignored)."""
    declared = {param.alias for param in request.scope["route"].dependant.body_params}
    form = await request.form()  # already parsed by FastAPI for this request; this reads the cached form
    unknown = [name for name in dict.fromkeys(form.keys()) if name not in declared]
    if unknown:
        raise RequestValidationError([{"type": "extra_forbidden", "loc": ("body", name),
                                       "msg": "Extra inputs are not permitted"} for name in unknown])


def _upload_label(upload: UploadFile) -> str:
    return f"upload {upload.filename!r}" if upload.filename else "upload"


def check_listen_address(host: str, port: int) -> None:
    """Bind and release host:port once, so a port in use is one `error:` line before the engines and the backend
    start (uvicorn would only log it, after they did, and exit 3). Racy by nature; uvicorn's own bind still
    decides."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no clash
            probe.bind(address)
    except OSError as exc:
        raise SettingsError(f"Cannot listen on {host}:{port}: {exc.strerror or exc} "
                            "(--host/--port or API_HOST/API_PORT choose another).") from None


def run_api(args: Any, env: Mapping[str, str]) -> int:
    """`avatar-renderer api`: serve the gateway with uvicorn until interrupted; env is the environment the
    entry point (cli/main.py) passes in."""
    import uvicorn

    from .backends import BackendSettings, open_backend

    backend_settings = BackendSettings.from_env(env)
    worker = backend_settings.worker  # input policy and model settings, read as the worker reads them
    gateway_settings = GatewaySettings.from_env(env)
    check_listen_address(args.host, args.port)  # settings first: a bad setting is named even on a busy port
    engines = EngineRegistry.for_settings(worker.models)
    backend = open_backend(backend_settings, args.backend, engines)
    app = create_app(backend, worker.inputs, gateway_settings, engines)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        backend.close()
        engines.close()
    return 0
