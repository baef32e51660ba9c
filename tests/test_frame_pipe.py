"""Render/encode overlap (engines/frame_pipe.py): the same bytes as a sequential loop, and a failure on either
side propagates with no encoder thread and no .partial file left behind."""

import threading

import numpy as np
import pytest

from engines.encoder import Mp4Writer
from engines.frame_pipe import QUEUE_FRAMES, pump
from engines.hardware import Hardware
from engines.landmark_warp import LandmarkWarpEngine
from engines.media_audio import OUTPUT_RATE, Audio
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from tests.media_fixtures import PORTRAIT, speech_with_pause

SIZE, FPS = 128, 25


def _frames(n: int):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        yield np.roll(base, 3 * i, axis=1)


def _audio(seconds: float) -> Audio:
    t = np.arange(int(seconds * OUTPUT_RATE)) / OUTPUT_RATE
    return Audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def _writer(path, audio):
    return Mp4Writer(path, fps=FPS, width=SIZE, height=SIZE, mode="real_time", audio=audio, use_nvenc=False)


def _encoder_threads():
    return [t for t in threading.enumerate() if t.name == "frame-encoder"]


def test_overlapped_writes_the_same_bytes_as_a_sequential_loop(tmp_path):
    audio = _audio(2.0)
    with _writer(tmp_path / "sequential.mp4", audio) as writer:
        for frame in _frames(50):
            writer.write(frame)
    with _writer(tmp_path / "overlapped.mp4", audio) as writer:
        timings = pump(_frames(50), writer)
    assert timings.frames == 50 and timings.first_frame_at is not None
    assert timings.frames_seconds > 0 and timings.encode_seconds > 0
    assert (tmp_path / "overlapped.mp4").read_bytes() == (tmp_path / "sequential.mp4").read_bytes()
    assert not _encoder_threads()


def test_an_engine_error_reaches_the_caller_and_stops_the_encoder_thread(tmp_path):
    def failing():
        yield from _frames(5)
        raise RuntimeError("engine broke at frame 5")

    with pytest.raises(RuntimeError, match="engine broke"):
        with _writer(tmp_path / "x.mp4", _audio(1.0)) as writer:
            pump(failing(), writer)
    assert not _encoder_threads()
    assert not (tmp_path / "x.mp4").exists()  # the writer's abort removed it


def test_an_encoder_error_reaches_the_caller_and_stops_the_engine(tmp_path):
    produced, closed = [], []

    def engine():
        try:
            for i, frame in enumerate(_frames(200)):
                produced.append(i)
                yield frame.astype(np.float64) if i == 3 else frame  # the encoder cannot convert a float frame
        finally:
            closed.append(True)

    with pytest.raises(Exception) as raised:
        with _writer(tmp_path / "x.mp4", _audio(8.0)) as writer:
            pump(engine(), writer)
    assert "cvtColor" in str(raised.value) or "depth" in str(raised.value)
    assert closed == [True]  # the engine's generator was closed, not left suspended
    assert len(produced) <= 4 + QUEUE_FRAMES + 2  # it stopped soon after the failure, not after 200 frames
    assert not _encoder_threads()


class _FailingEngine(LandmarkWarpEngine):
    """The built-in engine, broken after a few frames (as a model error mid-video would)."""

    def render(self, job):
        for i, frame in enumerate(super().render(job)):
            if i == 4:
                raise RuntimeError("engine broke mid-video")
            yield frame


class _BadFrameEngine(LandmarkWarpEngine):
    """The built-in engine handing the encoder a frame it cannot take (a fault on the encoder's side)."""

    def render(self, job):
        for i, frame in enumerate(super().render(job)):
            yield frame.astype(np.float64) if i == 2 else frame


@pytest.mark.parametrize("engine_class, needle", [(_FailingEngine, "engine broke"), (_BadFrameEngine, "cvtColor|depth")])
def test_a_failing_render_leaves_no_thread_and_no_partial_file(tmp_path, engine_class, needle):
    speech = speech_with_pause(tmp_path / "speech.wav", before=1.0, pause=0.3, after=0.5)
    settings, hardware = ModelSettings(), Hardware(cuda=False)
    engines = EngineRegistry(settings, hardware, engines=[engine_class(settings, hardware)])
    out = tmp_path / "out" / "talk.mp4"
    with pytest.raises(Exception, match=needle):
        render(RenderRequest(PORTRAIT, speech, out, mode="real_time", size=64, fps=FPS), engines)
    engines.close()
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no .partial file
    assert not _encoder_threads()
