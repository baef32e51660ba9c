"""An in-process backend for gateway tests, built the way `avatar-renderer api` builds it: from one environment
mapping (the input policy the gateway checks with is the one the job step fetches with)."""

from __future__ import annotations

from pathlib import Path

from gateway.backends import InProcessBackend
from worker.settings import WorkerSettings


def in_process_backend(env: dict[str, str], output_dir: Path) -> InProcessBackend:
    settings = WorkerSettings.from_env({"AVATAR_FORCE_CPU": "1", "MAX_ATTEMPTS": "1", **env,
                                        "OUTPUT_DIR": str(output_dir), "WORK_DIR": str(output_dir.parent / "work")})
    return InProcessBackend(settings)
