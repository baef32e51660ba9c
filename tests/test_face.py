import numpy as np
import pytest

from engines import face
from schemas.errors import NoFaceFound
from engines.media_image import load_portrait
from tests.media_fixtures import PORTRAIT


@pytest.fixture(scope="module")
def portrait():
    return load_portrait(PORTRAIT)


def test_landmarks_of_the_portrait(portrait):
    landmarks = face.shared_analyzer().landmarks(portrait)
    assert landmarks.shape == (478, 2)
    # Anatomy sanity: eyes above the nose tip, nose above the mouth, mouth above the chin.
    eye_y = landmarks[[159, 386], 1].mean()
    assert eye_y < landmarks[face.NOSE_TIP, 1] < landmarks[13, 1] < landmarks[face.CHIN, 1]
    assert landmarks[face.MOUTH_CORNERS[0], 0] < landmarks[face.MOUTH_CORNERS[1], 0]


def test_no_face(tmp_path):
    rng = np.random.default_rng(1)
    texture = (rng.random((256, 256, 3)) * 60 + 100).astype(np.uint8)
    with pytest.raises(NoFaceFound, match="No face was found"):
        face.shared_analyzer().landmarks(texture)


def test_largest_of_several_faces(portrait):
    small = portrait[::3, ::3]
    canvas = np.full((512, 512 + small.shape[1], 3), 200, np.uint8)
    canvas[:, :512] = portrait
    canvas[: small.shape[0], 512:] = small
    landmarks = face.shared_analyzer().landmarks(canvas)
    assert landmarks[:, 0].max() < 512  # the big face on the left, not the small one


def test_small_face_found_through_the_detector(portrait):
    canvas = np.full((1400, 1400, 3), 180, np.uint8)
    canvas[878:1390, 100:612] = portrait
    analyzer = face.shared_analyzer()
    assert analyzer._mesh_faces(canvas) == []  # too small for Face Mesh's own short-range detector
    landmarks = analyzer.landmarks(canvas)
    assert 878 < landmarks[face.NOSE_TIP, 1] < 1390 and 100 < landmarks[face.NOSE_TIP, 0] < 612


def test_framing_crops_square_around_the_face(portrait):
    wide = np.concatenate([np.full((512, 400, 3), 90, np.uint8), portrait, np.full((512, 400, 3), 90, np.uint8)], axis=1)
    framed = face.frame_portrait(wide, 256)
    assert framed.image.shape == (256, 256, 3)
    nose = framed.landmarks[face.NOSE_TIP]
    assert 0.3 * 256 < nose[0] < 0.7 * 256
    # The carried landmarks agree with a fresh detection on the framed image.
    fresh = face.shared_analyzer().landmarks(framed.image)
    assert np.median(np.linalg.norm(fresh - framed.landmarks, axis=1)) < 3.0


def test_mouth_opening_measure():
    landmarks = np.zeros((478, 2), np.float32)
    landmarks[face.MOUTH_CORNERS[0]] = (0, 0)
    landmarks[face.MOUTH_CORNERS[1]] = (100, 0)
    landmarks[13] = (50, -10)
    landmarks[14] = (50, 20)
    assert face.mouth_opening(landmarks) == pytest.approx(0.3)
