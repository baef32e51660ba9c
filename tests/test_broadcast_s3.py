"""Broadcast outputs on s3:// storage (a real S3-protocol server, moto): an HLS job's playlist and segments stored
with their media types, the playlist served by the gateway and the segments redirected to presigned URLs that a
client without credentials can fetch; a canvas background image refused outside the allowed roots."""

from __future__ import annotations

import io
from pathlib import Path

import av
import boto3
import httpx
import pytest

from engines.hls import playlist_entries
from gateway.rest import create_app
from gateway.settings import GatewaySettings
from tests.gateway_fixtures import in_process_backend, wait_for, write_inputs
from tests.http_server import serve
from tests.s3_server import moto_s3
from worker.security import SecurityPolicy



@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a loopback port with a bucket `renders`, and credentials for boto3 (tests/s3_server.py)."""
    with moto_s3("renders") as endpoint:
        yield endpoint


def test_hls_on_s3_is_served_through_the_gateway(tmp_path: Path, s3_endpoint: str) -> None:
    inputs = write_inputs(tmp_path / "inputs")
    (tmp_path / "elsewhere.png").write_bytes((inputs / "sky.png").read_bytes())
    env = {"ALLOWED_INPUT_ROOTS": str(inputs), "OUTPUT_URI": "s3://renders/news", "S3_ENDPOINT_URL": s3_endpoint}
    backend = in_process_backend(env, tmp_path / "renders")
    app = create_app(backend, SecurityPolicy.from_env(env), GatewaySettings(download_url_expiry_seconds=120))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    try:
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            outside = client.post("/render", json={
                "avatarPath": "face.jpg", "audioPath": "speech.wav",
                "canvas": {"size": "1280x720", "backgroundUri": str(tmp_path / "elsewhere.png")}})
            assert outside.status_code == 403 and outside.json()["error"]["code"] == "path_not_allowed"

            accepted = client.post("/render", json={
                "avatarPath": "face.jpg", "audioPath": "speech.wav", "qualityMode": "real_time", "size": 128,
                "output": "hls", "hls": {"segmentSeconds": 1},
                "canvas": {"size": "1280x720", "scale": 0.5, "backgroundUri": "sky.png"}})
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["jobId"]
            status = wait_for(client, accepted.json()["statusUrl"], timeout=120)
            assert status["state"] == "succeeded", status
            assert status["output"] == f"s3://renders/news/{job_id}/index.m3u8"
            assert [s["uri"] for s in status["segments"]] == [f"s3://renders/news/{job_id}/seg0000{i}.m4s"
                                                              for i in range(2)]
            head = s3.head_object(Bucket="renders", Key=f"news/{job_id}/seg00000.m4s")
            assert head["ContentType"] == "video/iso.segment" and head["Metadata"]["job-id"] == job_id
            assert s3.head_object(Bucket="renders", Key=f"news/{job_id}/index.m3u8")["ContentType"] == \
                "application/vnd.apple.mpegurl"

            playlist = client.get(f"/renders/{job_id}/index.m3u8")
            assert playlist.status_code == 200 and playlist.text.rstrip().endswith("#EXT-X-ENDLIST")
            assert [uri for _, uri in playlist_entries(playlist.text)] == ["seg00000.m4s", "seg00001.m4s"]
            fetched = {}
            for name in ("init.mp4", "seg00000.m4s"):
                redirect = client.get(f"/renders/{job_id}/{name}")
                assert redirect.status_code == 307
                assert redirect.headers["location"].startswith(f"{s3_endpoint}/renders/news/{job_id}/{name}?")
                fetched[name] = httpx.get(redirect.headers["location"], timeout=10)  # no credentials
                assert fetched[name].status_code == 200
            with av.open(io.BytesIO(fetched["init.mp4"].content + fetched["seg00000.m4s"].content)) as container:
                frame = next(container.decode(video=0))
                assert (frame.width, frame.height) == (1280, 720)
                rgb = frame.to_ndarray(format="rgb24")
            assert abs(int(rgb[10, 10, 2]) - 200) <= 10  # the background image (sky blue), fetched like a portrait
    finally:
        backend.close()
