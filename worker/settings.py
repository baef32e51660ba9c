"""The worker's settings, from the mapping the entry point read (os.environ), validated once at start-up."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from engines.settings import ModelSettings, SettingsError, float_env, int_env

from .security import SecurityPolicy


@dataclass(frozen=True)
class Topics:
    requested: str = "avatar.render.requested"
    completed: str = "avatar.render.completed"
    failed: str = "avatar.render.failed"
    status: str = "avatar.render.status"
    dlq: str = "avatar.render.dlq"
    # The fleet's topics (README "Routing"); empty: named after the request topic's prefix, so a test's
    # "t1234.requested" gets "t1234.workers" and lanes "t1234.lane.<mode>.<priority>".
    workers: str = ""  # heartbeats, compacted, key workerId
    lane_prefix: str = ""  # lanes are <lane_prefix>.<mode>.<urgent|normal|bulk>

    def __post_init__(self):
        base = self.requested[: -len(".requested")] if self.requested.endswith(".requested") else self.requested
        if not self.workers:
            object.__setattr__(self, "workers", f"{base}.workers")
        if not self.lane_prefix:
            object.__setattr__(self, "lane_prefix", f"{base}.lane")

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Topics":
        defaults = cls()
        names = {
            field: env.get(f"TOPIC_{field.upper()}", "").strip() or getattr(defaults, field)
            for field in ("requested", "completed", "failed", "status", "dlq")
        }
        if len(set(names.values())) != len(names):
            raise SettingsError(f"TOPIC_* must name five different topics, got {names}.")
        workers = env.get("TOPIC_WORKERS", "").strip()
        lane_prefix = env.get("TOPIC_LANE_PREFIX", "").strip().rstrip(".")
        topics = cls(**names, workers=workers, lane_prefix=lane_prefix)
        if topics.workers in names.values():
            raise SettingsError(f"TOPIC_WORKERS={topics.workers!r} must differ from the other TOPIC_* names.")
        return topics


@dataclass(frozen=True)
class WorkerSettings:
    bootstrap_servers: str
    group_id: str
    topics: Topics
    concurrency: int  # jobs rendered at once (one per partition)
    max_attempts: int  # tries of a job with transient failures, first included
    retry_backoff_seconds: float  # first backoff; doubles each retry
    retry_backoff_max_seconds: float
    drain_grace_seconds: float  # SIGTERM: how long in-flight jobs may finish before they are given back
    session_timeout_ms: int
    max_poll_interval_ms: int
    statistics_interval_ms: int
    output_uri: str  # file:///dir or s3://bucket/prefix
    s3_endpoint_url: str | None
    work_dir: Path
    metrics_host: str
    metrics_port: int  # 0: any free port (logged)
    worker_id: str
    warmup: bool
    models: ModelSettings
    inputs: SecurityPolicy
    pool: str = ""  # WORKER_POOL: the pool's name in heartbeats and logs; empty: named after its modes
    modes: tuple[str, ...] = ()  # WORKER_MODES: lanes served; empty: from DEFAULT_QUALITY_MODE (worker/fleet.py)
    heartbeat_seconds: float = 5.0  # a worker announces itself this often; live for 3 heartbeats
    lane_max_skips: int = 4  # a waiting lower-priority lane is passed over at most this many times in a row

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "WorkerSettings":
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").strip()
        if not bootstrap or any(":" not in hp for hp in bootstrap.split(",")):
            raise SettingsError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} must be host:port[,host:port...].")
        output_uri = env.get("OUTPUT_URI", "").strip() or Path(env.get("OUTPUT_DIR", "out/renders")).resolve().as_uri()
        if not output_uri.startswith(("file:///", "s3://")):
            raise SettingsError(f"OUTPUT_URI={output_uri!r} must start with file:/// or s3://bucket.")
        if output_uri.startswith("s3://") and not output_uri[5:].split("/")[0]:
            raise SettingsError("OUTPUT_URI=s3:// needs a bucket name, e.g. s3://renders/prefix.")
        backoff = float_env(env, "RETRY_BACKOFF_SECONDS", 0.5, 0.0)
        session_ms = int_env(env, "KAFKA_SESSION_TIMEOUT_MS", 10000, 1000)
        return cls(
            bootstrap_servers=bootstrap,
            group_id=env.get("KAFKA_GROUP_ID", "").strip() or "avatar-renderer",
            topics=Topics.from_env(env),
            concurrency=int_env(env, "WORKER_CONCURRENCY", 1, 1),
            max_attempts=int_env(env, "MAX_ATTEMPTS", 3, 1),
            retry_backoff_seconds=backoff,
            retry_backoff_max_seconds=float_env(env, "RETRY_BACKOFF_MAX_SECONDS", 30.0, backoff),
            drain_grace_seconds=float_env(env, "DRAIN_GRACE_SECONDS", 30.0, 0.0),
            session_timeout_ms=session_ms,
            max_poll_interval_ms=int_env(env, "KAFKA_MAX_POLL_INTERVAL_MS", 30000, session_ms),
            statistics_interval_ms=int_env(env, "KAFKA_STATISTICS_INTERVAL_MS", 5000, 0),
            output_uri=output_uri.rstrip("/"),
            s3_endpoint_url=env.get("S3_ENDPOINT_URL", "").strip() or None,
            work_dir=Path(env.get("WORK_DIR", "").strip() or Path(tempfile.gettempdir()) / "avatar-worker"),
            metrics_host=env.get("METRICS_HOST", "127.0.0.1").strip(),  # 0.0.0.0 for a scraper elsewhere
            metrics_port=metrics_port_env(env),
            worker_id=env.get("WORKER_ID", "").strip() or f"{socket.gethostname()}:{os.getpid()}",
            warmup=env.get("WORKER_WARMUP", "1").strip() not in ("0", "false", "no"),
            models=ModelSettings.from_env(env),
            inputs=SecurityPolicy.from_env(env),
            pool=env.get("WORKER_POOL", "").strip(),
            modes=served_modes_env(env),
            heartbeat_seconds=float_env(env, "HEARTBEAT_SECONDS", 5.0, 0.1),
            lane_max_skips=int_env(env, "LANE_MAX_SKIPS", 4, 0),
        )


def metrics_port_env(env: Mapping[str, str]) -> int:
    """METRICS_PORT: a TCP port, or 0 for any free port (logged)."""
    port = int_env(env, "METRICS_PORT", 9108, 0)
    if port > 65535:
        raise SettingsError(f"METRICS_PORT must be a TCP port from 0 to 65535, got {port}.")
    return port


SERVED_MODES = ("real_time", "high_quality")  # the modes a lane (and a worker) serves; auto is resolved before


def served_modes_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """WORKER_MODES: a comma-separated subset of real_time, high_quality; empty: decided by DEFAULT_QUALITY_MODE."""
    raw = env.get("WORKER_MODES", "").strip()
    modes = tuple(dict.fromkeys(m.strip() for m in raw.split(",") if m.strip()))
    unknown = [m for m in modes if m not in SERVED_MODES]
    if unknown:
        raise SettingsError(f"WORKER_MODES={raw!r}: {', '.join(unknown)} is not a mode a worker serves; use "
                            f"{' and/or '.join(SERVED_MODES)}, comma-separated.")
    return modes
