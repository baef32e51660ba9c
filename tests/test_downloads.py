"""Downloads: GET /renders/{jobId} over real HTTP (Range requests, API keys, a player seeking over HTTP), the
`download` URL in the status, presigned URLs from a real S3-protocol server (moto), MCP results that say where the
video is, the Kafka backend's output served by the same route, and failed jobs that carry no output."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import av
import boto3
import httpx
import pytest

from gateway.rest import create_app
from gateway.settings import GatewaySettings
from schemas.errors import SettingsError
from tests.conftest import worker_env
from tests.gateway_fixtures import in_process_backend, kafka_gateway, wait_for, write_inputs
from tests.http_server import serve
from tests.mcp_client import render_and_wait
from tests.s3_server import AWS, moto_s3
from worker.security import SecurityPolicy

KEY = "dl-key"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inputs(tmp_path_factory.mktemp("downloads") / "inputs")


@pytest.fixture(scope="module")
def env(inputs: Path) -> dict[str, str]:
    return {"ALLOWED_INPUT_ROOTS": str(inputs), "UPLOAD_DIR": str(inputs.parent / "uploads")}





def submit(client: httpx.Client, avatar: str = "face.jpg") -> tuple[dict, dict]:
    accepted = client.post("/render", json={"avatarPath": avatar, "audioPath": "speech.wav", "size": 128,
                                            "qualityMode": "real_time"})
    assert accepted.status_code == 202, accepted.text
    return accepted.json(), wait_for(client, accepted.json()["statusUrl"], timeout=90)


# ----------------------------------------------------------------------------- file:// storage, in-process backend

@pytest.fixture(scope="module")
def gateway(inputs: Path, env: dict[str, str]):
    """A gateway behind an API key, with one finished job and one failed job."""
    backend = in_process_backend(env, inputs.parent / "renders")
    app = create_app(backend, SecurityPolicy.from_env(env), GatewaySettings(api_keys=frozenset({KEY})))
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30, headers={"X-API-Key": KEY}) as client:
        job, status = submit(client)
        assert status["state"] == "succeeded", status
        failing, failed = submit(client, "sky.png")
        assert failed["state"] == "failed", failed
        video = Path(urlsplit(status["output"]).path)
        yield client, base_url, job, status, video.read_bytes(), failing, failed
    backend.close()


def test_status_of_a_finished_job_gives_its_download_url(gateway) -> None:
    client, base_url, job, status, _, _, _ = gateway
    assert status["download"] == f"{base_url}/renders/{job['jobId']}"
    assert status["output"] == job["output"]  # the 202's output was where the video would be: it is there


def test_the_whole_video_comes_back_as_mp4_with_range_support(gateway) -> None:
    client, _, job, status, video, _, _ = gateway
    response = client.get(status["download"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] and response.headers["last-modified"]
    assert response.content == video and hashlib.sha256(video).hexdigest() == status["sha256"]
    with av.open(io.BytesIO(response.content)) as container:
        assert container.streams.video[0].codec_context.name == "h264" and container.streams.audio
    head = client.head(status["download"])
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(video) and head.content == b""


@pytest.mark.parametrize("asked, start, end", [
    ("bytes=0-99", 0, 99),            # the first bytes (what a player reads first)
    ("bytes=1000-1999", 1000, 1999),  # a seek into the middle
    ("bytes=-500", -500, None),       # the last 500 bytes (a suffix range)
    ("bytes=2000-", 2000, None),      # from an offset to the end (a resumed download)
])
def test_range_requests_answer_206_with_those_bytes(gateway, asked: str, start: int, end: int | None) -> None:
    client, _, _, status, video, _, _ = gateway
    response = client.get(status["download"], headers={"Range": asked})
    assert response.status_code == 206, response.text
    first = start if start >= 0 else len(video) + start
    last = len(video) - 1 if end is None else end
    assert response.content == video[first:last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(video)}"
    assert response.headers["content-type"] == "video/mp4"


def test_several_ranges_in_one_request_and_unsatisfiable_ranges(gateway) -> None:
    client, _, _, status, video, _, _ = gateway
    both = client.get(status["download"], headers={"Range": "bytes=0-9,3000-3009"})
    assert both.status_code == 206 and both.headers["content-type"].startswith("multipart/byteranges")
    assert video[:10] in both.content and video[3000:3010] in both.content
    beyond = client.get(status["download"], headers={"Range": f"bytes={len(video)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(video)}"


@pytest.mark.parametrize("asked", ["bytes=abc", "bytes=10-5", "bytes=", "bytes 0-9", "pages=0-9"])
def test_a_range_header_that_does_not_parse_is_ignored(gateway, asked: str) -> None:
    """RFC 9110 14.2: an invalid Range header is ignored; the whole video comes back (was a plain-text 400)."""
    client, _, _, status, video, _, _ = gateway
    response = client.get(status["download"], headers={"Range": asked})
    assert response.status_code == 200, response.text[:200]
    assert response.content == video and "content-range" not in response.headers
    head = client.head(status["download"], headers={"Range": asked})
    assert head.status_code == 200 and head.headers["content-length"] == str(len(video))


def test_an_unsatisfiable_range_is_416_with_the_json_error_body(gateway) -> None:
    client, _, _, status, video, _, _ = gateway
    for asked in (f"bytes={len(video)}-", f"bytes={len(video) + 10}-{len(video) + 20}", "bytes=-0"):
        response = client.get(status["download"], headers={"Range": asked})
        assert response.status_code == 416 and response.headers["content-range"] == f"bytes */{len(video)}"
        error = response.json()["error"]  # was an empty plain-text body
        assert error["code"] == "http_error" and f"{len(video):,} bytes" in error["message"], error


def test_a_player_seeks_in_the_video_over_http(gateway) -> None:
    """FFmpeg's HTTP reader (through PyAV) plays the URL with the key, then seeks back (a Range request)."""
    _, _, _, status, _, _, _ = gateway
    with av.open(status["download"], options={"headers": f"X-API-Key: {KEY}\r\n"}) as container:
        stream = container.streams.video[0]
        frames = [frame.time for frame in container.decode(stream)]
        assert len(frames) == status["frames"] and frames[-1] > 1.0
        container.seek(0)
        again = next(container.decode(stream))
        assert again.time == 0 and again.width == 128


