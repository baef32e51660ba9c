"""MCP server through a real MCP client session over stdio (`avatar-renderer mcp` as a subprocess)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from engines.media_audio import OUTPUT_RATE, write_wav
from tests.media_fixtures import PORTRAIT, speech_samples

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server_params(tmp_path: Path) -> StdioServerParameters:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(PORTRAIT, inputs / "face.jpg")
    write_wav(inputs / "speech.wav", speech_samples()[: int(1.2 * OUTPUT_RATE)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(ALLOWED_INPUT_ROOTS=str(inputs), OUTPUT_DIR=str(tmp_path / "renders"), UPLOAD_DIR=str(tmp_path / "up"),
               AVATAR_FORCE_CPU="1", LOG_LEVEL="WARNING")
    return StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"], env=env, cwd=str(REPO))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


def test_render_through_an_mcp_client_session(server_params: StdioServerParameters, tmp_path: Path) -> None:
    async def scenario():
        async with stdio_client(server_params) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.serverInfo.name == "avatar-renderer"
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == {"render_avatar", "get_render_status", "list_engines"}
            params = tools["render_avatar"].inputSchema["properties"]
            assert {"avatar_path", "audio_path", "quality_mode"} <= set(params)
            assert set(tools["render_avatar"].inputSchema["required"]) == {"avatar_path", "audio_path"}

            engines = await session.call_tool("list_engines", {})
            assert not engines.isError
            listed = {e["name"]: e for e in engines.structuredContent["result"]}
            assert listed["landmark-warp"]["available"] is True

            submitted = await session.call_tool("render_avatar", {
                "avatar_path": str(tmp_path / "inputs" / "face.jpg"), "audio_path": "speech.wav",
                "quality_mode": "real_time", "size": 128,
            })
            assert not submitted.isError, submitted.content
            job = submitted.structuredContent
            assert job["state"] == "queued" and job["qualityMode"] == "real_time"

            deadline = time.monotonic() + 90
            while True:
                status = (await session.call_tool("get_render_status", {"job_id": job["jobId"]})).structuredContent
                if status["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            unknown = await session.call_tool("get_render_status", {"job_id": "nope"})
            return job, status, unknown

    job, status, unknown = run(scenario())
    assert status["state"] == "succeeded", status
    assert status["output"] == job["output"] == (tmp_path / "renders" / f"{job['jobId']}.mp4").as_uri()
    assert status["engine"] == "landmark-warp"
    with av.open(str(tmp_path / "renders" / f"{job['jobId']}.mp4")) as container:
        assert container.streams.video and container.streams.audio and container.duration / 1e6 >= 1.1
    assert unknown.isError and "unknown_job" in unknown.content[0].text


@pytest.mark.parametrize(
    "arguments, reason",
    [
        ({"avatar_path": "/etc/passwd", "audio_path": "speech.wav"}, "path_not_allowed"),
        ({"avatar_path": "../../../../etc/passwd", "audio_path": "speech.wav"}, "path_not_allowed"),
        ({"avatar_path": "https://127.0.0.1/face.jpg", "audio_path": "speech.wav"}, "url_not_allowed"),
        ({"avatar_path": "speech.wav", "audio_path": "speech.wav"}, "unsupported_format"),
        ({"avatar_path": "face.jpg", "audio_path": "speech.wav", "size": 7}, "invalid_parameter"),
        # refused up front, naming what this build has, instead of a job that fails later
        ({"avatar_path": "face.jpg", "audio_path": "speech.wav", "engine": "bogus"},
         "invalid_parameter: Unknown engine 'bogus'; this build has: fomm-diff2lip-gfpgan, landmark-warp"),
        ({"avatar_path": "face.jpg", "audio_path": "speech.wav", "engine": "landmark-warp",
          "quality_mode": "high_quality"}, "invalid_parameter: Engine landmark-warp serves real_time, not high_quality"),
    ],
)
def test_refusals_come_back_as_tool_errors(server_params: StdioServerParameters, arguments: dict, reason: str) -> None:
    async def scenario():
        async with stdio_client(server_params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("render_avatar", arguments)

    result = run(scenario())
    assert result.isError
    assert reason in result.content[0].text


def test_exact_rates_face_and_framing_through_mcp(server_params: StdioServerParameters, tmp_path: Path) -> None:
    """fps "30000/1001" (and 29.97) with a face and a framing are accepted and rendered at the exact rate; 0, 61,
    "abc", an unknown face or framing are tool errors naming invalid_parameter (a face object out of range is
    invalid_request, as in REST: test_arguments_are_checked_as_strictly_as_the_rest_body)."""
    face, speech = str(tmp_path / "inputs" / "face.jpg"), "speech.wav"
    refused = [{"fps": 0}, {"fps": 61}, {"fps": "abc"}, {"fps": "30/0"}, {"face": "biggest"}, {"framing": "wide"}]

    async def scenario():
        async with stdio_client(server_params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            schema = {t.name: t for t in (await session.list_tools()).tools}["render_avatar"].inputSchema
            assert {"face", "framing", "fps"} <= set(schema["properties"])
            submitted = await session.call_tool("render_avatar", {
                "avatar_path": face, "audio_path": speech, "quality_mode": "real_time", "size": 96,
                "fps": "30000/1001", "face": {"index": 0}, "framing": "crop"})
            assert not submitted.isError, submitted.content
            decimal = await session.call_tool("render_avatar", {
                "avatar_path": face, "audio_path": speech, "quality_mode": "real_time", "size": 96, "fps": 29.97,
                "face": "largest"})
            errors = [await session.call_tool("render_avatar", {"avatar_path": face, "audio_path": speech, **bad})
                      for bad in refused]
            deadline = time.monotonic() + 90
            while True:
                status = (await session.call_tool("get_render_status",
                                                  {"job_id": submitted.structuredContent["jobId"]})).structuredContent
                if status["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                    return status, decimal, errors

    status, decimal, errors = run(scenario())
    assert status["state"] == "succeeded", status
    assert status["frameRate"] == "30000/1001" and status["fps"] == 29.97
    with av.open(str(tmp_path / "renders" / f"{status['jobId']}.mp4")) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)
    assert not decimal.isError, decimal.content
    for bad, error in zip(refused, errors):
        assert error.isError and "invalid_parameter: " in error.content[0].text, (bad, error.content)


def test_arguments_are_checked_as_strictly_as_the_rest_body(server_params: StdioServerParameters) -> None:
    """Booleans are not numbers, undeclared arguments are refused (both invalid_request, as REST answers them),
    hls settings need output hls, and a malformed s3:// URI is refused up front."""
    inputs = {"avatar_path": "face.jpg", "audio_path": "speech.wav"}
    invalid = [{"fps": True}, {"size": True}, {"output": "hls", "hls": {"segmentSeconds": True}},
               {"canvas": {"scale": True}}, {"loudness": True}, {"face": {"index": True}}]
    expected = [(bad, "invalid_request: ", "not true or false") for bad in invalid] + [
        ({"bogus": 1}, "invalid_request: ", "bogus: Extra inputs are not permitted"),
        ({"face": {"index": -1}}, "invalid_request: ", "greater than or equal to 0"),
        ({"hls": {"segmentSeconds": 1}}, "invalid_parameter: ", "hls settings apply only to output hls"),
        ({"avatar_path": "s3://"}, "url_not_allowed: ", "must be s3://bucket/key"),
        ({"audio_path": "s3://bucket/"}, "url_not_allowed: ", "must be s3://bucket/key"),
    ]

    async def scenario():
        async with stdio_client(server_params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            results = [await session.call_tool("render_avatar", {**inputs, **bad}) for bad, _, _ in expected]
            status = await session.call_tool("get_render_status", {"job_id": "nope", "verbose": True})
            return tools, results, status

    tools, results, status = run(scenario())
    for (bad, code, fragment), result in zip(expected, results):
        text = result.content[0].text
        assert result.isError and code in text and fragment in text, (bad, text)
    assert all(tool.inputSchema.get("additionalProperties") is False for tool in tools)
    assert status.isError and "invalid_request: " in status.content[0].text and "verbose" in status.content[0].text
