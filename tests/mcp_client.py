"""Drive the real `avatar-renderer mcp` stdio server with the MCP SDK's client: submit one render, poll its status."""

from __future__ import annotations

import asyncio
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.conftest import REPO


def render_and_wait(env: dict[str, str], avatar: str = "face.jpg", quality_mode: str = "real_time",
                    timeout: float = 150.0) -> tuple[dict, dict]:
    """(render_avatar's result, the first final get_render_status) for `avatar` + speech.wav at 128 px."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"], env=env, cwd=str(REPO))

    async def scenario():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            submitted = await session.call_tool("render_avatar", {"avatar_path": avatar, "audio_path": "speech.wav",
                                                                  "quality_mode": quality_mode, "size": 128})
            assert not submitted.isError, submitted.content
            job = submitted.structuredContent
            deadline = time.monotonic() + timeout - 30
            while time.monotonic() < deadline:
                status = (await session.call_tool("get_render_status", {"job_id": job["jobId"]})).structuredContent
                if status["state"] in ("succeeded", "failed"):
                    return job, status
                await asyncio.sleep(0.2)
            raise AssertionError(f"no final state: {status}")

    return asyncio.run(asyncio.wait_for(scenario(), timeout))
