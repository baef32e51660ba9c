"""A looping avatar video under the lip-sync: decoded, framed once, tracked, played forwards and back."""

from __future__ import annotations

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.hardware import Hardware  # noqa: E402
from engines.wav2lip.engine import Wav2LipEngine  # noqa: E402
from engines.wav2lip.video import NotAVideo, load_avatar_video, loop_index, looping, render_avatar_video  # noqa: E402
from tests.wav2lip_fixtures import SAMPLES, portrait_job, random_model, save_upstream  # noqa: E402

torch.set_num_threads(2)


def test_loop_goes_forwards_then_backwards():
    assert [loop_index(i, 25, 25, 4) for i in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert [loop_index(i, 50, 25, 3) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert loop_index(7, 25, 25, 1) == 0


@pytest.fixture(scope="module")
def avatar_video(tmp_path_factory):
    """Eight frames of the sample portrait drifting sideways, as an H.264 MP4."""
    from engines.media_image import load_portrait

    image = load_portrait(SAMPLES / "portrait.jpg")
    path = tmp_path_factory.mktemp("video") / "avatar.mp4"
    height, width = (d - d % 2 for d in image.shape[:2])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(8):
            frame = np.roll(image, 3 * k, axis=1)[:height, :width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_avatar_video_is_framed_tracked_and_lip_synced(avatar_video, tmp_path):
    video = load_avatar_video(avatar_video, 256)
    assert len(video.frames) == 8 and video.fps == pytest.approx(25)
    assert all(f.shape == (256, 256, 3) for f in video.frames)
    nose = np.array([lm[1] for lm in video.landmarks])
    assert np.all(np.diff(nose[:, 0]) > 0)  # the face drifts right, and the tracked landmarks follow it

    checkpoint = save_upstream(random_model(seed=7), tmp_path / "w.pth")
    engine = Wav2LipEngine(checkpoint=checkpoint, base="still", batch_size=4, hardware=Hardware(cuda=False))
    job = portrait_job(size=256, seconds=0.6)
    frames = list(engine.render(job, base_frames=looping(video, 25)))
    assert len(frames) == job.frame_count == 15
    for i, frame in enumerate(frames):
        source = video.frames[loop_index(i, 25, 25, 8)]
        top = int(video.landmarks[0][2][1]) - 4
        np.testing.assert_array_equal(frame[:top], source[:top])
        assert np.any(frame != source)

    out = tmp_path / "talk.mp4"
    assert render_avatar_video(avatar_video, SAMPLES / "speech.wav", out, size=256,
                               engine=Wav2LipEngine(checkpoint=checkpoint, base="still", hardware=Hardware(cuda=False))) > 100
    with av.open(str(out)) as container:
        assert container.streams.video[0].width == 256 and container.streams.audio


def test_not_a_video_is_refused(tmp_path):
    bogus = tmp_path / "x.mp4"
    bogus.write_bytes(b"nope" * 100)
    with pytest.raises(NotAVideo):
        load_avatar_video(bogus, 256)
