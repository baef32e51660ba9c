"""Prometheus metrics of the worker, and the small HTTP server for /metrics, /healthz and /readyz.

Labels are bounded (mode, engine, outcome, stage, reason code, topic/partition): never a job id.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from schemas.errors import SettingsError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300)

RENDER_LATENCY = Histogram(
    "avatar_render_duration_seconds", "Pick-up to published result of one job, by served mode, engine and outcome",
    ["mode", "engine", "outcome"], buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "avatar_queue_wait_seconds", "requestedAt (or record time) to pick-up by a worker", buckets=LATENCY_BUCKETS,
)
STAGE = Histogram(
    "avatar_stage_duration_seconds", "Time in one stage of a job: fetch, decode, frames, encode, upload",
    ["stage"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
IN_PROGRESS = Gauge("avatar_jobs_in_progress", "Jobs being rendered by this worker now")
JOBS = Counter("avatar_jobs_total", "Jobs finished, by outcome (succeeded, failed, dead_lettered, expired)", ["outcome"])
RETRIES = Counter("avatar_job_retries_total", "Attempts retried after a transient error, by error code", ["code"])
DLQ = Counter("avatar_dlq_messages_total", "Records sent to the dead-letter topic, by reason code", ["code"])
OUTPUT_BYTES = Counter("avatar_output_bytes_total", "Bytes of MP4 stored")
LAG = Gauge("avatar_consumer_lag_messages", "Consumer lag from librdkafka statistics", ["topic", "partition"])
REBALANCES = Counter("avatar_rebalances_total", "Partition assignment changes seen, by kind (assign, revoke, lost)", ["kind"])
ASSIGNED = Gauge("avatar_assigned_partitions", "Partitions of the request topic assigned to this worker")
ENGINE_AVAILABLE = Gauge("avatar_engine_available", "1 if an engine can run on this worker, else 0", ["engine", "mode"])
ROUTED = Counter("avatar_routed_total", "Requests moved from the public topic to a lane, by mode and priority",
                 ["mode", "priority"])
PUBLISH_FAILURES = Counter("avatar_publish_failures_total", "Events the broker did not acknowledge, by topic", ["topic"])


def record_lag(stats_json: str, topic: str) -> None:
    """librdkafka statistics callback -> consumer lag gauge of each assigned partition."""
    try:
        stats = json.loads(stats_json)
    except ValueError:
        return
    partitions = stats.get("topics", {}).get(topic, {}).get("partitions", {})
    for pid, part in partitions.items():
        if pid == "-1":
            continue
        lag = part.get("consumer_lag_stored", part.get("consumer_lag", -1))
        if lag is not None and lag >= 0:
            LAG.labels(topic, pid).set(lag)


def record_engines(registry) -> None:
    """The availability gauge of every engine of this process's engines.registry.EngineRegistry."""
    for engine in registry.engines.values():
        ENGINE_AVAILABLE.labels(engine.name, engine.mode).set(1 if engine.availability().ok else 0)


class Health:
    """What /healthz and /readyz report: the main loop is alive; the worker has joined its group."""

    def __init__(self, stall_seconds: float = 30.0):
        self.stall_seconds = stall_seconds
        self.last_tick = time.monotonic()
        self.ready = False
        self.reason = "starting"

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_tick < self.stall_seconds


class _Handler(BaseHTTPRequestHandler):
    health: Health

    def do_GET(self):  # noqa: N802 (http.server API)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok = self.health.alive()
            self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
        elif path == "/readyz":
            ok = self.health.ready and self.health.alive()
            self._send(200 if ok else 503, (b"ready\n" if ok else f"not ready: {self.health.reason}\n".encode()))
        else:
            self._send(404, b"not found\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the JSON log clean
        pass


def serve(host: str, port: int, health: Health) -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; port 0 picks a free port (server.server_port).

    A port in use is refused with one sentence naming METRICS_PORT rather than moved elsewhere: Prometheus
    scrapes a fixed port, and a worker that silently listened on another one would go unwatched.
    """
    handler = type("Handler", (_Handler,), {"health": health})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(
                f"METRICS_PORT={port} is already in use on {host} (another worker on this host?): set METRICS_PORT "
                "to a free port, or to 0 for any free port.") from None
        raise SettingsError(
            f"The metrics server cannot listen on METRICS_HOST={host} METRICS_PORT={port}: {exc.strerror or exc}.") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_port,
             extra={"fields": {"metricsPort": server.server_port}})
    return server
