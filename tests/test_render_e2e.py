"""End to end: portrait + speech -> MP4, then the video itself is measured with Face Mesh: the mouth must open
and close with the sound, shut in the pause, and the rest of the picture must stay the portrait's."""

from pathlib import Path

import av
import numpy as np
import pytest

from engines import face
from engines.media_audio import ANALYSIS_RATE, load_audio
from engines.media_image import load_portrait
from engines.hardware import Hardware
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from tests.media_fixtures import PORTRAIT, speech_with_pause

pytestmark = pytest.mark.slow
SIZE, FPS = 384, 25
PAUSE = (2.0, 3.2)  # seconds of silence in the clip
ENGINES = EngineRegistry(ModelSettings(), Hardware(cuda=False))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    audio_path = speech_with_pause(workdir / "speech.wav", before=2.0, pause=1.2, after=2.5)
    result = render(RenderRequest(PORTRAIT, audio_path, workdir / "out.mp4", mode="real_time", size=SIZE, fps=FPS), ENGINES)
    with av.open(result.output) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return result, frames, load_audio(audio_path)


def _envelope_per_frame(audio, n_frames):
    """Independent of the engine: RMS of each video frame's 40 ms of audio, in dB above the clip's floor."""
    samples = audio.analysis_samples()
    hop = ANALYSIS_RATE // FPS
    rms = np.array([np.sqrt(np.mean(samples[i * hop : (i + 1) * hop] ** 2) + 1e-10) for i in range(n_frames)])
    db = 20 * np.log10(rms)
    return np.clip((db - (db.max() - 40)) / 40, 0, 1)


def test_result_metadata(rendered):
    result, frames, audio = rendered
    assert result.engine == "landmark-warp" and result.mode == "real_time"
    assert result.frames == len(frames) == int(np.ceil(audio.duration * FPS))
    with av.open(result.output) as container:
        assert "landmark-warp" in container.metadata.get("comment", "")
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"


def test_mouth_follows_the_audio_and_closes_in_the_pause(rendered):
    _, frames, audio = rendered
    analyzer = face.shared_analyzer()
    opening = np.array([face.mouth_opening(analyzer.landmarks(frame)) for frame in frames])
    envelope = _envelope_per_frame(audio, len(frames))
    rest = face.mouth_opening(face.frame_portrait(load_portrait(PORTRAIT), SIZE).landmarks)

    correlation = np.corrcoef(opening, envelope)[0, 1]
    assert correlation > 0.45, correlation
    pause = opening[int((PAUSE[0] + 0.25) * FPS) : int((PAUSE[1] - 0.1) * FPS)]
    assert pause.max() < rest + 0.05, (pause.max(), rest)
    speaking = opening[envelope > 0.6]
    assert np.percentile(speaking, 90) > rest + 0.15  # visibly open while speaking
    # It also closes between syllables: plenty of frames near rest inside the speech.
    assert np.mean(speaking < rest + 0.08) > 0.1


def test_upper_face_and_background_stay_the_portrait(rendered):
    _, frames, _ = rendered
    framed = face.frame_portrait(load_portrait(PORTRAIT), SIZE)
    analyzer = face.shared_analyzer()
    upper = [33, 133, 362, 263, 70, 300, 105, 334, 6, 168, face.NOSE_TIP]  # eye corners, brows, nose
    face_height = framed.landmarks[face.CHIN, 1] - framed.landmarks[10, 1]
    for frame in frames[::10]:
        moved = np.linalg.norm(analyzer.landmarks(frame)[upper] - framed.landmarks[upper], axis=1)
        assert np.median(moved) < 0.04 * face_height
    # Background corners never move (codec noise only).
    for frame in frames[::10]:
        for corner in ((slice(0, 40), slice(0, 40)), (slice(0, 40), slice(-40, None))):
            assert np.abs(frame[corner].astype(int) - framed.image[corner].astype(int)).mean() < 4


def test_blinks_happen(rendered):
    _, frames, _ = rendered
    analyzer = face.shared_analyzer()
    eye_gap = []
    for frame in frames:
        points = analyzer.landmarks(frame)
        eye_gap.append(np.linalg.norm(points[159] - points[145]) / np.linalg.norm(points[33] - points[133]))
    eye_gap = np.array(eye_gap)
    assert eye_gap.min() < 0.6 * np.median(eye_gap)  # at least one blink in 5.7 s
    assert np.mean(eye_gap < 0.6 * np.median(eye_gap)) < 0.15  # but the eyes are mostly open


def test_same_seed_same_video(rendered, tmp_path):
    result, frames, _ = rendered
    again = render(RenderRequest(PORTRAIT, Path(result.output).parent / "speech.wav", tmp_path / "again.mp4",
                                 mode="real_time", size=SIZE, fps=FPS), ENGINES)
    with av.open(again.output) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.array_equal(first, frames[0])
    # A redelivered job writes the same file, byte for byte (its completion carries the same sha256).
    assert Path(again.output).read_bytes() == Path(result.output).read_bytes()
