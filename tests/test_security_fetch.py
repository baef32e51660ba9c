"""https downloads against a real local TLS server: success, redirects refused, byte limits, content sniffing.

The server is on 127.0.0.1, which the address rules refuse (tested in test_security.py); here that one rule is
relaxed for loopback only, so the download path itself can be exercised end to end.
"""

from __future__ import annotations

import http.server
import ipaddress
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from tests.media_fixtures import PORTRAIT
from worker import security
from worker.security import IMAGE, InputTooLarge, SecurityPolicy, UnsupportedFormat, UrlNotAllowed

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = {"/face.jpg": PORTRAIT.read_bytes(), "/notes.jpg": b"just some text, not a picture" * 10}.get(self.path)
        if self.path == "/moved.jpg":
            self.send_response(302)
            self.send_header("Location", "https://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/huge.jpg":  # declared size over the limit
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            self.wfile.write(b"\xff\xd8\xff" + b"\0" * 1000)
        elif self.path == "/endless.jpg":  # no declared size, keeps streaming
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"\xff\xd8\xff" + b"\0" * 8192)
            except OSError:
                pass
        elif body is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}", cert
    server.shutdown()


@pytest.fixture
def fetch(tls_server, monkeypatch, tmp_path: Path):
    base, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    real_public = security._public
    monkeypatch.setattr(security, "_public", lambda a: ipaddress.ip_address(a.split("%")[0]).is_loopback or real_public(a))
    policy = SecurityPolicy.from_env({"ALLOWED_INPUT_ROOTS": str(tmp_path), "UPLOAD_DIR": str(tmp_path / "u"),
                                      "ALLOWED_URL_HOSTS": "localhost", "MAX_IMAGE_BYTES": "200000"})
    scratch = tmp_path / "scratch"
    return lambda path: security.fetch_https(base + path, IMAGE, scratch, policy), scratch


def test_download_of_an_allowed_url(fetch) -> None:
    get, _ = fetch
    assert get("/face.jpg").read_bytes() == PORTRAIT.read_bytes()


def test_redirects_are_refused(fetch) -> None:
    get, scratch = fetch
    with pytest.raises(UrlNotAllowed, match="redirects"):
        get("/moved.jpg")
    assert not any(scratch.iterdir())


def test_byte_limit_declared_and_streamed(fetch) -> None:
    get, scratch = fetch
    with pytest.raises(InputTooLarge, match="10,000,000 bytes"):
        get("/huge.jpg")
    with pytest.raises(InputTooLarge, match="over the 200,000-byte limit"):
        get("/endless.jpg")
    assert not any(scratch.iterdir())  # nothing half-downloaded is left behind


def test_downloaded_content_is_sniffed(fetch) -> None:
    get, scratch = fetch
    with pytest.raises(UnsupportedFormat, match="recognised by content"):
        get("/notes.jpg")
    assert not any(scratch.iterdir())
