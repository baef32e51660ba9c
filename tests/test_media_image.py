import numpy as np
import pytest
from PIL import Image

from schemas.errors import ImageTooLarge, NotAnImage, UnreadableInput
from engines.media_image import load_portrait


def _gradient(width=64, height=48):
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return np.stack([np.tile(x, (height, 1))] * 3, axis=-1)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_round_trip_each_format(tmp_path, fmt, suffix):
    path = tmp_path / f"p{suffix}"
    Image.fromarray(_gradient()).save(path, format=fmt, quality=95)
    image = load_portrait(path)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert abs(int(image[:, -1].mean()) - 255) < 8 and int(image[:, 0].mean()) < 8


def test_format_recognised_by_content_not_extension(tmp_path):
    path = tmp_path / "portrait.txt"
    Image.fromarray(_gradient()).save(path, format="PNG")
    assert load_portrait(path).shape == (48, 64, 3)


def test_exif_orientation_is_honoured(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.fromarray(_gradient(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(path, exif=exif)
    assert load_portrait(path).shape == (64, 48, 3)


def test_alpha_is_flattened_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :5, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(path)
    image = load_portrait(path)
    assert tuple(image[0, 0]) == (255, 0, 0)
    assert tuple(image[0, 9]) == (255, 255, 255)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(NotAnImage, match="not a PNG, JPEG or WebP"):
        load_portrait(path)


def test_gif_is_refused_even_though_pillow_reads_it(tmp_path):
    path = tmp_path / "anim.gif"
    Image.fromarray(_gradient()).save(path, format="GIF")
    with pytest.raises(NotAnImage):
        load_portrait(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(NotAnImage, match="empty file"):
        load_portrait(path)


def test_truncated_image(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_gradient(400, 300)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(NotAnImage, match="damaged"):
        load_portrait(path)


def test_huge_image_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)  # 144 MP, a few kB on disk
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageTooLarge, match="12000x12000"):
        load_portrait(path)
    with pytest.raises(ImageTooLarge):
        load_portrait(tmp_path / "bomb.png", max_pixels=1000)


def test_unreadable_path(tmp_path):
    with pytest.raises(UnreadableInput, match="Cannot read the portrait"):
        load_portrait(tmp_path / "missing.jpg")
    with pytest.raises(UnreadableInput):
        load_portrait(tmp_path)  # a directory
