"""`avatar-renderer bench --worker`: what the Kafka worker path costs over a direct render.

Runs the embedded broker and one in-process worker (built-in engine, warm), then:
- latency: jobs submitted one at a time; submit -> completion event received, against the same render done
  directly with engines.pipeline.render (p50, p95 of both, and of the difference);
- throughput: a burst of jobs submitted at once; jobs/s from first submit to last completion.
Prints one JSON object and writes it next to --out as bench_worker.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from engines import SAMPLES

SIZE, CLIP_SECONDS, SEQUENTIAL, BURST = 256, 2.0, 10, 10


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def _summary(values: list[float]) -> dict:
    return {"p50": _pct(values, 0.5), "p95": _pct(values, 0.95), "mean": round(statistics.fmean(values), 3)}


def run_worker_bench(args) -> int:
    from engines.media_audio import load_audio, write_wav
    from engines.pipeline import RenderRequest, render
    from engines.registry import EngineRegistry
    from engines.settings import ModelSettings

    from .broker import create_topics, free_port, start_broker
    from worker.consumer import Worker
    from worker.settings import Topics, WorkerSettings
    from .submit import ResultWatcher, build_request, publish

    with tempfile.TemporaryDirectory(prefix="avatar-bench-worker-") as tmp:
        tmp = Path(tmp)
        face = tmp / "portrait.jpg"
        face.write_bytes((SAMPLES / "portrait.jpg").read_bytes())
        audio = write_wav(tmp / "clip.wav", load_audio(SAMPLES / "speech.wav").trimmed(CLIP_SECONDS).samples)

        engines = EngineRegistry.for_settings(ModelSettings.from_env(dict(os.environ)))
        render(RenderRequest(face, audio, tmp / "warm.mp4", mode="real_time", size=SIZE), engines)  # warm-up
        direct = []
        for i in range(SEQUENTIAL):
            started = time.perf_counter()
            render(RenderRequest(face, audio, tmp / f"direct{i}.mp4", mode="real_time", size=SIZE), engines)
            direct.append(time.perf_counter() - started)
        engines.close()

        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        broker = start_broker(port)
        try:
            topics = Topics()
            create_topics(bootstrap, topics)
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ALLOWED_INPUT_ROOTS": str(tmp),
                   "OUTPUT_URI": (tmp / "renders").as_uri(), "KAFKA_SESSION_TIMEOUT_MS": "6000",
                   "KAFKA_MAX_POLL_INTERVAL_MS": "10000", "KAFKA_STATISTICS_INTERVAL_MS": "0"}
            worker = Worker(WorkerSettings.from_env(env))
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            watcher = ResultWatcher(bootstrap, topics)
            from worker.kafka import request_producer

            producer = request_producer(bootstrap, "avatar-renderer-bench", **{"linger.ms": 0})

            def job() -> dict:
                return build_request(str(face), str(audio), "real_time", size=SIZE)

            first = job()  # also waits out the group join
            publish(bootstrap, topics, first, producer=producer)
            watcher.wait({first["jobId"]}, 120)

            via_worker, added = [], []
            for _ in range(SEQUENTIAL):
                request = job()
                started = time.perf_counter()
                publish(bootstrap, topics, request, producer=producer)
                result = watcher.wait({request["jobId"]}, 120)[request["jobId"]]
                elapsed = time.perf_counter() - started
                via_worker.append(elapsed)
                added.append(elapsed - result[1]["durations"]["renderSeconds"])

            burst = [job() for _ in range(BURST)]
            started = time.perf_counter()
            for request in burst:
                publish(bootstrap, topics, request, producer=producer)
            results = watcher.wait({r["jobId"] for r in burst}, 300)
            burst_seconds = time.perf_counter() - started
            watcher.close()
            worker.stop()
            thread.join(60)
        finally:
            broker.terminate()
            broker.wait(10)

    figures = {
        "bench": "worker",
        "engine": "landmark-warp",
        "size": SIZE,
        "audio_seconds": CLIP_SECONDS,
        "concurrency": 1,
        "direct_render_seconds": _summary(direct),
        "worker_end_to_end_seconds": _summary(via_worker),
        "added_latency_seconds": _summary(added),
        "added_over_direct_p50_seconds": round(_pct(via_worker, 0.5) - _pct(direct, 0.5), 3),
        "burst_jobs": BURST,
        "burst_completed": len(results),
        "jobs_per_second": round(len(results) / burst_seconds, 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "note": "added latency = submit -> completion received, minus the job's own render time (publish, "
                "consume, fetch, store, events, acknowledgements)",
    }
    out = Path(getattr(args, "out", "out/bench.json")).with_name("bench_worker.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0
