"""Keyframe (reference picture) coding with a conventional still-image codec.

The reference picture is the one large thing a stream sends, so its codec was chosen by
measurement (benchmarks/keyframe_codecs.py, table in docs/bitstream.md): AV1 intra through
SVT-AV1 gives the best PSNR per byte among what ships with PyAV and OpenCV here and decodes
a 256x256 face in ~2 ms. Files encode it with a slow SVT-AV1 preset (~120 ms a picture),
calls with a fast one (~20 ms), since a call codes its reference inside the sending loop.
JPEG, WebP, AVIF (OpenCV) and HEVC intra (x265) stay available: the codec id travels in
each KEYFRAME packet, so a receiver decodes whatever the sender picked.

Codec ids are part of the bitstream spec; never renumber them.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

# SVT-AV1 prints a banner per encoder unless told otherwise; read when an encoder starts.
os.environ.setdefault("SVT_LOG", "1")

import av  # noqa: E402  (after SVT_LOG on purpose)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from facecodec.bitstream.packets import MAX_PAYLOAD  # noqa: E402
from facecodec.codec.encoder_watch import retried, watched  # noqa: E402
from facecodec.codec.scheduling import ordinary_scheduling  # noqa: E402
from facecodec.errors import BitstreamError, FacecodecError  # noqa: E402

JPEG, WEBP, AVIF, HEVC, AV1 = 1, 2, 3, 4, 5
CODEC_IDS: dict[str, int] = {"jpeg": JPEG, "webp": WEBP, "avif": AVIF, "hevc": HEVC, "av1": AV1}
CODEC_NAMES: dict[int, str] = {v: k for k, v in CODEC_IDS.items()}
DEFAULT_CODEC = "av1"
DEFAULT_QUALITY = 60
# SVT-AV1 presets (benchmarks/keyframe_codecs.py, 14 train clips, PSNR-Y at 1-2 KB against
# preset 6): preset 1 +0.75 dB (about 13 % fewer bytes at equal PSNR) for ~120 ms a picture,
# preset 0 +0.97 dB for ~550 ms. Files take preset 1. `fast` (calls, where 120 ms would stall
# ~3 frames of the sending loop, and the trainers, whose shipped networks saw these
# references) takes preset 6, ~20 ms. At one crf preset 1 spends fewer bytes on a slightly
# worse picture; AV1_SLOW_CRF_OFFSET lowers its crf so that a quality gives about the
# picture it gave with preset 6, and the preset saves bytes instead of quality.
AV1_PRESET, AV1_PRESET_FAST = 1, 6
AV1_SLOW_CRF_OFFSET = 3
# SVT-AV1 guesses whether a picture is screen content and, on some face crops (a flat
# border where the crop leaves the frame), searches palette and intra block copy: preset 6
# then took up to 214 ms instead of ~20, stalling a call's sending loop for 6-9 frames. A
# camera picture never is; off, presets 1 and 6 lost no PSNR-Y on the 14 train crops at any
# byte budget (+0.00 to +0.07 dB) and their slowest picture took 207 / 29 ms (519 / 214).
AV1_PARAMS = "scm=0"
MIN_SIDE, MAX_SIDE = 64, 4096  # SVT-AV1 needs 64 px; 4096 bounds decoder allocations
AV1_TEMPORAL_DELIMITER = b"\x12\x00"  # 2 bytes per picture a lone decoder does not need


def _clamp_quality(quality: int) -> int:
    if not isinstance(quality, int | np.integer) or not 0 <= quality <= 100:
        raise FacecodecError(f"keyframe quality must be an integer 0..100, got {quality!r}")
    return int(quality)


def _ladder(quality: int, worst: int, best: int) -> int:
    """Map quality 0..100 linearly onto a quantiser range (worst at 0, best at 100)."""
    return round(worst + (best - worst) * quality / 100)


# --- video-codec intra coding through PyAV ----------------------------------------------------


def encode_intra(encoder: str, rgb: np.ndarray, options: dict[str, str]) -> bytes:
    """One picture as a single intra frame of a video codec (4:2:0, BT.601 limited range).

    Colour conversion goes through OpenCV: swscale's default RGB -> 4:2:0 -> RGB round trip
    alone caps PSNR-Y near 46 dB on face crops, OpenCV's near 57 dB.
    """
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)

    def start() -> bytes:  # a fresh encoder each try (see encoder_watch)
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(encoder, "w"))
        ctx.width, ctx.height = w, h
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.options = options
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = 0

        def code() -> list[av.Packet]:
            with ordinary_scheduling():  # SVT-AV1 starts its threads here
                return list(ctx.encode(frame)) + list(ctx.encode(None))

        return b"".join(bytes(p) for p in watched(code, encoder))

    return retried(start, encoder)


def decoder_context(decoder: str, max_pixels: int) -> av.VideoCodecContext:
    """An FFmpeg decoder that refuses a picture over `max_pixels` from its header, before it
    allocates it: a few hundred bytes of AV1 or HEVC may declare 16384x8704 pixels."""
    ctx = cast(av.VideoCodecContext, av.CodecContext.create(decoder, "r"))
    ctx.options = {"max_pixels": str(max_pixels)}
    return ctx


_AV1_FRAME_OBUS = (3, 6)  # OBU_FRAME_HEADER, OBU_FRAME: one a picture (a shown one, here)


def check_one_av1_picture(data: bytes) -> None:
    """Refuse AV1 data that does not hold exactly one picture, from its OBU headers, before
    it is decoded: the decoder decodes, and keeps, every picture a packet holds before any
    count can be checked (176 kB of 8,000 tiny inter pictures took 1.1 GB)."""
    pictures, at = 0, 0
    while at < len(data):
        header = data[at]
        if header & 0x80:
            raise BitstreamError("image has an AV1 OBU with its forbidden bit set")
        kind, extended, sized = header >> 3 & 0xF, header & 4, header & 2
        at += 2 if extended else 1
        size = len(data) - at  # an OBU without a size runs to the end
        if sized:
            size = shift = 0
            while True:  # LEB128, at most 8 bytes
                if at >= len(data) or shift > 49:
                    raise BitstreamError("image has an AV1 OBU of damaged size")
                size |= (data[at] & 0x7F) << shift
                at, shift = at + 1, shift + 7
                if not data[at - 1] & 0x80:
                    break
        if at + size > len(data):
            raise BitstreamError("image is cut inside an AV1 OBU")
        pictures += kind in _AV1_FRAME_OBUS
        if pictures > 1:
            raise BitstreamError("image holds more than one picture")
        at += size
    if pictures != 1:
        raise BitstreamError("image holds no picture")


def decode_intra(decoder: str, data: bytes) -> np.ndarray:
    """The one picture of `data`, a single intra frame (see `encode_intra`), as RGB."""
    if decoder == "libdav1d":
        check_one_av1_picture(data)
    ctx = decoder_context(decoder, MAX_SIDE * MAX_SIDE)
    ctx.thread_count = 1  # one small picture: threads cost more than they save
    frames = list(ctx.decode(av.Packet(data))) + list(ctx.decode(None))
    if len(frames) != 1:
        raise BitstreamError(f"image holds {len(frames)} pictures, expected 1")
    frame = frames[0]
    if frame.format.name != "yuv420p":
        raise BitstreamError(f"image is {frame.format.name}, expected yuv420p")
    if frame.width % 2 or frame.height % 2:
        raise BitstreamError(f"image has odd sides {frame.width}x{frame.height}")
    return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)


def _enc_hevc(rgb: np.ndarray, quality: int, fast: bool) -> bytes:
    crf = _ladder(quality, 51, 0)
    # info=0 drops the encoder-settings SEI (~1-2 KB of text no decoder needs).
    return encode_intra(
        "libx265",
        rgb,
        {"crf": str(crf), "preset": "medium", "x265-params": "info=0:log-level=error"},
    )


def _enc_av1(rgb: np.ndarray, quality: int, fast: bool) -> bytes:
    crf = _ladder(quality, 63, 1)
    if not fast:
        crf = max(1, crf - AV1_SLOW_CRF_OFFSET)
    preset = AV1_PRESET_FAST if fast else AV1_PRESET
    data = encode_intra("libsvtav1", rgb,
                        {"crf": str(crf), "preset": str(preset), "svtav1-params": AV1_PARAMS})
    return data.removeprefix(AV1_TEMPORAL_DELIMITER)


# --- still-image codecs through OpenCV -------------------------------------------------------


def _cv2_encoder(ext: str, param: int, worst: int, extra: tuple[int, ...] = ()) -> Callable:
    def encode(rgb: np.ndarray, quality: int, fast: bool) -> bytes:
        q = _ladder(quality, worst, 100)
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), [param, q, *extra])
        if not ok:
            raise FacecodecError(f"OpenCV could not encode a {ext} keyframe")
        return buf.tobytes()

    return encode


def _decode_cv2(data: bytes) -> np.ndarray:
    # OpenCV logs every failed decode to stderr; the BitstreamError below says it once.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if bgr is None:
        raise BitstreamError("image could not be decoded")
    return np.ascontiguousarray(bgr[:, :, ::-1])


# What Pillow calls the still-picture formats OpenCV decodes here. OpenCV decodes a picture
# whole at whatever size its header declares (a 964-byte JPEG may declare 32768x32768 and
# take 6 GB); Pillow reads the header alone first.
_PILLOW_FORMATS = {JPEG: "JPEG", WEBP: "WEBP", AVIF: "AVIF"}


def _check_still_header(codec_id: int, data: bytes, size: int) -> None:
    """Refuse a still picture whose header names another format or size than the stream's."""
    fmt = _PILLOW_FORMATS.get(codec_id)
    if fmt is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                found, (w, h) = im.format, im.size
    except Image.DecompressionBombError:
        raise BitstreamError("image declares a huge picture") from None
    except Exception:  # noqa: BLE001 - Pillow fails in many ways on damage
        raise BitstreamError("image header could not be read") from None
    if found != fmt:
        raise BitstreamError(f"image is {found}, expected {fmt}")
    if (w, h) != (size, size):
        raise BitstreamError(f"image declares {w}x{h}, expected {size}x{size}")


