"""The CLI as a user runs it: one JSON line on success; a non-zero exit and one clear sentence on failure."""

import json
import os
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
    assert "Traceback" not in done.stderr, done.stderr
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
    ("high_quality_on_cpu", "high_quality mode"),
    ("bad_size", "size must be an even number"),
    ("negative_seed", "seed must be a whole number from 0 to 4294967295, got -1"),
    ("seed_too_big", "seed must be a whole number from 0 to 4294967295, got 4294967296"),
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
    elif case == "negative_seed":
        extra = ["--seed", "-1"]
    elif case == "seed_too_big":
        extra = ["--seed", str(2**32)]
    out = tmp_path / "never.mp4"
    done = _run("render", "--face", str(face), "--audio", str(audio), "--out", str(out), *extra,
                env={"PATH": "/usr/bin:/bin", "AVATAR_FORCE_CPU": "1", "MODEL_ROOT": str(tmp_path / "models")})
    assert needle in _error_of(done)
    assert done.returncode == (3 if case == "high_quality_on_cpu" else 2)  # README: 2 bad input, 3 cannot run here
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
        assert row["cpu_seconds"]["render_process"] > 0 and row["cpu_seconds"]["phone_process"] > 0
        assert 0 < row["cores_busy"] <= 2 * (os.cpu_count() or 1)
        assert row["real_time_factor"] == pytest.approx(row["render_seconds"] / 1.5, rel=0.02)


# ----------------------------------------------------------------------------- one line, never a traceback

CPU_ENV = {"PATH": "/usr/bin:/bin", "AVATAR_FORCE_CPU": "1"}


@pytest.mark.parametrize("where", ["directory", "under_a_file"])
def test_render_refuses_an_out_it_cannot_write_before_any_work(tmp_path, short_speech, where):
    if where == "directory":
        out = tmp_path / "videos"
        needle = f"argument --out: {out} is a directory; give the file to write, e.g. {out}/talk.mp4"
        out.mkdir()
    else:
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out = tmp_path / "notes.txt" / "talk.mp4"
        needle = f"argument --out: {out} cannot be written: {tmp_path}/notes.txt is a file, not a folder"
    done = _run("render", "--face", str(PORTRAIT), "--audio", str(short_speech), "--out", str(out), "--size", "64",
                env={**CPU_ENV, "MODEL_ROOT": str(tmp_path / "models")})
    assert needle in _error_of(done)
    assert done.returncode == 2
    assert not list(tmp_path.rglob("*.partial"))  # the directory case used to render, then leave one behind


def test_a_render_that_fails_at_the_last_step_leaves_no_partial_file(tmp_path, short_speech):
    """engines.pipeline.render: whatever fails after the encoder opened (here: the final move onto a
    directory), the hidden .partial file is removed."""
    from engines.pipeline import RenderRequest, render
    from engines.registry import EngineRegistry
    from engines.settings import ModelSettings

    (tmp_path / "taken.mp4").mkdir()
    engines = EngineRegistry.for_settings(ModelSettings.from_env({**CPU_ENV, "MODEL_ROOT": str(tmp_path / "m")}))
    with pytest.raises(OSError):
        render(RenderRequest(PORTRAIT, short_speech, tmp_path / "taken.mp4", mode="real_time", size=64), engines)
    engines.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def _main_error(capsys, *argv) -> str:
    """cli.main.main in this process: an argument mistake exits 2 with one `error:` line on stderr."""
    from cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--sizes", "513"], "argument --sizes: size must be an even number of pixels from 64 to 2048, got 513"),
    (["bench", "--sizes", "256,abc"], "argument --sizes: 'abc' is not a whole number"),
    (["bench", "--sizes", ","], "give at least one size"),
    (["bench", "--seconds", "0"], "argument --seconds: must be more than 0"),
    (["bench", "--seconds", "soon"], "'soon' is not a number"),
    (["bench", "--repeats", "0"], "argument --repeats: must be at least 1"),
    (["submit", "--face", "f.jpg", "--audio", "a.wav", "--size", "513"], "argument --size: size must be an even"),
    (["submit", "--face", "f.jpg", "--audio", "a.wav", "--fps", "0"], "argument --fps: fps must be between 1 and 60"),
    (["submit", "--face", "f.jpg", "--audio", "a.wav", "--mode", "fast"], "argument --mode: invalid choice"),
    (["api", "--port", "70000"], "argument --port: a TCP port is from 1 to 65535"),
    (["broker", "--port", "0"], "argument --port: a TCP port is from 1 to 65535, got 0"),
    (["broker", "--partitions", "0"], "argument --partitions: must be at least 1, got 0"),
    (["submit", "--face", "f.jpg", "--audio", "a.wav", "--timeout", "-1"], "argument --timeout: must be more than 0"),
    (["bench", "--out", "/"], "argument --out: / is a directory; give the file to write, e.g. /bench.json"),
    (["render", "--face", "f.jpg"], "the following arguments are required: --audio, --out"),
    # The output is moved over --out when done: a device would be replaced by a file, so it is refused.
    (["render", "--face", "f.jpg", "--audio", "a.wav", "--out", "/dev/null"],
     "argument --out: /dev/null is not a regular file (a device, pipe or socket)"),
    (["render", "--face", "f.jpg", "--audio", "a.wav", "--out", "/tmp/new-folder/"],
     "argument --out: /tmp/new-folder/ names a folder (it ends with /); give the file to write, e.g. "
     "/tmp/new-folder/talk.mp4"),
    (["render", "--face", "f.jpg", "--audio", "a.wav", "--out", "/tmp/" + "n" * 300 + ".mp4"],
     "cannot be written: File name too long"),
])
def test_argument_mistakes_are_one_line_at_parse_time(capsys, argv, needle):
    assert needle in _main_error(capsys, *argv)


