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

TRANSPARENT_GREY = 128.0  # what a portrait's transparent pixels show


def read_picture(path: Path, what: str = "picture") -> np.ndarray:
    """The RGB picture in `path`, upright as a viewer shows it (EXIF orientation applied).

    Pillow reads the size from the header first, so a small file that declares a huge
    picture is refused before gigabytes are allocated for it, and decodes the whole file,
    so a truncated one is refused instead of shown with a grey end. OpenCV then gives the
    pixels (it scales 16-bit pictures and converts CMYK and palettes the same way as for
    every other picture). A format only OpenCV knows goes to it directly, within its own
    pixel limit."""
    check_readable(path, f"a {what}")
    kind, floats = None, False  # what Pillow read it as, if it could
    alpha: np.ndarray | None = None  # its transparency, upright, if it has any
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
                    upright = ImageOps.exif_transpose(im).convert("RGBA")
                    alpha = np.asarray(upright.getchannel("A"))
    except UnidentifiedImageError:
        pass
    except FacecodecError:  # its sides: said as they are, not as damage
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FacecodecError(f"{path}: declares a {what} larger than {MAX_SIDE}x{MAX_SIDE} "
                             "pixels") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders fail in many ways on damage
        raise FacecodecError(f"{path}: damaged or truncated image ({e})") from None
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
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if alpha is not None and alpha.shape == rgb.shape[:2] and (alpha < 255).any():
        # A cut-out: what lies under its transparent pixels is whatever colour the file
        # kept there (often black). Drawn over a plain mid-grey, as a viewer shows it on
        # a neutral background.
        a = alpha[..., None].astype(np.float32) / 255.0
        rgb = np.round(rgb * a + TRANSPARENT_GREY * (1.0 - a)).astype(np.uint8)
    return rgb


def _check_sides(path: Path, what: str, w: int, h: int) -> None:
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise FacecodecError(f"{path}: a {what} of {w}x{h}; its sides must be within "
                             f"{MIN_SIDE}..{MAX_SIDE} pixels")
