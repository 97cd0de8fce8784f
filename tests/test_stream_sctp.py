"""The data channels' SCTP packets (facecodec/stream/sctp.py): acknowledgements delayed and
bundled, chunks sent together in one packet, counted in the packets each peer's DTLS
transport sends; and packets paced to a rate. Real calls over loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_stream_call import close_pair, connect_pair, drain, packet, packets_of, run

from facecodec.bitstream.packets import PacketType
from facecodec.stream.peer import Peer, PeerOptions
from facecodec.stream.sctp import use_sctp_bundling

FRAMES = 45  # 1.5 s of motion at 30 fps


async def packets_sent(peer: Peer) -> int:
    """Packets this side's DTLS transport has sent (no sound here: all are SCTP's)."""
    reports = (await peer.pc.getStats()).values()
    return sum(r.packetsSent for r in reports if r.type == "transport")


async def motion(senders: list[Peer], receivers: list[Peer]) -> dict[Peer, int]:
    """FRAMES motion packets from each sender, 30 a second; returns the packets each peer
    sent meanwhile, once every receiver has had them all and 0.3 s more has passed (any
    SACK still held goes within 0.2 s)."""
    before = {p: await packets_sent(p) for p in {*senders, *receivers}}
    for i in range(FRAMES):
        for p in senders:
            assert p.send_packet(packet(PacketType.MOTION, i, i, bytes([i]) * 34))
        await asyncio.sleep(1 / 30)
    for p in receivers:
        got = await drain(p, lambda g: len(packets_of(g)) >= FRAMES)
        assert len(packets_of(got)) == FRAMES
    await asyncio.sleep(0.3)
    return {p: await packets_sent(p) - n for p, n in before.items()}


def test_a_receiver_acknowledges_every_second_packet_not_every_one() -> None:
    opts = PeerOptions(loopback=True, send_audio=False)

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "sack", opts, opts)
        try:
            use_sctp_bundling(False)  # aiortc's own: one SACK packet a packet received
            plain = await motion([pa], [pb])
            use_sctp_bundling(True)
            delayed = await motion([pa], [pb])
        finally:
            use_sctp_bundling(True)
        assert plain[pb] >= FRAMES - 2, plain
        assert FRAMES // 2 - 3 <= delayed[pb] <= FRAMES // 2 + 4, delayed
        for sent in (plain, delayed):  # the data itself, one packet each (and a heartbeat)
            assert FRAMES <= sent[pa] <= FRAMES + 2, sent
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_both_ways_the_acknowledgements_ride_with_the_data() -> None:
    opts = PeerOptions(loopback=True, send_audio=False)

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "bundle", opts, opts)
        sent = await motion([pa, pb], [pa, pb])
        # Each side's own 45 data packets carry nearly all its SACKs; aiortc alone sent 90.
        for p in (pa, pb):
            assert FRAMES <= sent[p] <= FRAMES + 6, sent
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_reliable_data_still_arrives_whole_and_in_order() -> None:
    """Keyframes and layer pictures: a burst far beyond the congestion window, which grows
    on SACKs, and its last packet's SACK held until the timer sends it."""
    opts = PeerOptions(loopback=True, send_audio=False)

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "burst", opts, opts)
        sent = [packet(PacketType.KEYFRAME, i, i, bytes([i % 251]) * (3000 + 97 * i))
                for i in range(60)]  # 260 KB in one go
        for data in sent:
            assert pa.send_packet(data)
        got = await drain(pb, lambda g: len(packets_of(g)) >= len(sent), timeout=20)
        assert [p.data for p in packets_of(got)] == sent
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_a_layer_picture_and_its_motion_share_a_packet() -> None:
    """Two messages sent together on the two channels (a layer picture, reliable, and the
    motion packet of its frame) leave in one SCTP packet; both arrive, the picture whole."""
    opts = PeerOptions(loopback=True, send_audio=False)

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "pair", opts, opts)
        before = await packets_sent(pa)
        pictures = [packet(PacketType.LAYER, i, i, bytes([i]) * (150 + 7 * i))
                    for i in range(FRAMES)]
        for i in range(FRAMES):
            assert pa.send_packet(pictures[i])
            assert pa.send_packet(packet(PacketType.MOTION, i, i, bytes([i]) * 34))
            await asyncio.sleep(1 / 30)
        got = await drain(pb, lambda g: len(packets_of(g)) >= 2 * FRAMES)
        data = [p.data for p in packets_of(got)]
        assert [d for d in data if d in pictures] == pictures  # whole and in order
        assert len(data) == 2 * FRAMES
        await asyncio.sleep(0.3)
        sent = await packets_sent(pa) - before
        assert FRAMES <= sent <= FRAMES + 2, sent  # aiortc alone: 2 a frame
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_a_forward_tsn_rides_with_the_next_data() -> None:
    """Under loss the motion channel's lost packets are given up with FORWARD TSN chunks,
    which aiortc sent each in a packet of its own (and anew at every acknowledgement while
    one was on its way). A FORWARD TSN now waits for the next data and goes in its packet;
    a later one replaces it; with no data it goes alone after FORWARD_TSN_DELAY_S."""
    from aiortc.rtcsctptransport import ForwardTsnChunk

    from facecodec.stream.sctp import FORWARD_TSN_DELAY_S

    opts = PeerOptions(loopback=True, send_audio=False)

    def forward(transport: object) -> ForwardTsnChunk:
        chunk = ForwardTsnChunk()
        chunk.cumulative_tsn = transport._last_sacked_tsn  # type: ignore[attr-defined]
        return chunk  # says nothing new: the receiver has all that

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "forward", opts, opts)
        transport = pa.pc.sctp
        before = await packets_sent(pa)
        for i in range(FRAMES):
            for _ in range(2):
                await transport._send_chunk(forward(transport))
            assert pa.send_packet(packet(PacketType.MOTION, i, i, bytes([i]) * 34))
            await asyncio.sleep(1 / 30)
        got = await drain(pb, lambda g: len(packets_of(g)) >= FRAMES)
        assert len(packets_of(got)) == FRAMES
        await asyncio.sleep(0.3)
        sent = await packets_sent(pa) - before
        assert FRAMES <= sent <= FRAMES + 2, sent  # aiortc alone: 3 a frame
        before = await packets_sent(pa)
        await transport._send_chunk(forward(transport))
        assert await packets_sent(pa) == before  # held
        await asyncio.sleep(FORWARD_TSN_DELAY_S + 0.1)
        assert await packets_sent(pa) == before + 1  # then alone
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_paced_packets_keep_to_the_rate_and_their_order() -> None:
    """A keyframe's burst and the motion behind it leave at the pace set (sctp.pace_data),
    all of it whole and in order; with the pace off the same burst goes at once. A rate
    that is not a positive number is refused."""
    from facecodec.stream.sctp import pace_data
    from facecodec.stream.wire import FRAGMENT, wire_bytes

    opts = PeerOptions(loopback=True, send_audio=False)
    kbps = 40.0

    async def burst(pa: Peer, pb: Peer, seed: int) -> tuple[float, int]:
        """Seconds until a 6 KB keyframe and 10 motion packets sent at once all arrived,
        and their bytes on the wire."""
        sent = [packet(PacketType.KEYFRAME, seed, seed, bytes([seed]) * 6000)]
        sent += [packet(PacketType.MOTION, seed + i, seed + i, bytes([i]) * 40)
                 for i in range(1, 11)]
        start = time.monotonic()
        for data in sent:
            assert pa.send_packet(data)
        got = await drain(pb, lambda g: len(packets_of(g)) >= len(sent), timeout=10)
        elapsed = time.monotonic() - start
        data = [p.data for p in packets_of(got)]
        assert data[0] == sent[0] and sorted(data[1:]) == sorted(sent[1:])
        return elapsed, sum(wire_bytes(len(d)) for d in sent)

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "pace", opts, opts)
        transport = pa.pc.sctp
        for bad in (0.0, -5.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="pacing rate"):
                pace_data(transport, bad)
        pa.pace(kbps)
        paced, wire = await burst(pa, pb, 1)
        # The first packet goes at once; the keyframe's other four wait their turn, and
        # the motion (in one packet behind them) its own. Headers below SCTP's count too.
        keyframe_rest = wire_bytes(6000) - wire_bytes(FRAGMENT)
        least = keyframe_rest * 8 / (kbps * 1000)
        most = wire * 8 / (kbps * 1000)
        assert least <= paced <= most + 0.3, (paced, least, most)
        pa.pace(None)
        at_once, _ = await burst(pa, pb, 20)
        assert at_once < 0.5 * least, (at_once, least)
        await close_pair(sa, pa, sb, pb)

    run(body)
