"""Broadcast formats through the render path (issue 12), each output decoded back with PyAV: canvases 16:9 and 9:16
over a colour or an image, alpha WebM (VP9 yuva420p) and MOV (ProRes 4444) with a real person matte, HLS
segments that decode while the render is still going, and the refusals."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from engines.canvas import Canvas
from engines.delivery import Delivery
from engines.hardware import Hardware
from engines.hls import INIT_NAME, playlist_entries
from engines.media_audio import OUTPUT_RATE, write_wav
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from schemas.errors import InvalidParameter
from tests.media_fixtures import PORTRAIT, speech_samples

ENGINES = EngineRegistry(ModelSettings(), Hardware(cuda=False))
FPS = Fraction(10)  # few frames: these tests are about the containers, not the motion


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("speech") / "speech.wav", speech_samples()[: int(2.0 * OUTPUT_RATE)])


def render_to(out: Path, speech: Path, delivery: Delivery, size: int = 128, fps=FPS, on_segment=None):
    return render(RenderRequest(face_path=PORTRAIT, audio_path=speech, out_path=out, mode="real_time", fps=fps,
                                size=size, delivery=delivery, on_segment=on_segment), ENGINES)


def decoded(path: Path, fmt: str = "rgb24", decoder: str | None = None) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    """Every video frame as an array of `fmt`, decoded with `decoder` when named (libvpx-vp9 reads VP9 alpha)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if decoder is None:
            frames = [f for f in container.decode(stream)]
        else:
            codec = av.CodecContext.create(decoder, "r")
            frames = [f for packet in container.demux(stream) for f in codec.decode(packet)]
        formats = {f.format.name for f in frames}
        return [f.to_ndarray(format=fmt) for f in frames], stream, formats


