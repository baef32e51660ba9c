"""Worker pieces: settings validation, storage naming and overwrite, input URIs and bare paths, scratch folders,
the metrics port, and the `worker` command's one-line start-up errors."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.settings import SettingsError
from worker.inputs import fetch_input
from worker.security import PathNotAllowed, SecurityPolicy, UnsupportedFormat, UrlNotAllowed
from worker.settings import WorkerSettings
from worker.storage import FileStorage, S3Storage, open_storage
from engines import SAMPLES



def test_settings_defaults_and_topics():
    settings = WorkerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert settings.topics.requested == "avatar.render.requested" and settings.topics.dlq == "avatar.render.dlq"
    assert settings.output_uri.startswith("file:///") and settings.concurrency == 1
    assert settings.models.default_quality_mode == "auto"


@pytest.mark.parametrize("env, names", [
    ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
    ({"MAX_ATTEMPTS": "many"}, "MAX_ATTEMPTS"),
    ({"OUTPUT_URI": "ftp://x/y"}, "OUTPUT_URI"),
    ({"TOPIC_DLQ": "avatar.render.requested"}, "TOPIC_"),
    ({"DEFAULT_QUALITY_MODE": "best"}, "DEFAULT_QUALITY_MODE"),
    ({"METRICS_PORT": "70000"}, "METRICS_PORT must be a TCP port from 0 to 65535, got 70000"),
])
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        WorkerSettings.from_env(env)


def test_file_storage_names_output_after_job_and_overwrites(tmp_path):
    storage = open_storage((tmp_path / "out").as_uri())
    assert isinstance(storage, FileStorage)
    source = tmp_path / "a.mp4"
    source.write_bytes(b"first")
    first = storage.put("job-1", source)
    source.write_bytes(b"second version")
    second = storage.put("job-1", source)
    assert first.uri == second.uri == (tmp_path / "out" / "job-1.mp4").as_uri()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["job-1.mp4"]
    assert second.sha256 == hashlib.sha256(b"second version").hexdigest() and second.bytes == 14


def test_s3_storage_key_from_job_id():
    storage = open_storage("s3://renders/team/a", "http://minio:9000")
    assert isinstance(storage, S3Storage) and storage.endpoint_url == "http://minio:9000"
    assert storage.uri_for("job-9") == "s3://renders/team/a/job-9.mp4"


def test_inputs_only_under_allowed_roots(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "face.jpg").write_bytes((SAMPLES / "portrait.jpg").read_bytes())
    (root / "escape.jpg").symlink_to(SAMPLES / "portrait.jpg")
    policy = SecurityPolicy.from_env({"ALLOWED_INPUT_ROOTS": str(root), "UPLOAD_DIR": str(root / "uploads")})
    assert fetch_input((root / "face.jpg").as_uri(), "image", policy, tmp_path / "scratch") == root / "face.jpg"
    with pytest.raises(PathNotAllowed):
        fetch_input((root / "escape.jpg").as_uri(), "image", policy, tmp_path / "scratch")
    with pytest.raises(PathNotAllowed):
        fetch_input(f"file://{root}/../../etc/hostname", "image", policy, tmp_path / "scratch")
    with pytest.raises(UrlNotAllowed):
        fetch_input("https://not-allowed.example.com/face.jpg", "image", policy, tmp_path / "scratch")
    with pytest.raises(UrlNotAllowed):
        fetch_input("ftp://host/face.jpg", "image", policy, tmp_path / "scratch")


def test_bare_paths_are_file_uris_with_the_same_checks(tmp_path):
    """Issue 8 bug 1: a bare absolute path under ALLOWED_INPUT_ROOTS is read as file:// (it was refused with
    url_not_allowed); a relative one is taken relative to the first allowed root; outside the roots it is
    refused exactly like its file:// twin."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "face.jpg").write_bytes((SAMPLES / "portrait.jpg").read_bytes())
    (root / "escape.jpg").symlink_to(SAMPLES / "portrait.jpg")
    policy = SecurityPolicy.from_env({"ALLOWED_INPUT_ROOTS": str(root), "UPLOAD_DIR": str(root / "uploads")})
    scratch = tmp_path / "scratch"
    assert fetch_input(str(root / "face.jpg"), "image", policy, scratch) == root / "face.jpg"
    assert fetch_input("face.jpg", "image", policy, scratch) == root / "face.jpg"
    for outside in (str(root / "escape.jpg"), f"{root}/../../etc/hostname", "/etc/hostname", "../escape-up.jpg"):
        with pytest.raises(PathNotAllowed):
            fetch_input(outside, "image", policy, scratch)
    with pytest.raises(UnsupportedFormat):
        fetch_input(str(root / "face.jpg"), "audio", policy, scratch)


