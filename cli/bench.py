"""`avatar-renderer bench`: speed of the built-in engine at several sizes, written as JSON.

Each size renders the bundled speech clip (trimmed to --seconds) --repeats times after one warm-up render
(which pays the one-off costs: Face Mesh graph, phone recogniser); the fastest repeat is reported with the
median beside it. Peak memory is the process's resident set size sampled every 5 ms during the render.

`--long SECONDS` (3600 by default) also renders that much speech (the bundled clip looped, written by the
bench) at LONG_SIZE px in a fresh process, with MAX_AUDIO_SECONDS raised through the settings object, and
reports the child's peak RSS as the kernel counted it (VmHWM of its own address space: ru_maxrss would also
count the parent's peak, which a spawned child inherits): memory must stay flat in audio length.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np
import psutil

from engines.media_audio import ANALYSIS_RATE, load_audio, write_wav
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from schemas.errors import InvalidParameter
from engines import SAMPLES

LONG_SIZE = 256


class PeakRss:
    """Peak RSS over a with-block of this process plus its children (the phone recognition process); .peak_mb.

    On Linux the kernel's own high-water marks are reset at the start (5 written to /proc/PID/clear_refs) and
    read at the end (VmHWM), so nothing runs beside the render being measured; the sum of the two peaks is at
    most what they held together. Where that is not allowed, a thread samples the RSS every 5 ms (it takes the
    GIL 200 times a second, which slows a render on two cores measurably)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._process = psutil.Process()
        self._thread: threading.Thread | None = None

    def _processes(self) -> list[psutil.Process]:
        return [self._process, *self._process.children(recursive=True)]

    def _rss(self) -> int:
        total = 0
        for process in self._processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:  # ended between listing and reading
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        try:
            for process in self._processes():
                Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        except OSError:
            self.peak = self._rss()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak = int(sum(_peak_rss_mb(process.pid) for process in self._processes()) * 2**20)
            return
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


class CpuSeconds:
    """CPU seconds used over a with-block by this process (all its threads) and by its children (the phone
    process): with the render's wall time, how busy the cores were."""

    def __enter__(self):
        self._start = self._now()
        return self

    def __exit__(self, *exc):
        main, children = self._now()
        self.main = round(main - self._start[0], 3)
        self.children = round(sum(used - self._start[1].get(pid, 0.0) for pid, used in children.items()), 3)

    @staticmethod
    def _now() -> tuple[float, dict[int, float]]:
        me = psutil.Process()
        children = {}
        for child in me.children(recursive=True):
            try:
                times = child.cpu_times()
                children[child.pid] = times.user + times.system
            except psutil.Error:  # ended between listing and reading
                pass
        times = me.cpu_times()
        return times.user + times.system, children


def bench_sizes(sizes: list[int], seconds: float, repeats: int, workdir: Path, engines: EngineRegistry) -> dict:
    clip = load_audio(SAMPLES / "speech.wav")
    if clip.duration < seconds:
        raise InvalidParameter(f"--seconds {seconds:g} is longer than the sample clip ({clip.duration:.1f} s).")
    audio_path = write_wav(workdir / "clip.wav", clip.trimmed(seconds).samples)
    face_path = SAMPLES / "portrait.jpg"

    cold_started = time.perf_counter()
    render(RenderRequest(face_path, audio_path, workdir / "warmup.mp4", mode="real_time", size=min(sizes)), engines)
    cold_start = time.perf_counter() - cold_started

    results = []
    for size in sizes:
        runs = []
        for attempt in range(repeats):
            with PeakRss() as memory, CpuSeconds() as cpu:
                result = render(RenderRequest(face_path, audio_path, workdir / f"bench_{size}.mp4", mode="real_time",
                                              size=size), engines)
            runs.append((result, memory.peak_mb, cpu))
        best, peak_mb, cpu = min(runs, key=lambda run: run[0].render_seconds)
        results.append({
            "size": size,
            "frames": best.frames,
            "render_seconds": best.render_seconds,
            "render_seconds_median": round(statistics.median(r.render_seconds for r, *_ in runs), 3),
            "frames_per_second": round(best.frames / best.render_seconds, 1),
            "real_time_factor": round(best.render_seconds / best.audio_seconds, 3),
            "first_frame_seconds": best.first_frame_seconds,
            "peak_rss_mb": peak_mb,
            "stages_seconds": {"decode": best.decode_seconds, "frames": best.frames_seconds,
                               "encode": best.encode_seconds},
            # CPU of the render's process (render + encoder threads) and of the phone process: on a machine whose
            # cores are all busy, less CPU is the only way to a faster render.
            "cpu_seconds": {"render_process": cpu.main, "phone_process": cpu.children},
            "cores_busy": round((cpu.main + cpu.children) / best.render_seconds, 2),
            "encoder": best.encoder,
            "output_bytes": os.path.getsize(best.output),
        })
    return {
        "bench": "builtin-engine",
        "engine": best.engine,
        "audio_seconds": round(seconds, 3),
        "fps": best.fps,
        "repeats": repeats,
        "cold_start_seconds": round(cold_start, 3),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
    }


