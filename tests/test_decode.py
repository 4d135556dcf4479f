"""Decoding: simplejpeg's pixels are Pillow's, other formats go through Pillow, the header gives
the size before any pixel is decoded, and data.decode=fast (DCT-domain downscaling) is opt-in and
stays within a stated distance of the exact pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_augment import _data_cfg

from effv2.data.decode import decode, decode_scaled, downscale_factor, image_size
from effv2.data.transforms import TrainTransform

# data.decode=fast against exact, on the same keys, 48 px from these photos: mean absolute difference
# of the normalised images (1.0 = 127.5 grey levels); measured 0.004-0.12. The DCT downscale averages
# each block where the exact path samples the full decode bilinearly (and aliases), so the
# difference is mostly the exact path's aliasing: the fast image is the closer of the two to an
# area-averaged resize (checked below).
FAST_DECODE_MEAN_BOUND = 0.15


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _photos(photo_folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((photo_folder / "train").rglob("*.jpg"))]


def test_jpeg_decode_equals_pillow_for_every_kind_of_file(photo_folder: Path) -> None:
    files = _photos(photo_folder)
    gray = io.BytesIO()
    Image.open(io.BytesIO(files[0])).convert("L").save(gray, format="JPEG")
    cmyk = io.BytesIO()  # libjpeg cannot make RGB of CMYK itself: Pillow does
    Image.open(io.BytesIO(files[1])).convert("CMYK").save(cmyk, format="JPEG")
    png = io.BytesIO()
    Image.open(io.BytesIO(files[2])).save(png, format="PNG")
    for data in [*files, gray.getvalue(), cmyk.getvalue(), png.getvalue()]:
        ours = decode(np.frombuffer(data, np.uint8))
        assert ours.dtype == np.uint8 and ours.shape[2] == 3
        np.testing.assert_array_equal(ours, _pillow(data))
        assert image_size(data) == ours.shape[:2]


def test_scaled_decode_is_libjpegs_downscale_and_other_formats_decode_whole(photo_folder: Path) -> None:
    data = _photos(photo_folder)[0]
    height, width = image_size(data)
    for factor in (2, 4, 8):
        pixels, used = decode_scaled(data, factor, height, width)
        assert used == factor and pixels.shape[:2] == (-(-height // factor), -(-width // factor))
        # libjpeg's scaled IDCT: close to the mean of each factor x factor block of the full decode
        full = decode(data).astype(np.float64)
        rows, cols = height // factor, width // factor
        blocks = full[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor, 3).mean(axis=(1, 3))
        assert np.abs(pixels[:rows, :cols] - blocks).mean() < 3.0
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, format="PNG")
    pixels, used = decode_scaled(png.getvalue(), 4, height, width)
    assert used == 1 and pixels.shape[:2] == (height, width)
    assert [downscale_factor(h, w, 64) for h, w in ((600, 520), (300, 700), (255, 400), (127, 900))] == [8, 4, 2, 1]


def test_fast_decode_is_off_by_default_and_bounded(photo_folder: Path) -> None:
    from effv2.config.schema import DataConfig, DecodeMode

    assert DataConfig.decode == DecodeMode.exact
    cfg = _data_cfg()  # no RandAugment: equalize / posterize would amplify any difference
    exact, fast = TrainTransform(cfg, 48), TrainTransform(_data_cfg(decode="fast", augment=cfg.augment), 48)
    differences, unchanged = [], 0
    for index, data in enumerate(_photos(photo_folder)):
        encoded = np.frombuffer(data, np.uint8)
        for epoch in range(3):
            key = np.array([0, epoch, index])
            a, b = exact(encoded, key), fast(encoded, key)
            assert a.shape == b.shape == (3, 48, 48)
            if np.array_equal(a, b):
                unchanged += 1
            else:
                differences.append(float(np.abs(a - b).mean()))
    assert differences and unchanged  # large crops were downscaled in the DCT, small ones were not
    assert max(differences) < FAST_DECODE_MEAN_BOUND, max(differences)


@pytest.mark.parametrize("size", [24, 300])
def test_the_header_size_is_the_decoded_size(photo_folder: Path, size: int) -> None:
    """The crop box is drawn from the header's size: a transform reading only the header must see
    the size the decode produces (else the box would fall outside the pixels)."""
    transform = TrainTransform(_data_cfg(), size)
    for index, data in enumerate(_photos(photo_folder)[:6]):
        image = transform(np.frombuffer(data, np.uint8), np.array([1, 1, index]))
        assert image.shape == (3, size, size) and np.isfinite(image).all()


def test_fast_decode_keeps_the_crop_where_it_is(photo_folder: Path) -> None:
    """The window read from the downscaled decode is the crop's own sub-pixel window: closer to an
    area-averaged resize of the exact crop than the exact (point-sampled) path, and a window moved by
    8 px is far from it."""
    from effv2.data import geometry

    for data in _photos(photo_folder)[:6]:
        height, width = image_size(data)
        box = geometry.CropBox(height // 9, width // 11, height - height // 5, width - width // 4)
        if downscale_factor(box.height, box.width, 24) == 1:
            continue
        crop = box.apply(decode(data))
        area = np.asarray(Image.fromarray(crop).resize((24, 24), Image.BOX), np.float32)
        scaled, factor = decode_scaled(data, downscale_factor(box.height, box.width, 24), height, width)
        fast = geometry.resize_window(scaled, box, factor, 24, 24)
        moved = geometry.resize_window(
            scaled, geometry.CropBox(box.top + 8, box.left, box.height, box.width), factor, 24, 24
        )
        exact = geometry.resize(crop, 24, 24)
        assert np.abs(fast - area).mean() < np.abs(exact - area).mean() < np.abs(moved - area).mean()
