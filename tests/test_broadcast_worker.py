"""Broadcast formats through the worker path (issue 12): an HLS job through the real embedded Kafka broker (segment
status events in order, each segment stored before it is announced and before the job completes), and the REST
gateway showing the segments of a running job, with its first segment decoded while the render is held."""

from __future__ import annotations

import dataclasses
import io
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import av
import httpx
import pyloudnorm

from cli.submit import build_request, publish
from engines.hls import INIT_NAME, playlist_entries
from gateway.backends import InProcessBackend
from gateway.rest import create_app
from tests.conftest import job_ids_in, read_topic, worker_env
from tests.gateway_fixtures import kafka_gateway, wait_for, write_inputs
from tests.http_server import serve
from worker.job_step import pipeline_render
from worker.security import SecurityPolicy
from worker.settings import WorkerSettings


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(unquote(urlsplit(uri).path))


def decode_segment(segment_uri: str) -> int:
    """Frames of one stored segment decoded on its own (with the init segment beside it)."""
    path = local(segment_uri)
    with av.open(io.BytesIO((path.parent / INIT_NAME).read_bytes() + path.read_bytes())) as container:
        return sum(1 for _ in container.decode(video=0))


def test_hls_job_through_kafka_announces_each_stored_segment_in_order_before_it_completes(
        broker, topics, clips, tmp_path, start_worker):
    out_dir = tmp_path / "renders"
    start_worker(worker_env(broker, topics, clips, out_dir))
    request = build_request(str(clips / "portrait.jpg"), str(clips / "long.wav"), "real_time", size=128,
                            output="hls", hls={"segmentSeconds": 1, "mp4": True}, loudness={"target": "ebu-r128"})
    publish(broker, topics, request)
    job_id = request["jobId"]

    done = read_topic(broker, topics.completed, until=lambda r: job_id in job_ids_in(r), timeout=120)
    completion = next(r["value"] for r in done if r["value"]["jobId"] == job_id)
    statuses = read_topic(broker, topics.status, until=lambda r: any(
        x["key"] == job_id and x["value"].get("state") == "succeeded" for x in r), timeout=30)
    mine = [r for r in statuses if r["key"] == job_id]
    states = [r["value"]["state"] for r in mine]
    announced = [r["value"]["segment"] for r in mine if "segment" in r["value"]]
    first_announcement = next(i for i, r in enumerate(mine) if "segment" in r["value"])
    assert states[-1] == "succeeded" and "succeeded" not in states[:first_announcement]
    assert "succeeded" not in states[: max(i for i, r in enumerate(mine) if "segment" in r["value"])]
    assert [s["index"] for s in announced] == list(range(8))  # 8 s of speech in 1 s segments, in order
    assert all(r["value"]["state"] == "running" for r in mine if "segment" in r["value"])
    assert all("segments" not in r["value"] for r in mine)  # each event names its own segment only

    playlist = out_dir / job_id / "index.m3u8"
    assert completion["outputFormat"] == "hls" and completion["outputUri"] == playlist.resolve().as_uri()
    assert [s["uri"] for s in completion["segments"]] == [s["uri"] for s in announced]
    assert decode_segment(announced[0]["uri"]) == 25
    text = playlist.read_text()
    assert text.startswith("#EXTM3U") and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert [uri for _, uri in playlist_entries(text)] == [local(s["uri"]).name for s in announced]
    with av.open(str(local(completion["mp4Uri"]))) as container:
        assert sum(1 for _ in container.decode(video=0)) == completion["frames"]
    with av.open(str(local(completion["mp4Uri"]))) as container:
        samples = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    import numpy as np

    delivered = pyloudnorm.Meter(48_000).integrated_loudness(np.concatenate(samples).astype(np.float64))
    assert abs(delivered + 23) <= 1.0 and abs(completion["loudness"]["output"]["integratedLufs"] + 23) <= 1.0
    assert completion["loudness"]["target"]["preset"] == "ebu-r128"


def test_rest_status_shows_segments_of_a_running_hls_job_and_the_first_one_plays(tmp_path):
    inputs = write_inputs(tmp_path / "inputs")
    env = {"ALLOWED_INPUT_ROOTS": str(inputs), "AVATAR_FORCE_CPU": "1", "MAX_ATTEMPTS": "1",
           "OUTPUT_DIR": str(tmp_path / "renders"), "WORK_DIR": str(tmp_path / "work")}
    settings = WorkerSettings.from_env(env)
    render = pipeline_render(settings.models)
    first_stored, release = threading.Event(), threading.Event()

    def held_render(request):
        """The real render, held after its first segment is stored and announced until the test has checked it."""
        announce = request.on_segment

        def on_segment(segment):
            announce(segment)
            if segment.index == 0:
                first_stored.set()
                assert release.wait(60)

        return render(dataclasses.replace(request, on_segment=on_segment))

    backend = InProcessBackend(settings, render=held_render)
    try:
        with serve(create_app(backend, SecurityPolicy.from_env(env))) as base, httpx.Client(base_url=base, timeout=30) as client:
            accepted = client.post("/render", json={
                "avatarPath": "face.jpg", "audioPath": "speech.wav", "qualityMode": "real_time", "size": 128,
                "output": "hls", "hls": {"segmentSeconds": 1}, "loudness": {"target": "web"},
                "canvas": {"size": "1280x720", "x": 0.3, "background": "#000000"}})
            assert accepted.status_code == 202, accepted.text
            job = accepted.json()
            assert job["output"].endswith(f"/{job['jobId']}/index.m3u8")
            assert first_stored.wait(60)
            running = client.get(job["statusUrl"]).json()
            assert running["state"] == "running" and [s["index"] for s in running["segments"]] == [0]
            assert running["segment"]["uri"] == running["segments"][0]["uri"]
            assert decode_segment(running["segments"][0]["uri"]) == 25
            # What a player does: the playlist over HTTP, then the files it names, relative to it.
            base = f"/renders/{job['jobId']}"
            playlist = client.get(f"{base}/index.m3u8")
            assert playlist.status_code == 200 and playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
            assert [uri for _, uri in playlist_entries(playlist.text)] == ["seg00000.m4s"]
            assert "#EXT-X-ENDLIST" not in playlist.text  # still rendering
            init, first = client.get(f"{base}/{INIT_NAME}"), client.get(f"{base}/seg00000.m4s")
            assert init.status_code == first.status_code == 200
            with av.open(io.BytesIO(init.content + first.content)) as container:
                assert sum(1 for _ in container.decode(video=0)) == 25
            assert client.get(f"{base}/seg00001.m4s").status_code == 404  # not stored yet
            moved = client.get(base)  # the job's download URL leads to its playlist
            assert moved.status_code == 307 and moved.headers["location"].endswith(f"{base}/index.m3u8")
            assert client.get(f"{base}/secrets.txt").json()["error"]["code"] == "output_not_available"
            release.set()
            final = wait_for(client, job["statusUrl"])
            assert final["state"] == "succeeded", final
            assert final["outputFormat"] == "hls" and [s["index"] for s in final["segments"]] == [0, 1]
            assert abs(final["loudness"]["output"]["integratedLufs"] + 16) <= 1.0
            last = local(final["segments"][1]["uri"])
            with av.open(io.BytesIO((last.parent / INIT_NAME).read_bytes() + last.read_bytes())) as container:
                frame = next(container.decode(video=0))
                assert (frame.width, frame.height) == (1280, 720)  # the canvas
    finally:
        release.set()
        backend.close()


