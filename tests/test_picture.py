"""Still pictures (an avatar's portrait): what is read, and what is refused in one line."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import PORTRAITS, require

from facecodec.capture.picture import read_picture
from facecodec.errors import FacecodecError
from facecodec.motion.basis import load_basis
from facecodec.render.edits import Avatar

PORTRAIT = PORTRAITS / "liveportrait_s0.jpg"


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A few hundred bytes that declare a width x height RGB picture (a decompression bomb's
    header: the pixels would be allocated before a decoder finds the data short)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))
    return path


def test_a_portrait_reads_upright_in_rgb() -> None:
    import cv2

    rgb = read_picture(require(PORTRAIT), "portrait")
    bgr = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    assert rgb.dtype == np.uint8 and rgb.shape == bgr.shape
    assert np.array_equal(rgb, bgr[:, :, ::-1])


def test_a_cut_out_portrait_is_drawn_over_grey_not_over_what_its_file_kept(
    tmp_path: Path
) -> None:
    """A portrait with transparency (a cut-out PNG) showed whatever colour its file kept
    under the transparent pixels, black or white by the tool that made it; its opaque pixels
    read as they are, the transparent ones as mid-grey, half-transparent ones between, and
    the transparency follows the picture's EXIF turn."""
    from PIL import Image

    rgb = read_picture(require(PORTRAIT), "portrait")
    h, w = rgb.shape[:2]
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, : w // 4] = 0  # the left quarter cut away
    alpha[:, w // 4: w // 4 + 10] = 128
    for under in (0, 255):
        kept = rgb.copy()
        kept[alpha == 0] = under
        path = tmp_path / f"cut{under}.png"
        Image.fromarray(np.dstack([kept, alpha]), "RGBA").save(path)
        got = read_picture(path, "portrait")
        assert (got[alpha == 0] == 128).all()
        assert np.array_equal(got[alpha == 255], rgb[alpha == 255])
        half = got[alpha == 128].astype(int)
        want = np.round(rgb[alpha == 128] * (128 / 255) + 128 * (127 / 255))
        assert np.abs(half - want).max() <= 1
    # Turned by its EXIF tag (6: shown turned a quarter clockwise), the cut follows the turn.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.dstack([kept, alpha]), "RGBA").save(tmp_path / "turned.png", exif=exif)
    turned = read_picture(tmp_path / "turned.png", "portrait")
    assert turned.shape == (w, h, 3) and (turned[: w // 4] == 128).all()
    # Opaque everywhere: the picture as it is.
    Image.fromarray(np.dstack([rgb, np.full((h, w), 255, np.uint8)]), "RGBA").save(
        tmp_path / "opaque.png")
    assert np.array_equal(read_picture(tmp_path / "opaque.png", "portrait"), rgb)


def test_a_huge_declared_picture_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    for side, message in ((9000, "a portrait of 9000x9000; its sides must be within"),
                          (20000, "declares a portrait larger than 8192x8192"),
                          (65535, "declares a portrait larger than 8192x8192")):
        path = _png_declaring(tmp_path / f"bomb{side}.png", side, side)
        with pytest.raises(FacecodecError, match=message):
            read_picture(path, "portrait")


def test_a_small_portrait_is_refused_for_its_size_not_as_damage(tmp_path: Path) -> None:
    import cv2

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((50, 50, 3), 128, np.uint8))
    with pytest.raises(FacecodecError) as e:
        read_picture(small, "portrait")
    assert str(e.value) == f"{small}: a portrait of 50x50; its sides must be within 64..8192 pixels"


def test_a_truncated_or_damaged_picture_is_refused(tmp_path: Path) -> None:
    data = require(PORTRAIT).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 5])  # libjpeg alone would fill the rest with grey
    with pytest.raises(FacecodecError, match="damaged or truncated image"):
        read_picture(cut, "portrait")
    text = tmp_path / "text.png"
    text.write_text("not a picture")
    with pytest.raises(FacecodecError, match="not an image file"):
        read_picture(text, "portrait")


def test_a_picture_of_floating_point_samples_is_named_as_such(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A TIFF of 32-bit float samples is a picture, but not one OpenCV reads: it was called
    "not an image file", after a warning of OpenCV's own on stderr."""
    from PIL import Image

    path = tmp_path / "float.tiff"
    Image.fromarray(np.random.default_rng(1).random((96, 96), np.float32)).save(path)
    with pytest.raises(FacecodecError, match="a TIFF picture of mode F, which cannot be read"):
        read_picture(path, "portrait")
    assert capfd.readouterr().err == ""


def test_a_folder_or_device_is_not_a_picture(tmp_path: Path) -> None:
    with pytest.raises(FacecodecError, match="is a folder, not a portrait"):
        read_picture(tmp_path, "portrait")
    with pytest.raises(FacecodecError, match="not a regular file"):
        read_picture(Path("/dev/zero"), "portrait")
    with pytest.raises(FacecodecError, match="no such file"):
        read_picture(tmp_path / "none.png", "portrait")


def test_a_portrait_whose_face_the_edge_cuts_is_refused(tmp_path: Path) -> None:
    import cv2

    bgr = cv2.imread(str(require(PORTRAIT)), cv2.IMREAD_COLOR)
    basis = load_basis()
    Avatar(PORTRAIT, basis, 256, 8)  # whole, it is fine
    half = tmp_path / "half.png"
    cv2.imwrite(str(half), bgr[:, bgr.shape[1] // 2:])  # through the middle of the face
    with pytest.raises(FacecodecError, match="cut off by the portrait's edge"):
        Avatar(half, basis, 256, 8)