@dataclass(frozen=True)
class _Codec:
    encode: Callable[[np.ndarray, int, bool], bytes]  # (picture, quality, fast)
    decode: Callable[[bytes], np.ndarray]
    even_sides: bool  # 4:2:0 video codecs in PyAV need even dimensions


_CODECS: dict[int, _Codec] = {
    JPEG: _Codec(_cv2_encoder(".jpg", cv2.IMWRITE_JPEG_QUALITY, 1), _decode_cv2, False),
    WEBP: _Codec(_cv2_encoder(".webp", cv2.IMWRITE_WEBP_QUALITY, 1), _decode_cv2, False),
    AVIF: _Codec(
        _cv2_encoder(".avif", cv2.IMWRITE_AVIF_QUALITY, 0, (cv2.IMWRITE_AVIF_SPEED, 6)),
        _decode_cv2,
        False,
    ),
    HEVC: _Codec(_enc_hevc, lambda d: decode_intra("hevc", d), True),
    AV1: _Codec(_enc_av1, lambda d: decode_intra("libdav1d", d), True),
}


def codec_id(name: str) -> int:
    try:
        return CODEC_IDS[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(CODEC_IDS)
        raise FacecodecError(f"unknown keyframe codec {name!r} (known: {known})") from None


def encode_image(
    rgb: np.ndarray, quality: int, codec: str | None = None, fast: bool = False
) -> tuple[int, bytes]:
    """Code an (H, W, 3) uint8 RGB picture; returns (codec id, coded bytes).

    `quality` 0..100 maps monotonically onto the codec's quantiser (higher: more bytes).
    `fast` trades bytes for encoding time where the codec has such a setting (AV1).
    """
    cid = codec_id(codec or DEFAULT_CODEC)
    q = _clamp_quality(quality)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FacecodecError(f"keyframe must be (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise FacecodecError(f"keyframe of {w}x{h} px out of range ({MIN_SIDE}..{MAX_SIDE})")
    spec = _CODECS[cid]
    if spec.even_sides and (h % 2 or w % 2):
        raise FacecodecError(f"{CODEC_NAMES[cid]} keyframes need even sides, got {w}x{h}")
    try:
        data = spec.encode(rgb, q, fast)
    except (av.FFmpegError, cv2.error) as e:
        raise FacecodecError(f"{CODEC_NAMES[cid]} keyframe encoding failed: {e}") from None
    if not data:
        raise FacecodecError(f"{CODEC_NAMES[cid]} encoder produced no data")
    return cid, data


def decode_image(codec_id: int, data: bytes, size: int) -> np.ndarray:
    """Decode a keyframe picture that must be `size` x `size`; returns (size, size, 3) uint8.

    Anything that is not such a picture (unknown codec, garbage, wrong dimensions) raises
    `BitstreamError`.
    """
    spec = _CODECS.get(codec_id)
    if spec is None:
        raise BitstreamError(f"unknown keyframe image codec id {codec_id}")
    if not MIN_SIDE <= size <= MAX_SIDE:
        raise BitstreamError(f"keyframe size {size} out of range ({MIN_SIDE}..{MAX_SIDE})")
    if not data or len(data) > MAX_PAYLOAD:
        raise BitstreamError(f"keyframe image of {len(data)} bytes")
    name = CODEC_NAMES[codec_id]
    try:
        _check_still_header(codec_id, bytes(data), size)
        rgb = spec.decode(bytes(data))
    except BitstreamError as e:
        raise BitstreamError(f"{name} keyframe {e}") from None
    except (av.FFmpegError, cv2.error, ValueError, RuntimeError, MemoryError,
            OverflowError) as e:  # OverflowError: a picture over the decoder's max_pixels
        raise BitstreamError(f"{name} keyframe image could not be decoded: {e}") from None
    if rgb.shape != (size, size, 3) or rgb.dtype != np.uint8:
        raise BitstreamError(
            f"{name} keyframe image decodes to {rgb.shape[1]}x{rgb.shape[0]}, "
            f"expected {size}x{size}"
        )
    return rgb


def round_trip(rgb: np.ndarray, quality: int, fast: bool = False) -> np.ndarray:
    """The square picture as a receiver decodes it after the default codec at `quality`."""
    cid, data = encode_image(rgb, quality, fast=fast)
    return decode_image(cid, data, rgb.shape[0])


@dataclass(frozen=True)
class KeyframeCoder:
    """A codec and quality fixed for a stream; see `encode_image` / `decode_image`."""

    codec: str = DEFAULT_CODEC
    quality: int = DEFAULT_QUALITY
    fast: bool = False

    def __post_init__(self) -> None:
        codec_id(self.codec)
        _clamp_quality(self.quality)

    def encode(self, rgb: np.ndarray) -> tuple[int, bytes]:
        return encode_image(rgb, self.quality, self.codec, self.fast)

    @staticmethod
    def decode(codec_id: int, data: bytes, size: int) -> np.ndarray:
        return decode_image(codec_id, data, size)
