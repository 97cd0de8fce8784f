"""What the live transport needs to know about codec packets, and its own control messages.

The transport only routes packets: it reads the fixed-size prefix (sync, type, seq, timestamp)
to pick a data channel and to count gaps, and leaves full validation (length, CRC) to the
decoder, which must reject a damaged packet anyway. Control messages travel as JSON text on the
reliable channel, so they can never be mistaken for a codec packet (always binary).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from facecodec.bitstream.container import MAX_FPS
from facecodec.bitstream.packets import MOTION_TYPES, SYNC
from facecodec.errors import BitstreamError

_PREFIX = struct.Struct("<BBHI")  # sync, type, seq, timestamp
MAX_CONTROL_BYTES = 4096
MAX_HEADER_BYTES = 1 << 16
MAX_QUEUE_MS = 60000.0
MAX_RATE_KBPS = 1e6
MAX_T0 = 1e10  # a start message's clock time, seconds since 1970: up to the year 2286

# What an SCTP packet costs on the wire beyond its own bytes: IP and UDP (28) and the DTLS
# record (13, and 24 for the cipher).
PACKET_OVERHEAD = 65
# What a data-channel message costs on the wire beyond its own bytes, once per SCTP packet:
# PACKET_OVERHEAD, SCTP's common header (12) and DATA chunk header (16). aiortc cuts a
# message into packets of at most FRAGMENT bytes. A message that shares the packet of the
# one sent with it (a call's layer picture rides with its frame's motion packet,
# stream/sctp.py) costs its DATA chunk header alone.
CHUNK_OVERHEAD = 16
MESSAGE_OVERHEAD = PACKET_OVERHEAD + 12 + CHUNK_OVERHEAD
FRAGMENT = 1200


def wire_bytes(message: int, shared: bool = False) -> int:
    """Bytes on the wire of a data-channel message of `message` bytes; `shared`: it goes
    in the packet of another message."""
    if shared and message + CHUNK_OVERHEAD <= FRAGMENT:
        return message + CHUNK_OVERHEAD
    return message + MESSAGE_OVERHEAD * max(1, -(-message // FRAGMENT))


# One-per-frame types, better lost than late. Everything else (keyframes, END, and types a
# newer sender may add) must arrive intact and in order.
LOSSY_TYPES = frozenset(MOTION_TYPES)


@dataclass(frozen=True, slots=True)
class PacketInfo:
    type: int  # a PacketType when known; unknown types are forwarded for newer decoders
    seq: int
    timestamp: int

    @property
    def reliable(self) -> bool:
        return self.type not in LOSSY_TYPES


def peek_packet(data: bytes) -> PacketInfo:
    """Read a packet's routing prefix; raise BitstreamError if it cannot be a packet."""
    if len(data) < _PREFIX.size + 1 + 4:
        raise BitstreamError(f"packet too short ({len(data)} bytes)")
    sync, ptype, seq, timestamp = _PREFIX.unpack_from(data)
    if sync != SYNC:
        raise BitstreamError(f"bad packet sync byte 0x{sync:02x}")
    return PacketInfo(ptype, seq, timestamp)


def seq_ahead(previous: int, current: int) -> int:
    """How far sequence number `current` is past `previous` (u16, wrapping): 1 for the next
    packet, more after a loss, 0 for a repeated or reordered (older) one."""
    delta = (current - previous) & 0xFFFF
    return delta if delta < 0x8000 else 0


# --- control messages (text frames on the reliable channel) ---------------------------------


def start_message(header: bytes, t0: float, fps: float) -> str:
    """Stream start: codec header plus the capture clock, so the receiver can time frame i as
    captured at t0 + i / fps (sender and receiver share a clock on loopback or with NTP)."""
    return json.dumps(
        {"type": "start", "header": base64.b64encode(header).decode(), "t0": t0, "fps": fps}
    )


def keyframe_request() -> str:
    """A picture-loss indication: the receiver lost or could not decode a keyframe."""
    return json.dumps({"type": "pli"})


