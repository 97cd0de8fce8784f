"""Packets of the .fcv bitstream and their payloads (docs/bitstream.md is the normative spec).

Every packet carries its own length and CRC, so it parses on its own: the same bytes are
written to .fcv files and sent as single WebRTC data-channel messages. Parsing is defensive:
any byte string either decodes or raises `BitstreamError`; every length is bounded before
anything is allocated.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from facecodec.errors import BitstreamError

SYNC = 0xFC
MAX_PAYLOAD = 16 * 1024 * 1024  # 16 MiB: far above any keyframe, small enough to allocate
_PREFIX = struct.Struct("<BBHI")  # sync, type, seq, timestamp
_CRC = struct.Struct("<I")
MAX_VARINT_BYTES = 4  # 4 x 7 bits cover MAX_PAYLOAD
MIN_PACKET = _PREFIX.size + 1 + _CRC.size  # empty payload: 13 bytes


class PacketType(IntEnum):
    KEYFRAME = 1
    MOTION = 2
    RESYNC = 3  # a MOTION packet whose first frame is intra-coded
    END = 4
    LAYER = 5  # one picture of the low-resolution layer (minor version 1)
    LAYER_GROUP = 6  # several layer pictures in one packet (minor version 2; files)
    RESTORE = 7  # how much of the restorer's change a keyframe's picture takes (minor 9)


_KNOWN_TYPES = frozenset(int(t) for t in PacketType)
LAYER_TYPES = (PacketType.LAYER, PacketType.LAYER_GROUP)  # what carries layer pictures
MOTION_TYPES = (PacketType.MOTION, PacketType.RESYNC)  # what carries a segment's Motions
# Keyframe image codec id with no image bytes (minor version 3): the reference picture is the
# stream's layer picture of the keyframe's frame, an intra picture as large as the crop.
IMAGE_FROM_LAYER = 6


def type_name(ptype: int) -> str:
    """`MOTION` for a known type, `type 200` for an unknown one (error messages, reports)."""
    try:
        return PacketType(ptype).name
    except ValueError:
        return f"type {ptype}"


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet. `type` is a `PacketType` when known, else the raw byte (forward compat)."""

    type: int
    seq: int
    timestamp: int
    payload: bytes

    @property
    def known(self) -> bool:
        return int(self.type) in _KNOWN_TYPES


class PacketError(BitstreamError):
    """A packet that cannot be decoded; keeps where it was so a reader can name it."""

    def __init__(self, reason: str, offset: int, ptype: int | None = None, seq: int | None = None):
        self.reason, self.offset, self.ptype, self.seq = reason, offset, ptype, seq
        super().__init__(f"packet ({self.where()}): {reason}")

    def where(self) -> str:
        parts = [] if self.ptype is None else [type_name(self.ptype)]
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        parts.append(f"at byte {self.offset}")
        return ", ".join(parts)


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit set on all but the last."""
    if not 0 <= n <= MAX_PAYLOAD:
        raise BitstreamError(f"payload length {n} out of range (0..{MAX_PAYLOAD})")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_varint(buf: memoryview, pos: int) -> tuple[int | None, int, str]:
    """(value, next position, error); value None with a reason if absent or invalid."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return None, pos, "truncated"
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:  # an overlong encoding would give one length two spellings
                return None, pos, "non-minimal payload length"
            if value > MAX_PAYLOAD:
                return None, pos, f"payload length {value} over the {MAX_PAYLOAD}-byte limit"
            return value, pos + i + 1, ""
    return None, pos, "payload length over 4 bytes"


