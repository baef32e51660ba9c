"""Face finding on real photos: faces of any size at any position of a landscape or portrait canvas, several
people (picked largest / by index / by box, the count reported), and heads rolled or photos held the wrong way
round. The faces are the bundled portrait pasted onto plain canvases."""

import cv2
import numpy as np
import pytest

from engines import face
from engines.face_choice import FaceChoice
from engines.framing import find_faces, frame_photo, quarter_turn
from engines.media_image import load_portrait
from schemas.errors import InvalidParameter, NoFaceFound
from tests.media_fixtures import PORTRAIT


@pytest.fixture(scope="module")
def portrait():
    return load_portrait(PORTRAIT)


@pytest.fixture(scope="module")
def analyzer():
    return face.shared_analyzer()


def paste(canvas_shape, pieces):
    """A grey canvas with each (image, x, y) pasted on it."""
    canvas = np.full((*canvas_shape, 3), 150, np.uint8)
    for image, x, y in pieces:
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas


def nose_within(landmarks, x, y, side):
    nose = landmarks[face.NOSE_TIP]
    return x < nose[0] < x + side and y < nose[1] < y + side


@pytest.mark.parametrize("side", [512, 300])
def test_a_face_anywhere_on_a_landscape_canvas(portrait, analyzer, side):
    """15 positions (5 across x 3 down) of a 1920x1080 still; the 300-px portrait's face is about 60 px wide."""
    small = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_AREA)
    missed = []
    for x in np.linspace(0, 1920 - side, 5).astype(int):
        for y in np.linspace(0, 1080 - side, 3).astype(int):
            faces = analyzer.faces(paste((1080, 1920), [(small, x, y)]))
            if len(faces) != 1 or not nose_within(faces[0].landmarks, x, y, side):
                missed.append((x, y, len(faces)))
    assert not missed


def test_face_mesh_alone_misses_them(portrait, analyzer):
    """What the search is for: Face Mesh on the whole canvas finds nothing (the reported failure)."""
    canvas = paste((1080, 1920), [(portrait, 704, 284)])
    assert analyzer._mesh_faces(canvas) == []
    assert len(analyzer.faces(canvas)) == 1


def test_a_face_on_a_tall_canvas(portrait, analyzer):
    small = cv2.resize(portrait, (300, 300), interpolation=cv2.INTER_AREA)
    for y in (0, 800, 1620):
        faces = analyzer.faces(paste((1920, 1080), [(small, 700, y)]))
        assert len(faces) == 1 and nose_within(faces[0].landmarks, 700, y, 300)


def test_a_close_up_fills_the_frame(portrait, analyzer):
    close = cv2.resize(portrait[45:195, 151:301], (512, 512), interpolation=cv2.INTER_CUBIC)
    faces = analyzer.faces(close)
    assert len(faces) == 1 and faces[0].box[2] > 250


@pytest.fixture(scope="module")
def group(portrait):
    """Three people side by side: a middle-sized face, the largest, the smallest; their pasted squares."""
    sides = (380, 512, 260)
    xs = (40, 520, 1140)
    pieces = [(cv2.resize(portrait, (s, s), interpolation=cv2.INTER_AREA), x, 40) for s, x in zip(sides, xs)]
    return paste((600, 1440), pieces), [(x, 40, s) for s, x in zip(sides, xs)]


def test_every_face_of_a_group_left_to_right(group, analyzer):
    canvas, squares = group
    faces = analyzer.faces(canvas)
    assert len(faces) == 3
    for found, (x, y, side) in zip(faces, squares):
        assert nose_within(found.landmarks, x, y, side)


def test_picks_in_a_group(group):
    canvas, squares = group
    largest = frame_photo(canvas, 128)
    assert largest.face_used["index"] == 1 and largest.face_used["facesFound"] == 3 and largest.face_used["others"] == 2
    x, y, w, h = largest.face_used["box"]
    assert nose_within(np.array([[x + w / 2, y + h / 2]] * 478), *squares[1])
    assert frame_photo(canvas, 128, choice=FaceChoice("index", index=2)).face_used["index"] == 2
    assert frame_photo(canvas, 128, choice=FaceChoice("index", index=0)).face_used["index"] == 0
    # A box drawn loosely around the leftmost person picks them, not the largest face.
    assert frame_photo(canvas, 128, choice=FaceChoice("box", box=(0, 0, 450, 500))).face_used["index"] == 0
    # The framed square shows the picked face: its nose is near the square's middle.
    framed = frame_photo(canvas, 128, choice=FaceChoice.parse("index:2"))
    assert abs(framed.landmarks[face.NOSE_TIP][0] - 64) < 20


