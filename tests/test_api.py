"""REST gateway through a real HTTP client against uvicorn on 127.0.0.1, rendering with the in-process backend."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from engines.media_audio import write_wav
from tests.http_server import serve
from tests.media_fixtures import PORTRAIT, speech_samples
from gateway.rest import create_app
from gateway.settings import GatewaySettings
from tests.gateway_fixtures import in_process_backend, wait_for, write_inputs
from worker.security import SecurityPolicy
from gateway.uploads import UPLOAD_FOLDER


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_inputs(tmp_path_factory.mktemp("api") / "inputs")
    (root.parent / "outside.jpg").write_bytes(PORTRAIT.read_bytes())
    (root / "escape.jpg").symlink_to(root.parent / "outside.jpg")
    return root


@pytest.fixture(scope="module")
def env(inputs: Path) -> dict[str, str]:
    return {
        "ALLOWED_INPUT_ROOTS": str(inputs), "UPLOAD_DIR": str(inputs.parent / "uploads"),
        "MAX_IMAGE_BYTES": str(2 * PORTRAIT.stat().st_size), "MAX_AUDIO_BYTES": "400000",
        "ALLOWED_URL_HOSTS": "media.example.com",
    }


@pytest.fixture(scope="module")
def policy(env: dict[str, str]) -> SecurityPolicy:
    return SecurityPolicy.from_env(env)


@pytest.fixture(scope="module")
def api(inputs: Path, env: dict[str, str], policy: SecurityPolicy):
    backend = in_process_backend(env, inputs.parent / "renders")
    with serve(create_app(backend, policy)) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        yield client
    backend.close()


def assert_playable(uri: str, min_seconds: float) -> Path:
    assert uri.startswith("file://")
    path = Path(uri.removeprefix("file://"))
    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.audio
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.duration / 1e6 >= min_seconds
    return path


def test_submit_by_path_then_poll_to_success(api: httpx.Client, inputs: Path) -> None:
    response = api.post("/render", json={"avatarPath": str(inputs / "face.jpg"), "audioPath": "speech.wav",
                                         "qualityMode": "real_time", "size": 128})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert set(accepted) == {"jobId", "output", "qualityMode", "statusUrl"}
    assert accepted["qualityMode"] == "real_time"
    assert accepted["statusUrl"].endswith(f"/status/{accepted['jobId']}")
    status = wait_for(api, accepted["statusUrl"])
    assert status["state"] == "succeeded", status
    assert status["output"] == accepted["output"]
    assert status["engine"] == "landmark-warp" and status["mode"] == "real_time"
    assert status["timings"]["renderSeconds"] > 0
    assert_playable(status["output"], 1.1)


def test_multipart_upload(api: httpx.Client, inputs: Path, policy: SecurityPolicy) -> None:
    files = {"avatar": ("me.bin", (inputs / "face.jpg").read_bytes()),
             "audio": ("hello.dat", (inputs / "speech.wav").read_bytes())}
    response = api.post("/render/upload", files=files, data={"size": "128", "fps": "20"})
    assert response.status_code == 202, response.text
    status = wait_for(api, response.json()["statusUrl"])
    assert status["state"] == "succeeded", status
    assert_playable(status["output"], 1.1)
    saved = sorted(p.name for p in policy.upload_dir.rglob("*") if p.is_file())
    assert "avatar.jpeg" in saved and "audio.wav" in saved  # named by content, not by the client's names
    assert all(UPLOAD_FOLDER.match(p.parent.name) for p in policy.upload_dir.rglob("*") if p.is_file())  # sweepable


def test_a_render_failure_is_reported_with_its_reason(api: httpx.Client, inputs: Path) -> None:
    response = api.post("/render", json={"avatarPath": "sky.png", "audioPath": "speech.wav", "size": 128})
    assert response.status_code == 202
    status = wait_for(api, response.json()["statusUrl"])
    assert status["state"] == "failed"
    assert status["error"]["code"] == "no_face" and "face" in status["error"]["message"]


def test_idempotency_key_names_the_same_job(api: httpx.Client) -> None:
    body = {"avatarPath": "face.jpg", "audioPath": "speech.wav", "size": 128, "idempotencyKey": "order-42"}
    first, second = api.post("/render", json=body).json(), api.post("/render", json=body).json()
    assert first["jobId"] == second["jobId"] and first["output"] == second["output"]
    assert wait_for(api, first["statusUrl"])["state"] == "succeeded"


@pytest.mark.parametrize(
    "avatar, audio, status, code",
    [
        ("../outside.jpg", "speech.wav", 403, "path_not_allowed"),
        ("/etc/passwd", "speech.wav", 403, "path_not_allowed"),
        ("file:///etc/passwd", "speech.wav", 403, "path_not_allowed"),
        ("escape.jpg", "speech.wav", 403, "path_not_allowed"),
        ("face.jpg", "/etc/passwd", 403, "path_not_allowed"),
        ("http://127.0.0.1/face.jpg", "speech.wav", 403, "url_not_allowed"),
        ("https://127.0.0.1/face.jpg", "speech.wav", 403, "url_not_allowed"),
        ("https://10.0.0.8/face.jpg", "speech.wav", 403, "url_not_allowed"),
        ("https://169.254.169.254/latest/meta-data/", "speech.wav", 403, "url_not_allowed"),
        ("https://evil.example.org/face.jpg", "speech.wav", 403, "url_not_allowed"),
        ("speech.wav", "speech.wav", 415, "unsupported_format"),
        ("face.jpg", "face.jpg", 415, "unsupported_format"),
        ("missing.jpg", "speech.wav", 404, "input_not_found"),
    ],
)
def test_hostile_and_bad_inputs_are_refused_with_a_reason(api: httpx.Client, avatar, audio, status, code) -> None:
    response = api.post("/render", json={"avatarPath": avatar, "audioPath": audio})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_oversize_inputs_are_refused(api: httpx.Client, inputs: Path) -> None:
    big = inputs / "big.wav"
    write_wav(big, np.tile(speech_samples(), 3)[: 300_000])  # 600 kB > MAX_AUDIO_BYTES
    response = api.post("/render", json={"avatarPath": "face.jpg", "audioPath": "big.wav"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "input_too_large"
    response = api.post("/render/upload", files={"avatar": ("a.jpg", (inputs / "face.jpg").read_bytes()),
                                                 "audio": ("b.wav", big.read_bytes())})
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]
    # A body bigger than any legal upload is cut off before it is read.
    response = api.post("/render/upload", content=b"x" * 2_000_000, headers={"content-type": "multipart/form-data; boundary=z"})
    assert response.status_code == 413


def test_malformed_bodies_are_422(api: httpx.Client) -> None:
    for body in [{"avatarPath": "face.jpg"}, {"avatarPath": "face.jpg", "audioPath": "speech.wav", "qualityMode": "ultra"},
                 {"avatarPath": "face.jpg", "audioPath": "speech.wav", "size": 513},
                 {"avatarPath": "face.jpg", "audioPath": "speech.wav", "outputPath": "/tmp/x.mp4"},
                 {"avatarPath": "face.jpg", "audioPath": "speech.wav", "deadline": "2030-01-01T00:00:00"}]:
        response = api.post("/render", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_request" and response.json()["error"]["message"]
    assert api.get("/status/no-such-job").status_code == 404


def test_health_metrics_engines_and_docs(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok", "backend": "in-process"}
    assert api.get("/readyz").status_code == 200
    metrics = api.get("/metrics").text
    assert 'avatar_api_requests_total{method="POST",route="/render",status="202"}' in metrics
    assert 'avatar_api_refusals_total{code="path_not_allowed"}' in metrics
    engines = {e["name"]: e for e in api.get("/engines").json()}
    assert engines["landmark-warp"]["available"] is True
    spec = api.get("/openapi.json").json()
    assert {"/render", "/render/upload", "/status/{jobId}"} <= set(spec["paths"])
    assert api.get("/docs").status_code == 200


def test_api_keys(inputs: Path, env: dict[str, str], policy: SecurityPolicy) -> None:
    backend = in_process_backend(env, inputs.parent / "renders-keyed")
    app = create_app(backend, policy, GatewaySettings(api_keys=frozenset({"s3cret", "other"})))
    body = {"avatarPath": "face.jpg", "audioPath": "speech.wav", "size": 128}
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.post("/render", json=body).status_code == 401
        refused = client.post("/render", json=body, headers={"X-API-Key": "wrong"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert client.get("/status/x", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.get("/healthz").status_code == 200
        accepted = client.post("/render", json=body, headers={"X-API-Key": "s3cret"})
        assert accepted.status_code == 202
        assert client.get(accepted.json()["statusUrl"], headers={"X-API-Key": "other"}).status_code == 200
    backend.close()


def test_exact_frame_rate_face_and_framing(api: httpx.Client, inputs: Path) -> None:
    """fps "30000/1001" with a face and a framing renders at exactly 30000/1001; the status reports the rate."""
    response = api.post("/render", json={"avatarPath": "face.jpg", "audioPath": "speech.wav", "qualityMode": "real_time",
                                         "size": 96, "fps": "30000/1001", "face": {"index": 0}, "framing": "crop"})
    assert response.status_code == 202, response.text
    status = wait_for(api, response.json()["statusUrl"])
    assert status["state"] == "succeeded", status
    assert status["frameRate"] == "30000/1001" and status["fps"] == 29.97
    with av.open(str(assert_playable(status["output"], 1.1))) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


def test_upload_takes_decimal_ntsc_rate_and_face(api: httpx.Client, inputs: Path) -> None:
    files = {"avatar": ("me.jpg", (inputs / "face.jpg").read_bytes()),
             "audio": ("hello.wav", (inputs / "speech.wav").read_bytes())}
    response = api.post("/render/upload", files=files,
                        data={"size": "96", "fps": "29.97", "face": "index:0", "framing": "crop"})
    assert response.status_code == 202, response.text
    status = wait_for(api, response.json()["statusUrl"])
    assert status["state"] == "succeeded" and status["frameRate"] == "30000/1001", status
    for bad in ({"fps": "abc"}, {"fps": "0"}, {"fps": "61"}, {"face": "biggest"}, {"face": "box:1,2,3"},
                {"framing": "wide"}):
        refused = api.post("/render/upload", files=files, data={"size": "96", **bad})
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["error"]["code"] in ("invalid_parameter", "invalid_request"), refused.text


@pytest.mark.parametrize("field", [{"fps": 0}, {"fps": 61}, {"fps": "abc"}, {"fps": "61"}, {"fps": "30/0"},
                                   {"fps": 29.970001}, {"face": "biggest"}, {"face": {"index": -1}},
                                   {"face": {"box": [1, 2, 3]}}, {"face": {"index": 1, "box": [1, 2, 3, 4]}},
                                   {"framing": "wide"}])
def test_bad_rate_face_or_framing_is_a_422(api: httpx.Client, field: dict) -> None:
    response = api.post("/render", json={"avatarPath": "face.jpg", "audioPath": "speech.wav", **field})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_parameter", "invalid_request") and "\n" not in error["message"]
    assert next(iter(field)) in error["message"]


def test_decimal_rate_is_accepted_as_a_number(api: httpx.Client) -> None:
    response = api.post("/render", json={"avatarPath": "face.jpg", "audioPath": "speech.wav", "size": 96,
                                         "fps": 29.97, "qualityMode": "real_time"})
    assert response.status_code == 202, response.text
    assert wait_for(api, response.json()["statusUrl"])["frameRate"] == "30000/1001"