def test_argument_mistakes_are_one_line_at_parse_time_and_leave_dev_null_a_device(capsys):
    import stat

    _main_error(capsys, "render", "--face", "f.jpg", "--audio", "a.wav", "--out", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("flags,needle", [
    (["--out", "{tmp}/talk.avi"], "--out {tmp}/talk.avi: name the file .mp4, .webm, .mov or .m3u8 (HLS)"),
    (["--out", "{tmp}/talk.mp4", "--format", "webm"], "--out {tmp}/talk.mp4 does not match --format webm: name it "
                                                       "talk.webm."),
    (["--out", "{tmp}/index.mp4", "--format", "hls"], "does not match --format hls: name it index.m3u8."),
    (["--out", "{audio}"], "name the file .mp4"),
    (["--out", "{tmp}/one.m3u8", "--format", "hls"], "HLS writes init.mp4 and segNNNNN.m4s beside the playlist, and "
                                                     "{tmp} holds another playlist (other.m3u8); give this render a "
                                                     "folder of its own, e.g. {tmp}/one/index.m3u8."),
    (["--out", "{tmp}/talk.mp4", "--hls-mp4"], "--segment-seconds and --hls-mp4 go with --format hls; this output is mp4."),
    (["--out", "{tmp}/talk.webm", "--segment-seconds", "1"], "go with --format hls; this output is webm."),
    (["--out", "{tmp}/talk.mp4", "--true-peak", "-2"], "--true-peak is the ceiling of a loudness target: give "
                                                         "--loudness too, e.g. --loudness ebu-r128 --true-peak -2."),
    (["--out", "{tmp}/talk.mp4", "--canvas", "1280x720", "--background", "#12345"],
     "--background #12345 is not a colour: give #RRGGBB, e.g. #1a2b3c."),
    (["--out", "{tmp}/talk.mp4", "--canvas", "1280x720", "--background", "{tmp}/none.png"],
     "Cannot read the background image {tmp}/none.png: No such file or directory."),
])
def test_out_must_match_the_format_and_name_no_input(capsys, tmp_path, short_speech, flags, needle):
    """--out's extension sets the format (or must match --format), HLS-only flags need HLS, and a bad background
    is named as the background, not the portrait. All one line, exit 2, nothing written."""
    from cli.main import main

    values = {"tmp": str(tmp_path), "audio": str(short_speech)}
    if "{tmp}/one.m3u8" in flags:
        (tmp_path / "other.m3u8").write_text("#EXTM3U\n")  # another render's playlist in the same folder
    argv = ["render", "--face", str(PORTRAIT), "--audio", str(short_speech), "--size", "64",
            *(flag.format(**values) for flag in flags)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]  # after the engine choice's log line, where the render got that far
    assert out == "" and last.startswith("error: ") and "Traceback" not in err, err
    assert needle.format(**values) in last
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "other.m3u8") == []


