"""The CLI as a user runs it: one JSON line on success; a non-zero exit and one clear sentence on failure."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from engines.media_audio import write_wav
from tests.media_fixtures import PORTRAIT, SPEECH

CLI = [str(Path(sys.executable).parent / "avatar-renderer")]


def _run(*args, env=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory):
    from engines.media_audio import load_audio

    path = tmp_path_factory.mktemp("cli") / "short.wav"
    return write_wav(path, load_audio(SPEECH).trimmed(1.6).samples)


@pytest.mark.slow
def test_render_prints_one_json_line(tmp_path, short_speech):
    out = tmp_path / "talk.mp4"
    done = _run("render", "--face", str(PORTRAIT), "--audio", str(short_speech), "--out", str(out), "--size", "128")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["output"] == str(out) and out.exists()
    assert result["engine"] == "landmark-warp" and result["mode"] == "real_time"
    assert result["frames"] == 40 and result["audio_seconds"] == pytest.approx(1.6, abs=0.01)
    assert result["render_seconds"] > 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == 40


@pytest.mark.slow
def test_python_m_cli_render_takes_the_same_flags(tmp_path, short_speech):
    out = tmp_path / "m.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "cli.render", "--face", str(PORTRAIT), "--audio", str(short_speech),
         "--out", str(out), "--size", "96", "--fps", "20", "--mode", "real_time"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fps"] == 20 and out.exists()


def _error_of(done):
    assert done.returncode != 0
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.mark.parametrize("case,needle", [
    ("not_an_image", "not a PNG, JPEG or WebP"),
    ("no_face", "No face was found"),
    ("missing_face", "Cannot read the portrait"),
    ("silent", "silent"),
    ("corrupt_audio", "not a readable WAV"),
    ("empty_audio", "0 bytes"),
    ("high_quality_on_cpu", "high_quality mode needs an NVIDIA GPU"),
    ("bad_size", "size must be an even number"),
])
def test_each_bad_input_has_its_own_message(tmp_path, short_speech, case, needle):
    face, audio, extra = PORTRAIT, short_speech, []
    if case == "not_an_image":
        face = tmp_path / "face.png"
        face.write_text("hello")
    elif case == "no_face":
        from PIL import Image

        face = tmp_path / "wall.png"
        Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(face)
    elif case == "missing_face":
        face = tmp_path / "nowhere.jpg"
    elif case == "silent":
        audio = write_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32))
    elif case == "corrupt_audio":
        audio = tmp_path / "broken.mp3"
        audio.write_bytes(b"\x00\x01garbage" * 500)
    elif case == "empty_audio":
        audio = tmp_path / "empty.wav"
        audio.write_bytes(b"")
    elif case == "high_quality_on_cpu":
        extra = ["--mode", "high_quality"]
    elif case == "bad_size":
        extra = ["--size", "63"]
    out = tmp_path / "never.mp4"
    done = _run("render", "--face", str(face), "--audio", str(audio), "--out", str(out), *extra,
                env={"PATH": "/usr/bin:/bin", "AVATAR_FORCE_CPU": "1", "MODEL_ROOT": str(tmp_path / "models")})
    assert needle in _error_of(done)
    assert not out.exists()
    assert not list(tmp_path.glob(".never.mp4.*"))  # no partial file left behind


def test_bench_writes_json_figures(tmp_path):
    out = tmp_path / "bench.json"
    done = _run("bench", "--out", str(out), "--sizes", "96,128", "--seconds", "1.5", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert [r["size"] for r in figures["results"]] == [96, 128]
    for row in figures["results"]:
        assert row["frames"] == 38
        assert row["frames_per_second"] > 0 and row["real_time_factor"] > 0
        assert 0 < row["first_frame_seconds"] <= row["render_seconds"]
        assert row["peak_rss_mb"] > 50
        assert row["real_time_factor"] == pytest.approx(row["render_seconds"] / 1.5, rel=0.02)
