"""REST front-door refusals that happen before any work (issue 8, bugs 2, 6, 7), through real HTTP clients against
uvicorn on 127.0.0.1: JSON body limit, engine names and engine/mode conflicts, unknown upload fields, the error
tree's HTTP statuses, and API docs that work offline and stay behind API_KEYS."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engines.media_audio import OUTPUT_RATE, write_wav
from engines.settings import SettingsError
from gateway.rest import create_app
from gateway.settings import DEFAULT_MAX_JSON_BODY_BYTES, GatewaySettings
from tests.gateway_fixtures import in_process_backend
from tests.http_server import serve
from tests.media_fixtures import PORTRAIT, speech_samples
from worker.security import SecurityPolicy

REPO = Path(__file__).resolve().parent.parent
KEY = "front-door-key"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("front-door")
    (root / "inputs").mkdir()
    shutil.copy(PORTRAIT, root / "inputs" / "face.jpg")
    write_wav(root / "inputs" / "speech.wav", speech_samples()[: int(1.2 * OUTPUT_RATE)])
    return root


@pytest.fixture(scope="module")
def env(root: Path) -> dict[str, str]:
    return {"ALLOWED_INPUT_ROOTS": str(root / "inputs"), "UPLOAD_DIR": str(root / "uploads")}


@pytest.fixture(scope="module")
def policy(env: dict[str, str]) -> SecurityPolicy:
    return SecurityPolicy.from_env(env)


@pytest.fixture(scope="module")
def base_url(root: Path, env: dict[str, str], policy: SecurityPolicy):
    backend = in_process_backend(env, root / "renders")
    with serve(create_app(backend, policy)) as url:
        yield url
    backend.close()


@pytest.fixture(scope="module")
def api(base_url: str):
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def raw_request(base_url: str, head: bytes, body_parts: list[bytes] = (), timeout: float = 5.0) -> bytes:
    """Send a request by hand (headers, then body parts, never finishing a chunked body) and return what the
    server answers within `timeout` seconds: an answer that needs the whole body never comes."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except socket.timeout:
            pass
    return answer


def body_json(body: dict) -> dict:
    return {"avatarPath": "face.jpg", "audioPath": "speech.wav", "size": 128, **body}


# ------------------------------------------------------------------------------------------ bug 2: body limits


def test_a_large_json_body_is_413_not_read_and_parsed(api: httpx.Client) -> None:
    padded = body_json({"idempotencyKey": "k", "x" * 10: "y" * (DEFAULT_MAX_JSON_BODY_BYTES + 10)})
    response = api.post("/render", json=padded)
    assert response.status_code == 413, response.text  # was 422: read, parsed, then refused
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and f"{DEFAULT_MAX_JSON_BODY_BYTES:,}-byte" in error["message"]


def test_a_declared_64_mb_json_body_is_refused_before_a_byte_is_read(base_url: str) -> None:
    head = (b"POST /render HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 67108864\r\n\r\n")
    answer = raw_request(base_url, head)  # no body is ever sent: only an answer that does not read it arrives
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer


