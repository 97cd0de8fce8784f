"""The .fcv file: a stream header followed by packets (docs/bitstream.md).

`FcvWriter` never leaves a half-written output: it writes to a hidden temporary file beside
the target and renames it into place only when closed successfully. `FcvReader` yields the
packets of a file one by one and, on damage, raises after the last intact packet, so a
player can show everything up to the damage.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from facecodec.bitstream.packets import (
    EndPayload,
    Packet,
    PacketError,
    PacketType,
    check_text,
    decode_packet,
    encode_packet,
)
from facecodec.errors import BitstreamError, FacecodecError, NotAStream
from facecodec.files import check_readable, publish, temp_beside

# An END packet's size: its payload (a u32) is always 4 bytes.
_END_PACKET_SIZE = len(encode_packet(Packet(PacketType.END, 0, 0, EndPayload(0).to_bytes())))
MAGIC = b"FCDC"
VERSION_MAJOR = 1
# 1.1: the low-resolution layer; 1.2: LAYER_GROUP packets; 1.3: keyframes whose picture is
# the layer's (IMAGE_FROM_LAYER); 1.4: motion coder configs built from the basis (version 2,
# 12 bytes instead of 8 + 12 a dimension); 1.5: coder config version 3 (the surround);
# 1.6: version 4 (the surround as its DCT); 1.7: layer pictures' moves (bits 1-2 of their
# flags); 1.8: move 3, a fade into the next picture; 1.9: RESTORE packets; 1.10: the
# source's pixel shape; 1.11: whether the face is an avatar's. A stream of the sender's own
# face from square pixels is written as 1.9 (motion-only ones with empty layer fields), one
# from other pixels as 1.10, an avatar's as 1.11; an older reader stops at a coder config it
# does not know with one line, drops layer pictures whose moves it does not know as damaged,
# skips RESTORE packets and ignores the pixel shape and the avatar mark.
VERSION_MINOR = 11
SQUARE_PIXELS_MINOR = 9  # the minor version a square-pixel stream is written as
ASPECT_MINOR = 10  # the first minor version with the pixel aspect
AVATAR_MINOR = 11  # the first minor version with the avatar mark
MAX_HEADER = 0xFFFF  # header_length is a u16
# What a receiver says of a stream the header marks as an avatar's, after "the sender" or
# "the other side": whom the picture shows is the viewer's to know.
AVATAR_WORDS = "appears as an avatar (a portrait they drive, not their own face)"
MAX_FPS = 120  # frames a second a stream (and an input video) may have
# A file's frames each have their motion once the face has appeared (frames without it hold
# the last pose), so the frames held between two drawn ones, or after the last one up to the
# END packet's count, are damage's doing: past this many seconds' worth in all (not a gap:
# many short gaps chained would add up to hours) they are refused, and a stream with forged
# timestamps or count does not keep the decoder writing for hours.
MAX_HOLD_S = 10.0
# Before the first face a video may run long: up to this much is held as the first picture.
MAX_LEAD_S = 3600.0
SIZE_STEP = 16  # crop sides are multiples of this: the networks halve the picture four times
# Encoders write rates as fractions with denominators up to 1001 (29.97 = 30000/1001); a
# larger one is no camera's, and past 2^31 video writers cannot take it.
MAX_FPS_DEN = 1_000_000
# Largest stream a reader takes (it holds the file in memory): a day of the richest preset
# is under half of it. Beyond it a "stream" is a device or a file given by mistake.
MAX_STREAM_BYTES = 1 << 30
_LEAD = struct.Struct("<4sBBH")  # magic, major, minor, header_length
_FIXED = struct.Struct("<HIIHHH")  # size, fps_num, fps_den, source w, h, resync_interval
_CRC = struct.Struct("<I")
MIN_HEADER = _LEAD.size + _FIXED.size + 3 + 2 + _CRC.size  # three empty strings, empty config
_ASPECT = struct.Struct("<HH")  # pixel aspect numerator, denominator (minor >= 10)
_LAYER = struct.Struct("<BHB")  # layer codec, layer size, layer divisor (minor >= 1)
# SVT-AV1 needs 64 px; 128 px measured best up to ~5.5 kbps, 256 above (docs/layer.md).
LAYER_SIZES = (64, 96, 128, 192, 256)
LAYER_CODEC_NAMES = {1: "av1"}  # docs/bitstream.md, Layer codecs
MAX_LAYER_DIVISOR = 30


@dataclass(frozen=True, slots=True)
class LayerParams:
    """The low-resolution layer of a stream (header fields of minor version 1): codec id
    (docs/bitstream.md, Layer codecs), picture side, one picture every `divisor` frames, and
    the fusion model the sender made it for."""

    codec: int
    size: int
    divisor: int
    model: str = ""

    def validate(self) -> None:
        if not 1 <= self.codec <= 0xFF:
            raise BitstreamError(f"layer codec id {self.codec} out of range (1..255)")
        if self.size not in LAYER_SIZES:
            raise BitstreamError(f"layer size {self.size} not one of {LAYER_SIZES}")
        if not 1 <= self.divisor <= MAX_LAYER_DIVISOR:
            raise BitstreamError(f"layer divisor {self.divisor} out of range "
                                 f"(1..{MAX_LAYER_DIVISOR})")
        check_text(self.model, "layer model id")


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """Everything a receiver needs before the first packet.

    `size`: side of the square face crop in pixels; `fps_num/fps_den`: frame rate;
    `source_width/height`: the captured frame the crop came from; `basis_id`: expression
    basis the motion refers to; `model_id`: renderer model the stream was tuned for (may be
    empty); `preset`: encoder preset name; `resync_interval`: frames between RESYNC packets
    (0: none); `coder_config`: opaque bytes owned by the motion coder; `layer`: the
    low-resolution layer, if the stream has one (written as minor version 1); `restorer`:
    the reference restorer whose share of change the RESTORE packets give ('' if none;
    minor version 9); `pixel_aspect`: a source pixel's width over its height as shown
    (anamorphic video: the crop is square in stored pixels, so its pictures are shown this
    wide; minor version 10, written only when not 1); `avatar`: the face is a portrait the
    sender drives, not the sender's own (minor version 11, written only for an avatar), so
    a receiver can say whom it shows.
    """

    size: int
    fps_num: int
    fps_den: int
    source_width: int
    source_height: int
    basis_id: str
    model_id: str = ""
    preset: str = ""
    resync_interval: int = 0
    coder_config: bytes = b""
    layer: LayerParams | None = None
    restorer: str = ""
    pixel_aspect: Fraction = Fraction(1)
    avatar: bool = False

    @property
    def minor(self) -> int:
        """The minor version this header is written as: the first that carries what it
        holds, so a square-pixel stream of the sender's own face is 1.9, byte for byte as
        before the pixel aspect and the avatar mark."""
        if self.avatar:
            return AVATAR_MINOR
        return ASPECT_MINOR if self.pixel_aspect != 1 else SQUARE_PIXELS_MINOR

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    def validate(self) -> None:
        if not 128 <= self.size <= 512:
            raise BitstreamError(f"crop size {self.size} out of range (128..512)")
        if self.size % SIZE_STEP:  # the only sizes encoders write, and the renderers draw
            raise BitstreamError(f"crop size {self.size} is not a multiple of {SIZE_STEP}")
        for name, v, hi in (
            ("fps numerator", self.fps_num, 0xFFFFFFFF),
            ("fps denominator", self.fps_den, MAX_FPS_DEN),
            ("source width", self.source_width, 0xFFFF),
            ("source height", self.source_height, 0xFFFF),
        ):
            if not 1 <= v <= hi:
                raise BitstreamError(f"{name} {v} out of range (1..{hi})")
        if not 1 <= self.fps <= MAX_FPS:
            raise BitstreamError(f"frame rate {float(self.fps):.3f} out of range (1..{MAX_FPS})")
        aspect = self.pixel_aspect
        if not (1 <= aspect.numerator <= 0xFFFF and 1 <= aspect.denominator <= 0xFFFF
                and Fraction(1, 10) <= aspect <= 10):
            raise BitstreamError(f"pixel aspect {aspect.numerator}:{aspect.denominator} out of "
                                 "range (0.1..10, terms up to 65535)")
        if not 0 <= self.resync_interval <= 0xFFFF:
            raise BitstreamError(f"resync interval {self.resync_interval} out of range (0..65535)")
        for name, text in (
            ("basis id", self.basis_id),
            ("model id", self.model_id),
            ("preset", self.preset),
            ("restorer id", self.restorer),
        ):
            check_text(text, name)
        if self.layer is not None:
            self.layer.validate()
            if self.layer.size > self.size:
                raise BitstreamError(f"layer size {self.layer.size} is larger than the "
                                     f"{self.size} px crop")
        # The layer's fields are written (empty) without a layer too.
        room = (MAX_HEADER - MIN_HEADER - len(self.basis_id) - len(self.model_id)
                - len(self.preset) - 1 - len(self.restorer) - _LAYER.size - 1
                - (_ASPECT.size if self.minor >= ASPECT_MINOR else 0)
                - (1 if self.minor >= AVATAR_MINOR else 0)
                - (len(self.layer.model) if self.layer is not None else 0))
        if len(self.coder_config) > room:
            raise BitstreamError(f"coder config of {len(self.coder_config)} bytes is too large")

    def to_bytes(self) -> bytes:
        self.validate()
        fields = bytearray(
            _FIXED.pack(
                self.size,
                self.fps_num,
                self.fps_den,
                self.source_width,
                self.source_height,
                self.resync_interval,
            )
        )
        for text in (self.basis_id, self.model_id, self.preset):
            raw = text.encode("ascii")
            fields += bytes([len(raw)]) + raw
        fields += struct.pack("<H", len(self.coder_config)) + bytes(self.coder_config)
        minor = self.minor
        if self.layer is not None:
            lay = self.layer
            model = lay.model.encode("ascii")
            fields += _LAYER.pack(lay.codec, lay.size, lay.divisor) + bytes([len(model)]) + model
        else:
            fields += _LAYER.pack(0, 0, 0) + b"\x00"
        raw = self.restorer.encode("ascii")
        fields += bytes([len(raw)]) + raw
        if minor >= ASPECT_MINOR:
            fields += _ASPECT.pack(self.pixel_aspect.numerator, self.pixel_aspect.denominator)
        if minor >= AVATAR_MINOR:
            fields += b"\x01"  # an avatar: only its header is written as 1.11
        total = _LEAD.size + len(fields) + _CRC.size
        body = _LEAD.pack(MAGIC, VERSION_MAJOR, minor, total) + fields
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> StreamHeader:
        """Parse a header at the start of `data` (bytes after it are ignored)."""
        return parse_header(data)[0]


class HoldBudget:
    """The frames a file decoder holds over gaps in its frames' motion, counted as the spec
    bounds them (MAX_LEAD_S before the first frame drawn, MAX_HOLD_S in all after it):
    `FrameSink` as it writes, `facecodec info` as it reads the same timestamps."""

    def __init__(self, fps: float) -> None:
        self.next = 0  # the frame after the last one drawn or held
        self.started = False  # a frame has been drawn
        self.held_after_start = 0
        self.max_lead = round(MAX_LEAD_S * fps)
        self.max_hold = round(MAX_HOLD_S * fps)

    def hold_to(self, index: int, what: str) -> int:
        """The frames held from `next` up to frame `index` (0 when it is not later),
        counted; BitstreamError when that takes them past their bound. `what` names the
        number in the error ("frame", "the END packet's count of")."""
        gap = index - self.next
        if gap <= 0:
            return 0
        if not self.started and gap > self.max_lead:
            raise BitstreamError(f"{what} {index} with no frame drawn before it: {gap} frames "
                                 "with no motion (damaged timing)")
        if self.started and self.held_after_start + gap > self.max_hold:
            raise BitstreamError(f"{what} {index} after frame {self.next - 1}: "
                                 f"{self.held_after_start + gap} frames with no motion "
                                 "(damaged timing), counted since the face appeared")
        if self.started:
            self.held_after_start += gap
        self.next = index
        return gap

    def drawn(self, index: int) -> None:
        """Frame `index` (not before `next`) is drawn."""
        self.started = True
        self.next = index + 1


def parse_header(data: bytes | bytearray | memoryview
                 ) -> tuple[StreamHeader, int, tuple[int, int]]:
    """Header at the start of `data`: (header, its length in bytes, (major, minor))."""
    view = memoryview(data).cast("B")
    if 0 < len(view) < 4 and MAGIC.startswith(bytes(view)):
        raise BitstreamError("truncated .fcv header in its FCDC signature")
    if len(view) < 4 or bytes(view[:4]) != MAGIC:
        raise NotAStream("not an .fcv file (no FCDC signature)")
    if len(view) < 5:
        raise BitstreamError("truncated .fcv header")
    major = view[4]
    if major != VERSION_MAJOR:
        raise BitstreamError(f"unsupported .fcv version {major} (this build reads {VERSION_MAJOR})")
    if len(view) < _LEAD.size:
        raise BitstreamError("truncated .fcv header")
    _, _, minor, total = _LEAD.unpack_from(view)
    if total < MIN_HEADER:
        raise BitstreamError(f"bad .fcv header length {total} (at least {MIN_HEADER})")
    if len(view) < total:
        raise BitstreamError(f"truncated .fcv header ({len(view)} of {total} bytes)")
    (crc,) = _CRC.unpack_from(view, total - _CRC.size)
    if zlib.crc32(view[: total - _CRC.size]) != crc:
        raise BitstreamError(".fcv header CRC mismatch")
    fields = view[_LEAD.size : total - _CRC.size]
    size, fps_num, fps_den, width, height, resync = _FIXED.unpack_from(fields)
    pos = _FIXED.size
    texts: list[str] = []
    for name in ("basis id", "model id", "preset"):
        text, pos = _parse_text(fields, pos, name)
        texts.append(text)
    if pos + 2 > len(fields):
        raise BitstreamError("truncated .fcv header in coder config")
    (n,) = struct.unpack_from("<H", fields, pos)
    config = bytes(fields[pos + 2 : pos + 2 + n])
    if len(config) != n:
        raise BitstreamError("truncated .fcv header in coder config")
    pos += 2 + n
    layer = None
    if minor >= 1:
        layer, pos = _parse_layer(fields, pos)
    restorer = ""
    if minor >= 9:
        restorer, pos = _parse_text(fields, pos, "restorer id")
    aspect = Fraction(1)
    if minor >= ASPECT_MINOR:
        if pos + _ASPECT.size > len(fields):
            raise BitstreamError("truncated .fcv header in pixel aspect")
        num, den = _ASPECT.unpack_from(fields, pos)
        if not num or not den:
            raise BitstreamError(f"pixel aspect {num}:{den} out of range (0.1..10, terms up "
                                 "to 65535)")
        aspect, pos = Fraction(num, den), pos + _ASPECT.size
    avatar = False
    if minor >= AVATAR_MINOR:
        if pos >= len(fields):
            raise BitstreamError("truncated .fcv header in avatar mark")
        if fields[pos] > 1:
            raise BitstreamError(f"avatar mark {fields[pos]} out of range (0: the sender's "
                                 "own face, 1: an avatar)")
        avatar, pos = bool(fields[pos]), pos + 1
    # A later minor version may append fields; this build reads the ones it knows.
    if pos != len(fields) and minor <= VERSION_MINOR:
        raise BitstreamError(f".fcv header has {len(fields) - pos} unexpected trailing bytes")
    basis_id, model_id, preset = texts
    header = StreamHeader(size, fps_num, fps_den, width, height, basis_id, model_id, preset,
                          resync, config, layer, restorer, aspect, avatar)
    header.validate()
    return header, total, (major, minor)


def _parse_text(fields: memoryview, pos: int, name: str) -> tuple[str, int]:
    """A u8-length-prefixed ASCII field at `pos`: (text, position after it)."""
    if pos >= len(fields):
        raise BitstreamError(f"truncated .fcv header in {name}")
    n = fields[pos]
    raw = bytes(fields[pos + 1 : pos + 1 + n])
    if len(raw) != n:
        raise BitstreamError(f"truncated .fcv header in {name}")
    try:
        return raw.decode("ascii"), pos + 1 + n
    except UnicodeDecodeError:
        raise BitstreamError(f".fcv header {name} is not ASCII") from None


def _parse_layer(fields: memoryview, pos: int) -> tuple[LayerParams | None, int]:
    """The layer fields of minor version 1 at `pos`: (layer or None, position after them)."""
    if pos + _LAYER.size + 1 > len(fields):
        raise BitstreamError("truncated .fcv header in layer fields")
    codec, side, divisor = _LAYER.unpack_from(fields, pos)
    model, pos = _parse_text(fields, pos + _LAYER.size, "layer model id")
    if codec == 0:
        if side or divisor or model:
            raise BitstreamError("layer fields set without a layer codec")
        return None, pos
    return LayerParams(codec, side, divisor, model), pos


class FcvWriter:
    """Write an .fcv file atomically: header first, then packets; rename on `close()`.

    Use as a context manager: an exception inside the block, or `abort()`, deletes the
    temporary file and leaves any existing file at `path` untouched.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.bytes_written = 0
        self._header_written = False
        fd, self._tmp = temp_beside(self.path)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def __enter__(self) -> FcvWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def closed(self) -> bool:
        return self._file is None

    def _write(self, data: bytes) -> None:
        if self._file is None:
            raise FacecodecError(f"{self.path}: writer is closed")
        try:
            self._file.write(data)
        except OSError as e:
            self.abort()
            raise FacecodecError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.bytes_written += len(data)

    def write_header(self, header: StreamHeader) -> None:
        if self._header_written:
            raise FacecodecError(f"{self.path}: stream header written twice")
        self._write(header.to_bytes())
        self._header_written = True

    def write_packet(self, packet: Packet) -> int:
        """Append one packet; returns its size in bytes."""
        if not self._header_written:
            raise FacecodecError(f"{self.path}: write the stream header before packets")
        data = encode_packet(packet)
        self._write(data)
        return len(data)

    def close(self) -> None:
        """Finish the file and move it into place (no-op once closed or aborted)."""
        if self._file is None:
            return
        if not self._header_written:
            self.abort()
            raise FacecodecError(f"{self.path}: no stream header written; nothing saved")
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        except OSError as e:
            with contextlib.suppress(OSError):
                f.close()
            self._tmp.unlink(missing_ok=True)
            raise FacecodecError(f"cannot write {self.path}: {e.strerror or e}") from None
        publish(self._tmp, self.path)

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._file is not None:
            f, self._file = self._file, None
            with contextlib.suppress(OSError):
                f.close()
        self._tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class SkippedPacket:
    """A packet of a type this build does not know, skipped by the reader."""

    index: int
    type: int
    seq: int
    offset: int
    size: int