def encode_packet(p: Packet) -> bytes:
    """Sync, type, seq, timestamp, LEB128 length, payload, CRC-32 of all that (little endian)."""
    if not 0 <= int(p.type) <= 0xFF:
        raise BitstreamError(f"packet type {p.type} out of range (0..255)")
    if not 0 <= p.seq <= 0xFFFF:
        raise BitstreamError(f"sequence number {p.seq} out of range (0..65535)")
    if not 0 <= p.timestamp <= 0xFFFFFFFF:
        raise BitstreamError(f"timestamp {p.timestamp} out of range (u32)")
    body = (
        _PREFIX.pack(SYNC, int(p.type), p.seq, p.timestamp)
        + encode_varint(len(p.payload))
        + bytes(p.payload)
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode_packet(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Packet, int]:
    """Decode the packet starting at `offset`; return it and the offset just past it.

    Raises `PacketError` (a `BitstreamError`) when the bytes there are not a whole, intact
    packet; its `reason` is "truncated ..." when the buffer ends inside the packet.
    """
    view = memoryview(buf).cast("B")
    if not 0 <= offset <= len(view):
        raise PacketError("offset outside the buffer", offset)
    avail = len(view) - offset
    if avail < _PREFIX.size:
        raise PacketError(f"truncated ({avail} of at least {MIN_PACKET} bytes)", offset)
    sync, ptype, seq, timestamp = _PREFIX.unpack_from(view, offset)
    if sync != SYNC:
        raise PacketError(f"bad sync byte 0x{sync:02x} (expected 0x{SYNC:02X})", offset)
    length, pos, err = _decode_varint(view, offset + _PREFIX.size)
    if length is None:
        if err == "truncated":
            err = f"truncated ({avail} of at least {MIN_PACKET} bytes)"
        raise PacketError(err, offset, ptype, seq)
    end = pos + length
    total = end + _CRC.size - offset
    if end + _CRC.size > len(view):
        raise PacketError(f"truncated ({avail} of {total} bytes)", offset, ptype, seq)
    (crc,) = _CRC.unpack_from(view, end)
    if zlib.crc32(view[offset:end]) != crc:
        raise PacketError("CRC mismatch", offset, ptype, seq)
    kind = PacketType(ptype) if ptype in _KNOWN_TYPES else ptype
    return Packet(kind, seq, timestamp, bytes(view[pos:end])), end + _CRC.size


def is_intact(data: bytes) -> bool:
    """Whether `data` is one whole packet whose CRC holds."""
    try:
        return decode_packet(data)[1] == len(data)
    except BitstreamError:
        return False


# --- payloads -------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor over a payload; every short read is a BitstreamError."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = memoryview(data), 0, what

    def take(self, n: int, field: str) -> memoryview:
        if n > len(self.data) - self.pos:
            raise BitstreamError(f"{self.what} payload truncated in {field}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, field))

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise BitstreamError(
                f"{self.what} payload has {len(self.data) - self.pos} unexpected trailing bytes"
            )


MAX_TEXT = 64  # basis_id, model_id, preset, restorer


def check_text(value: str, field: str) -> bytes:
    """A short printable-ASCII name (model and basis ids, preset) as its bytes."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BitstreamError(f"{field} must be a string of at most {MAX_TEXT} characters")
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise BitstreamError(f"{field} {value!r} must be printable ASCII")
    return value.encode("ascii")


def _check_u16(value: int, field: str) -> None:
    if not 0 <= value <= 0xFFFF:
        raise BitstreamError(f"{field} {value} out of range (0..65535)")


def _as_f32(values: object, field: str) -> tuple[float, ...]:
    """Round to float32 now, so the payload object holds exactly what the receiver reads."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BitstreamError(f"{field} must be numbers") from None
    with np.errstate(over="ignore"):  # out-of-range values become inf and fail validation
        return tuple(float(v) for v in arr.astype(np.float32))


def _check_f32(value: float, field: str) -> None:
    if not math.isfinite(value):
        raise BitstreamError(f"{field} {value} is not a finite float32")


@dataclass(frozen=True, slots=True)
class KeyframePayload:
    """A reference picture: the square crop it was cut from, its motion, its coded image.

    `crop` is (x, y, side) of the crop's top-left corner and side in source pixels, so a
    receiver can paste the face back into the source frame. `motion` is the flat
    `Motion.to_vector()` of the picture. Both are float32 on the wire and are rounded to
    float32 on construction, so sender and receiver see the same numbers.
    """

    keyframe_id: int
    crop: tuple[float, float, float]
    codec_id: int
    motion: tuple[float, ...]
    image: bytes

    MAX_MOTION = 255

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", _as_f32(self.crop, "keyframe crop"))
        object.__setattr__(self, "motion", _as_f32(self.motion, "keyframe motion"))

    def validate(self) -> None:
        _check_u16(self.keyframe_id, "keyframe id")
        if len(self.crop) != 3:
            raise BitstreamError(f"keyframe crop needs 3 values, got {len(self.crop)}")
        for name, v in zip(("crop x", "crop y", "crop side"), self.crop, strict=True):
            _check_f32(v, name)
        if not self.crop[2] > 0:
            raise BitstreamError(f"keyframe crop side {self.crop[2]} must be positive")
        if not 0 <= self.codec_id <= 0xFF:
            raise BitstreamError(f"image codec id {self.codec_id} out of range (0..255)")
        if len(self.motion) > self.MAX_MOTION:
            raise BitstreamError(f"{len(self.motion)} motion values (at most {self.MAX_MOTION})")
        for v in self.motion:
            _check_f32(v, "keyframe motion value")
        if self.codec_id == IMAGE_FROM_LAYER:
            if self.image:
                raise BitstreamError("keyframe drawn from the layer carries image data")
        elif not self.image:
            raise BitstreamError("keyframe has no image data")

    def to_bytes(self) -> bytes:
        self.validate()
        return (
            struct.pack("<H3fBB", self.keyframe_id, *self.crop, self.codec_id, len(self.motion))
            + np.asarray(self.motion, dtype="<f4").tobytes()
            + bytes(self.image)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyframePayload:
        r = _Reader(data, "keyframe")
        keyframe_id, x, y, side, codec_id, count = r.unpack("H3fBB", "fixed fields")
        motion = np.frombuffer(r.take(4 * count, "motion"), dtype="<f4")
        p = cls(
            keyframe_id,
            (float(x), float(y), float(side)),
            codec_id,
            tuple(float(v) for v in motion),
            r.rest(),
        )
        p.validate()
        return p


@dataclass(frozen=True, slots=True)
class MotionPayload:
    """`frame_count` frames of coded motion (MOTION or RESYNC) relative to one keyframe."""

    keyframe_id: int
    frame_count: int
    data: bytes

    def validate(self) -> None:
        _check_u16(self.keyframe_id, "keyframe id")
        if not 1 <= self.frame_count <= 255:
            raise BitstreamError(f"motion frame count {self.frame_count} out of range (1..255)")

    def to_bytes(self) -> bytes:
        self.validate()
        return struct.pack("<HB", self.keyframe_id, self.frame_count) + bytes(self.data)

    @classmethod
    def from_bytes(cls, data: bytes) -> MotionPayload:
        r = _Reader(data, "motion")
        keyframe_id, frame_count = r.unpack("HB", "fixed fields")
        p = cls(keyframe_id, frame_count, r.rest())
        p.validate()
        return p


# How a receiver brings a layer picture to the frames after its own, until the next one
# (layer flags bits 1-2, minor version 7; 3 since 8). The sender picks per picture what
# draws those frames closest to the source: on the 6 validation clips no one way wins
# everywhere (docs/layer.md, "Frames between layer pictures").
MOVE_MOTION = 0  # warped by the motion since its frame (mesh warp), as before 1.7
MOVE_NONE = 1  # shown as it is
MOVE_FLOW = 2  # moved on by the optical flow from the run's previous picture to it
# Faded into the next picture of the same crop, by the frames since it (minor version 8).
# Only a receiver that holds the next picture can: a file's groups carry it ahead of the
# frames; a picture whose next one has not come is shown as it is.
MOVE_BETWEEN = 3
MOVES = (MOVE_MOTION, MOVE_NONE, MOVE_FLOW, MOVE_BETWEEN)


def _check_move(move: int) -> None:
    if move not in MOVES:
        raise BitstreamError(f"layer picture move {move} is not one of {MOVES}")


def _layer_flags(intra: bool, move: int) -> int:
    return int(bool(intra)) | move << 1


def _read_layer_flags(flags: int) -> tuple[bool, int]:
    """(intra, move) of a layer picture's flags byte."""
    if flags & ~0b111:
        raise BitstreamError(f"layer flags 0x{flags:02x} set reserved bits")
    move = flags >> 1
    _check_move(move)
    return bool(flags & 1), move


@dataclass(frozen=True, slots=True)
class LayerPayload:
    """One coded picture of the low-resolution layer, cut with keyframe `keyframe_id`'s crop;
    `intra`: it starts a run of pictures (a decoder may start or restart there); `move`: how
    the receiver brings it to the frames after its own (MOVE_*)."""

    keyframe_id: int
    intra: bool
    picture: bytes
    move: int = MOVE_MOTION

    def validate(self) -> None:
        _check_u16(self.keyframe_id, "keyframe id")
        _check_move(self.move)
        if not self.picture:
            raise BitstreamError("layer packet has no picture data")

    def to_bytes(self) -> bytes:
        self.validate()
        return (struct.pack("<HB", self.keyframe_id, _layer_flags(self.intra, self.move))
                + bytes(self.picture))

    @classmethod
    def from_bytes(cls, data: bytes) -> LayerPayload:
        r = _Reader(data, "layer")
        keyframe_id, flags = r.unpack("HB", "fixed fields")
        intra, move = _read_layer_flags(flags)
        p = cls(keyframe_id, intra, r.rest(), move)
        p.validate()
        return p


@dataclass(frozen=True, slots=True)
class LayerGroupPayload:
    """Consecutive layer pictures of one keyframe's crop in one packet (a file's half
    second): 3-4 bytes of framing a picture instead of a LAYER packet's 16-17. `pictures`:
    (frame offset from the packet's timestamp, intra, coded picture, move), offsets
    increasing from 0."""

    keyframe_id: int
    pictures: tuple[tuple[int, bool, bytes, int], ...]

    def validate(self) -> None:
        _check_u16(self.keyframe_id, "keyframe id")
        if not 1 <= len(self.pictures) <= 255:
            raise BitstreamError(f"layer group of {len(self.pictures)} pictures (1..255)")
        last = -1
        for offset, _, picture, move in self.pictures:
            if not last < offset <= 255 or (last < 0 and offset != 0):
                raise BitstreamError("layer group frame offsets must rise from 0 (max 255)")
            if not picture:
                raise BitstreamError("layer group picture has no data")
            _check_move(move)
            last = offset

    def to_bytes(self) -> bytes:
        self.validate()
        out = bytearray(struct.pack("<HB", self.keyframe_id, len(self.pictures)))
        for offset, intra, picture, move in self.pictures:
            out += (bytes([offset, _layer_flags(intra, move)]) + encode_varint(len(picture))
                    + picture)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> LayerGroupPayload:
        r = _Reader(data, "layer group")
        keyframe_id, count = r.unpack("HB", "fixed fields")
        pictures = []
        for _ in range(count):
            offset, flags = r.unpack("BB", "picture fields")
            intra, move = _read_layer_flags(flags)
            n, r.pos, err = _decode_varint(r.data, r.pos)
            if n is None:
                raise BitstreamError(f"layer group picture length: {err}")
            pictures.append((offset, intra, bytes(r.take(n, "picture")), move))
        r.done()
        p = cls(keyframe_id, tuple(pictures))
        p.validate()
        return p


@dataclass(frozen=True, slots=True)
class RestorePayload:
    """How much of the restorer's change the picture of keyframe `keyframe_id` takes:
    `share` 255ths (0: the picture as decoded, 255: as restored). The restorer is the one
    the stream header names (`restorer`).

    The sender holds the original: it decodes its own keyframe picture, runs the restorer
    on it and measures which share of the change brings the picture closest to the
    original. A receiver whose restorer is another model ignores the packet.
    """

    keyframe_id: int
    share: int

    def validate(self) -> None:
        _check_u16(self.keyframe_id, "keyframe id")
        if not 0 <= self.share <= 0xFF:
            raise BitstreamError(f"restore share {self.share} out of range (0..255)")

    @property
    def fraction(self) -> float:
        return self.share / 255.0

    def to_bytes(self) -> bytes:
        self.validate()
        return struct.pack("<HB", self.keyframe_id, self.share)

    @classmethod
    def from_bytes(cls, data: bytes) -> RestorePayload:
        r = _Reader(data, "restore")
        keyframe_id, share = r.unpack("HB", "fields")
        r.done()
        return cls(keyframe_id, share)


@dataclass(frozen=True, slots=True)
class EndPayload:
    """End of stream: the number of frames it holds (lets a reader tell a clean end)."""

    total_frames: int

    def to_bytes(self) -> bytes:
        if not 0 <= self.total_frames <= 0xFFFFFFFF:
            raise BitstreamError(f"total frame count {self.total_frames} out of range (u32)")
        return struct.pack("<I", self.total_frames)

    @classmethod
    def from_bytes(cls, data: bytes) -> EndPayload:
        r = _Reader(data, "end")
        (total,) = r.unpack("I", "frame count")
        r.done()
        return cls(total)


def layer_pictures(packet: Packet) -> list[tuple[int, int, bool, bytes, int]]:
    """(frame, keyframe id, intra, coded picture, move) of each picture in a LAYER or
    LAYER_GROUP packet; BitstreamError if its payload is malformed."""
    if packet.type == PacketType.LAYER_GROUP:
        g = LayerGroupPayload.from_bytes(packet.payload)
        return [(packet.timestamp + o, g.keyframe_id, intra, data, move)
                for o, intra, data, move in g.pictures]
    p = LayerPayload.from_bytes(packet.payload)
    return [(packet.timestamp, p.keyframe_id, p.intra, p.picture, p.move)]
