"""MCP stdio server (`avatar-renderer mcp`): render_avatar, get_render_status and list_engines as MCP tools.

Jobs go to Kafka when KAFKA_BOOTSTRAP_SERVERS is set, otherwise they render in this process. Inputs pass
the same worker.security checks as the REST gateway, and the engine choice the same registry check; every
refusal (any schemas.errors.RenderError) comes back as a tool error starting with its code.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Callable, Literal, Mapping

from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.fastmcp.tools import Tool
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_validator

from schemas.errors import BackendUnavailable, InvalidRequest, RenderError
from engines.pipeline import RenderRequest, check_fps, validate
from engines.registry import EngineRegistry
from worker.security import AUDIO, IMAGE, VIDEO, SecurityPolicy, check_reference

from .backends import BackendSettings, JobBackend, JobSpec, face_from_request, open_backend
from .delivery_request import CanvasBody, HlsBody, LoudnessBody, delivery_from_wire
from .downloads import mcp_fetch_fields
from .engine_catalog import engine_catalog
from .request_types import FaceBox, FaceIndex, Int, NotBool, Number
from .settings import DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS, GatewaySettings

INSTRUCTIONS = (
    "Renders a lip-synced talking-head MP4 from a portrait image and a speech recording. Call render_avatar "
    "with paths the server may read (under its allowed input roots) or allow-listed https URLs, then poll "
    "get_render_status with the returned jobId until state is succeeded or failed; a succeeded status gives "
    "`path` (a file on this machine) or `url` (a presigned HTTPS link) and a `fetch` sentence saying how to get it."
)


class _StrictArguments(BaseModel):
    """Mixed into a tool's FastMCP argument model: arguments the tool does not declare are refused (FastMCP
    ignores them; the REST gateway refuses unknown fields), and every argument problem is a tool error naming
    invalid_request, as REST answers it."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _refuse(cls, data: Any, handler):
        try:
            return handler(data)
        except ValidationError as exc:  # FastMCP passes any other exception on as the tool error
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            raise ToolError(f"{InvalidRequest.code}: Invalid arguments: {problems}.") from None


def _tool(fn: Callable[..., Any]) -> Tool:
    tool = Tool.from_function(fn)
    model = tool.fn_metadata.arg_model
    tool.fn_metadata.arg_model = create_model(model.__name__, __base__=(model, _StrictArguments))
    tool.parameters = tool.fn_metadata.arg_model.model_json_schema(by_alias=True)  # additionalProperties: false
    return tool