def resync_request() -> str:
    """The receiver lost motion (a gap in the motion packets' sequence) and holds its
    picture: the sender's next motion packet is to be a RESYNC, which decodes on its own,
    instead of the one its interval would bring (up to a second later)."""
    return json.dumps({"type": "resync"})


def loss_report(fraction: float, queue_ms: float = 0.0, rate_kbps: float | None = None) -> str:
    """A receiver report: the share of motion packets lost since the previous report (as
    RTCP's fraction lost), so the sender can make its packets independent while loss lasts;
    how long they waited in the network's queues (congestion.QueueDelay), so it can see a
    link fill up before its router drops anything; and, once there is one, the rate the
    receiver estimates the link carries (congestion.LinkRate, as a REMB message), which
    the sender's layer keeps within."""
    report: dict[str, Any] = {
        "type": "loss", "fraction": round(min(max(fraction, 0.0), 1.0), 4),
        "queue_ms": round(min(max(queue_ms, 0.0), MAX_QUEUE_MS), 1)}
    if rate_kbps is not None:
        report["rate_kbps"] = round(min(max(rate_kbps, 0.0), MAX_RATE_KBPS), 1)
    return json.dumps(report)


def untrusted_json(text: str | bytes) -> Any:
    """`json.loads` for what another machine sent: JSON nested past the parser's depth raises
    ValueError like any other malformed text (json raises RecursionError, which the callers'
    handling of bad input would let through: a traceback on the signaling server, a call
    ended by one data-channel message)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _within(value: object, lo: float, hi: float) -> float | None:
    """`value` as a float if it is a JSON number within lo..hi; None for anything else (a
    boolean, NaN, an infinity, an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        return None
    return float(value)


def parse_control(text: str) -> dict[str, Any]:
    """Validate a control message; raise BitstreamError on anything unexpected."""
    if len(text) > MAX_CONTROL_BYTES + MAX_HEADER_BYTES * 4 // 3:
        raise BitstreamError("control message too large")
    try:
        msg = untrusted_json(text)
    except ValueError:
        raise BitstreamError("control message is not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BitstreamError("control message has no type")
    kind = msg["type"]
    if kind in ("pli", "resync"):
        return {"type": kind}
    if kind == "loss":
        f = _within(msg.get("fraction"), 0.0, 1.0)
        if f is None:
            raise BitstreamError("loss report needs a fraction between 0 and 1")
        q = _within(msg.get("queue_ms", 0.0), 0.0, MAX_QUEUE_MS)  # absent from older reports
        if q is None:
            raise BitstreamError(f"loss report's queue_ms must be within 0..{MAX_QUEUE_MS:g}")
        report = {"type": "loss", "fraction": f, "queue_ms": q}
        if "rate_kbps" in msg:  # absent until the receiver has an estimate, and from older ones
            r = _within(msg["rate_kbps"], 0.0, MAX_RATE_KBPS)
            if r is None:
                raise BitstreamError(
                    f"loss report's rate_kbps must be within 0..{MAX_RATE_KBPS:g}")
            report["rate_kbps"] = r
        return report
    if kind == "start":
        t0 = _within(msg.get("t0"), 0.0, MAX_T0)
        fps = _within(msg.get("fps"), 1.0, MAX_FPS)  # as its stream's header says
        header = msg.get("header")
        if t0 is None or fps is None:
            raise BitstreamError(f"start message needs a t0 (a clock's time) and fps in "
                                 f"1..{MAX_FPS:g}")
        if not isinstance(header, str):
            raise BitstreamError("start message needs a base64 header")
        try:
            raw = base64.b64decode(header, validate=True)
        except (binascii.Error, ValueError):
            raise BitstreamError("start message header is not base64") from None
        if len(raw) > MAX_HEADER_BYTES:
            raise BitstreamError("stream header too large")
        return {"type": "start", "header": raw, "t0": t0, "fps": fps}
    raise BitstreamError(f"unknown control message type {kind!r}")
