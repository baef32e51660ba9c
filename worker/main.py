"""`avatar-renderer worker`: settings, broker check, signals, metrics server, warm-up, then the consumer loop.

Start-up problems a user can fix (no broker at KAFKA_BOOTSTRAP_SERVERS, METRICS_PORT in use) are raised as
members of the error tree, which the command line prints as one `error:` line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from . import metrics
from schemas.errors import SettingsError

from .settings import WorkerSettings
from .storage import FileStorage, open_storage
from engines import SAMPLES

log = logging.getLogger(__name__)


def warm_up(render) -> None:
    """One tiny render so the first job does not pay the one-off costs (Face Mesh graph, phone decoder)."""
    from engines.media_audio import load_audio, write_wav
    from engines.pipeline import RenderRequest

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avatar-warmup-") as tmp:
        clip = load_audio(SAMPLES / "speech.wav").trimmed(0.5)
        audio = write_wav(Path(tmp) / "warmup.wav", clip.samples)
        render(RenderRequest(SAMPLES / "portrait.jpg", audio, Path(tmp) / "warmup.mp4", mode="real_time", size=64))
    log.info("warm-up render done", extra={"fields": {"seconds": round(time.perf_counter() - started, 3)}})


def run_worker(args, env: Mapping[str, str]) -> int:
    """Start a worker with the settings in `env` (the entry point passes os.environ)."""
    settings = WorkerSettings.from_env(env)
    if getattr(args, "concurrency", None) is not None:  # --concurrency 0 is refused by argparse, not ignored
        settings = replace(settings, concurrency=args.concurrency)
    from engines.registry import EngineRegistry

    from .consumer import Worker
    from .job_step import pipeline_render
    from .kafka import ensure_broker_reachable

    ensure_broker_reachable(settings.bootstrap_servers)  # no broker: one sentence naming KAFKA_BOOTSTRAP_SERVERS
    storage = open_storage(settings.output_uri, settings.s3_endpoint_url)
    if isinstance(storage, FileStorage):  # S3 is not probed: a bucket's outage is retried per job
        try:
            storage.probe()
        except OSError as exc:
            raise SettingsError(f"OUTPUT_URI={settings.output_uri!r} cannot be written: "
                                f"{exc.strerror or exc}.") from None
    engines = EngineRegistry.for_settings(settings.models)  # the process's engines, each built once
    render = pipeline_render(settings.models, engines)
    from .fleet import local_capabilities

    capabilities = local_capabilities(settings, engines)  # a mode it cannot render: one line, exit 2
    worker = Worker(settings, storage=storage, render=render, capabilities=capabilities)
    try:
        server = metrics.serve(settings.metrics_host, settings.metrics_port, worker.health)
    except BaseException:
        worker.scratch.release()
        raise
    metrics.record_engines(engines)

    def on_signal(signum, frame):
        log.info("signal %s: draining", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.warmup:
        warm_up(render)
    code = worker.run()
    server.shutdown()
    engines.close()  # models (and GPU memory) released before exit
    busy = [t for t in threading.enumerate() if t.name.startswith("render") and t.is_alive()]
    if busy:  # renders given back at the end of the grace period: do not wait for them to finish
        log.info("exiting with %d render thread(s) abandoned", len(busy))
        sys.stderr.flush()
        os._exit(code)
    return code