def test_picks_that_name_no_face_are_refused(group):
    canvas, _ = group
    with pytest.raises(InvalidParameter, match=r"face index 3 was asked for, but the portrait has 3 face\(s\)"):
        frame_photo(canvas, 128, choice=FaceChoice("index", index=3))
    with pytest.raises(NoFaceFound, match=r"No face overlaps the box \[0, 520, 100, 80\]; the portrait's 3 face"):
        frame_photo(canvas, 128, choice=FaceChoice("box", box=(0, 520, 100, 80)))


def test_one_face_reports_no_others(portrait):
    used = frame_photo(portrait, 128).face_used
    assert used["facesFound"] == 1 and used["others"] == 0 and used["index"] == 0 and used["turned"] == 0


def test_no_face_is_refused_with_a_reason(analyzer):
    blank = np.full((720, 1280, 3), 120, np.uint8)
    with pytest.raises(NoFaceFound, match="No face was found in the portrait"):
        frame_photo(blank, 128, analyzer=analyzer)


def rolled(portrait, degrees):
    """The portrait on a larger canvas, turned by ``degrees`` (counter-clockwise on screen) about its middle."""
    canvas = cv2.copyMakeBorder(portrait, 160, 160, 160, 160, cv2.BORDER_REPLICATE)
    centre = (canvas.shape[1] / 2, canvas.shape[0] / 2)
    return cv2.warpAffine(canvas, cv2.getRotationMatrix2D(centre, degrees, 1.0), canvas.shape[1::-1],
                          borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("degrees", [35, -50])
def test_a_rolled_head_is_framed_upright(portrait, analyzer, degrees):
    photo = rolled(portrait, degrees)
    faces = find_faces(photo, analyzer)
    assert len(faces) == 1 and abs(abs(faces[0].roll_degrees) - abs(degrees)) < 6
    framed = frame_photo(photo, 256)
    # Measured afresh on the framed square: the eyes are level, and the carried landmarks agree.
    fresh = analyzer.landmarks(framed.portrait)
    assert abs(face.Face(fresh).roll_degrees) < 4
    assert np.median(np.linalg.norm(fresh - framed.landmarks, axis=1)) < 4.0


def test_a_slightly_tilted_head_is_left_as_it_is(portrait):
    framed = face.frame_portrait(rolled(portrait, 5), 256)
    assert framed.matrix[0, 1] == 0 and framed.matrix[1, 0] == 0  # no turn: a plain crop and scale


@pytest.mark.parametrize("turns", [2, 1, 3])
def test_a_photo_held_the_wrong_way_round(portrait, analyzer, turns):
    """Upside down, or on its side: found by searching the photo turned back, then framed upright."""
    photo = np.ascontiguousarray(np.rot90(portrait, turns))
    faces = find_faces(photo, analyzer)
    assert len(faces) == 1
    upright = face.Face(face.shared_analyzer().landmarks(portrait))
    back = np.array(quarter_turn(turns, portrait.shape))
    assert np.median(np.linalg.norm(faces[0].landmarks - (upright.landmarks @ back[:, :2].T + back[:, 2]), axis=1)) < 5
    framed = frame_photo(photo, 256)
    assert abs(face.Face(analyzer.landmarks(framed.portrait)).roll_degrees) < 4


def test_upside_down_is_not_found_without_the_turned_search(portrait, analyzer):
    assert analyzer.faces(np.ascontiguousarray(np.rot90(portrait, 2))) == []


def test_quarter_turn_maps_pixels_like_rot90():
    image = np.arange(5 * 7).reshape(5, 7)
    for turns in range(4):
        turned = np.rot90(image, turns)
        matrix = quarter_turn(turns, image.shape)
        for y, x in [(0, 0), (4, 6), (2, 3), (1, 5)]:
            tx, ty = matrix @ np.array([x + 0.5, y + 0.5, 1.0])  # pixel centres
            assert turned[int(ty), int(tx)] == image[y, x]