def _read_at_most(f: BinaryIO, limit: int) -> tuple[bytes, bool] | None:
    """All of `f` and True, or None when it holds more than `limit` bytes. A file's size is
    known beforehand; a pipe's is read in pieces (one read of `limit` would reserve it all),
    and only until what came cannot begin a stream (then with False): damage, or bytes after
    the END packet. The bytes after that change nothing the reader says, and a pipe may
    never end (`<(cat x.fcv /dev/urandom)` was read to the limit, a GiB, before a word)."""
    st = os.fstat(f.fileno())
    if st.st_size > limit:
        return None
    data, damage = bytearray(), None if stat.S_ISREG(st.st_mode) else _DamageScan()
    while piece := f.read(1 << 20):
        data += piece
        if len(data) > limit:
            return None
        if damage is not None and damage.found(data):
            return bytes(data), False
    return bytes(data), True


class _DamageScan:
    """Finds, piece by piece, where a stream read so far stops being the start of a whole
    one; each packet is checked once."""

    def __init__(self) -> None:
        self.offset: int | None = None  # of the next packet, once the header is whole
        self.ended = False

    def found(self, data: bytearray) -> bool:
        if self.ended:
            return True  # bytes after the END packet
        if self.offset is None:
            try:
                self.offset = parse_header(data)[1]
            except BitstreamError as e:
                return "truncated" not in str(e) or len(data) > MAX_HEADER
        while self.offset < len(data):
            try:
                packet, end = decode_packet(data, self.offset)
            except PacketError as e:
                return not e.reason.startswith("truncated")
            self.offset = end
            if packet.type == PacketType.END:
                self.ended = True
                return end < len(data)
        return False


