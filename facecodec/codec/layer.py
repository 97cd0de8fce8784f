"""The low-resolution layer: the face crop downscaled and coded as low-delay video.

Beside the Motion, a sender may send the same 256 px crop at `size` px (64..256), one
picture every `divisor` frames, coded by a conventional codec in true low delay: no frame
reordering, no look-ahead, one thread (benchmarks/layer_codecs.py chose SVT-AV1 with
`pred-struct=1`; preset 4 in files, 8 in live calls). The receiver fuses it with the warped
reference (render/layer_fusion.py).

Each run of pictures starts with an intra picture from a fresh encoder (at every keyframe,
since the crop may have moved): a receiver that lost a layer picture resets its decoder and
waits for the next intra picture, and the motion is never affected.

Codec ids are part of the bitstream spec (docs/bitstream.md); never renumber them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import cast

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration otherwise

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facecodec.bitstream.container import LAYER_SIZES  # noqa: E402
from facecodec.codec.encoder_watch import EncoderStalled, retried, watched  # noqa: E402
from facecodec.codec.keyframe import (  # noqa: E402
    AV1_TEMPORAL_DELIMITER,
    check_one_av1_picture,
    decoder_context,
)
from facecodec.codec.scheduling import ordinary_scheduling  # noqa: E402
from facecodec.errors import BitstreamError, FacecodecError  # noqa: E402

AV1 = 1  # LAYER_CODEC_NAMES in the container module
FLUSH_LIMIT_S = 1.0  # what an encoder ending its run is given (it returns at once)
MIN_Q, MAX_Q = 20, 70  # SVT-AV1 crf; above 63 only through svtav1-params
LAYER_PAYLOAD_HEADER = 3  # keyframe id u16, flags u8
LAYER_PACKET_OVERHEAD = 13 + LAYER_PAYLOAD_HEADER  # packet framing of a picture under 128 B


@dataclass(frozen=True)
class LayerCodecSpec:
    """A PyAV encoder/decoder pair in low-delay mode and its quality ladder (crf values)."""

    encoder: str
    decoder: str
    bitstream: str
    ladder: tuple[int, ...] = ()
    preset: int = 8  # SVT-AV1's speed preset (decoders ignore it)
    params: str = ""  # more svtav1-params, "key=value:..." (for measurements)

    def options(self, q: int) -> dict[str, str]:
        if self.encoder == "libsvtav1":
            extra = f":{self.params}" if self.params else ""
            return {"preset": str(self.preset),
                    "svtav1-params": f"crf={q}:lp=1:pred-struct=1{extra}"}
        if self.encoder == "libx264":
            return {"preset": "veryfast", "tune": "zerolatency", "x264-params": "bframes=0",
                    "crf": str(q)}
        if self.encoder == "libvpx-vp9":
            return {"deadline": "realtime", "cpu-used": "7", "lag-in-frames": "0",
                    "crf": str(q)}
        raise FacecodecError(f"no low-delay settings for {self.encoder}")


# A file's layer: preset 4 codes a 256 px layer in 10-16 % fewer bytes than preset 8 at equal
# PSNR-Y, VMAF and MS-SSIM (benchmarks/layer_codecs.py --stage presets), at about 115
# pictures a second on one core. A live call keeps preset 8 (about 265 a second): its
# machine also tracks the face, renders and decodes the other side.
SPEC_AV1 = LayerCodecSpec("libsvtav1", "libdav1d", "av1", (63, 58, 52, 46, 40), preset=4)
SPEC_AV1_LIVE = replace(SPEC_AV1, preset=8)
_SPECS = {AV1: SPEC_AV1}


def downscale(crop: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def upsample(picture: np.ndarray, size: int) -> np.ndarray:
    """Bicubic upsampling of a decoded layer picture to the crop size (the LR-only frame)."""
    return cv2.resize(picture, (size, size), interpolation=cv2.INTER_CUBIC)


def _to_frame(rgb: np.ndarray, pts: int) -> av.VideoFrame:
    # OpenCV's BT.601 conversion, as for keyframes (swscale's loses ~10 dB at 4:2:0).
    frame = av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(rgb),
                                                    cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    frame.pts = pts
    return frame


class LayerEncoder:
    """Codes layer pictures one at a time; `restart()` makes the next one intra."""

    def __init__(self, size: int, q: int, spec: LayerCodecSpec = SPEC_AV1) -> None:
        if size not in LAYER_SIZES:
            raise FacecodecError(f"layer size {size} not one of {LAYER_SIZES}")
        if not MIN_Q <= q <= MAX_Q:
            raise FacecodecError(f"layer quantiser {q} out of range ({MIN_Q}..{MAX_Q})")
        self.size, self.q, self.spec = size, q, spec
        self.ctx: av.VideoCodecContext | None = None
        self.pts = 0
        self.stalled = 0  # pictures a fresh encoder coded intra after a stall

    def restart(self) -> None:
        """End the current run: the next picture is intra, from a fresh encoder."""
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            # Tell the encoder the run ended (SVT-AV1 complains on stderr otherwise); low
            # delay holds nothing back, so this returns no packets. The encoder is done
            # with: one that does not answer at once is left (not counted as a stall).
            with contextlib.suppress(av.FFmpegError, EncoderStalled):
                watched(lambda: ctx.encode(None), self.spec.encoder, FLUSH_LIMIT_S)

    def encode(self, crop: np.ndarray) -> tuple[bytes, bool]:
        """(coded picture, intra) of one 256 px crop; the first after a restart is intra,
        and so is one whose encoder stalled (a fresh encoder codes it again)."""
        picture = downscale(crop, self.size)

        tries = 0

        def start() -> tuple[bytes, bool]:
            nonlocal tries
            tries += 1
            try:
                return self._code(picture)
            except BaseException:
                # Abandoned, not flushed: a stalled call (or one an interruption left
                # running) may still be inside it.
                self.ctx = None
                raise

        out = retried(start, self.spec.encoder)
        self.stalled += tries > 1
        return out

    def _code(self, picture: np.ndarray) -> tuple[bytes, bool]:
        intra = self.ctx is None
        if self.ctx is None:
            ctx = cast(av.VideoCodecContext, av.CodecContext.create(self.spec.encoder, "w"))
            ctx.width = ctx.height = self.size
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.thread_count = 1
            if self.spec.encoder == "libvpx-vp9":
                ctx.bit_rate = 0
            ctx.options = self.spec.options(self.q)
            self.ctx, self.pts = ctx, 0
        ctx, pts = self.ctx, self.pts

        def code() -> list[av.Packet]:
            # A fresh encoder starts its threads with its first picture.
            with ordinary_scheduling() if intra else contextlib.nullcontext():
                return ctx.encode(_to_frame(picture, pts))

        packets = watched(code, self.spec.encoder)
        self.pts += 1
        data = b"".join(bytes(p) for p in packets)
        if not data:  # low delay: every picture comes out at once
            raise FacecodecError(f"{self.spec.encoder} held a layer picture back")
        if self.spec.bitstream == "av1":
            data = data.removeprefix(AV1_TEMPORAL_DELIMITER)
        return data, intra


class LayerDecoder:
    """Decodes layer pictures; `reset()` after a loss, then only an intra picture restarts."""

    def __init__(self, size: int, codec_id: int = AV1) -> None:
        spec = _SPECS.get(codec_id)
        if spec is None:
            raise BitstreamError(f"unknown layer codec id {codec_id}")
        self.size, self.spec = size, spec
        self.ctx: av.VideoCodecContext | None = None

    def reset(self) -> None:
        self.ctx = None

    def decode(self, data: bytes, intra: bool) -> np.ndarray | None:
        """The RGB picture, or None while waiting for an intra picture. Raises
        BitstreamError on data that does not decode to one `size` x `size` picture."""
        if intra:
            # A picture declaring more than the layer's size is refused from its header (a
            # 716-byte AV1 picture may declare 16384x8704, decoded whole before any check).
            self.ctx = decoder_context(self.spec.decoder, self.size * self.size)
            self.ctx.thread_count = 1
        if self.ctx is None:
            return None
        try:
            if self.spec.bitstream == "av1":
                check_one_av1_picture(data)
                data = AV1_TEMPORAL_DELIMITER + data
            frames = self.ctx.decode(av.Packet(data))
        except (BitstreamError, av.FFmpegError, ValueError, MemoryError, OverflowError) as e:
            self.ctx = None  # OverflowError: a picture over the decoder's max_pixels
            raise BitstreamError(f"layer picture could not be decoded: {e}") from None
        if len(frames) != 1:
            self.ctx = None
            raise BitstreamError(f"layer picture holds {len(frames)} pictures, expected 1")
        f = frames[0]
        if f.format.name != "yuv420p" or f.width != self.size or f.height != self.size:
            self.ctx = None
            raise BitstreamError(
                f"layer picture is {f.format.name} {f.width}x{f.height}, "
                f"expected yuv420p {self.size}x{self.size}"
            )
        return cv2.cvtColor(f.to_ndarray(), cv2.COLOR_YUV2RGB_I420)


def code_sequence(
    crops: np.ndarray, size: int, q: int, spec: LayerCodecSpec = SPEC_AV1,
    intra_at: frozenset[int] = frozenset(),
) -> tuple[list[bytes], list[np.ndarray]]:
    """Code and decode a run of crops as layer pictures (intra at 0 and at `intra_at`):
    (coded pictures, decoded RGB pictures). Measurement and training use it; the stream
    encoder uses LayerEncoder directly."""
    enc = LayerEncoder(size, q, spec) if spec.encoder == "libsvtav1" else _AnySpec(size, q, spec)
    dec_ctx: av.VideoCodecContext | None = None
    coded, decoded = [], []
    for i, crop in enumerate(crops):
        if i in intra_at:
            enc.restart()
        data, intra = enc.encode(crop)
        if intra:
            dec_ctx = cast(av.VideoCodecContext, av.CodecContext.create(spec.decoder, "r"))
            dec_ctx.thread_count = 1
        assert dec_ctx is not None
        raw = AV1_TEMPORAL_DELIMITER + data if spec.bitstream == "av1" else data
        (frame,) = dec_ctx.decode(av.Packet(raw))
        coded.append(data)
        decoded.append(cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420))
    enc.restart()
    return coded, decoded


class _AnySpec(LayerEncoder):
    """LayerEncoder without the shipped codec's quantiser range (codec comparisons)."""

    def __init__(self, size: int, q: int, spec: LayerCodecSpec) -> None:
        self.size, self.q, self.spec = size, q, spec
        self.ctx = None
        self.pts = 0
