"""A local HTTP file server for the model-download tests: Range requests, a cut-off switch, a log."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class FileServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.ranges = True  # honour Range headers
        self.cut_after: int | None = None  # close the connection after sending this many body bytes
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.url = ""


@contextmanager
def serving(files: dict[str, bytes]) -> Iterator[FileServer]:
    state = FileServer(files)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start, status = 0, 200
            wanted = self.headers.get("Range")
            if wanted and state.ranges:
                start = int(wanted.split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            chunk = body[start:]
            if state.cut_after is not None:
                chunk = chunk[: state.cut_after]
            self.wfile.write(chunk)
            self.wfile.flush()
            if state.cut_after is not None:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
