"""An in-process backend for gateway tests, built the way `avatar-renderer api` builds it: from one environment
mapping (the input policy the gateway checks with is the one the job step fetches with)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gateway.backends import InProcessBackend
from gateway.kafka_backend import KafkaBackend
from worker.settings import WorkerSettings


def in_process_backend(env: dict[str, str], output_dir: Path) -> InProcessBackend:
    settings = WorkerSettings.from_env({"AVATAR_FORCE_CPU": "1", "MAX_ATTEMPTS": "1", **env,
                                        "OUTPUT_DIR": str(output_dir), "WORK_DIR": str(output_dir.parent / "work")})
    return InProcessBackend(settings)


@contextmanager
def kafka_gateway(broker: str, topics, renders: Path, env: dict[str, str], start_worker) -> Iterator[KafkaBackend]:
    """A worker started with `env` and a gateway's Kafka backend following the same topics, both using the
    renders folder `renders` (as a shared volume would); the backend is closed afterwards."""
    start_worker(env)
    backend = KafkaBackend(broker, topics, renders.resolve().as_uri())
    try:
        assert backend.wait_until_following(30)
        yield backend
    finally:
        backend.close()


def write_inputs(root: Path) -> Path:
    """A folder of gateway inputs: face.jpg (the sample portrait), speech.wav (1.2 s) and sky.png (no face)."""
    import shutil

    from PIL import Image

    from engines.media_audio import OUTPUT_RATE, write_wav
    from tests.media_fixtures import PORTRAIT, speech_samples

    root.mkdir(parents=True)
    shutil.copy(PORTRAIT, root / "face.jpg")
    write_wav(root / "speech.wav", speech_samples()[: int(1.2 * OUTPUT_RATE)])
    Image.new("RGB", (200, 200), (120, 160, 200)).save(root / "sky.png")  # no face in it: its job fails
    return root


def wait_for(client, status_url: str, timeout: float = 60) -> dict:
    """Poll GET /status until the job is succeeded or failed; every answer must be 200. The states seen are
    returned under "seen"."""
    import time

    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        response = client.get(status_url)
        assert response.status_code == 200, response.text
        status = response.json()
        seen.append(status["state"])
        if status["state"] in ("succeeded", "failed"):
            status["seen"] = seen
            return status
        time.sleep(0.1)
    raise AssertionError(f"job did not finish; states seen {seen}")
