"""Framing: `original` shows the whole photo at its own aspect, the face animated in place and everything else
still; `crop` the square around the face; both say when the video enlarges the photo."""

import av
import cv2
import numpy as np
import pytest

from engines import face
from engines.framing import FRAMINGS, feathered_mask, frame_photo
from engines.hardware import Hardware
from engines.media_audio import OUTPUT_RATE, write_wav
from engines.media_image import load_portrait
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import ModelSettings
from schemas.errors import InvalidParameter
from tests.media_fixtures import PORTRAIT, speech_samples

ENGINES = EngineRegistry(ModelSettings(), Hardware(cuda=False))


@pytest.fixture(scope="module")
def photo():
    """A 900x600 landscape photo: the portrait right of centre on a textured background."""
    rng = np.random.default_rng(4)
    texture = cv2.GaussianBlur((rng.random((600, 900, 3)) * 255).astype(np.uint8), (0, 0), 12)
    canvas = cv2.normalize(texture, None, 40, 220, cv2.NORM_MINMAX)
    canvas[44:556, 330:842] = load_portrait(PORTRAIT)
    return canvas


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, photo):
    workdir = tmp_path_factory.mktemp("framing")
    photo_path = workdir / "photo.png"
    cv2.imwrite(str(photo_path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    audio = write_wav(workdir / "speech.wav", speech_samples()[: int(1.6 * OUTPUT_RATE)])
    result = render(RenderRequest(photo_path, audio, workdir / "out.mp4", mode="real_time", size=240, framing="original"),
                    ENGINES)
    with av.open(result.output) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return result, frames


def test_original_is_offered():
    assert FRAMINGS == ("crop", "original")


def test_original_keeps_the_photos_aspect(rendered):
    result, frames = rendered
    height, width = frames[0].shape[:2]
    assert height == 240 and width % 2 == 0 and abs(width - 240 * 900 / 600) <= 1
    assert (result.width, result.height) == (width, height)
    assert result.upscaled is False  # 600 photo pixels shown on 240 video rows
    assert result.face_used == {"index": 0, "box": result.face_used["box"], "facesFound": 1, "others": 0, "turned": 0}


def test_only_the_face_region_moves(rendered, photo):
    result, frames = rendered
    x0, y0, x1, y1 = frame_photo(photo, 240, "original").compositor.region
    assert (x1 - x0) * (y1 - y0) < 0.5 * frames[0].shape[0] * frames[0].shape[1]
    outside = np.ones(frames[0].shape[:2], bool)
    outside[max(0, y0 - 16) : y1 + 16, max(0, x0 - 16) : x1 + 16] = False  # a margin for the codec's blocks
    still = cv2.resize(photo, frames[0].shape[1::-1], interpolation=cv2.INTER_AREA).astype(np.int16)
    # The compositor leaves those pixels exactly alone (test below); what differs here is the codec refining
    # the background over the first frames, then nothing.
    changes = [np.abs(after.astype(np.int16) - before)[outside].mean() for before, after in zip(frames, frames[1:])]
    assert max(changes) < 1.5 and max(changes[len(changes) // 2 :]) < 0.1
    assert np.abs(frames[0].astype(np.int16) - still)[outside].mean() < 3  # and it is the photo
    inside = [np.abs(frame[y0:y1, x0:x1].astype(np.int16) - frames[0][y0:y1, x0:x1]).mean() for frame in frames]
    assert max(inside) > 1.0  # while the face talks


def test_the_face_stays_where_it_was(rendered, photo):
    result, frames = rendered
    """The face region of every frame lines up with the still photo's (the head sways by a pixel or so)."""
    x0, y0, x1, y1 = frame_photo(photo, 240, "original").compositor.region
    still = cv2.resize(photo, frames[0].shape[1::-1], interpolation=cv2.INTER_AREA)

    def grey(image):
        return cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)

    for frame in frames[::4]:
        (dx, dy), _ = cv2.phaseCorrelate(grey(still), grey(frame))
        assert abs(dx) < 1.5 and abs(dy) < 1.5


def rolled(photo, degrees):
    centre = (photo.shape[1] / 2, photo.shape[0] / 2)
    return cv2.warpAffine(photo, cv2.getRotationMatrix2D(centre, degrees, 1.0), photo.shape[1::-1],
                          borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("case", ["level", "rolled 35", "on its side"])
def test_the_square_goes_back_where_it_came_from(photo, case):
    """The engine's square (levelled, scaled) placed back unchanged reproduces the photo; a change to it
    shows only inside the region, every pixel outside it the photo's exactly."""
    source = {"level": photo, "rolled 35": rolled(photo, 35), "on its side": np.ascontiguousarray(np.rot90(photo))}[case]
    framed = frame_photo(source, 300, "original")
    assert abs(face.Face(framed.landmarks).roll_degrees) < 5  # the engine gets the face upright
    if case == "on its side":
        assert framed.face_used["turned"] in (90, 270) and (framed.width, framed.height) == (450, 300)
    else:
        assert (framed.width, framed.height) == (450, 300)
    background = framed.compositor._background
    same, changed = framed.frames([framed.portrait, np.zeros_like(framed.portrait)])
    x0, y0, x1, y1 = framed.compositor.region
    assert np.abs(same.astype(np.int16) - background)[y0:y1, x0:x1].mean() < 4
    assert np.abs(changed.astype(np.int16) - background)[y0:y1, x0:x1].mean() > 20
    outside = np.ones(background.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(changed[outside], background[outside])


def test_the_mask_feathers_to_nothing_at_the_edges():
    mask = feathered_mask(100)
    assert mask[50, 50] == 1.0 and mask[0, 50] < 0.01 and mask[50, 99] < 0.01
    assert np.all(np.diff(mask[50, :50]) >= 0)


def test_upscaled_says_when_the_photo_is_enlarged(photo):
    portrait = load_portrait(PORTRAIT)  # the face square is about 320 px of this 512-px photo
    assert frame_photo(portrait, 512).upscaled is True
    assert frame_photo(portrait, 128).upscaled is False
    assert frame_photo(photo, 240, "original").upscaled is False
    assert frame_photo(photo, 720, "original").upscaled is True


def test_crop_is_a_square(photo):
    framed = frame_photo(photo, 200)
    assert (framed.width, framed.height, framed.render_size) == (200, 200, 200) and framed.compositor is None
    assert framed.portrait.shape == (200, 200, 3)


def test_a_panorama_too_wide_is_refused():
    wide = np.full((400, 4000, 3), 150, np.uint8)
    wide[:, 1700:2212][:400, :] = load_portrait(PORTRAIT)[56:456]
    with pytest.raises(InvalidParameter, match="would be 10240 pixels wide; the limit is 4096"):
        frame_photo(wide, 1024, "original")