def test_downloads_need_the_api_key(gateway) -> None:
    _, base_url, _, status, _, _, _ = gateway
    with httpx.Client(timeout=10) as anonymous:
        refused = anonymous.get(status["download"])
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert anonymous.get(status["download"], headers={"X-API-Key": "wrong"}).status_code == 401
        assert anonymous.get(status["download"], headers={"Range": "bytes=0-9"}).status_code == 401


def test_a_failed_job_shows_no_output_and_has_nothing_to_download(gateway) -> None:
    client, _, _, _, _, failing, failed = gateway
    assert failing["output"].endswith(f"{failing['jobId']}.mp4")  # the 202 says where it would have been
    assert failed["error"]["code"] == "no_face"
    assert "output" not in failed and "download" not in failed
    refused = client.get(f"/renders/{failing['jobId']}")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "output_not_available"
    unknown = client.get("/renders/no-such-job")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_job"


def test_a_video_gone_from_storage_is_404_not_a_crash(inputs: Path, env: dict[str, str]) -> None:
    backend = in_process_backend(env, inputs.parent / "renders-gone")
    with serve(create_app(backend, SecurityPolicy.from_env(env))) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as client:
        job, status = submit(client)
        assert status["state"] == "succeeded", status
        Path(urlsplit(status["output"]).path).unlink()
        gone = client.get(status["download"])
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "output_not_available"
    backend.close()


def test_download_expiry_setting() -> None:
    assert GatewaySettings.from_env({}).download_url_expiry_seconds == 3600
    assert GatewaySettings.from_env({"DOWNLOAD_URL_EXPIRY_SECONDS": "60"}).download_url_expiry_seconds == 60
    for bad in ("0", "soon", str(8 * 24 * 3600)):
        with pytest.raises(SettingsError, match="DOWNLOAD_URL_EXPIRY_SECONDS"):
            GatewaySettings.from_env({"DOWNLOAD_URL_EXPIRY_SECONDS": bad})


# ----------------------------------------------------------------------------- s3:// storage on a real S3 server