def _hold_scratch(work_dir: Path) -> subprocess.Popen:
    """Another process that claims a scratch folder in work_dir and lives until killed."""
    code = ("import sys, time; from worker import scratch; s = scratch.claim(sys.argv[1]); "
            "(s.path / 'job-1').mkdir(); print(s.path, flush=True); time.sleep(600)")
    return subprocess.Popen([sys.executable, "-c", code, str(work_dir)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)


def test_scratch_folders_of_sigkilled_workers_are_removed_at_start_and_live_ones_kept(tmp_path):
    """Issue 8 bug 7: a SIGKILLed worker's scratch folder is removed by the next worker that starts on the same
    WORK_DIR, while the folder of a worker still running is left alone; a clean exit removes its own."""
    from worker import scratch

    work_dir = tmp_path / "work"
    killed, alive = _hold_scratch(work_dir), _hold_scratch(work_dir)
    try:
        killed_dir, alive_dir = Path(killed.stdout.readline().strip()), Path(alive.stdout.readline().strip())
        assert (killed_dir / "job-1").is_dir() and (alive_dir / "job-1").is_dir()
        (work_dir / "not-a-worker-folder").mkdir()
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)

        mine = scratch.claim(work_dir)
        assert not killed_dir.exists(), "the dead worker's scratch folder is still there"
        assert (alive_dir / "job-1").is_dir() and (work_dir / "not-a-worker-folder").is_dir()
        assert mine.path.is_dir() and mine.path.parent == work_dir
        assert scratch.remove_abandoned(work_dir) == []  # ours is held while we live
        mine.release()
        assert not mine.path.exists()
    finally:
        for process in (killed, alive):
            process.kill()
            process.wait(10)


def test_metrics_port_in_use_is_one_sentence_naming_metrics_port():
    """Issue 8 bug 7: a second worker on the same host died with a traceback on the metrics port."""
    from worker import metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"METRICS_PORT={port} is already in use"):
            metrics.serve("127.0.0.1", port, metrics.Health())


