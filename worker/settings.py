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

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Topics":
        defaults = cls()
        names = {
            field: env.get(f"TOPIC_{field.upper()}", "").strip() or getattr(defaults, field)
            for field in ("requested", "completed", "failed", "status", "dlq")
        }
        if len(set(names.values())) != len(names):
            raise SettingsError(f"TOPIC_* must name five different topics, got {names}.")
        return cls(**names)


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
            metrics_port=int_env(env, "METRICS_PORT", 9108, 0),
            worker_id=env.get("WORKER_ID", "").strip() or f"{socket.gethostname()}:{os.getpid()}",
            warmup=env.get("WORKER_WARMUP", "1").strip() not in ("0", "false", "no"),
            models=ModelSettings.from_env(env),
            inputs=SecurityPolicy.from_env(env),
        )