def test_mcp_render_avatar_takes_the_broadcast_fields(tmp_path):
    """The real `avatar-renderer mcp` stdio server: an alpha WebM with a loudness target, and a refusal."""
    import asyncio
    import os
    import sys

    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from tests.conftest import REPO

    inputs = write_inputs(tmp_path / "inputs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(ALLOWED_INPUT_ROOTS=str(inputs), OUTPUT_DIR=str(tmp_path / "renders"), WORK_DIR=str(tmp_path / "work"),
               AVATAR_FORCE_CPU="1", LOG_LEVEL="WARNING", MAX_ATTEMPTS="1")
    params = StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"], env=env, cwd=str(REPO))

    async def scenario():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            refused = await session.call_tool("render_avatar", {
                "avatar_path": "face.jpg", "audio_path": "speech.wav", "output": "webm",
                "canvas": {"size": "1280x720", "background": "#000000"}})
            assert refused.isError and "invalid_parameter" in refused.content[0].text
            submitted = await session.call_tool("render_avatar", {
                "avatar_path": "face.jpg", "audio_path": "speech.wav", "quality_mode": "real_time", "size": 128,
                "output": "webm", "loudness": "web"})
            assert not submitted.isError, submitted.content
            job = submitted.structuredContent
            for _ in range(600):
                status = (await session.call_tool("get_render_status", {"job_id": job["jobId"]})).structuredContent
                if status["state"] in ("succeeded", "failed"):
                    return job, status
                await asyncio.sleep(0.2)
            raise AssertionError(f"no final state: {status}")

    job, status = asyncio.run(asyncio.wait_for(scenario(), 150))
    assert job["output"].endswith(f"{job['jobId']}.webm")
    assert status["state"] == "succeeded", status
    assert status["outputFormat"] == "webm" and abs(status["loudness"]["output"]["integratedLufs"] + 16) <= 1.0
    with av.open(str(local(status["output"]))) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp9" and stream.metadata.get("alpha_mode") == "1"


def test_rest_through_kafka_reports_segments_and_serves_hls_and_webm(broker, topics, clips, tmp_path, start_worker):
    """The gateway's Kafka backend: the worker's segment statuses and completion reach /status, and the files are
    served from the storage the gateway shares with the worker."""
    renders = tmp_path / "renders"
    env = worker_env(broker, topics, clips, renders)
    with kafka_gateway(broker, topics, renders, env, start_worker) as backend, \
            serve(create_app(backend, SecurityPolicy.from_env(env))) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        hls = client.post("/render", json={"avatarPath": "portrait.jpg", "audioPath": "long.wav", "size": 128,
                                           "qualityMode": "real_time", "output": "hls"}).json()
        webm = client.post("/render", json={"avatarPath": "portrait.jpg", "audioPath": "short.wav", "size": 128,
                                            "qualityMode": "real_time", "output": "webm",
                                            "canvas": {"size": "1280x720", "x": 0.3}}).json()
        assert hls["output"] == (renders / hls["jobId"] / "index.m3u8").resolve().as_uri()
        assert webm["output"] == (renders / f"{webm['jobId']}.webm").resolve().as_uri()
        done = wait_for(client, hls["statusUrl"], timeout=120)
        assert done["state"] == "succeeded", done
        assert [s["index"] for s in done["segments"]] == [0, 1, 2, 3]  # 8 s in 2 s segments
        assert done["playlistUri"] == done["output"] and done["outputFormat"] == "hls"
        assert done["loudness"]["input"]["integratedLufs"] < -10
        playlist = client.get(f"/renders/{hls['jobId']}/index.m3u8")
        assert playlist.status_code == 200 and len(playlist_entries(playlist.text)) == 4
        finished = wait_for(client, webm["statusUrl"], timeout=120)
        assert finished["state"] == "succeeded" and finished["width"] == 1280 and finished["height"] == 720
        served = client.get(f"/renders/{webm['jobId']}")
        assert served.status_code == 200 and served.headers["content-type"] == "video/webm"
        assert served.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
