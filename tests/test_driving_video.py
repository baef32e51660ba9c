"""An optional driving video in a render request (issue 9): the event field, the input checks every front door
shares (allowed roots, byte limit, format by content), the refusal for engines that cannot use it, the lazy,
framed decoding, and a high_quality render on a CPU that the video's motion changes.

Real files, a real HTTP client against uvicorn, a real MCP client session, the real console script."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest

from engines.face import frame_portrait
from engines.hardware import Hardware
from engines.media_audio import OUTPUT_RATE, load_audio, write_wav
from engines.media_video import open_driving_video
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from gateway.backends import JobSpec
from gateway.rest import create_app
from schemas.errors import (ImageTooLarge, InputTooLarge, InvalidEvent, InvalidParameter, NoFaceFound, PathNotAllowed,
                            UnreadableInput, UnsupportedFormat)
from schemas.events import check, parse_request
from tests.gateway_fixtures import in_process_backend, wait_for
from tests.http_server import serve
from tests.media_fixtures import PORTRAIT, SPEECH
from worker.security import VIDEO, SecurityPolicy, check_reference, sniff_video

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "avatar-renderer")
CLIP_FPS, CLIP_FRAMES, CLIP_SIZE = 10, 6, 192
JOB_ID = "0b6f3c1e-6a8e-4d7e-9f1a-2c3d4e5f6a7b"


def write_clip(path: Path, frames: list[np.ndarray], fps: int = CLIP_FPS) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving_head(count: int = CLIP_FRAMES) -> list[np.ndarray]:
    """The sample portrait sliding right and down a few pixels a frame (a head moving in front of a camera)."""
    still = cv2.resize(cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB), (CLIP_SIZE, CLIP_SIZE),
                       interpolation=cv2.INTER_AREA)
    return [cv2.warpAffine(still, np.float32([[1, 0, 5 * i], [0, 1, 2 * i]]), (CLIP_SIZE, CLIP_SIZE),
                           borderMode=cv2.BORDER_REPLICATE) for i in range(count)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("driving-inputs")
    shutil.copy(PORTRAIT, root / "face.jpg")
    write_wav(root / "speech.wav", load_audio(SPEECH).trimmed(0.4).samples)
    write_clip(root / "nod.mp4", moving_head())
    write_clip(root / "blank.mp4", [np.full((64, 64, 3), 128, np.uint8)] * 2)
    return root


@pytest.fixture
def policy(inputs: Path) -> SecurityPolicy:
    return SecurityPolicy(allowed_roots=(inputs,), upload_dir=inputs / "uploads")


# ----------------------------------------------------------------------------- the request field

def test_the_event_field_validates_and_reaches_the_parsed_request() -> None:
    event = {"jobId": JOB_ID, "avatarUri": "file:///in/face.jpg", "audioUri": "file:///in/speech.wav"}
    parsed = parse_request(json.dumps({**event, "drivingVideo": "s3://inputs/nod.mp4"}).encode())
    assert parsed.driving_video == "s3://inputs/nod.mp4"
    assert parse_request(json.dumps(event).encode()).driving_video is None
    for bad in (5, "", ["file:///nod.mp4"]):
        with pytest.raises(InvalidEvent, match="drivingVideo"):
            parse_request(json.dumps({**event, "drivingVideo": bad}).encode())
    # A front door's job writes it into the event it publishes, and hands it to the job step.
    spec = JobSpec(avatar_uri="file:///in/face.jpg", audio_uri="file:///in/speech.wav",
                   driving_video="file:///in/nod.mp4", job_id=JOB_ID)
    published = spec.request_event("2026-01-01T00:00:00Z")
    check("render.requested.v1", published)
    assert published["drivingVideo"] == "file:///in/nod.mp4"
    assert spec.to_request(None).driving_video == "file:///in/nod.mp4"


# ----------------------------------------------------------------------------- input security

def test_a_driving_video_is_checked_like_the_portrait(inputs: Path, policy: SecurityPolicy, tmp_path: Path) -> None:
    assert check_reference(str(inputs / "nod.mp4"), VIDEO, policy) == (inputs / "nod.mp4").as_uri()
    outside = shutil.copy(inputs / "nod.mp4", tmp_path / "nod.mp4")
    with pytest.raises(PathNotAllowed, match="outside the allowed input roots"):
        check_reference(str(outside), VIDEO, policy)
    for wrong in ("speech.wav", "face.jpg"):
        with pytest.raises(UnsupportedFormat, match="MP4, MOV, WebM or MKV"):
            check_reference(wrong, VIDEO, policy)
    with pytest.raises(InputTooLarge, match="the limit is 100 bytes"):
        check_reference("nod.mp4", VIDEO, dataclasses.replace(policy, max_video_bytes=100))
    assert SecurityPolicy.from_env({"MAX_VIDEO_BYTES": "12345"}).max_video_bytes == 12345


def test_video_formats_are_recognised_by_content() -> None:
    assert sniff_video(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00") == "mp4"
    assert sniff_video(b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00") == "mov"
    assert sniff_video(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm") == "webm"
    assert sniff_video(b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska") == "mkv"
    assert sniff_video(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None


# ----------------------------------------------------------------------------- engines that cannot use one

def test_the_registry_refuses_a_driving_video_for_real_time_engines() -> None:
    registry = EngineRegistry(ModelSettings(), Hardware(cuda=False))
    with pytest.raises(InvalidParameter, match="high_quality mode only"):
        registry.check_driving_video("real_time", None)
    with pytest.raises(InvalidParameter, match="Engine landmark-warp cannot use a driving video"):
        registry.check_driving_video("auto", "landmark-warp")
    for mode, engine in (("high_quality", None), ("auto", None), (None, "fomm-diff2lip-gfpgan")):
        registry.check_driving_video(mode, engine)
    defaulting_to_real_time = EngineRegistry(ModelSettings(default_quality_mode="real_time"), Hardware(cuda=False))
    with pytest.raises(InvalidParameter):
        defaulting_to_real_time.check_driving_video(None, None)


def test_auto_choosing_a_real_time_engine_refuses_the_driving_video_instead_of_ignoring_it(inputs, tmp_path) -> None:
    registry = EngineRegistry(ModelSettings(model_root=tmp_path / "no-models"), Hardware(cuda=False))
    request = RenderRequest(face_path=inputs / "face.jpg", audio_path=inputs / "speech.wav", out_path=tmp_path / "x.mp4",
                            mode="auto", size=64, driving_path=inputs / "nod.mp4")
    with pytest.raises(InvalidParameter, match="driving video needs a high_quality engine.*landmark-warp"):
        render(request, registry)
    assert not list(tmp_path.glob("*.mp4"))


@pytest.mark.parametrize("command", ["render", "submit"])
def test_the_command_line_refuses_it_with_real_time_in_one_sentence(inputs: Path, tmp_path: Path, command) -> None:
    args = [CLI, command, "--face", str(inputs / "face.jpg"), "--audio", str(inputs / "speech.wav"),
            "--mode", "real_time", "--driving-video", str(inputs / "nod.mp4")]
    if command == "render":
        args += ["--out", str(tmp_path / "x.mp4")]
    env = {**os.environ, "AVATAR_FORCE_CPU": "1", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # submit: no broker needed
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert "driving video" in done.stderr and "high_quality" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.mp4").exists()


# ----------------------------------------------------------------------------- the REST and MCP doors

def test_rest_checks_refuses_and_fingerprints_the_driving_video(inputs: Path, tmp_path: Path) -> None:
    env = {"ALLOWED_INPUT_ROOTS": str(inputs), "UPLOAD_DIR": str(tmp_path / "uploads")}
    backend = in_process_backend(env, tmp_path / "renders")
    body = {"avatarPath": "face.jpg", "audioPath": "speech.wav", "size": 64}
    outside = shutil.copy(inputs / "nod.mp4", tmp_path / "elsewhere.mp4")
    try:
        with serve(create_app(backend, SecurityPolicy.from_env(env))) as url, httpx.Client(base_url=url, timeout=30) as client:
            refused = {
                "real_time": client.post("/render", json={**body, "qualityMode": "real_time", "drivingVideo": "nod.mp4"}),
                "engine": client.post("/render", json={**body, "engine": "landmark-warp", "drivingVideo": "nod.mp4"}),
                "outside": client.post("/render", json={**body, "drivingVideo": str(outside)}),
                "format": client.post("/render", json={**body, "drivingVideo": "speech.wav"}),
            }
            codes = {name: (r.status_code, r.json()["error"]["code"]) for name, r in refused.items()}
            assert codes == {"real_time": (422, "invalid_parameter"), "engine": (422, "invalid_parameter"),
                             "outside": (403, "path_not_allowed"), "format": (415, "unsupported_format")}
            assert "driving video" in refused["real_time"].json()["error"]["message"]

            # auto: accepted; the job step fetches the video, and the engine auto chose here (no GPU, no
            # models: landmark-warp) refuses it rather than rendering without it.
            accepted = client.post("/render", json={**body, "drivingVideo": "nod.mp4", "idempotencyKey": "nod-1"})
            assert accepted.status_code == 202, accepted.text
            status = wait_for(client, accepted.json()["statusUrl"])
            assert status["state"] == "failed" and status["error"]["code"] == "invalid_parameter", status
            assert "driving video" in status["error"]["message"]
            # The idempotency key promises the same request: the same key without the video is another one.
            again = client.post("/render", json={**body, "idempotencyKey": "nod-1"})
            assert again.status_code == 409 and again.json()["error"]["code"] == "idempotency_conflict"
    finally:
        backend.close()


def test_mcp_takes_driving_video_path_and_refuses_it_with_real_time(inputs: Path, tmp_path: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(ALLOWED_INPUT_ROOTS=str(inputs), OUTPUT_DIR=str(tmp_path / "renders"), UPLOAD_DIR=str(tmp_path / "up"),
               AVATAR_FORCE_CPU="1", LOG_LEVEL="WARNING")
    params = StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"], env=env, cwd=str(REPO))
    base = {"avatar_path": "face.jpg", "audio_path": "speech.wav", "size": 64}

    async def scenario():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            real_time = await session.call_tool("render_avatar", {**base, "quality_mode": "real_time",
                                                                  "driving_video_path": "nod.mp4"})
            wrong = await session.call_tool("render_avatar", {**base, "quality_mode": "high_quality",
                                                              "driving_video_path": "face.jpg"})
            return real_time, wrong

    real_time, wrong = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert real_time.isError and "invalid_parameter: A driving video moves the head" in real_time.content[0].text
    assert wrong.isError and "unsupported_format: The video" in wrong.content[0].text


# ----------------------------------------------------------------------------- decoding

def test_frames_are_framed_around_the_face_resampled_and_streamed(inputs: Path) -> None:
    video = open_driving_video(inputs / "nod.mp4", 64, max_seconds=600, max_pixels=40_000_000)
    with av.open(str(inputs / "nod.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    stream = video.frames(Fraction(CLIP_FPS))
    assert inspect.isgenerator(stream)  # decoded on demand, one frame at a time
    squares = list(stream)
    assert len(squares) == CLIP_FRAMES and all(s.shape == (64, 64, 3) and s.dtype == np.uint8 for s in squares)
    # The square around the first frame's face, as the portrait is framed, kept for the whole clip.
    assert np.array_equal(squares[0], frame_portrait(first, 64).image)
    assert np.abs(squares[-1].astype(int) - squares[0]).mean() > 5  # the head moved inside the fixed square
    # Resampled to the render's rate: twice the frames at twice the rate, half at half (the last one ends it).
    assert len(list(video.frames(Fraction(2 * CLIP_FPS)))) == 2 * (CLIP_FRAMES - 1) + 1
    assert len(list(video.frames(Fraction(CLIP_FPS, 2)))) == CLIP_FRAMES // 2 + 1


def test_a_driving_video_is_refused_before_rendering_when_it_cannot_drive(inputs: Path) -> None:
    with pytest.raises(InputTooLarge, match="MAX_AUDIO_SECONDS"):
        open_driving_video(inputs / "nod.mp4", 64, max_seconds=0.2, max_pixels=40_000_000)
    with pytest.raises(ImageTooLarge, match="MAX_IMAGE_PIXELS"):
        open_driving_video(inputs / "nod.mp4", 64, max_seconds=600, max_pixels=100 * 100)
    with pytest.raises(UnreadableInput, match="no video track"):
        open_driving_video(inputs / "speech.wav", 64, max_seconds=600, max_pixels=40_000_000)
    with pytest.raises(NoFaceFound, match="first frame of the driving video"):
        open_driving_video(inputs / "blank.mp4", 64, max_seconds=600, max_pixels=40_000_000)


# ----------------------------------------------------------------------------- high_quality end to end

@pytest.mark.slow
def test_high_quality_render_follows_the_driving_video(inputs: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from cli.bench_hq import write_random_checkpoints

    settings = ModelSettings(model_root=tmp_path / "models", hq_allow_cpu=True, hq_ddim_steps=1, hq_batch=2)
    write_random_checkpoints(settings)
    registry = EngineRegistry(settings, Hardware(cuda=False))
    rendered = {}
    try:
        for name, driving in (("speech", None), ("video", inputs / "nod.mp4")):
            request = RenderRequest(face_path=inputs / "face.jpg", audio_path=inputs / "speech.wav",
                                    out_path=tmp_path / f"{name}.mp4", mode="high_quality", fps=Fraction(5),
                                    size=96, driving_path=driving)
            result = render(request, registry)
            assert (result.engine, result.frames) == ("fomm-diff2lip-gfpgan", 2)
            with av.open(result.output) as container:
                rendered[name] = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    finally:
        registry.close()
    assert len(rendered["video"]) == len(rendered["speech"]) == 2
    assert all(frame.std() > 5 for frame in rendered["video"])  # pictures, not blank frames
    # The same job moved by the video's head instead of the speech's: its second frame is another picture.
    assert np.abs(rendered["video"][1] - rendered["speech"][1]).mean() > 1.0
