"""The render path shared by every front door: validate -> resolve engine -> load -> frame -> render -> encode."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable
from fractions import Fraction
from pathlib import Path

from schemas.errors import InvalidParameter
from schemas.frame_rate import MAX_FPS, MIN_FPS, fps_number, fps_text, parse_fps

from .base import EngineJob
from .canvas import load_background
from .delivery import Delivery, Picture, open_writer
from .framing import FRAMINGS, frame_photo
from .loudness import MeteredAudio, metered_report, prepare as prepare_loudness
from .face_choice import FaceChoice
from .frame_pipe import pump
from .media_audio import open_audio
from .media_image import load_portrait
from .media_video import open_driving_video
from .registry import EngineRegistry
from .settings import QUALITY_MODES

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 64, 2048
MIN_SEED, MAX_SEED = 0, 2**32 - 1  # what numpy's seeding takes; the same range as the event schema's `seed`


@dataclass(frozen=True)
class RenderRequest:
    face_path: Path
    audio_path: Path
    out_path: Path
    mode: str | None = None  # None: DEFAULT_QUALITY_MODE
    engine: str | None = None
    fps: Fraction = Fraction(25)  # exact: 30000/1001, not 29.97 (check_fps reads ints, floats and "N/D")
    size: int = 512
    seed: int = 0
    face: FaceChoice = FaceChoice()  # which face of the photo (issue 11)
    framing: str = "crop"  # crop: a size x size square around the face; original: the whole photo (issue 11)
    # Broadcast formats (issue 12, engines/delivery.py): container/codec, canvas, loudness, HLS segmenting. A
    # canvas background image is a local path here (the job step fetches it like the portrait).
    delivery: Delivery = Delivery()
    # A driving video (a local path: the job step fetches it like the portrait) whose head motion replaces the
    # speech-driven one; high_quality engines only (engines/media_video.py).
    driving_path: Path | None = None
    # hls: called with each engines.hls.Segment as soon as it is finished (on the encoder thread)
    on_segment: Callable | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RenderResult:
    output: str
    engine: str
    mode: str
    encoder: str
    frames: int
    fps: int | float  # a plain number (29.97); frame_rate is exact
    size: int
    audio_seconds: float
    render_seconds: float  # wall time of the whole render, inputs to finished file
    decode_seconds: float  # loading + framing inputs
    frames_seconds: float  # time inside the engine (it overlaps encoding: engines/frame_pipe.py)
    encode_seconds: float  # time inside the encoder and muxer, on the encoder thread
    first_frame_seconds: float  # from start until the first frame was ready
    engine_details: dict = field(default_factory=dict)  # what the engine held: device, precision, backend ...
    frame_rate: str = ""  # the exact rate: "25", "30000/1001"
    # Framing (engines/framing.py): the face used {"index", "box" [x, y, w, h] source pixels, "facesFound",
    # "others", "turned" (quarter turns in degrees given to the photo)}, whether the video enlarges the photo,
    # and the video's dimensions (size x size for crop; the photo's aspect, size high, for original).
    face_used: dict = field(default_factory=dict)
    upscaled: bool = False
    width: int = 0
    height: int = 0
    # Issue 12: the container delivered (mp4 | webm | mov | hls), loudness measured and delivered
    # (engines/loudness.prepare), HLS segments [{index, name, durationSeconds, startSeconds}] and the MP4 made
    # from them when asked for.
    output_format: str = "mp4"
    loudness: dict = field(default_factory=dict)
    segments: list = field(default_factory=list)
    mp4_output: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def validate(request: RenderRequest) -> None:
    if request.mode is not None and request.mode not in QUALITY_MODES:
        raise InvalidParameter(f"Unknown quality mode {request.mode!r}; use one of {', '.join(QUALITY_MODES)}.")
    check_fps(request.fps)
    check_size(request.size)
    check_seed(request.seed)
    if request.framing not in FRAMINGS:
        raise InvalidParameter(f"framing must be one of {', '.join(FRAMINGS)}, got {request.framing!r}.")


# One check per parameter, so the command line can apply the same rules while it parses its arguments.
def check_fps(fps) -> Fraction:
    """25, 29.97, "30000/1001" ... -> the exact rate (schemas.frame_rate), refused outside MIN_FPS..MAX_FPS."""
    rate = parse_fps(fps)
    if not (MIN_FPS <= rate <= MAX_FPS):
        raise InvalidParameter(f"fps must be between {MIN_FPS} and {MAX_FPS}, got {fps}.")
    return rate


def check_size(size: int) -> int:
    if not (MIN_SIZE <= size <= MAX_SIZE) or size % 2:
        raise InvalidParameter(f"size must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size}.")
    return size


def check_seed(seed: int) -> int:
    if not (MIN_SEED <= seed <= MAX_SEED):
        raise InvalidParameter(f"seed must be a whole number from {MIN_SEED} to {MAX_SEED}, got {seed}.")
    return seed


def render(request: RenderRequest, engines: EngineRegistry) -> RenderResult:
    """Render one request to request.out_path (written to a temporary name, then moved into place), with an
    engine of the process's registry (built once; the chosen engine loads its models on first use)."""
    started = time.perf_counter()
    validate(request)
    fps = check_fps(request.fps)  # the exact rate, whatever spelling the request used
    settings = engines.settings
    if request.driving_path is not None:
        engines.check_driving_video(request.mode, request.engine)
    resolution = engines.resolve(request.mode, request.engine)
    if request.driving_path is not None and not resolution.engine.uses_driving_video:
        raise InvalidParameter(f"A driving video needs a high_quality engine, but {resolution.mode} engine "
                               f"{resolution.engine.name} was chosen ({resolution.why.rstrip('.')}); leave the "
                               "driving video out or ask for mode high_quality.")
    held = resolution.engine.load()
    portrait = load_portrait(request.face_path, settings.max_image_pixels)
    audio = open_audio(request.audio_path, settings.max_audio_seconds)  # 16 kHz analysis kept; output streamed
    delivery = request.delivery
    # Loudness (engines/loudness.py): with a target, measured now and the output track levelled to it; without
    # one, measured while the encoder reads the track (MeteredAudio), so the first frame does not wait for it.
    if delivery.loudness is None:
        output_audio, loudness = MeteredAudio(audio), None
    else:
        output_audio, loudness = prepare_loudness(audio, delivery.loudness)
    framed = frame_photo(portrait, request.size, request.framing, request.face)  # engines/framing.py
    background = None
    if delivery.canvas is not None and delivery.canvas.background_uri:
        background = load_background(delivery.canvas.background_uri, settings.max_image_pixels)
    picture = Picture(delivery, framed.width, framed.height, background)  # matte / canvas (engines/delivery.py)
    driving = None
    if request.driving_path is not None:  # checked now (length, frame size, a face); decoded while rendering
        driving = open_driving_video(request.driving_path, framed.render_size, settings.max_audio_seconds,
                                     settings.max_image_pixels)
    job = EngineJob(framed.portrait, framed.landmarks, audio, fps, framed.render_size, request.seed, driving)
    decoded = time.perf_counter()

    out_path = Path(request.out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # HLS is written in place (segments are read while rendering; its writer removes them on failure); every
    # other output goes to a temporary name, moved into place when whole.
    streamed = delivery.output == "hls"
    partial = out_path if streamed else out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.partial")
    mp4_output = ""
    try:  # whatever fails (engine, encoder, the final move), no partial file is left behind
        writer = open_writer(
            delivery, partial, fps=fps, width=picture.width, height=picture.height, mode=resolution.mode,
            audio=output_audio, on_segment=request.on_segment,
            metadata={"comment": f"avatar-renderer engine={resolution.engine.name} mode={resolution.mode}",
                      "description": resolution.why},  # why this engine (and what it passed over)
        )
        with writer:  # frames rendered here and encoded on another thread at once (engines/frame_pipe.py)
            piped = pump(picture.frames(framed.frames(resolution.engine.render(job))), writer)
            close_started = time.perf_counter()
        if streamed and delivery.hls_mp4:
            from .hls import remux_to_mp4

            mp4_output = str(remux_to_mp4(out_path, out_path.with_suffix(".mp4")))
        encode_seconds = piped.encode_seconds + time.perf_counter() - close_started
        frames, frames_seconds, first_frame_at = piped.frames, piped.frames_seconds, piped.first_frame_at
        if loudness is None:
            loudness = metered_report(output_audio)
        if not streamed:
            os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finished = time.perf_counter()
    return RenderResult(
        output=str(out_path), engine=resolution.engine.name, mode=resolution.mode, encoder=writer.encoder_label,
        frames=frames, fps=fps_number(fps), frame_rate=fps_text(fps), size=request.size, audio_seconds=round(audio.duration, 3),
        render_seconds=round(finished - started, 3), decode_seconds=round(decoded - started, 3),
        frames_seconds=round(frames_seconds, 3), encode_seconds=round(encode_seconds, 3),
        first_frame_seconds=round((first_frame_at or finished) - started, 3),
        engine_details={**held.as_dict(), "why": resolution.why},  # engineDetails.why in render.completed.v1
        face_used=framed.face_used, upscaled=framed.upscaled, width=picture.width, height=picture.height,
        output_format=delivery.output, loudness=loudness, mp4_output=mp4_output,
        segments=[{"index": s.index, "name": s.name, "durationSeconds": round(s.duration, 3),
                   "startSeconds": round(s.start, 3)} for s in getattr(writer, "segments", [])],
    )
