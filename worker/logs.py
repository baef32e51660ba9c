"""Structured logs: one JSON object per line on stderr, carrying the job id of the job being handled."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        if job_id:
            entry["jobId"] = job_id
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, not the stream it was when logging was set up
    (a test harness or an embedding program may swap sys.stderr after the CLI configured logging)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # MediaPipe/TFLite print through absl; keep them quiet unless asked.
    logging.getLogger("absl").setLevel(logging.ERROR)