@pytest.mark.parametrize("size, place", [("1920x1080", (0.7, 0.55)), ("1280x720", (0.5, 0.5)), ("1080x1920", (0.5, 0.75))])
def test_canvas_places_the_person_over_the_background_colour(tmp_path, speech, size, place):
    canvas = Canvas(size=size, x=place[0], y=place[1], scale=0.5, background="#204060")
    result = render_to(tmp_path / "canvas.mp4", speech, Delivery(canvas=canvas))
    frames, stream, _ = decoded(tmp_path / "canvas.mp4")
    width, height = canvas.width, canvas.height
    assert (result.width, result.height) == (width, height) and stream.codec_context.name == "h264"
    assert frames[0].shape == (height, width, 3) and len(frames) == result.frames
    frame = frames[len(frames) // 2].astype(int)
    assert np.abs(frame[5, 5] - (0x20, 0x40, 0x60)).max() <= 6  # a corner: the background colour
    assert np.abs(frame[5, width - 5] - (0x20, 0x40, 0x60)).max() <= 6
    side = round(0.5 * height)  # the square avatar, half the canvas high, centred on `place`
    cx, cy = round(place[0] * width), round(place[1] * height)
    face = frame[cy - side // 8 : cy + side // 8, cx - side // 8 : cx + side // 8]
    assert np.abs(face - (0x20, 0x40, 0x60)).max(axis=2).mean() > 40  # the face is there, not the background
    # Outside the avatar's square only the background shows.
    assert np.abs(frame[:, : max(1, cx - side // 2 - 2)] - (0x20, 0x40, 0x60)).max() <= 8


def test_canvas_background_image_covers_the_canvas(tmp_path, speech):
    ramp = np.zeros((360, 640, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 640, dtype=np.uint8)[None, :]
    ramp[..., 2] = 200
    Image.fromarray(ramp).save(tmp_path / "studio.png")
    canvas = Canvas(size="1280x720", x=0.8, scale=0.6, background_uri=str(tmp_path / "studio.png"))
    render_to(tmp_path / "studio.mp4", speech, Delivery(canvas=canvas))
    frame = decoded(tmp_path / "studio.mp4")[0][0].astype(int)
    assert frame[360, 10, 0] < 20 and frame[360, 600, 0] > 100  # the ramp, scaled 2x to the canvas
    assert np.abs(frame[20, 20:600, 2] - 200).max() <= 8


def test_alpha_webm_is_vp9_yuva420p_with_the_person_opaque_and_the_background_transparent(tmp_path, speech):
    result = render_to(tmp_path / "talk.webm", speech, Delivery(output="webm"))
    frames, stream, formats = decoded(tmp_path / "talk.webm", "rgba", decoder="libvpx-vp9")
    assert stream.codec_context.name == "vp9" and formats == {"yuva420p"}
    assert stream.metadata.get("alpha_mode") == "1" and len(frames) == result.frames
    with av.open(str(tmp_path / "talk.webm")) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
    check_matte([f[..., 3] for f in frames])


def test_alpha_mov_is_prores_4444_with_alpha(tmp_path, speech):
    result = render_to(tmp_path / "talk.mov", speech, Delivery(output="mov"))
    frames, stream, formats = decoded(tmp_path / "talk.mov", "rgba")
    assert stream.codec_context.name == "prores" and stream.codec_context.profile == "4444"
    assert formats <= {"yuva444p10le", "yuva444p12le"}  # FFmpeg's decoder hands out ProRes 4444 at 12 bits
    with av.open(str(tmp_path / "talk.mov")) as container:
        assert container.streams.audio[0].codec_context.name == "pcm_s16le"
    assert len(frames) == result.frames
    check_matte([f[..., 3] for f in frames])


def check_matte(alphas: list[np.ndarray]) -> None:
    """Person opaque (the middle of the portrait's face and chest), background transparent (top corners), and
    steady from frame to frame."""
    for alpha in alphas:
        h, w = alpha.shape
        assert alpha[int(h * 0.45), w // 2] >= 230
        assert alpha[int(h * 0.9), w // 2] >= 230
        assert alpha[: h // 8, : w // 8].mean() <= 10 and alpha[: h // 8, -w // 8 :].mean() <= 10
    assert 0.15 < np.mean([a > 127 for a in alphas]) < 0.85  # a matte, not all one value
    changes = [np.abs(a.astype(int) - b).mean() for a, b in zip(alphas, alphas[1:])]
    assert max(changes) < 3.0  # mean alpha change a frame, out of 255


def test_alpha_on_a_canvas_is_transparent_around_the_placed_person(tmp_path, speech):
    canvas = Canvas(size="1280x720", x=0.25, y=0.5, scale=0.8)
    render_to(tmp_path / "placed.webm", speech, Delivery(output="webm", canvas=canvas))
    frames, stream, _ = decoded(tmp_path / "placed.webm", "rgba", decoder="libvpx-vp9")
    alpha = frames[0][..., 3]
    assert alpha.shape == (720, 1280)
    assert alpha[:, 700:].max() <= 2  # right of the avatar's square: nothing (VP9 codes alpha lossily)
    assert alpha[int(720 * 0.45), 320] >= 230  # the face, where it was placed


def test_hls_segments_decode_while_rendering_and_the_playlist_is_valid(tmp_path, speech):
    seen, finished = [], []

    def on_segment(segment):
        assert not finished  # called while the render is still going
        data = (segment.path.parent / INIT_NAME).read_bytes() + segment.path.read_bytes()
        with av.open(io.BytesIO(data)) as container:  # init + this one segment: a playable fragment on its own
            count = sum(1 for _ in container.decode(video=0))
        seen.append((segment.index, segment.name, segment.duration, count))

    playlist = tmp_path / "show" / "index.m3u8"
    result = render_to(playlist, speech, Delivery(output="hls", segment_seconds=1.0, hls_mp4=True),
                       fps=Fraction(25), on_segment=on_segment)
    finished.append(True)
    assert [s[0] for s in seen] == list(range(len(seen))) and len(seen) == 2
    assert seen[0][3] == 25 and seen[0][2] == pytest.approx(1.0)  # a whole second of video in the first segment
    text = playlist.read_text()
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and "#EXT-X-PLAYLIST-TYPE:EVENT" in lines and lines[-1] == "#EXT-X-ENDLIST"
    assert f'#EXT-X-MAP:URI="{INIT_NAME}"' in lines
    target = int(next(l for l in lines if l.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    entries = playlist_entries(text)
    assert [uri for _, uri in entries] == [s[1] for s in seen] == [s["name"] for s in result.segments]
    assert all(d <= target + 0.5 for d, _ in entries)
    assert sum(d for d, _ in entries) == pytest.approx(result.frames / 25, abs=0.05)
    frames, stream, _ = decoded(Path(result.mp4_output))
    assert stream.codec_context.name == "h264" and len(frames) == result.frames == sum(s[3] for s in seen)


@pytest.mark.parametrize("wire", [
    {"output": "avi"}, {"output": "webm", "canvas": {"background": "#000000"}}, {"canvas": {"size": "800x600"}},
    {"canvas": {"x": 2}}, {"canvas": {"background": "blue"}}, {"hls": {"segmentSeconds": 6}, "output": "hls"},
    {"loudness": {"target": "loudest"}}, {"canvas": {"colour": "#000000"}},
])
def test_bad_delivery_options_are_refused(wire):
    with pytest.raises(InvalidParameter):
        Delivery.from_wire(wire)


def test_the_wire_form_round_trips():
    wire = {"output": "hls", "canvas": {"size": "1080x1920", "x": 0.5, "y": 0.7, "scale": 0.5, "background": "#102030"},
            "loudness": {"target": "atsc-a85", "truePeak": -2.0}, "hls": {"segmentSeconds": 1.0, "mp4": True}}
    assert Delivery.from_wire(wire).to_wire() == wire
    assert Delivery().to_wire() == {}


def test_cli_render_writes_hls_with_its_mp4_and_refuses_bad_flags(tmp_path, speech, capsys):
    import json

    from cli.render import main

    playlist = tmp_path / "show" / "index.m3u8"
    assert main(["--face", str(PORTRAIT), "--audio", str(speech), "--out", str(playlist), "--mode", "real_time",
                 "--size", "128", "--fps", "29.97", "--format", "hls", "--segment-seconds", "1", "--hls-mp4",
                 "--loudness", "atsc-a85"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["output_format"] == "hls" and printed["frame_rate"] == "30000/1001"
    assert [s["durationSeconds"] for s in printed["segments"]][0] == pytest.approx(1.001)
    assert printed["loudness"]["target"]["preset"] == "atsc-a85"
    assert Path(printed["mp4_output"]) == playlist.with_suffix(".mp4") and playlist.read_text().startswith("#EXTM3U")
    for bad in (["--loudness", "loud"], ["--format", "webm", "--background", "#000000"], ["--canvas", "800x600"],
                ["--segment-seconds", "5", "--format", "hls"], ["--place", "middle"]):
        with pytest.raises(SystemExit) as exited:
            code = main(["--face", str(PORTRAIT), "--audio", str(speech), "--out", str(tmp_path / "x.mp4"), *bad])
            raise SystemExit(code)
        assert exited.value.code == 2, bad
        assert "error:" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()


def test_the_broadcast_examples_validate_and_parse():
    import json

    import schemas
    from schemas.events import check, parse_request

    check("render.status.v1", schemas.example("render.status.v1", "segment"))
    request = parse_request(json.dumps(schemas.example("render.requested.v1", "hls")).encode())
    delivery = Delivery.from_wire(request.delivery)
    assert delivery.output == "hls" and delivery.hls_mp4 and delivery.segment_seconds == 1
    assert delivery.canvas.background_uri == "s3://newsroom-inputs/sets/studio.jpg"
    assert delivery.loudness.lufs == -24.0 and delivery.loudness.true_peak == -2.0
    bad = {**schemas.example("render.requested.v1", "hls"), "output": "avi"}
    with pytest.raises(Exception, match="output"):
        parse_request(json.dumps(bad).encode())