def _wire(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


def build_server(backend: JobBackend, policy: SecurityPolicy, engines: EngineRegistry,
                 download_url_expiry_seconds: int = DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS) -> FastMCP:
    def render_avatar(
        avatar_path: str,
        audio_path: str,
        quality_mode: Literal["auto", "real_time", "high_quality"] | None = None,
        size: Int = 512,
        fps: Annotated[int | float | str, NotBool] = 25,
        engine: str | None = None,
        face: str | FaceIndex | FaceBox = "largest",
        framing: str = "crop",
        output: Literal["mp4", "webm", "mov", "hls"] = "mp4",
        canvas: str | CanvasBody | None = None,
        loudness: str | Number | LoudnessBody | None = None,
        hls: HlsBody | None = None,
        driving_video_path: str | None = None,
    ) -> dict[str, Any]:
        """Queue a talking-head render of a portrait (PNG/JPEG/WebP) speaking a recording (WAV/MP3/M4A/OGG/FLAC).

        quality_mode: auto, real_time or high_quality; left out, the server's DEFAULT_QUALITY_MODE (auto).
        engine: force one engine by name (see list_engines); it must serve quality_mode unless that is auto.
        fps: frames a second, 1-60: 25, 29.97 (means 30000/1001) or an exact fraction "30000/1001".
        face: which face of the photo: "largest", {"index": N} (left to right from 0) or {"box": [x, y, w, h]}
        (also "index:N", "box:X,Y,W,H"). framing: "crop" (a square around the face) or "original" (the whole photo).
        output: mp4 (default), webm (VP9 with alpha), mov (ProRes 4444 with alpha) or hls (segments while rendering;
        get_render_status lists them). canvas: "1920x1080" | "1280x720" | "1080x1920" or {"size", "x", "y", "scale",
        "background": "#RRGGBB" | "backgroundUri": image path}. loudness: "ebu-r128" | "atsc-a85" | "web" | LUFS, or
        {"target", "truePeak"}. hls: {"segmentSeconds": 1-2, "mp4": true}, with output hls only.
        driving_video_path: a video (MP4/MOV/WebM/MKV, same forms as avatar_path) whose head motion drives the
        portrait; high_quality only (refused with real_time).
        Returns jobId, output (URI the MP4 will be written to), qualityMode, state, and how to fetch the video
        once done (`path` where the file will be, or that a URL will come; `fetch`); poll get_render_status.
        """
        try:
            fps, choice = check_fps(fps), face_from_request(_wire(face))
            delivery = delivery_from_wire({"output": output, "canvas": _wire(canvas), "hls": _wire(hls),
                                           "loudness": _wire(loudness) if isinstance(loudness, LoudnessBody)
                                           or loudness is None else {"target": loudness}}, policy)
            validate(RenderRequest(face_path="", audio_path="", out_path="", mode=quality_mode, fps=fps, size=size,
                                   face=choice, framing=framing))
            engines.check_request(quality_mode, engine)
            if driving_video_path is not None:
                engines.check_driving_video(quality_mode, engine)
            spec = JobSpec(
                avatar_uri=check_reference(avatar_path, IMAGE, policy),
                audio_uri=check_reference(audio_path, AUDIO, policy),
                quality_mode=quality_mode, engine=engine, fps=fps, size=size, face=choice, framing=framing,
                delivery=delivery,
                driving_video=check_reference(driving_video_path, VIDEO, policy)
                if driving_video_path is not None else None,
            ).with_job_id()
            if not backend.ready():
                raise BackendUnavailable("The job queue is not reachable; try again shortly.")
            status = backend.submit(spec)
        except RenderError as exc:  # one place: every refusal is "<code>: <message>"
            raise ToolError(f"{exc.code}: {exc.message}") from exc
        output = status.get("output") or backend.storage.uri_for(status["jobId"])
        return {"jobId": status["jobId"], "output": output, "qualityMode": status.get("qualityMode"),
                "state": status["state"],
                **mcp_fetch_fields({**status, "output": output}, backend.storage, download_url_expiry_seconds)}

    def get_render_status(job_id: str) -> dict[str, Any]:
        """State of a render job (queued, running, succeeded, failed) with its output URI, engine and timings,
        or the failure's code and message. Succeeded: `path` (the MP4 on this machine) or `url` (a presigned
        HTTPS GET link, valid until `urlExpiresAt`), and `fetch`, a sentence saying how to get the video."""
        status = backend.status(job_id)
        if status is None:
            raise ToolError(f"unknown_job: no job {job_id} is known.")
        shown = {k: v for k, v in status.items() if v is not None}
        return {**shown, **mcp_fetch_fields(shown, backend.storage, download_url_expiry_seconds)}

    def list_engines() -> list[dict[str, Any]]:
        """Engines in this build, the quality mode each serves, and whether it can run on this machine (and if
        not, why)."""
        return engine_catalog(engines)

    return FastMCP("avatar-renderer", instructions=INSTRUCTIONS,
                   tools=[_tool(fn) for fn in (render_avatar, get_render_status, list_engines)])


def _protect_stdout() -> None:
    """Keep the protocol stream clean: native libraries that print to fd 1 end up on stderr instead."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


def run_mcp(args: Any, env: Mapping[str, str]) -> int:
    """`avatar-renderer mcp`: serve the tools on stdio; env is the environment cli/main.py passes in."""
    backend_settings = BackendSettings.from_env(env)
    expiry = GatewaySettings.from_env(env).download_url_expiry_seconds
    worker = backend_settings.worker  # input policy and model settings, read as the worker reads them
    engines = EngineRegistry.for_settings(worker.models)
    backend = open_backend(backend_settings, getattr(args, "backend", "auto"), engines)
    _protect_stdout()
    try:
        build_server(backend, worker.inputs, engines, expiry).run("stdio")
    finally:
        backend.close()
        engines.close()
    return 0
