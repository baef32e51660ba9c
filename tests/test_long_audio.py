"""Memory flat in audio length: ten minutes of speech render in a fresh process (the bench's long child,
cli/bench.py) without the audio, its analysis windows or the frames ever being all in memory."""

from pathlib import Path

import av
import pytest

from cli.bench import bench_long

pytestmark = pytest.mark.slow
SECONDS = 600.0


def test_ten_minutes_render_with_memory_flat_in_audio_length(tmp_path):
    short = bench_long(5.0, tmp_path / "short", size=64)
    long = bench_long(SECONDS, tmp_path / "long", size=64)
    assert long["frames"] == 15000 and long["audio_seconds"] == SECONDS
    # Held whole, as before, ten minutes cost 110 MB of 48 kHz float32 output track, 37 MB of 16 kHz float32
    # analysis and 183 MB of float64 analysis windows. Streamed: the 16 kHz int16 track (18 MB) and blocks.
    grew = long["peak_rss_mb"] - short["peak_rss_mb"]
    assert grew < 70, (short, long)
    # The phone recognition process holds at most two utterances (30 s each) of 16 kHz int16 speech.
    assert 20 < short["phone_process_peak_rss_mb"] and 0 < long["phone_process_peak_rss_mb"]
    assert long["phone_process_peak_rss_mb"] - short["phone_process_peak_rss_mb"] < 30, (short, long)
    with av.open(str(tmp_path / "long" / "long.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        video_seconds = float(video.duration * video.time_base)
        audio_seconds = float(audio.duration * audio.time_base)
    assert abs(video_seconds - SECONDS) <= 1 / 25 and abs(audio_seconds - SECONDS) <= 1 / 25


def test_bench_long_reports_the_long_render_in_its_json(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    cli = Path(sys.executable).parent / "avatar-renderer"
    done = subprocess.run([str(cli), "bench", "--out", str(out), "--sizes", "64",
                           "--seconds", "1", "--repeats", "1", "--long", "4"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    long = json.loads(out.read_text())["long"]
    assert long["size"] == 256 and long["audio_seconds"] == 4.0 and long["frames"] == 100
    assert 50 < long["peak_rss_mb"] and 0 < long["first_frame_seconds"] <= long["render_seconds"]


def test_the_long_peak_is_the_childs_own_not_the_benchs(tmp_path):
    """A spawned child inherits its parent's ru_maxrss; the bench reports the child's own high-water mark."""
    import numpy as np

    ballast = np.ones(700 * 2**20, np.uint8)  # this process now peaks 700 MB above a render's ~300 MB
    del ballast
    short = bench_long(2.0, tmp_path, size=64)
    assert short["peak_rss_mb"] < 600, short