def test_a_chunked_json_body_is_cut_off_once_over_the_limit(base_url: str) -> None:
    head = (b"POST /render HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" + b"1," * 8191  # 16 KiB per chunk; the body is never finished
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)]
    answer = raw_request(base_url, head, parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer


def test_the_upload_route_keeps_the_large_limit(api: httpx.Client, root: Path) -> None:
    face = (root / "inputs" / "face.jpg").read_bytes()
    assert len(face) > DEFAULT_MAX_JSON_BODY_BYTES
    response = api.post("/render/upload", files={"avatar": ("a.jpg", face),
                                                 "audio": ("b.wav", (root / "inputs" / "speech.wav").read_bytes())},
                        data={"size": "128"})
    assert response.status_code == 202, response.text


def test_the_json_limit_is_a_setting(root: Path, env: dict[str, str], policy: SecurityPolicy) -> None:
    settings = GatewaySettings.from_env({"MAX_JSON_BODY_BYTES": "2048", "API_KEYS": " a, b ,,"})
    assert settings.max_json_body_bytes == 2048 and settings.api_keys == frozenset({"a", "b"})
    assert GatewaySettings.from_env({}) == GatewaySettings()
    for bad in ("abc", "-1", "100"):
        with pytest.raises(SettingsError, match="MAX_JSON_BODY_BYTES"):
            GatewaySettings.from_env({"MAX_JSON_BODY_BYTES": bad})
    backend = in_process_backend(env, root / "renders-small")
    try:
        with serve(create_app(backend, policy, GatewaySettings(max_json_body_bytes=2048))) as url:
            response = httpx.post(f"{url}/render", json=body_json({"idempotencyKey": "k" * 200, "z": "z" * 2000}))
            assert response.status_code == 413 and "2,048-byte" in response.json()["error"]["message"]
    finally:
        backend.close()


# ------------------------------------------------------------------------------------------ bug 6: refused up front


@pytest.mark.parametrize("body, fragment", [
    ({"engine": "bogus"}, "Unknown engine 'bogus'; this build has: fomm-diff2lip-gfpgan, landmark-warp"),
    ({"engine": "landmark-warp", "qualityMode": "high_quality"}, "landmark-warp serves real_time, not high_quality"),
])
def test_unknown_engines_and_conflicting_modes_are_422_up_front(api: httpx.Client, body: dict, fragment: str) -> None:
    response = api.post("/render", json=body_json(body))
    assert response.status_code == 422, response.text  # was 202, then a failed job
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and fragment in error["message"]
    upload = api.post("/render/upload", files={"avatar": ("a.jpg", b"x"), "audio": ("b.wav", b"y")},
                      data={"qualityMode": body.get("qualityMode", "auto"), "engine": body["engine"]})
    assert upload.status_code == 422 and upload.json()["error"]["code"] == "invalid_parameter", upload.text


def test_an_engine_with_its_own_mode_or_auto_is_accepted(api: httpx.Client) -> None:
    for mode in ("real_time", "auto", None):
        response = api.post("/render", json=body_json({"engine": "landmark-warp", "qualityMode": mode}))
        assert response.status_code == 202, response.text


def test_unknown_upload_fields_are_refused_by_name(api: httpx.Client, root: Path) -> None:
    files = {"avatar": ("a.jpg", (root / "inputs" / "face.jpg").read_bytes()),
             "audio": ("b.wav", (root / "inputs" / "speech.wav").read_bytes())}
    response = api.post("/render/upload", files=files, data={"size": "128", "qualitymode": "real_time"})
    assert response.status_code == 422, response.text  # was 202: the misspelt field was ignored
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "qualitymode" in error["message"]
    assert not any(p.is_file() for p in (root / "uploads").rglob("*qualitymode*"))


def test_idempotency_conflicts_are_409(api: httpx.Client) -> None:
    first = api.post("/render", json=body_json({"idempotencyKey": "conflict-1"}))
    assert first.status_code == 202, first.text
    again = api.post("/render", json=body_json({"idempotencyKey": "conflict-1", "size": 256}))
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "idempotency_conflict"


# ------------------------------------------------------------------------------------------ new-user test: inputs


@pytest.mark.parametrize("body", [
    {"fps": True}, {"fps": False}, {"seed": True}, {"priority": True}, {"size": True},
    {"output": "hls", "hls": {"segmentSeconds": True}}, {"canvas": {"scale": True}}, {"canvas": {"x": False}},
    {"loudness": {"target": True}}, {"loudness": {"target": "web", "truePeak": False}},
    {"face": {"index": True}}, {"face": {"box": [0, 0, True, 100]}},
])
def test_json_booleans_are_not_numbers(api: httpx.Client, body: dict) -> None:
    response = api.post("/render", json=body_json(body))
    assert response.status_code == 422, response.text  # was 202: "fps": true rendered at 1 fps
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "not true or false" in error["message"], error


def test_hls_settings_are_refused_unless_the_output_is_hls(api: httpx.Client) -> None:
    for body in ({"hls": {"segmentSeconds": 1}}, {"output": "webm", "hls": {"mp4": True}}):
        response = api.post("/render", json=body_json(body))
        assert response.status_code == 422, response.text  # was 202, the hls settings silently unused
        error = response.json()["error"]
        assert error["code"] == "invalid_parameter" and "hls settings apply only to output hls" in error["message"]
    accepted = api.post("/render", json=body_json({"output": "hls", "hls": {"segmentSeconds": 1, "mp4": True}}))
    assert accepted.status_code == 202, accepted.text  # a real boolean where one belongs


@pytest.mark.parametrize("uri", ["s3://", "s3://bucket", "s3://bucket/", "s3:///key.jpg"])
def test_a_malformed_s3_uri_is_refused_up_front(api: httpx.Client, uri: str) -> None:
    for body in ({"avatarPath": uri}, {"audioPath": uri}, {"canvas": {"backgroundUri": uri}}):
        response = api.post("/render", json=body_json(body))
        assert response.status_code == 403, response.text  # was 202, then a failed job
        error = response.json()["error"]
        assert error["code"] == "url_not_allowed" and "must be s3://bucket/key" in error["message"]


# ------------------------------------------------------------------------------------------ bug 7: docs


def local_references(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r'url: "([^"]+)"', page)


def test_docs_are_served_from_local_assets(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    references = local_references(page.text)
    assert references and all(ref.startswith("/") and not ref.startswith("//") for ref in references), references
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no validator badge
    assert "validatorUrl: null" in page.text
    for ref in references:
        asset = api.get(ref)
        assert asset.status_code == 200, ref
    assert "SwaggerUIBundle" in api.get("/docs/assets/swagger-ui-bundle.js").text
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1") and "/render" in spec["paths"]
    assert api.get("/redoc").status_code == 404  # ReDoc cannot send the API key header: not offered


def test_api_keys_guard_the_spec_and_the_docs_hold_nothing_without_one(root: Path, env: dict[str, str],
                                                                      policy: SecurityPolicy) -> None:
    backend = in_process_backend(env, root / "renders-keyed")
    try:
        app = create_app(backend, policy, GatewaySettings(api_keys=frozenset({KEY})))
        with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            refused = client.get("/openapi.json")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            assert client.get("/openapi.json", headers={"X-API-Key": "wrong"}).status_code == 401
            spec = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()
            assert "APIKeyHeader" in spec["components"]["securitySchemes"]
            page = client.get("/docs").text
            assert 'id="key-form"' in page and "/render" not in page and "/status" not in page
            assert 'preauthorizeApiKey("APIKeyHeader", key)' in page
            assert 'request.headers["X-API-Key"] = key' in page
            assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    finally:
        backend.close()


# ------------------------------------------------------------------------------------------ the entry point


def test_the_api_command_builds_its_settings_from_the_environment(root: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(API_KEYS=KEY, MAX_JSON_BODY_BYTES="2048", ALLOWED_INPUT_ROOTS=str(root / "inputs"),
               UPLOAD_DIR=str(tmp_path / "up"), OUTPUT_DIR=str(tmp_path / "out"), AVATAR_FORCE_CPU="1",
               LOG_LEVEL="WARNING")
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 401
        big = httpx.post(f"http://127.0.0.1:{port}/render", headers={"X-API-Key": KEY},
                         json=body_json({"z": "z" * 3000}))
        assert big.status_code == 413, big.text
    finally:
        server.terminate()
        server.wait(10)

    bad = subprocess.run([sys.executable, "-m", "cli.main", "api"], cwd=REPO, capture_output=True, text=True,
                         env={**env, "MAX_JSON_BODY_BYTES": "64k"}, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "MAX_JSON_BODY_BYTES='64k' is not a whole number of bytes" in bad.stderr
