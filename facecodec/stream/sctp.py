"""The call's data channels' SCTP packets: acknowledgements delayed, and chunks bundled as
RFC 4960 has them.

aiortc's SCTP answers every packet carrying data with a packet of its own holding one SACK
chunk (its `_send_chunk`: "no bundling for now"). A call's motion goes as 30 small packets
a second, so the other side sent 30 acknowledgements a second back, each some 95 bytes with
its IP, UDP, DTLS and SCTP headers: 24 kbps, more than the motion's own payload. RFC 4960
(6.2) asks for a SACK for at least every second packet received and within 200 ms of
unacknowledged data, and at once when data came out of order or twice (6.7); and a SACK may
ride in the packet of the data the acknowledging side sends anyway (6.10, bundling). This
does both:

- a SACK with no gap or duplicate report is held; the next SACK built (the second packet
  since) goes at once and replaces it, and one still held after `SACK_DELAY_S` goes then;
- a held SACK goes in front of the next data (or FORWARD TSN) chunks this side sends, in
  one packet, when they fit in aiortc's packet size; before any other chunk, on its own.

aiortc also sends each DATA chunk in a packet of its own, though the messages a sender
hands over together could share one (6.10). A call's layer picture and the motion packet
of its frame are two messages on two channels, sent together: as two packets the picture
cost 77 bytes of headers more (IP, UDP, DTLS and SCTP's common header; 9 kbps at 15
pictures a second). And under loss the motion channel (no retransmissions) has aiortc
send a FORWARD TSN chunk, in a packet of its own, each time it gives up a lost packet
and at every acknowledgement until the other side has moved past it: through a full
48 kbps link a sender sent 438 of them in 20 s beside 248 packets of data, more load on
the link whose loss caused them (every acknowledgement that came while the last one
was on its way, a round trip of 600 ms through a full queue, drew another). DATA chunks
aiortc sends in one go (one pass of its transmit loop, with no wait between them) now go
in one packet, up to its packet size: each is held until the running task yields, and the
chunks held by then go together, behind a held SACK that fits. A FORWARD TSN waits up to
`FORWARD_TSN_DELAY_S` to go in front of the next data (RFC 3758 lets it wait to be
bundled), and a later one replaces it.

A layer's intra picture (1-2 KB) or a keyframe (4 KB without a layer) goes as packets in a
row, where a thin link's router holds a few hundred ms (through 40 kbps, 500 ms is 2.5
KB): it dropped the rest, SCTP retransmitted, and the loss was taken for a full link. So,
as WebRTC's pacer does for its media, the packets carrying data can be spaced to a rate
(`pace_data`; a call with a layer sets it from the receiver's estimate while the link is
full, codec/stream.py StreamEncoder.pace_kbps): the queue is then the sender's, which
drops nothing. Acknowledgements and other control chunks going alone are not held.
"""

from __future__ import annotations

import asyncio
import math
import struct
import weakref
from collections import deque
from collections.abc import Coroutine
from struct import pack
from typing import Any, Generic, TypeVar

from aiortc.rtcsctptransport import (
    SCTP_MAX_PACKET_LENGTH,
    Chunk,
    DataChunk,
    ForwardTsnChunk,
    RTCSctpTransport,
    SackChunk,
)
from google_crc32c import value as crc32c  # SCTP's checksum, as aiortc computes it

from facecodec.stream.wire import PACKET_OVERHEAD

SACK_DELAY_S = 0.2  # RFC 4960 6.2: within 200 ms of the arrival of unacknowledged data
# A FORWARD TSN waits this long for data to ride with; a call sends motion every 33-80 ms.
FORWARD_TSN_DELAY_S = 0.2
_COMMON_HEADER = 12

_ORIGINAL_SEND_CHUNK = RTCSctpTransport._send_chunk
C = TypeVar("C", SackChunk, ForwardTsnChunk)


class _Waiting(Generic[C]):
    """A chunk held back, and the timer that sends it."""

    def __init__(self) -> None:
        self.chunk: C | None = None
        self.timer: asyncio.TimerHandle | None = None

    def take(self) -> C | None:
        chunk, self.chunk = self.chunk, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return chunk


