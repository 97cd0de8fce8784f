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
- a held SACK goes in front of the next data (or FORWARD TSN) chunk this side sends, in one
  packet, when the two fit in aiortc's packet size; before any other chunk, on its own.

aiortc also sends each DATA chunk in a packet of its own, though the messages a sender
hands over together could share one (6.10). A call's layer picture and the motion packet
of its frame are two messages on two channels, sent together: as two packets the picture
cost 77 bytes of headers more (IP, UDP, DTLS and SCTP's common header; 9 kbps at 15
pictures a second). DATA chunks aiortc sends in one go (one pass of its transmit loop,
with no wait between them) now go in one packet, up to its packet size: each is held
until the running task yields, and the chunks held by then go together, behind a held
SACK that fits.
"""

from __future__ import annotations

import asyncio
from struct import pack
from typing import Any

from aiortc.rtcsctptransport import (
    SCTP_MAX_PACKET_LENGTH,
    Chunk,
    DataChunk,
    ForwardTsnChunk,
    RTCSctpTransport,
    SackChunk,
)
from google_crc32c import value as crc32c  # SCTP's checksum, as aiortc computes it

SACK_DELAY_S = 0.2  # RFC 4960 6.2: within 200 ms of the arrival of unacknowledged data
_COMMON_HEADER = 12

_ORIGINAL_SEND_CHUNK = RTCSctpTransport._send_chunk


class _HeldSack:
    """Per association: the SACK held back, and its timer; DATA chunks held for one packet."""

    def __init__(self) -> None:
        self.chunk: SackChunk | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.data: list[DataChunk] = []
        self.data_bytes = _COMMON_HEADER

    def take(self) -> SackChunk | None:
        chunk, self.chunk = self.chunk, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return chunk


def _held(transport: RTCSctpTransport) -> _HeldSack:
    held: _HeldSack | None = getattr(transport, "_facecodec_held_sack", None)
    if held is None:
        held = _HeldSack()
        transport._facecodec_held_sack = held  # type: ignore[attr-defined]
    return held


def _packet(transport: RTCSctpTransport, chunks: list[Chunk]) -> bytes:
    """aiortc's serialize_packet, for several chunks (each carries its own padding)."""
    header = pack("!HHL", transport._local_port, transport._remote_port,
                  transport._remote_verification_tag)
    body = b"".join(bytes(chunk) for chunk in chunks)
    return header + pack("<L", crc32c(header + b"\x00\x00\x00\x00" + body)) + body


async def _send_chunk(self: RTCSctpTransport, chunk: Chunk) -> None:
    held = _held(self)
    if isinstance(chunk, DataChunk):
        size = len(bytes(chunk))
        if held.data and held.data_bytes + size > SCTP_MAX_PACKET_LENGTH:
            await _send_data(self)
        if not held.data:
            asyncio.get_running_loop().call_soon(_data_later, self)
        held.data.append(chunk)
        held.data_bytes += size
        return
    await _send_data(self)  # chunks leave in the order aiortc hands them over
    if isinstance(chunk, SackChunk):
        if chunk.gaps or chunk.duplicates or held.chunk is not None:
            held.take()  # out of order, or the second packet: acknowledge now
            await _ORIGINAL_SEND_CHUNK(self, chunk)
            return
        held.chunk = chunk
        loop = asyncio.get_running_loop()
        held.timer = loop.call_later(SACK_DELAY_S, lambda: _flush(self))
        return
    sack = held.chunk
    if (sack is not None and isinstance(chunk, ForwardTsnChunk)
            and _COMMON_HEADER + len(bytes(sack)) + len(bytes(chunk)) <= SCTP_MAX_PACKET_LENGTH):
        held.take()
        dtls: Any = self.transport
        await dtls._send_data(_packet(self, [sack, chunk]))
        return
    if sack is not None:  # the SACK first, on its own: too big to share, or a control chunk
        held.take()
        await _ORIGINAL_SEND_CHUNK(self, sack)
    await _ORIGINAL_SEND_CHUNK(self, chunk)


async def _send_data(transport: RTCSctpTransport) -> None:
    """Send the DATA chunks held, in one packet, behind the held SACK if it fits."""
    held = _held(transport)
    chunks: list[Chunk] = list(held.data)
    if not chunks:
        return
    held.data, held.data_bytes = [], _COMMON_HEADER
    sack = held.chunk
    if sack is not None:
        if len(bytes(sack)) + sum(len(bytes(c)) for c in chunks) + _COMMON_HEADER \
                <= SCTP_MAX_PACKET_LENGTH:
            chunks.insert(0, sack)
            held.take()
    dtls: Any = transport.transport
    await dtls._send_data(_packet(transport, chunks))


def _data_later(transport: RTCSctpTransport) -> None:
    if _held(transport).data and transport._association_state != transport.State.CLOSED:
        task = asyncio.ensure_future(_send_data(transport))
        task.add_done_callback(_ignore_closed)


def _flush(transport: RTCSctpTransport) -> None:
    held = _held(transport)
    held.timer = None
    sack = held.take()
    if sack is not None and transport._association_state == transport.State.ESTABLISHED:
        task = asyncio.ensure_future(_ORIGINAL_SEND_CHUNK(transport, sack))
        task.add_done_callback(_ignore_closed)


def _ignore_closed(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a connection closing meanwhile: the SACK is moot


def use_sctp_bundling(enabled: bool = True) -> None:
    """Delay SACKs, and bundle them and the DATA chunks sent together, in every SCTP
    association aiortc runs from now on (this process: aiortc builds its transports
    inside RTCPeerConnection)."""
    RTCSctpTransport._send_chunk = (  # type: ignore[method-assign]
        _send_chunk if enabled else _ORIGINAL_SEND_CHUNK)