MAX_SKIPPED_LISTED = 1000


class FcvReader:
    """Read an .fcv file: `header` at once, packets by iterating.

    Iteration yields packets of known types in file order and records unknown types in
    `skipped`. On damage it raises `BitstreamError` naming the packet, after yielding every
    packet before it. `entries()` yields the same packets with their offset and size.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        check_readable(self.path, "an .fcv stream", pipe=True)
        try:
            with self.path.open("rb") as f:  # a pipe (`<(cat x.fcv)`) too, until its END
                read = _read_at_most(f, MAX_STREAM_BYTES)
        except OSError as e:
            raise FacecodecError(f"cannot read {self.path}: {e.strerror or e}") from None
        if read is None:
            raise FacecodecError(f"{self.path}: over {MAX_STREAM_BYTES >> 20} MiB, too large "
                                 "for an .fcv stream")
        self._data, self._whole = read
        try:
            self.header, self.header_size, self.version = parse_header(self._data)
        except BitstreamError as e:
            kind = NotAStream if isinstance(e, NotAStream) else BitstreamError
            raise kind(f"{self.path}: {e}") from None
        self.file_size = len(self._data)
        self.skipped: list[SkippedPacket] = []  # the first MAX_SKIPPED_LISTED of them
        self.skipped_types: dict[int, list[int]] = {}  # all of them: type -> [packets, bytes]

    def __iter__(self) -> Iterator[Packet]:
        return (packet for packet, _, _ in self.entries())

    def entries(self) -> Iterator[tuple[Packet, int, int]]:
        """(packet, byte offset, size in bytes) of each packet of a known type."""
        self.skipped.clear()
        self.skipped_types.clear()
        offset, index = self.header_size, 0
        while offset < len(self._data):
            try:
                packet, end = decode_packet(self._data, offset)
            except PacketError as e:
                raise BitstreamError(f"packet {index} ({e.where()}): {e.reason}") from None
            if packet.known:
                yield packet, offset, end - offset
            else:
                kind = self.skipped_types.setdefault(packet.type, [0, 0])
                kind[0] += 1
                kind[1] += end - offset
                if len(self.skipped) < MAX_SKIPPED_LISTED:  # a record each would grow without
                    self.skipped.append(  # bound: 15 times a file of 13-byte packets
                        SkippedPacket(index, packet.type, packet.seq, offset, end - offset))
            if packet.type == PacketType.END and end != len(self._data):
                raise BitstreamError(
                    f"packet {index + 1} (at byte {end}): {'' if self._whole else 'at least '}"
                    f"{len(self._data) - end} bytes after the END packet"
                )
            offset, index = end, index + 1

    def frames_said(self) -> int | None:
        """The frame count of the END packet the stream ends with, read from its last bytes
        alone (a progress bar's total, known before the packets are read), or None: the
        stream does not end with an intact END packet."""
        at = len(self._data) - _END_PACKET_SIZE
        if at < self.header_size:
            return None
        try:
            packet, end = decode_packet(self._data, at)
            if packet.type != PacketType.END or end != len(self._data):
                return None
            return EndPayload.from_bytes(packet.payload).total_frames
        except BitstreamError:
            return None


def read_fcv(path: str | os.PathLike[str]) -> tuple[StreamHeader, Iterator[Packet]]:
    """The header of an .fcv file and an iterator over its packets (see `FcvReader`)."""
    reader = FcvReader(path)
    return reader.header, iter(reader)


__all__ = [
    "MAGIC",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "FcvReader",
    "FcvWriter",
    "LayerParams",
    "SkippedPacket",
    "StreamHeader",
    "parse_header",
    "read_fcv",
]
