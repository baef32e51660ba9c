"""`avatar-renderer bench --hls`: how soon the first HLS segment is playable, through the worker's own job step.

Each run is one job (portrait + the bundled speech, real_time, HLS) run by worker.job_step.JobStep with file
storage, as a worker runs it: fetch and check the inputs, measure the loudness, find and frame the face,
render, encode, store each segment and announce it. The clock starts when the job step starts the job and
stops when the first segment is stored and its event handed to the publisher (a player can fetch it then).
One unmeasured job first pays the one-off costs (Face Mesh graph, phone recogniser, encoder libraries).
"""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from functools import partial
from pathlib import Path

from cli.submit import build_request
from engines import SAMPLES
from engines.media_audio import load_audio, write_wav
from engines.pipeline import render
from schemas.events import parse_request
from worker.job_step import JobStep
from worker.settings import WorkerSettings
from worker.storage import open_storage


def bench_hls(workdir: Path, engines, env: dict[str, str], seconds: float = 10.0, size: int = 512,
              repeats: int = 3, segment_lengths=(1.0, 2.0)) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / "portrait.jpg", workdir / "portrait.jpg")
    write_wav(workdir / "speech.wav", load_audio(SAMPLES / "speech.wav").trimmed(seconds).samples)
    settings = WorkerSettings.from_env({**env, "ALLOWED_INPUT_ROOTS": str(workdir), "MAX_ATTEMPTS": "1",
                                        "OUTPUT_DIR": str(workdir / "renders"), "WORK_DIR": str(workdir / "work")})
    step = JobStep(settings, open_storage(settings.output_uri), partial(render, engines=engines))

    def job(segment_seconds: float) -> dict:
        request = parse_request(json.dumps(build_request(
            str(workdir / "portrait.jpg"), str(workdir / "speech.wav"), "real_time", size=size, output="hls",
            hls={"segmentSeconds": segment_seconds})).encode())
        announced: list[float] = []
        started = time.perf_counter()

        def on_running(_request, _attempt, progress=None):
            if progress:
                announced.append(time.perf_counter() - started)

        outcome = step.run(request, threading.Event(), on_running)
        if outcome.state != "succeeded":
            raise RuntimeError(f"the HLS bench job failed: {outcome.failure}")
        return {"first_segment_seconds": round(announced[0], 3), "job_seconds": round(time.perf_counter() - started, 3),
                "segments": len(announced)}

    job(segment_lengths[0])  # warm-up
    results = []
    for segment_seconds in segment_lengths:
        runs = [job(segment_seconds) for _ in range(repeats)]
        best = min(runs, key=lambda run: run["first_segment_seconds"])
        results.append({"segment_seconds": segment_seconds, **best,
                        "first_segment_seconds_median": round(statistics.median(
                            r["first_segment_seconds"] for r in runs), 3)})
    return {"size": size, "mode": "real_time", "audio_seconds": seconds, "repeats": repeats, "results": results}
