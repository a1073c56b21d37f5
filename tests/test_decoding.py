"""Dataset images keep their dynamic range: every image a method sees goes through tasks.imageio (load_image),
16-bit, 32-bit integer and float files are stretched rather than saturated, EXIF orientation is applied,
8-bit files decode exactly as before, and a decompression bomb is one line naming its file."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from benchmark.cli import main
from common.errors import UserError
from methods.cache import Cache
from methods.features import image_array, images_key, load_image
from tasks.datasets import load_dataset

SIZE = 32


def ramp(dtype, low, high, shape=(SIZE, SIZE)) -> np.ndarray:
    """Values rising left to right across the columns, constant down each column."""
    row = np.linspace(low, high, shape[1])
    return np.broadcast_to(row, shape).astype(dtype)


def assert_stretched_ramp(decoded: np.ndarray, valid_columns=slice(None)) -> None:
    """(3, S, S) uint8 of a left-to-right ramp: spans 0..255 and stays non-decreasing along every row."""
    grey = decoded[0].astype(int)[:, valid_columns]
    assert (decoded[0] == decoded[1]).all() and (decoded[1] == decoded[2]).all()
    assert grey.min() == 0 and grey.max() == 255, (grey.min(), grey.max())
    assert (np.diff(grey, axis=1) >= 0).all(), "the ramp is no longer monotone"
    assert len(np.unique(grey)) > SIZE // 2, "the ramp collapsed onto few values"


def test_16_bit_png_ramp_keeps_its_range_and_order(tmp_path):
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp(np.uint16, 1000, 3000)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really a 16-bit file
        saturated = np.asarray(img.convert("RGB"))  # what PIL alone makes of it: one value
    assert len(np.unique(saturated)) == 1
    assert_stretched_ramp(load_image(str(path), SIZE))


def test_float_and_32_bit_tiffs_keep_their_range_and_order(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    cases = {
        "float32.tif": ramp(np.float32, -0.02, 0.35),  # reflectance-like: PIL alone decodes all zeros
        "int32.tif": ramp(np.int32, -50_000, 2_000_000),
        "uint16.tif": ramp(np.uint16, 20, 900),
    }
    for name, array in cases.items():
        tifffile.imwrite(tmp_path / name, array)
        assert_stretched_ramp(load_image(str(tmp_path / name), SIZE))


def test_multi_band_float_tiff_keeps_band_balance(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    bands = np.stack(
        [ramp(np.float32, 0, 1), ramp(np.float32, 0, 1) * 0.5, np.full((SIZE, SIZE), 0.25, np.float32)], axis=-1
    )
    tifffile.imwrite(tmp_path / "rgb.tif", bands, photometric="rgb")
    decoded = load_image(str(tmp_path / "rgb.tif"), SIZE).astype(int)
    assert decoded.min() == 0 and decoded.max() == 255
    assert (np.diff(decoded[0], axis=1) >= 0).all() and (np.diff(decoded[1], axis=1) >= 0).all()
    assert (decoded[0] >= decoded[1]).all()  # bands share limits: red stays brighter than green
    assert len(np.unique(decoded[2])) == 1  # a constant band stays constant


def test_nan_no_data_is_masked_not_spread(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    array = ramp(np.float32, 10.0, 20.0)
    array[:, : SIZE // 4] = np.nan  # a no-data margin
    tifffile.imwrite(tmp_path / "nodata.tif", array)
    decoded = load_image(str(tmp_path / "nodata.tif"), SIZE)
    assert (decoded[:, :, : SIZE // 4] == 0).all()  # no-data is black
    assert_stretched_ramp(decoded, valid_columns=slice(SIZE // 4, None))


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((SIZE, 2 * SIZE, 3), np.uint8)
    pixels[:, :SIZE] = 255  # left half white, right half black, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    decoded = load_image(str(path), SIZE)
    # displayed upright, the 2S x S image is tall, with the white half on top
    with Image.open(path) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("L"))
    assert upright.shape == (2 * SIZE, SIZE) and upright[: SIZE - 2].mean() > 200 and upright[SIZE + 2 :].mean() < 50
    crop = decoded[0].astype(int)  # the centre crop of the tall image: its top half white, bottom black
    assert crop[: SIZE // 2 - 2].mean() > 200 and crop[SIZE // 2 + 2 :].mean() < 50


def old_load_image(path, size):
    """The decoding of PREPROCESSING_VERSION 1, which 8-bit images must still match bit for bit."""
    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


@pytest.mark.parametrize(
    "name,mode", [("grey.jpg", "L"), ("rgb.png", "RGB"), ("palette.png", "P"), ("rgba.png", "RGBA")]
)
def test_8_bit_images_decode_exactly_as_before(tmp_path, name, mode):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (40, 50, 3)).astype(np.uint8))
    if mode == "RGBA":
        img = img.convert("RGBA")
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(tmp_path / name)
    assert np.array_equal(load_image(str(tmp_path / name), SIZE), old_load_image(tmp_path / name, SIZE))


def test_real_8_bit_images_decode_exactly_as_before(real_data_dir):
    for dataset in ("hirise-v1", "aid"):
        try:
            table = load_dataset(dataset, real_data_dir)
        except UserError:
            continue
        picks = np.random.default_rng(0).choice(len(table), 12, replace=False)
        for i in picks:
            path = table.paths[i]
            assert np.array_equal(load_image(path, 128), old_load_image(path, 128)), path


def test_decoded_arrays_of_the_old_decoder_are_not_reused(tmp_path):
    """The images key holds the preprocessing and decoder versions, so arrays decoded by the saturating
    decoder are recomputed."""
    from fakes import folder_like

    import methods.features as features

    table = load_dataset(f"folder:{folder_like(tmp_path / 'd')}", tmp_path)
    key = images_key(table, SIZE)
    old = features.PREPROCESSING_VERSION
    try:
        features.PREPROCESSING_VERSION = old - 1
        assert images_key(table, SIZE) != key
    finally:
        features.PREPROCESSING_VERSION = old
    assert image_array(table, SIZE, Cache(tmp_path / "cache")).shape == (len(table), 3, SIZE, SIZE)


def test_decompression_bomb_is_one_line_naming_its_file(tmp_path, monkeypatch, capsys):
    from fakes_reliability import make_folder_dataset

    data = make_folder_dataset(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every 32x32 image is now over twice the limit
    with pytest.raises(UserError, match=r"image .*\.png is larger than Pillow's safety limit"):
        load_image(str(data / "class0" / "0.png"), SIZE)
    code = main(
        [
            *"run --method protonet --task".split(),
            f"folder:{data}",
            *"--shots 1 --ways 3 --queries 2 --episodes 2 --image-size 32 --quiet --data-dir".split(),
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out.csv"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: image ") and ".png is larger than Pillow's safety limit" in err[0]