def test_out_naming_an_input_is_refused_and_the_input_kept(capsys, tmp_path, short_speech):
    from cli.main import main

    speech = tmp_path / "speech.mp4"  # speech in an MP4 file: the one input name --out can take
    assert main(["render", "--face", str(PORTRAIT), "--audio", str(short_speech), "--size", "64",
                 "--out", str(speech)]) == 0
    kept = speech.read_bytes()
    capsys.readouterr()
    assert main(["render", "--face", str(PORTRAIT), "--audio", str(speech), "--size", "64", "--out", str(speech)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {speech} is one of the inputs ({speech}); the video would replace it."
    assert speech.read_bytes() == kept
    # The extension alone picks the format: .webm is VP9.
    assert main(["render", "--face", str(PORTRAIT), "--audio", str(speech), "--size", "64",
                 "--out", str(tmp_path / "talk.webm")]) == 0
    with av.open(str(tmp_path / "talk.webm")) as container:
        assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")


def test_bench_seconds_longer_than_the_sample_clip_is_one_line(capsys):
    from cli.main import main

    assert main(["bench", "--sizes", "64", "--seconds", "1000"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "error: --seconds 1000 is longer than the sample clip (11.8 s)."


def test_a_bad_api_port_breaks_only_the_api_command_not_help():
    """API_PORT used to be parsed while the parser was built: every subcommand, even --help, crashed."""
    env = {**CPU_ENV, "API_PORT": "abc"}
    shown = _run("--help", env=env)
    assert shown.returncode == 0 and "render" in shown.stdout, shown.stderr
    assert _run("models", "list", "--json", env={**env, "MODEL_ROOT": "/nonexistent"}).returncode == 0
    done = _run("api", env=env)
    assert _error_of(done) == "error: API_PORT='abc' is not a whole number."
    assert done.returncode == 2


def test_a_bad_log_level_is_one_line(tmp_path):
    done = _run("models", "list", env={**CPU_ENV, "LOG_LEVEL": "chatty", "MODEL_ROOT": str(tmp_path)})
    assert _error_of(done) == "error: LOG_LEVEL='CHATTY' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL."
    assert done.returncode == 2


def test_a_bad_setting_read_deep_in_a_command_is_one_line(tmp_path, short_speech):
    """Any SettingsError reaching the top (here ModelSettings for `render`) is `error: <sentence>`, exit 2."""
    done = _run("render", "--face", str(PORTRAIT), "--audio", str(short_speech), "--out", str(tmp_path / "a.mp4"),
                env={**CPU_ENV, "DEFAULT_QUALITY_MODE": "fastest"})
    assert "DEFAULT_QUALITY_MODE='fastest'" in _error_of(done)
    assert done.returncode == 2


def test_output_piped_to_a_reader_that_stops_is_not_a_traceback(tmp_path):
    """`models list --json | head -c 600`: the reader goes away before the output is written."""
    reader_gone = subprocess.Popen([*CLI, "models", "list", "--json"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env={**CPU_ENV, "MODEL_ROOT": str(tmp_path)})
    reader_gone.stdout.close()
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait(60) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_api_on_a_port_in_use_is_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("api", "--port", str(port))
    assert _error_of(done) == (f"error: Cannot listen on 127.0.0.1:{port}: Address already in use "
                               "(--host/--port or API_HOST/API_PORT choose another).")
    assert done.returncode == 2


def test_a_bad_render_threads_for_the_api_is_one_line():
    done = _run("api", "--port", "1", env={**CPU_ENV, "RENDER_THREADS": "x"})
    assert "RENDER_THREADS='x'" in _error_of(done)
    assert done.returncode == 2


def test_exit_status_of_each_kind_of_failure():
    from cli.failures import exit_status
    from schemas.errors import (CheckpointError, EncodeError, EngineUnavailable, InvalidParameter, NoFaceFound,
                                SettingsError)

    assert [exit_status(e("x")) for e in (InvalidParameter, NoFaceFound, SettingsError)] == [2, 2, 2]
    assert [exit_status(e("x")) for e in (EngineUnavailable, CheckpointError)] == [3, 3]
    assert exit_status(EncodeError("x")) == 1


def test_broker_on_a_port_already_taken_is_one_line(capsys):
    """It used to talk to whatever held the port, then die 15 s later in create_topics with a traceback."""
    import socket

    from cli.main import main

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert main(["broker", "--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == (f"error: 127.0.0.1:{port} is already in use (another broker running?); "
                           "stop it or choose another --port.")


def test_broker_starts_creates_the_topics_and_stops_on_sigint():
    import signal

    from cli.broker import free_port

    port = free_port()
    process = subprocess.Popen([*CLI, "broker", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().startswith(f"broker ready: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}")
        from confluent_kafka.admin import AdminClient

        topics = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10).topics
        from worker.settings import Topics

        wanted = Topics()
        assert {wanted.requested, wanted.completed, wanted.failed, wanted.status, wanted.dlq} <= set(topics)
        assert len(topics[wanted.requested].partitions) == 3
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