def bench_long(seconds: float, workdir: Path, size: int = LONG_SIZE) -> dict:
    """Render `seconds` of looped speech at `size` px in a child process; its peak RSS and timings."""
    workdir.mkdir(parents=True, exist_ok=True)
    audio_path = _looped_wav(workdir / "long.wav", seconds)
    done = subprocess.run(
        [sys.executable, "-m", "cli.bench", "--long-child", str(audio_path), str(workdir / "long.mp4"),
         str(size), str(seconds + 1)],
        capture_output=True, text=True, env=dict(os.environ),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the long render failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _looped_wav(path: Path, seconds: float) -> Path:
    """The bundled speech looped to `seconds`, 16 kHz 16-bit mono, written a clip at a time (held whole, an
    hour would raise this process's peak by 1 GB)."""
    clip = load_audio(SAMPLES / "speech.wav").analysis_samples()
    pcm = (np.clip(clip, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    left = int(seconds * ANALYSIS_RATE)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(ANALYSIS_RATE)
        while left > 0:
            count = min(left, len(clip))
            handle.writeframes(pcm[: 2 * count])
            left -= count
    return path


def _peak_rss_mb(pid: int | str = "self") -> float:
    """An address space's high-water RSS (Linux VmHWM); for this process ru_maxrss where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1) if pid == "self" else 0.0


def _long_child(audio: str, out: str, size: str, max_seconds: str) -> None:
    """The child of bench_long: one render with the limit raised in the settings (not the environment)."""
    settings = dataclasses.replace(ModelSettings.from_env(dict(os.environ)), max_audio_seconds=float(max_seconds))
    engines = EngineRegistry.for_settings(settings)
    result = render(RenderRequest(SAMPLES / "portrait.jpg", Path(audio), Path(out), mode="real_time",
                                  size=int(size)), engines)
    # The phone recognition process (engines/phone_process.py) is this render's too: its own peak beside ours.
    helpers = sum(_peak_rss_mb(child.pid) for child in psutil.Process().children(recursive=True))
    engines.close()
    print(json.dumps({
        "size": result.size,
        "audio_seconds": result.audio_seconds,
        "frames": result.frames,
        "render_seconds": result.render_seconds,
        "real_time_factor": round(result.render_seconds / result.audio_seconds, 3),
        "first_frame_seconds": result.first_frame_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "phone_process_peak_rss_mb": round(helpers, 1),
        "total_peak_rss_mb": round(_peak_rss_mb() + helpers, 1),  # at most: the two peaks need not coincide
        "output_bytes": os.path.getsize(result.output),
    }))


def run_bench(args) -> int:
    """args.sizes, .seconds, .repeats and .long arrive checked by the parser (cli/arguments.py)."""
    engines = EngineRegistry.for_settings(ModelSettings.from_env(dict(os.environ)))
    try:
        with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
            figures = bench_sizes(args.sizes, args.seconds, args.repeats, Path(tmp), engines)
            if getattr(args, "long", None):
                figures["long"] = bench_long(args.long, Path(tmp))
            if getattr(args, "hls", False):  # first segment playable, through the job step (cli/bench_hls.py)
                from .bench_hls import bench_hls

                figures["hls"] = bench_hls(Path(tmp) / "hls", engines, dict(os.environ), seconds=args.seconds,
                                           repeats=max(3, args.repeats))
    finally:
        engines.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--long-child"]:
    _long_child(*sys.argv[2:6])
