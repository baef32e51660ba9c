"""The built-in engine's mouth, frame by frame and without rendering a video: closures found in the sound
last at least a video frame, and each viseme pose, warped onto real portraits, measures as it should with
Face Mesh (pressed lips shut, rounded narrower, spread wider), the interior takes its colours from the photo
(a grey photo gets a grey mouth: no colour fringe), and the warped mouth keeps an enlarged portrait's
sharpness."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines import face
from engines.framing import frame_photo
from engines.mouth_track import _any_in_video_frame, closure_dips
from engines.mouth_warp import MouthRig


@pytest.fixture(scope="module")
def faces():
    from cli.mouth_sheets import sample_faces

    return sample_faces()


def _rigged(photo, size):
    framed = frame_photo(photo, size)
    return framed, MouthRig(framed.landmarks, size, framed.portrait)


def _posed(framed, rig, *pose):
    out = framed.portrait.copy()
    out[rig.y0 : rig.y1, rig.x0 : rig.x1] = rig.render(framed.portrait, *pose)
    return out


def _width(points):
    return np.linalg.norm(points[61] - points[291]) / np.linalg.norm(points[234] - points[454])


def test_a_short_dip_inside_speech_is_a_closure_and_a_pause_is_not():
    envelope = np.full(300, 0.8, np.float32)
    envelope[100:104] = 0.2  # a 40 ms stop closure
    envelope[180:260] = 0.0  # a pause
    closed = closure_dips(envelope)
    assert closed[100:104].any()
    assert not closed[190:250].any()  # the middle of a pause is left to rest
    assert closed[255:260].any()  # lips meet just before speech starts again
    apart = np.zeros(300, bool)
    apart[95:110] = True  # the recogniser heard "S" there: lips stay apart
    assert not closure_dips(envelope, apart)[100:104].any()


@pytest.mark.parametrize("fps", [25, 30000 / 1001, 60])
def test_a_closure_shorter_than_a_frame_still_shuts_one(fps):
    steps = np.zeros(500, bool)
    for start in range(37, 480, 53):  # 20 ms closures at every phase against the frame grid
        steps[start : start + 2] = True
    shut = _any_in_video_frame(steps, fps, int(5.0 * fps))
    times = (np.flatnonzero(shut) + 0.5) / fps + 0.03
    for start in range(37, 480, 53):
        assert np.min(np.abs(times - (start + 1) / 100)) < 1 / fps


def test_pressed_lips_shut_a_smiling_portrait(faces):
    framed, rig = _rigged(faces["astronaut"], 256)
    analyzer = face.shared_analyzer()
    rest = face.mouth_opening(analyzer.landmarks(framed.portrait))
    pressed = face.mouth_opening(analyzer.landmarks(_posed(framed, rig, 0.0, 0.0, 1.0)))
    assert rest > 0.12 and pressed < 0.03, (rest, pressed)


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_rounded_lips_are_narrower_and_spread_lips_wider(faces, name):
    framed, rig = _rigged(faces[name], 384)
    analyzer = face.shared_analyzer()
    rest = _width(analyzer.landmarks(framed.portrait))
    rounded = _width(analyzer.landmarks(_posed(framed, rig, 0.35, -0.95)))
    spread = _width(analyzer.landmarks(_posed(framed, rig, 0.4, 0.8)))
    assert rounded < rest - 0.03 and spread > rounded + 0.05, (rounded, rest, spread)


def test_labiodental_shows_upper_teeth_on_the_lower_lip(faces):
    framed, rig = _rigged(faces["hopper"], 384)
    posed = _posed(framed, rig, 0.12, 0.2, 0.0, 1.0)
    analyzer = face.shared_analyzer()
    assert face.mouth_opening(analyzer.landmarks(posed)) < 0.15  # nearly closed
    box = (slice(int(rig.upper_outer_y), int(rig.lower_outer_y)),
           slice(int(rig.center_x - 0.3 * rig.mouth_width), int(rig.center_x + 0.3 * rig.mouth_width)))

    def tooth_white(image):  # bright, nearly colourless pixels (the lips and skin here are orange-red)
        pixels = image[box].reshape(-1, 3).astype(float)
        luma, chroma = pixels.mean(axis=1), pixels.max(axis=1) - pixels.min(axis=1)
        return int(np.sum((luma > 140) & (chroma < 0.3 * luma)))

    assert tooth_white(posed) > tooth_white(framed.portrait) + 0.1 * rig.mouth_width  # teeth between the lips


def test_a_grey_portrait_gets_a_grey_mouth(faces):
    framed, rig = _rigged(faces["hopper-variant"], 384)  # grey, head rolled
    for pose in [(1.0, 0.1), (0.4, 0.15, 0.0, 0.0, 1.0), (0.12, 0.2, 0.0, 1.0)]:
        region = _posed(framed, rig, *pose)[rig.y0 : rig.y1, rig.x0 : rig.x1].astype(int)
        chroma = region.max(axis=2) - region.min(axis=2)
        assert chroma.max() <= 4, pose


def test_the_opening_fades_out_at_the_corners(faces):
    """No dark wedge where the lips meet: along the mouth line the painted opening thins to nothing."""
    framed, rig = _rigged(faces["hopper"], 512)
    posed = cv2.cvtColor(_posed(framed, rig, 0.8, 0.3), cv2.COLOR_RGB2GRAY).astype(float)
    rest = cv2.cvtColor(framed.portrait, cv2.COLOR_RGB2GRAY).astype(float)
    for corner in (rig.corner_left, rig.corner_right):
        x = int(round(corner))
        rows = slice(int(rig.corner_y - 0.1 * rig.mouth_width), int(rig.corner_y + 0.1 * rig.mouth_width))
        darker = rest[rows, x - 2 : x + 3].mean() - posed[rows, x - 2 : x + 3].mean()
        assert darker < 25, (corner, darker)


def test_the_mouth_keeps_an_enlarged_portraits_sharpness(faces):
    """At 1024 px the sample's face is enlarged (`upscaled`); the opened mouth's chin must stay as sharp as
    the portrait's own (bilinear resampling lost 10% of the detail, bicubic keeps it)."""
    framed, rig = _rigged(faces["astronaut"], 1024)
    assert frame_photo(faces["astronaut"], 1024).upscaled

    def detail(image, rows, cols):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return cv2.Laplacian(grey, cv2.CV_32F)[rows, cols].var()

    cx, half = int(rig.center_x), int(0.6 * rig.mouth_width)
    rest_rows = slice(int(rig.lower_outer_y) + 4, int(rig.chin_y) - 10)
    for opening in (0.3, 0.7):
        drop = int(opening * rig.max_drop)
        moved_rows = slice(rest_rows.start + drop, rest_rows.stop + drop)
        ratio = detail(_posed(framed, rig, opening, 0.0), moved_rows, slice(cx - half, cx + half)) / detail(
            framed.portrait, rest_rows, slice(cx - half, cx + half))
        assert ratio > 0.97, (opening, ratio)
