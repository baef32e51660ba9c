"""Rational frame rates end to end (issue 11), and the face / framing options reaching the render request.

The encoder is checked alone over 10 minutes of audio at 30000/1001 (cheap solid frames, decoded back with PyAV:
frame count, rate, last timestamp, stream ends); one short render goes through the real command line and
pipeline at 29.97. Event, job step and command-line parsing are checked with the real parsers."""

from __future__ import annotations

import json
import math
import threading
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cli.main import build_parser, main
from cli.render import render_request
from engines.encoder import Mp4Writer
from engines.face_choice import FaceChoice
from engines.hardware import Hardware
from engines.media_audio import OUTPUT_RATE, Audio, write_wav
from engines.pipeline import RenderRequest, check_fps
from engines.pipeline import render as pipeline_render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from gateway.backends import JobSpec, fingerprint
from schemas.errors import InvalidEvent, InvalidParameter
from schemas.events import check, parse_request
from schemas.frame_rate import TEXT_PATTERN, fps_number, fps_text, fps_wire
from tests.gateway_fixtures import in_process_backend
from tests.media_fixtures import PORTRAIT, speech_samples

NTSC = Fraction(30000, 1001)
JOB_ID = "3f2b8a4e-9c1d-4e7a-b2f6-5d8c0a1e7b93"


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("spelling, rate", [
    (25, Fraction(25)), ("25", Fraction(25)), (29.97, NTSC), ("29.97", NTSC), ("30000/1001", NTSC),
    ("23.976", Fraction(24000, 1001)), (59.94, Fraction(60000, 1001)), ("60000/1001", Fraction(60000, 1001)),
    ("12.5", Fraction(25, 2)), ("30.0", Fraction(30)), (60, Fraction(60)), (1, Fraction(1)),
])
def test_spellings_of_a_rate_are_the_exact_fraction(spelling, rate) -> None:
    assert check_fps(spelling) == rate
    assert isinstance(check_fps(spelling), Fraction)


@pytest.mark.parametrize("spelling", [0, 61, "61", "0", "abc", "30/0", "", True, 29.970001, float("nan"), None, "1e3",
                                      "60001/1000", [25]])
def test_other_rates_are_refused_with_one_sentence(spelling) -> None:
    with pytest.raises(InvalidParameter) as refused:
        check_fps(spelling)
    assert refused.value.message.startswith("fps ") and "\n" not in refused.value.message


def test_wire_spellings() -> None:
    assert (fps_text(NTSC), fps_wire(NTSC), fps_number(NTSC)) == ("30000/1001", "30000/1001", 29.97)
    assert (fps_text(Fraction(25)), fps_wire(Fraction(25)), fps_number(Fraction(25))) == ("25", 25, 25)
    assert type(fps_wire(Fraction(25))) is int  # a whole rate stays an integer on the wire, as before


# ----------------------------------------------------------------------------- the encoder alone, 10 minutes


def test_ten_minutes_at_30000_1001_do_not_drift(tmp_path: Path) -> None:
    """Audio of 600.0123 s (not a whole number of AAC frames), video covering it: every timestamp is exact, the
    last frame starts at (n - 1) * 1001/30000 s, and video and audio end within one frame of each other."""
    samples = int(600.0123 * OUTPUT_RATE)
    audio = Audio(np.zeros(samples, np.float32))
    frames = math.ceil(Fraction(samples, OUTPUT_RATE) * NTSC)
    assert frames == 17983
    solid = np.full((16, 16, 3), 90, np.uint8)
    path = tmp_path / "ten-minutes.mp4"
    with Mp4Writer(path, fps=NTSC, width=16, height=16, mode="real_time", audio=audio, use_nvenc=False) as writer:
        for _ in range(frames):
            writer.write(solid)

    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.average_rate == NTSC and video.frames == frames
        pts = sorted(packet.pts for packet in container.demux(video) if packet.pts is not None)
        video_end = Fraction(video.duration) * video.time_base
        audio_end = Fraction(sound.duration) * sound.time_base
        assert sound.start_time == 0 and video.start_time == 0
    steps = {Fraction(b - a) * video.time_base for a, b in zip(pts, pts[1:])}
    assert steps == {1 / NTSC}  # every frame exactly 1001/30000 s after the one before
    assert Fraction(pts[-1]) * video.time_base == (frames - 1) / NTSC
    assert video_end == frames / NTSC
    assert abs(audio_end - Fraction(samples, OUTPUT_RATE)) < Fraction(1024, OUTPUT_RATE)  # within one AAC frame
    assert 0 <= video_end - audio_end < 1 / NTSC  # A/V offset at the end: 0 +- 1 frame, no drift


# ----------------------------------------------------------------------------- end to end through the CLI