@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a loopback port with a bucket `renders`, and credentials for boto3 (tests/s3_server.py)."""
    with moto_s3("renders") as endpoint:
        yield endpoint


def assert_presigned(url: str, expiry: int) -> None:
    """SigV4 presigned GET whose signed lifetime is the setting. (moto, unlike S3 and MinIO, does not refuse
    expired URLs, so the expiry is checked in the signed parameters, which a holder cannot change.)"""
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"]
    assert query["X-Amz-Expires"] == [str(expiry)]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - signed_at).total_seconds()) < 120


def test_s3_output_redirects_to_a_presigned_url_that_serves_the_bytes(inputs: Path, env: dict[str, str],
                                                                      s3_endpoint: str) -> None:
    s3_env = {**env, "OUTPUT_URI": "s3://renders/team", "S3_ENDPOINT_URL": s3_endpoint}
    backend = in_process_backend(s3_env, inputs.parent / "renders-s3")
    app = create_app(backend, SecurityPolicy.from_env(s3_env), GatewaySettings(download_url_expiry_seconds=120))
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        job, status = submit(client)
        assert status["state"] == "succeeded", status
        assert status["output"] == f"s3://renders/team/{job['jobId']}.mp4"
        assert status["download"] == f"{base_url}/renders/{job['jobId']}"
        redirect = client.get(status["download"])
        assert redirect.status_code == 307
        url = redirect.headers["location"]
        assert url.startswith(f"{s3_endpoint}/renders/team/{job['jobId']}.mp4?")
        assert_presigned(url, 120)
        stored = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
            Bucket="renders", Key=f"team/{job['jobId']}.mp4")["Body"].read()
        fetched = httpx.get(url, timeout=10)  # a client with no credentials at all
        assert fetched.status_code == 200 and fetched.content == stored
        assert hashlib.sha256(fetched.content).hexdigest() == status["sha256"]
        assert fetched.headers["content-type"] == "video/mp4"
        part = httpx.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
        assert part.status_code == 206 and part.content == stored[100:200]
        followed = client.get(status["download"], follow_redirects=True)
        assert followed.status_code == 200 and followed.content == stored
    backend.close()


# ----------------------------------------------------------------------------- MCP through a real stdio client

def mcp_env(inputs: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(ALLOWED_INPUT_ROOTS=str(inputs), OUTPUT_DIR=str(tmp_path / "renders"), UPLOAD_DIR=str(tmp_path / "up"),
               WORK_DIR=str(tmp_path / "work"), AVATAR_FORCE_CPU="1", LOG_LEVEL="WARNING", MAX_ATTEMPTS="1", **extra)
    return env


def test_mcp_results_give_the_local_path_and_a_fetch_hint(inputs: Path, tmp_path: Path) -> None:
    job, status = render_and_wait(mcp_env(inputs, tmp_path))
    path = tmp_path / "renders" / f"{job['jobId']}.mp4"
    assert job["path"] == str(path) and "poll get_render_status" in job["fetch"]
    assert status["state"] == "succeeded", status
    assert status["path"] == str(path) and str(path) in status["fetch"] and "url" not in status
    with av.open(status["path"]) as container:
        assert container.streams.video and container.streams.audio


def test_mcp_failed_job_has_no_output(inputs: Path, tmp_path: Path) -> None:
    _, status = render_and_wait(mcp_env(inputs, tmp_path), avatar="sky.png")
    assert status["state"] == "failed" and status["error"]["code"] == "no_face"
    assert not {"output", "path", "url"} & set(status) and status["fetch"].startswith("Nothing to fetch")


def test_mcp_with_s3_storage_gives_a_presigned_url(inputs: Path, tmp_path: Path, s3_endpoint: str) -> None:
    env = mcp_env(inputs, tmp_path, OUTPUT_URI="s3://renders/mcp", S3_ENDPOINT_URL=s3_endpoint,
                  DOWNLOAD_URL_EXPIRY_SECONDS="300", **AWS)
    job, status = render_and_wait(env)
    assert status["state"] == "succeeded", status
    assert "path" not in status and "url" in status["fetch"] and status["urlExpiresAt"] in status["fetch"]
    assert_presigned(status["url"], 300)
    fetched = httpx.get(status["url"], timeout=10)
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == status["sha256"]
    with av.open(io.BytesIO(fetched.content)) as container:
        assert container.streams.video and container.streams.audio


# ----------------------------------------------------------------------------- Kafka backend: the completion's URI

def test_kafka_backend_serves_the_workers_output_from_a_shared_volume(broker, topics, inputs: Path, tmp_path: Path,
                                                                       start_worker) -> None:
    renders = tmp_path / "renders"
    env = worker_env(broker, topics, inputs, renders, UPLOAD_DIR=str(tmp_path / "uploads"))
    with kafka_gateway(broker, topics, renders, env, start_worker) as backend, \
            serve(create_app(backend, SecurityPolicy.from_env(env))) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as client:
        job, status = submit(client)
        assert status["state"] == "succeeded", status
        assert status["download"] == f"{base_url}/renders/{job['jobId']}"
        video = (renders / f"{job['jobId']}.mp4").read_bytes()
        assert client.get(status["download"]).content == video
        part = client.get(status["download"], headers={"Range": "bytes=-64"})
        assert part.status_code == 206 and part.content == video[-64:]
        _, failed = submit(client, "sky.png")
        assert failed["state"] == "failed" and "output" not in failed and "download" not in failed