class _Pacer:
    """Packets carrying data, sent no faster than `kbps` on the wire (None: at once)."""

    def __init__(self) -> None:
        self.kbps: float | None = None
        self.queue: deque[bytes] = deque()
        self.free_s = 0.0  # event-loop time the last packet paced has had its share until
        self.timer: asyncio.TimerHandle | None = None


class _Held:
    """Per association: the SACK and the FORWARD TSN held back, DATA chunks held for one
    packet, and the packets waiting for their pace."""

    def __init__(self) -> None:
        self.sack = _Waiting[SackChunk]()
        self.forward = _Waiting[ForwardTsnChunk]()
        self.data: list[bytes] = []  # DATA chunks as they go on the wire (each once)
        self.data_bytes = _COMMON_HEADER
        self.pacer = _Pacer()


def _held(transport: RTCSctpTransport) -> _Held:
    held: _Held | None = getattr(transport, "_facecodec_held", None)
    if held is None:
        held = _Held()
        transport._facecodec_held = held  # type: ignore[attr-defined]
    return held


def _packet(transport: RTCSctpTransport, chunks: list[bytes]) -> bytes:
    """aiortc's serialize_packet, for several serialised chunks (each with its padding)."""
    header = pack("!HHL", transport._local_port, transport._remote_port,
                  transport._remote_verification_tag)
    body = b"".join(chunks)
    return header + pack("<L", crc32c(header + b"\x00\x00\x00\x00" + body)) + body


async def _send_chunk(self: RTCSctpTransport, chunk: Chunk) -> None:
    held = _held(self)
    if isinstance(chunk, DataChunk):
        data = bytes(chunk)
        if held.data and held.data_bytes + len(data) > SCTP_MAX_PACKET_LENGTH:
            await _send_data(self)
        if not held.data:
            asyncio.get_running_loop().call_soon(_data_later, self)
        held.data.append(data)
        held.data_bytes += len(data)
        return
    if isinstance(chunk, ForwardTsnChunk):
        held.forward.chunk = chunk  # a later one says all an earlier one did
        if held.forward.timer is None:
            held.forward.timer = asyncio.get_running_loop().call_later(
                FORWARD_TSN_DELAY_S, _forward_later, self)
        return
    await _send_data(self)  # chunks leave in the order aiortc hands them over
    if isinstance(chunk, SackChunk):
        if chunk.gaps or chunk.duplicates or held.sack.chunk is not None:
            held.sack.take()  # out of order, or the second packet: acknowledge now
            await _ORIGINAL_SEND_CHUNK(self, chunk)
            return
        held.sack.chunk = chunk
        loop = asyncio.get_running_loop()
        held.sack.timer = loop.call_later(SACK_DELAY_S, lambda: _flush(self))
        return
    sack = held.sack.take()
    if sack is not None:  # the SACK first, on its own: a control chunk goes alone
        await _ORIGINAL_SEND_CHUNK(self, sack)
    await _ORIGINAL_SEND_CHUNK(self, chunk)


async def _send_data(transport: RTCSctpTransport, forward_only: bool = False) -> None:
    """Send the DATA chunks held in one packet, behind the held FORWARD TSN, and behind the
    held SACK if all fit (with `forward_only`, the FORWARD TSN though no data is held)."""
    held = _held(transport)
    if not held.data and not (forward_only and held.forward.chunk is not None):
        return
    chunks, size = list(held.data), held.data_bytes
    forward = held.forward.take()
    if forward is not None:
        chunks.insert(0, bytes(forward))
        size += len(chunks[0])
    sack = held.sack.chunk
    if sack is not None and size + len(sack_bytes := bytes(sack)) <= SCTP_MAX_PACKET_LENGTH:
        held.sack.take()
        chunks.insert(0, sack_bytes)
    held.data, held.data_bytes = [], _COMMON_HEADER
    packet = _packet(transport, chunks)
    pacer = held.pacer
    if pacer.kbps is None and not pacer.queue:
        dtls: Any = transport.transport
        await dtls._send_data(packet)
        return
    pacer.queue.append(packet)
    if pacer.timer is None:
        _pace_later(transport)