def test_metrics_bind_to_loopback_unless_told_otherwise():
    assert WorkerSettings.from_env({}).metrics_host == "127.0.0.1"
    assert WorkerSettings.from_env({"METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


def _worker_command(env: dict, timeout: float = 60, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "avatar-renderer"
    return subprocess.run([str(cli), "worker", *args], env={**os.environ, "WORKER_WARMUP": "0", **env}, capture_output=True,
                          text=True, timeout=timeout, cwd=Path(__file__).resolve().parent.parent)


def test_worker_without_a_broker_exits_at_once_with_one_line():
    """Issue 8 bug 5: with no broker the worker logged hundreds of "Connection refused" lines and never said
    what was wrong; now it checks the broker first and says so in one line naming KAFKA_BOOTSTRAP_SERVERS."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    started = time.monotonic()
    result = _worker_command({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "METRICS_PORT": "0"})
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert (result.stderr + result.stdout).count("Connection refused") <= 2


def test_second_worker_on_the_metrics_port_exits_with_one_line(broker, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _worker_command({"KAFKA_BOOTSTRAP_SERVERS": broker, "METRICS_HOST": "127.0.0.1",
                                  "METRICS_PORT": str(port), "WORK_DIR": str(tmp_path / "work")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: METRICS_PORT={port} is already in use on 127.0.0.1 (another worker on this host?): set "
        "METRICS_PORT to a free port, or to 0 for any free port.")
    assert "Traceback" not in result.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == []  # its scratch folder went with it


def _dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The worker refused its settings before contacting a broker: exit 2, one `error:` line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_worker_concurrency_below_one_is_refused_at_parse_time(value):
    """`--concurrency -1` died with a ValueError traceback from the thread pool; `--concurrency 0` was ignored
    (the worker started with 1). Both are refused like WORKER_CONCURRENCY=0."""
    result = _worker_command({"KAFKA_BOOTSTRAP_SERVERS": _dead_address()}, args=("--concurrency", value))
    line = _one_error_line(result)
    assert "--concurrency" in line and f"must be at least 1, got {value}" in line


def test_metrics_port_out_of_range_is_one_line_naming_it():
    """METRICS_PORT=70000 died with an OverflowError traceback from bind(); 0 (any free port) stays allowed."""
    assert WorkerSettings.from_env({"METRICS_PORT": "0"}).metrics_port == 0
    assert WorkerSettings.from_env({"METRICS_PORT": "65535"}).metrics_port == 65535
    result = _worker_command({"KAFKA_BOOTSTRAP_SERVERS": _dead_address(), "METRICS_PORT": "70000"})
    assert _one_error_line(result) == "error: METRICS_PORT must be a TCP port from 0 to 65535, got 70000."


def test_a_work_dir_that_cannot_be_used_is_a_settings_error_naming_it(tmp_path):
    """WORK_DIR naming a regular file died with a FileExistsError traceback; one under a file, with
    NotADirectoryError. Any OSError making the scratch folder is one sentence naming WORK_DIR."""
    from worker import scratch

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for work_dir in (a_file, a_file / "below"):
        with pytest.raises(SettingsError, match=f"WORK_DIR='{work_dir}' cannot hold .* is a file, not a folder"):
            scratch.claim(work_dir)
    assert a_file.read_text() == "not a folder"


def test_worker_with_a_file_as_work_dir_exits_with_one_line(broker, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    result = _worker_command({"KAFKA_BOOTSTRAP_SERVERS": broker, "METRICS_PORT": "0", "WORK_DIR": str(a_file)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: WORK_DIR='{a_file}' cannot hold")


def test_worker_with_an_output_folder_it_cannot_write_exits_with_one_line(broker, tmp_path):
    """A file where OUTPUT_URI's folder should be: every job used to render three times, then fail storage_failed;
    the worker now tries the folder at start-up and names OUTPUT_URI."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    output_uri = (a_file / "renders").as_uri()
    result = _worker_command({"KAFKA_BOOTSTRAP_SERVERS": broker, "METRICS_PORT": "0", "OUTPUT_URI": output_uri,
                              "WORK_DIR": str(tmp_path / "work")})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1] == f"error: OUTPUT_URI='{output_uri}' cannot be written: Not a directory."


def test_repeated_producer_errors_are_rate_limited_and_fatal_ones_kept(caplog):
    """With the broker down the producer's error callback logged "Connection refused" twice a second without
    end, past the 30 s rate limit librdkafka's own lines have. A repeat is now dropped; a fatal error is not."""
    import uuid
    from types import SimpleNamespace

    from confluent_kafka import KafkaError

    from worker.consumer import Worker

    worker = SimpleNamespace(producer_fatal=None)
    broker = f"broker-{uuid.uuid4().hex}"  # a line no other test logged (the limit is per process)
    with caplog.at_level(logging.DEBUG):
        for attempt in range(50):
            Worker._note_fatal(worker, KafkaError(
                KafkaError._TRANSPORT, f"{broker}:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: "
                f"Connection refused (after {attempt} ms in state CONNECT)"))
    logged = [r.getMessage() for r in caplog.records if broker in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith("producer: "), logged
    assert worker.producer_fatal is None

    fatal = KafkaError(KafkaError._FATAL, "sequence desynchronization", fatal=True)
    Worker._note_fatal(worker, fatal)
    assert worker.producer_fatal is fatal  # the producer is replaced, and _replace_producer logs it each time

