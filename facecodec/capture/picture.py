"""Reading a still picture (an avatar's portrait) with one-line errors for bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecodec.capture.video import MAX_SIDE, MIN_SIDE
from facecodec.errors import FacecodecError
from facecodec.files import check_readable

TRANSPARENT_GREY = 128  # what a portrait's transparent pixels show


def read_picture(path: Path, what: str = "picture") -> np.ndarray:
    """The RGB picture in `path`, upright as a viewer shows it (EXIF orientation applied).

    Pillow reads the size from the header first, so a small file that declares a huge
    picture is refused before gigabytes are allocated for it, and decodes the whole file,
    so a truncated one is refused instead of shown with a grey end. OpenCV then gives the
    pixels (it scales 16-bit pictures and converts CMYK and palettes the same way as for
    every other picture), but for a picture with transparency (a cut-out): Pillow gives its
    colour and transparency, turned upright together, and it is drawn over a plain
    mid-grey, as a viewer shows it on a neutral background (under its transparent pixels
    lies whatever colour the file kept there, often black). A format only OpenCV knows goes
    to it directly, within its own pixel limit."""
    check_readable(path, f"a {what}")
    kind, floats = None, False  # what Pillow read it as, if it could
    cut_out: np.ndarray | None = None  # upright RGBA, if it has transparency
    try:
        with warnings.catch_warnings():
            # Pillow's own guard, at over 89 M pixels: far beyond MAX_SIDE, say so in one line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_sides(path, what, *im.size)
                im.load()
                kind = f"{im.format} picture of mode {im.mode}"
                floats = im.mode == "F"  # samples OpenCV cannot take (it warns on stderr)
                if im.has_transparency_data:
                    cut_out = np.asarray(ImageOps.exif_transpose(im).convert("RGBA"))
    except UnidentifiedImageError:
        pass
    except FacecodecError:  # its sides: said as they are, not as damage
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FacecodecError(f"{path}: declares a {what} larger than {MAX_SIDE}x{MAX_SIDE} "
                             "pixels") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders fail in many ways on damage
        raise FacecodecError(f"{path}: damaged or truncated image ({e})") from None
    if cut_out is not None and (cut_out[..., 3] < 255).any():
        _check_sides(path, what, cut_out.shape[1], cut_out.shape[0])
        return _over_grey(cut_out)
    try:
        img = None if floats else cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None and kind is not None:  # such as a TIFF of floating-point samples
        raise FacecodecError(f"{path}: a {kind}, which cannot be read; give an 8- or "
                             "16-bit picture")
    if img is None:
        raise FacecodecError(f"{path}: not an image file")
    _check_sides(path, what, img.shape[1], img.shape[0])
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _over_grey(rgba: np.ndarray) -> np.ndarray:
    """RGB of an RGBA picture drawn over TRANSPARENT_GREY, rounded; in bands of rows, so an
    8192 px portrait does not take gigabytes of temporaries."""
    out = np.empty(rgba.shape[:2] + (3,), np.uint8)
    for r in range(0, len(rgba), 256):
        band = rgba[r:r + 256].astype(np.uint32)
        a = band[..., 3:]
        out[r:r + 256] = (band[..., :3] * a + TRANSPARENT_GREY * (255 - a) + 127) // 255
    return out


def _check_sides(path: Path, what: str, w: int, h: int) -> None:
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise FacecodecError(f"{path}: a {what} of {w}x{h}; its sides must be within "
                             f"{MIN_SIDE}..{MAX_SIDE} pixels")