def _pace_later(transport: RTCSctpTransport) -> None:
    """Send the paced packets whose time has come, and wait for the next one's."""
    pacer = _held(transport).pacer
    pacer.timer = None
    if transport._association_state == transport.State.CLOSED:
        pacer.queue.clear()
        return
    loop = asyncio.get_running_loop()
    now = loop.time()
    dtls: Any = transport.transport
    while pacer.queue and (pacer.kbps is None or pacer.free_s <= now):
        packet = pacer.queue.popleft()
        if pacer.kbps is not None:
            pacer.free_s = (max(pacer.free_s, now)
                            + (len(packet) + PACKET_OVERHEAD) * 8 / (pacer.kbps * 1000))
        _in_background(dtls._send_data(packet))  # tasks run in order: packets keep theirs
    if pacer.queue:
        pacer.timer = loop.call_at(pacer.free_s, _pace_later, transport)


def pace_data(transport: RTCSctpTransport, kbps: float | None) -> None:
    """Space the packets carrying data that `transport` sends from now on to `kbps` on the
    wire (IP and UDP headers counted), or None: send them at once (those waiting too)."""
    if kbps is not None and not (math.isfinite(kbps) and kbps > 0):
        raise ValueError(f"pacing rate {kbps} kbps")
    pacer = _held(transport).pacer
    if kbps == pacer.kbps:
        return
    pacer.kbps = kbps
    if pacer.timer is not None:  # the next packet's time changes with the rate
        pacer.timer.cancel()
        pacer.timer = None
    if pacer.queue:
        _pace_later(transport)


def _forward_later(transport: RTCSctpTransport) -> None:
    held = _held(transport)
    held.forward.timer = None
    if held.forward.chunk is not None and transport._association_state != transport.State.CLOSED:
        _in_background(_send_data(transport, forward_only=True))


def _data_later(transport: RTCSctpTransport) -> None:
    if _held(transport).data and transport._association_state != transport.State.CLOSED:
        _in_background(_send_data(transport))


def _flush(transport: RTCSctpTransport) -> None:
    held = _held(transport)
    held.sack.timer = None
    sack = held.sack.take()
    if sack is not None and transport._association_state == transport.State.ESTABLISHED:
        _in_background(_ORIGINAL_SEND_CHUNK(transport, sack))


def _in_background(send: Coroutine[Any, Any, None]) -> None:
    """Send from a timer: a connection closing meanwhile makes the packet moot."""
    task = asyncio.ensure_future(send)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


_ORIGINAL_DATA_CHANNEL_RECEIVE = RTCSctpTransport._data_channel_receive
# Messages a guarded association dropped (`guard_data_channels`), by association.
_dropped: weakref.WeakKeyDictionary[RTCSctpTransport, int] = weakref.WeakKeyDictionary()


async def _data_channel_receive(self: RTCSctpTransport, stream_id: int, pp_id: int,
                                data: bytes) -> None:
    try:
        await _ORIGINAL_DATA_CHANNEL_RECEIVE(self, stream_id, pp_id, data)
    except (UnicodeDecodeError, AssertionError, ValueError, KeyError, IndexError,
            struct.error):
        _dropped[self] = _dropped.get(self, 0) + 1


def guard_data_channels() -> None:
    """In every SCTP association aiortc runs from now on (this process), drop a data-channel
    message aiortc cannot take instead of letting it end the association: a text message
    that is not UTF-8, a channel opened twice, a malformed open. Raised in aiortc's receive
    loop, each ended the call as quietly as a hang-up. `dropped_messages` counts them."""
    RTCSctpTransport._data_channel_receive = _data_channel_receive  # type: ignore[method-assign]


def dropped_messages(transport: RTCSctpTransport | None) -> int:
    """Messages `guard_data_channels` dropped in this association."""
    return 0 if transport is None else _dropped.get(transport, 0)


def use_sctp_bundling(enabled: bool = True) -> None:
    """Delay SACKs, and bundle them and the DATA chunks sent together, in every SCTP
    association aiortc runs from now on (this process: aiortc builds its transports
    inside RTCPeerConnection)."""
    RTCSctpTransport._send_chunk = (  # type: ignore[method-assign]
        _send_chunk if enabled else _ORIGINAL_SEND_CHUNK)