def test_cli_render_at_29_97_decodes_at_30000_1001(tmp_path: Path, capsys) -> None:
    speech = tmp_path / "speech.wav"
    write_wav(speech, speech_samples()[: int(1.5 * OUTPUT_RATE)])
    out = tmp_path / "ntsc.mp4"
    assert main(["render", "--face", str(PORTRAIT), "--audio", str(speech), "--out", str(out), "--size", "96",
                 "--fps", "29.97", "--mode", "real_time"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["fps"], result["frame_rate"]) == (29.97, "30000/1001")
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.average_rate == NTSC
        decoded = sum(1 for _ in container.decode(video))
        video_end = Fraction(video.duration) * video.time_base
        audio_end = Fraction(sound.duration) * sound.time_base
    assert decoded == result["frames"] == math.ceil(Fraction(int(1.5 * OUTPUT_RATE), OUTPUT_RATE) * NTSC)
    assert abs(video_end - audio_end) < 1 / NTSC


@pytest.mark.parametrize("value, says", [
    ("0", "fps must be between 1 and 60"), ("61", "fps must be between 1 and 60"),
    ("abc", "fps must be a number or a fraction N/D"), ("30/0", "fps must be a number or a fraction N/D"),
])
def test_cli_refuses_bad_rates_in_one_line(value: str, says: str, tmp_path: Path, capsys) -> None:
    for command in (["render", "--face", "f.jpg", "--audio", "a.wav", "--out", str(tmp_path / "o.mp4")],
                    ["submit", "--face", "f.jpg", "--audio", "a.wav"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--fps", value])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.startswith("error: argument --fps: ") and says in err
        assert err.count("\n") == 1


@pytest.mark.parametrize("option, value", [("--pick-face", "middle"), ("--pick-face", "index:-1"),
                                           ("--pick-face", "box:1,2,3"), ("--framing", "wide")])
def test_cli_refuses_bad_face_and_framing_in_one_line(option: str, value: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["render", "--face", "f.jpg", "--audio", "a.wav", "--out", str(tmp_path / "o.mp4"), option, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith(f"error: argument {option}: ") and err.count("\n") == 1


def test_cli_options_reach_the_render_request(tmp_path: Path) -> None:
    args = build_parser().parse_args(["render", "--face", "f.jpg", "--audio", "a.wav", "--out", str(tmp_path / "o.mp4"),
                                      "--fps", "30000/1001", "--pick-face", "box:10,20,30,40", "--framing", "crop"])
    request = render_request(args)
    assert request.fps == NTSC
    assert request.face == FaceChoice("box", box=(10.0, 20.0, 30.0, 40.0)) and request.framing == "crop"
    defaults = render_request(build_parser().parse_args(
        ["render", "--face", "f.jpg", "--audio", "a.wav", "--out", str(tmp_path / "o.mp4")]))
    assert (defaults.fps, defaults.face, defaults.framing) == (Fraction(25), FaceChoice(), "crop")


def test_submit_puts_the_options_in_the_event() -> None:
    """`submit --fps 29.97 --pick-face index:1` publishes fps "30000/1001" and face {"index": 1}: the event it
    builds passes the schema and parses back to the exact rate and the face."""
    from cli.submit import request_from_args

    args = build_parser().parse_args(["submit", "--face", "f.jpg", "--audio", "a.wav", "--fps", "29.97",
                                      "--pick-face", "index:1", "--framing", "crop"])
    request = request_from_args(args)
    assert (request["fps"], request["face"], request["framing"]) == ("30000/1001", {"index": 1}, "crop")
    check("render.requested.v1", request)
    parsed = parse_request(json.dumps(request).encode())
    assert (parsed.fps, parsed.face, parsed.framing) == (NTSC, {"index": 1}, "crop")


# ----------------------------------------------------------------------------- events and job specs


def _event(**fields) -> bytes:
    return json.dumps({"jobId": JOB_ID, "avatarUri": "file:///a.jpg", "audioUri": "file:///a.wav", **fields}).encode()


@pytest.mark.parametrize("fps, rate", [("30000/1001", NTSC), (29.97, NTSC), ("29.97", NTSC), (25, Fraction(25)),
                                       ("60000/1001", Fraction(60000, 1001))])
def test_request_events_accept_exact_rates(fps, rate) -> None:
    assert parse_request(_event(fps=fps)).fps == rate
    assert parse_request(_event()).fps == Fraction(25)


@pytest.mark.parametrize("fps", [0, 61, "0", "61", "abc", "30/0", "30000/1001/1", "-5", True, 61.5])
def test_request_events_refuse_other_rates(fps) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_request(_event(fps=fps))
    assert "fps" in refused.value.message and refused.value.job_id == JOB_ID


def test_request_event_face_and_framing() -> None:
    parsed = parse_request(_event(face={"box": [1, 2, 30, 40]}, framing="original"))
    assert parsed.face == {"box": [1, 2, 30, 40]} and parsed.framing == "original"
    assert parse_request(_event(face="largest")).face == "largest"
    assert (parse_request(_event()).face, parse_request(_event()).framing) == (None, None)
    for bad in ({"face": "biggest"}, {"face": {"index": -1}}, {"face": {"index": 1, "box": [1, 2, 3, 4]}},
                {"face": {"box": [1, 2, 0, 4]}}, {"face": {"box": [1, 2, 3]}}, {"framing": "wide"}):
        with pytest.raises(InvalidEvent):
            parse_request(_event(**bad))


def test_the_schema_and_the_render_path_agree_on_framings_and_text_rates() -> None:
    import schemas
    from engines.pipeline import FRAMINGS

    properties = schemas.load("render.requested.v1")["properties"]
    assert set(FRAMINGS) <= set(properties["framing"]["enum"])
    assert schemas.load("render.requested.v1")["$defs"]["frameRateText"]["pattern"] == TEXT_PATTERN


def test_a_job_spec_round_trips_through_its_event() -> None:
    spec = JobSpec("file:///a.jpg", "file:///a.wav", fps=NTSC, face=FaceChoice("index", index=2),
                   framing="crop").with_job_id()
    event = spec.request_event("2026-01-01T12:00:00Z")
    assert (event["fps"], event["face"], event["framing"] if "framing" in event else "crop") == \
        ("30000/1001", {"index": 2}, "crop")
    parsed = parse_request(json.dumps(event).encode())
    direct = spec.to_request(datetime(2026, 1, 1, 12, tzinfo=timezone.utc))
    assert (parsed.fps, parsed.face, parsed.framing or "crop") == (direct.fps, direct.face, direct.framing)
    plain = JobSpec("file:///a.jpg", "file:///a.wav").with_job_id().request_event("2026-01-01T12:00:00Z")
    assert plain["fps"] == 25 and "face" not in plain and "framing" not in plain


def test_face_and_rate_are_part_of_the_idempotency_fingerprint(tmp_path: Path) -> None:
    base = JobSpec("file:///a.jpg", "file:///a.wav", idempotency_key="k")
    marks = {fingerprint(spec, tmp_path) for spec in (
        base, JobSpec("file:///a.jpg", "file:///a.wav", idempotency_key="k", face=FaceChoice("index", index=1)),
        JobSpec("file:///a.jpg", "file:///a.wav", idempotency_key="k", fps=NTSC),
        JobSpec("file:///a.jpg", "file:///a.wav", idempotency_key="k", framing="original"))}
    assert len(marks) == 4
    assert fingerprint(JobSpec("file:///a.jpg", "file:///a.wav", idempotency_key="k", fps=Fraction(25)), tmp_path) \
        == fingerprint(base, tmp_path)


# ----------------------------------------------------------------------------- the job step


def test_the_job_step_passes_rate_face_and_framing_and_reports_the_rate(tmp_path: Path) -> None:
    """The in-process backend's job step (the Kafka worker's) builds the RenderRequest with the exact rate and
    the FaceChoice; the real pipeline renders it and the completion carries fps 29.97, frameRate, faceUsed,
    upscaled, width and height. The sixth face of a one-face portrait fails with the render path's reason."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "face.jpg").write_bytes(PORTRAIT.read_bytes())
    write_wav(inputs / "speech.wav", speech_samples()[: int(0.6 * OUTPUT_RATE)])
    backend = in_process_backend({"ALLOWED_INPUT_ROOTS": str(inputs), "UPLOAD_DIR": str(tmp_path / "up")},
                                 tmp_path / "renders")
    seen: list[RenderRequest] = []
    engines = EngineRegistry(ModelSettings(), Hardware(cuda=False))

    def render(request: RenderRequest):
        seen.append(request)
        return pipeline_render(request, engines)

    backend.step.render = render
    try:
        spec = JobSpec((inputs / "face.jpg").as_uri(), (inputs / "speech.wav").as_uri(), quality_mode="real_time",
                       fps=NTSC, size=64, face=FaceChoice("index", index=0)).with_job_id()
        outcome = backend.step.run(spec.to_request(datetime.now(timezone.utc)), threading.Event())
        sixth = JobSpec(spec.avatar_uri, spec.audio_uri, quality_mode="real_time", size=64,
                        face=FaceChoice("index", index=5)).with_job_id()
        missing = backend.step.run(sixth.to_request(datetime.now(timezone.utc)), threading.Event())
    finally:
        backend.close()
        engines.close()
    assert seen[0].fps == NTSC and seen[0].face == FaceChoice("index", index=0) and seen[0].framing == "crop"
    assert outcome.state == "succeeded", outcome.failure
    assert outcome.completion["fps"] == 29.97 and outcome.completion["frameRate"] == "30000/1001"
    completion = outcome.completion
    assert completion["faceUsed"]["index"] == 0 and (completion["width"], completion["height"]) == (64, 64)
    assert isinstance(completion["upscaled"], bool)
    check("render.completed.v1", completion)
    # a face the photo does not have: the render path's refusal, carried to the failure event
    assert seen[1].face == FaceChoice("index", index=5)
    assert missing.state == "failed" and missing.failure["code"] == "invalid_parameter", missing.failure
