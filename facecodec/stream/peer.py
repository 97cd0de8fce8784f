"""One side of a live call: an aiortc RTCPeerConnection carrying codec packets and audio.

Two data channels, created pre-negotiated (same ids on both sides) so neither peer waits for
the other to announce them:

- "keyframes" (id 0): reliable, ordered. Keyframes and their RESTORE shares, END, layer pictures
  (each predicted from the one before: a lost one would stop the layer until the next
  intra picture) and the JSON stream start message (with the codec header).
- "motion" (id 1): unordered, maxRetransmits=0. One small MOTION/RESYNC packet per frame: a
  retransmitted packet would arrive after its frame was due, so it is better lost. Also the
  receiver's feedback (loss reports, keyframe requests), as RTCP rides beside RTP: both are
  repeated while they matter, and on a lossy path a reliable channel would hold them behind
  retransmissions (backing off for seconds) until they are stale.

Audio is an ordinary Opus track (from a media file, a microphone, or silence), sent only while
somebody speaks (facecodec/stream/speech.py).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.sdp import SessionDescription

from facecodec.bitstream.packets import LAYER_TYPES, is_intact
from facecodec.capture.microphone import FRAME, RATE, Microphone
from facecodec.capture.sound import FileSound, has_sound
from facecodec.errors import BitstreamError, FacecodecError
from facecodec.stream.impair import Impairment
from facecodec.stream.sctp import (
    dropped_messages,
    guard_data_channels,
    pace_data,
    use_sctp_bundling,
)
from facecodec.stream.signaling import SignalingClient
from facecodec.stream.speech import SoundTimeline, SpeechGate
from facecodec.stream.wire import PacketInfo, parse_control, peek_packet

_ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses
_ORIGINAL_OPUS_INIT = OpusEncoder.__init__
# Opus for a call's speech. aiortc builds its encoder at 96 kbps, eight times what facecodec
# spends on the picture; speech needs far less. Frames of 20 ms are WebRTC's usual; 60 ms
# sends a third of the packets (each carries some 60 bytes of IP, UDP and SRTP headers).
AUDIO_KBPS = 24.0
AUDIO_FRAME_MS = 20
AUDIO_FRAME_CHOICES = (20, 40, 60)
# The sound on a full link (stream/congestion.py, SoundRate): 60 ms frames at 16 kbps, a
# third of the packets (each carries some 64 bytes of IP, UDP, RTP and SRTP headers) at the
# low end of the 16-20 kbps RFC 7587 (3.1.1) gives for wideband speech. A speech call's
# sound (grid_swiz3n, 30 s) took 24.5-24.9 kbps on the wire so, 44.8-45.0 at 24 kbps in
# 20 ms frames.
THIN_SOUND = (16.0, 60)
# Motion packets queued behind a congested channel are stale by the time they would go out.
MAX_MOTION_BUFFERED = 64 * 1024
MAX_QUEUED_PACKETS = 512
# Control messages that may come on the unreliable channel (the receiver's feedback).
FEEDBACK = frozenset({"loss", "pli", "resync"})


def use_loopback_candidates(enabled: bool = True) -> None:
    """Make ICE offer 127.0.0.1 (aioice skips loopback, so two local peers never meet).

    Process-wide: aioice reads the module function when it gathers candidates.
    """

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback_only if enabled else _ORIGINAL_HOST_ADDRESSES


def check_opus(kbps: float, frame_ms: int) -> None:
    if not 6 <= kbps <= 128:  # libopus's useful range; also refuses NaN
        raise FacecodecError(f"audio rate {kbps:g} kbps out of range (6..128)")
    if frame_ms not in AUDIO_FRAME_CHOICES:
        raise FacecodecError(f"audio frames of {frame_ms} ms: use one of "
                             f"{', '.join(map(str, AUDIO_FRAME_CHOICES))}")


@dataclass
class _Sound:
    """The Opus setting of this process's encoders (aiortc gives no per-connection one)."""

    kbps: float = AUDIO_KBPS
    frame_ms: int = AUDIO_FRAME_MS
    dtx: bool = True
    thin: bool = False  # on a full link (set_thin_sound)
    last_sent: float = -math.inf  # when (time.monotonic) a sound packet last went out

    def setting(self) -> tuple[float, int]:
        if self.thin:
            return min(self.kbps, THIN_SOUND[0]), max(self.frame_ms, THIN_SOUND[1])
        return self.kbps, self.frame_ms


_SOUND = _Sound()

if TYPE_CHECKING:
    class _Opus(OpusEncoder):
        """aiortc's Opus encoder as `use_opus` patches it."""

        setting: tuple[float, int]  # the (kbps, frame ms) it codes at
        gate: SpeechGate | None


def use_opus(kbps: float, frame_ms: int, dtx: bool = True) -> None:
    """The rate and frame length of the Opus encoders aiortc builds from now on (this
    process: aiortc gives no per-connection setting), and whether they leave out the
    packets of frames without speech (facecodec/stream/speech.py)."""
    check_opus(kbps, frame_ms)
    _SOUND.kbps, _SOUND.frame_ms, _SOUND.dtx, _SOUND.thin = kbps, frame_ms, dtx, False

    def configure(self: _Opus) -> None:
        """Code at the process's setting from the next frame on."""
        rate, frame = self.setting = _SOUND.setting()
        first = getattr(self, "first_packet_pts", None)
        _ORIGINAL_OPUS_INIT(self)  # a fresh codec and resampler
        # The stream's timestamps run on: a new codec's packets keep the old one's offset
        # from their frames (the same encoder delay), so the first packet's stays the origin.
        self.first_packet_pts = first
        self.codec.bit_rate = round(rate * 1000)
        self.codec.options = {"application": "voip", "frame_duration": str(frame)}
        self.resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE,
                                           frame_size=RATE * frame // 1000)
        self.gate = SpeechGate(frame) if _SOUND.dtx else None

    def encode(self: _Opus, frame: av.AudioFrame,
               force_keyframe: bool = False) -> tuple[list[bytes], int | None]:
        # aiortc's encode, but a packet the gate refuses is coded (the encoder's state runs
        # on) and not returned; aiortc sends nothing for a call that returns none.
        if self.setting != _SOUND.setting():
            configure(self)  # the link filled or cleared (set_thin_sound)
        kept: list[av.Packet] = []
        for piece in self.resampler.resample(frame):
            send = self.gate is None or self.gate(piece)
            for packet in self.codec.encode(piece):
                if self.first_packet_pts is None:
                    self.first_packet_pts = packet.pts
                if send:
                    kept.append(packet)
        if not kept:
            return [], None
        _SOUND.last_sent = time.monotonic()
        pts, first = kept[0].pts, self.first_packet_pts
        assert pts is not None and first is not None  # coded from frames with a pts
        return [bytes(p) for p in kept], pts - first

    # aiortc's own encode() also returns None where its type says int.
    OpusEncoder.__init__ = configure  # type: ignore[method-assign, assignment]
    OpusEncoder.encode = encode  # type: ignore[method-assign, assignment]


def set_thin_sound(thin: bool) -> None:
    """Code this process's sound at THIN_SOUND (at most) from its next frame, or back at
    the rate and frame length asked for."""
    _SOUND.thin = thin


def sound_sent_within(seconds: float) -> bool:
    """Whether this process sent a sound packet in the last `seconds` (someone spoke)."""
    return time.monotonic() - _SOUND.last_sent <= seconds


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN server (`stun:host[:port]`), through which a peer behind a NAT learns its
    public address, or a TURN relay (`turn:host[:port][?transport=udp|tcp]`, `turns:` over
    TLS, with a username and password) for peers that cannot reach each other directly."""

    url: str
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        try:
            parsed = parse_stun_turn_uri(self.url)
        except ValueError as exc:
            raise FacecodecError(f"ICE server {self.url!r}: {exc} (expected stun:HOST[:PORT] "
                                 "or turn:HOST[:PORT][?transport=udp|tcp])") from None
        if not 1 <= parsed["port"] <= 65535:
            raise FacecodecError(f"ICE server {self.url}: port must be within 1..65535")
        relay = parsed["scheme"] in ("turn", "turns")
        if relay and not (self.username and self.password):
            raise FacecodecError(f"TURN server {self.url}: needs a username and a password")
        if not relay and (self.username or self.password):
            raise FacecodecError(f"STUN server {self.url}: takes no username or password")
        if parsed["scheme"] == "stuns":  # aioice queries STUN over UDP only
            raise FacecodecError(f"STUN server {self.url}: stuns (TLS) is not supported")
        if relay and parsed["transport"] not in ("udp", "tcp"):
            raise FacecodecError(f"TURN server {self.url}: transport must be udp or tcp")
        if parsed["scheme"] == "turns" and parsed["transport"] != "tcp":
            raise FacecodecError(f"TURN server {self.url}: turns runs over tcp only")

    @property
    def relay(self) -> bool:
        return self.url.startswith("turn")


@dataclass(frozen=True, slots=True)
class PeerOptions:
    loopback: bool = False
    # At most one STUN server and one TURN relay (what aioice uses); none: direct calls only.
    ice_servers: tuple[IceServer, ...] = ()
    # Media only through the TURN relay: the other side never learns this side's addresses.
    relay_only: bool = False
    audio: str | None = None  # media file whose audio track is sent; None sends silence
    # That file is the picture's too: its sound goes with the frames (FileAudioTrack), and
    # starts again with a looped picture (Peer.start_sound_at).
    audio_follows_video: bool = False
    microphone: str | None = None  # send this capture device's sound instead ("default")
    # Opus's rate and frame length; they hold for the process's encoders (use_opus), so
    # peers in one process should agree.
    audio_kbps: float = AUDIO_KBPS
    audio_frame_ms: int = AUDIO_FRAME_MS
    audio_dtx: bool = True  # no sound packets while nobody speaks (process-wide, as above)
    send_audio: bool = True
    impairment: Impairment | None = None
    connect_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        check_opus(self.audio_kbps, self.audio_frame_ms)
        if self.relay_only and not any(s.relay for s in self.ice_servers):
            raise FacecodecError("relaying only needs a TURN server (--turn)")


@dataclass(frozen=True, slots=True)
class PacketReceived:
    data: bytes
    info: PacketInfo
    arrival: float  # time.time() when the application got it (after any impairment)


@dataclass(frozen=True, slots=True)
class ControlReceived:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PeerClosed:
    reason: str


PeerEvent = PacketReceived | ControlReceived | PeerClosed


@dataclass
class SeqTracker:
    """Loss counting on one sequence-number channel, RTP-style (u16, unwrapped).

    Losses after the highest number received are not seen until a later packet arrives,
    as in RTP receiver reports."""

    received: int = 0
    _min_ext: int | None = field(default=None, repr=False)
    _last_ext: int = field(default=0, repr=False)
    _max_ext: int = field(default=0, repr=False)

    def note(self, seq: int) -> None:
        self.received += 1
        if self._min_ext is None:
            self._min_ext = self._last_ext = self._max_ext = seq
            return
        delta = (seq - self._last_ext) & 0xFFFF
        delta = delta - 0x10000 if delta >= 0x8000 else delta
        self._last_ext += delta
        self._max_ext = max(self._max_ext, self._last_ext)
        # A packet reordered ahead of the first one received still belongs to the span.
        self._min_ext = min(self._min_ext, self._last_ext)

    @property
    def lost(self) -> int:
        if self._min_ext is None:
            return 0
        return max(0, self._max_ext - self._min_ext + 1 - self.received)


@dataclass
class PeerStats:
    packets_sent: int = 0
    motion_bytes_sent: int = 0  # MOTION and RESYNC packets
    keyframe_bytes_sent: int = 0  # KEYFRAME and END packets
    layer_bytes_sent: int = 0  # LAYER packets
    control_bytes_sent: int = 0
    packets_dropped_congestion: int = 0
    packets_received: int = 0
    motion_bytes_received: int = 0
    keyframe_bytes_received: int = 0
    malformed_received: int = 0
    audio_frames_received: int = 0
    # The sender numbers motion packets and all others separately (docs/bitstream.md).
    motion_seq: SeqTracker = field(default_factory=SeqTracker, repr=False)
    other_seq: SeqTracker = field(default_factory=SeqTracker, repr=False)

    def note_seq(self, seq: int, reliable: bool = False) -> None:
        """Count a received packet's sequence number on its channel."""
        (self.other_seq if reliable else self.motion_seq).note(seq)

    @property
    def packets_lost(self) -> int:
        return self.motion_seq.lost + self.other_seq.lost


class Peer:
    """A negotiated connection to the other side; events arrive on `events`."""

    def __init__(self, options: PeerOptions | None = None) -> None:
        self.options = options or PeerOptions()
        if self.options.loopback:
            use_loopback_candidates(True)
        use_opus(self.options.audio_kbps, self.options.audio_frame_ms, self.options.audio_dtx)
        use_sctp_bundling()
        guard_data_channels()
        # An empty list, not None: aiortc would otherwise query a public STUN server.
        servers = [RTCIceServer(i.url, i.username, i.password) for i in self.options.ice_servers]
        policy = RTCIceTransportPolicy.ALL
        if self.options.relay_only:
            policy = RTCIceTransportPolicy.RELAY
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers,
                                                     iceTransportPolicy=policy))
        self.events: asyncio.Queue[PeerEvent] = asyncio.Queue()
        self.stats = PeerStats()
        self.on_audio: Callable[[av.AudioFrame], None] | None = None
        self._keyframes: RTCDataChannel | None = None
        self._motion: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._own_tracks: list[MediaStreamTrack] = []
        self._file_sound: FileAudioTrack | None = None
        self._closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # --- setup ---------------------------------------------------------------------------------

    def _open_channels(self) -> None:
        self._keyframes = self.pc.createDataChannel("keyframes", negotiated=True, id=0)
        self._motion = self.pc.createDataChannel(
            "motion", ordered=False, maxRetransmits=0, negotiated=True, id=1
        )
        for channel, reliable in ((self._keyframes, True), (self._motion, False)):
            channel.on("message", self._message_handler(reliable))
            channel.on("close", lambda: self._emit_closed("data channel closed"))

    def _add_audio(self, offering: bool) -> None:
        if not self.options.send_audio:
            # An answer cannot add a track the offer has no line for: an offer always has
            # one, so that a side sending no sound still hears one that does.
            if offering:
                self.pc.addTransceiver("audio", direction="recvonly")
            return
        track: MediaStreamTrack = AudioStreamTrack()  # silence
        if self.options.microphone is not None:
            track = MicrophoneTrack(self.options.microphone)
            self._own_tracks.append(track)
        elif self.options.audio is not None and has_sound(self.options.audio):
            track = self._file_sound = FileAudioTrack(
                self.options.audio, self.options.audio_follows_video)
        self.pc.addTrack(track)

    def start_sound_at(self, t0: float) -> None:
        """The picture's frame 0 is due at time.time() `t0` (again, for a looped file): a
        file's sound that goes with it is timed from there."""
        if self._file_sound is not None:
            self._file_sound.start_at(t0)

    async def negotiate(self, signaling: SignalingClient, initiator: bool) -> None:
        """Offer (initiator) or answer through the signaling server, then wait until both data
        channels are open. Raises FacecodecError if the other side leaves or time runs out."""
        try:
            await asyncio.wait_for(
                self._negotiate(signaling, initiator), self.options.connect_timeout_s
            )
        except TimeoutError:
            raise FacecodecError(
                f"call not connected within {self.options.connect_timeout_s:.0f} s"
            ) from None

    async def _negotiate(self, signaling: SignalingClient, initiator: bool) -> None:
        if initiator:
            self._open_channels()
            self._add_audio(offering=True)
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await signaling.send({"type": "offer", "sdp": self.pc.localDescription.sdp})
            answer = await _expect(signaling, "answer")
            await self._take_description(answer["sdp"], "answer")
        else:
            offer = await _expect(signaling, "offer")
            await self._take_description(offer["sdp"], "offer")
            self._open_channels()
            self._add_audio(offering=False)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await signaling.send({"type": "answer", "sdp": self.pc.localDescription.sdp})
        while not self.connected:
            if self._closed or self.pc.connectionState in ("failed", "closed"):
                raise FacecodecError(f"call failed to connect ({self.pc.connectionState})")
            await asyncio.sleep(0.01)

    async def _take_description(self, sdp: str, kind: str) -> None:
        """The other side's offer or answer, refused in one line when aiortc cannot use it
        (it raises what its parsers meet: a malformed line, sections that do not match the
        offer) or when it carries no data channel, which a call cannot do without; and,
        before aiortc takes it (it would fail on them later, with an assertion in its own
        task or an internal error), a section without a DTLS fingerprint or an offer
        without the audio section every facecodec offer has (an answer adds its sound)."""
        bad = (ValueError, TypeError, KeyError, IndexError, AttributeError)
        try:
            media = SessionDescription.parse(sdp).media
            if any(m.kind == "application" for m in media):
                if any(m.dtls is None or not m.dtls.fingerprints for m in media):
                    raise FacecodecError(f"the other side's {kind} has no DTLS fingerprint "
                                         "(it could not be encrypted)")
                if kind == "offer" and not any(m.kind == "audio" for m in media):
                    raise FacecodecError("the other side's offer has no audio section: it is "
                                         "not a facecodec call")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, kind))
        except bad as e:
            raise FacecodecError(f"the other side sent an {kind} that cannot be used: "
                                 f"{e}") from None
        if self.pc.sctp is None:
            raise FacecodecError(f"the other side's {kind} has no data channel")

    @property
    def malformed(self) -> int:
        """Messages from the other side dropped as malformed: by this peer (not a packet,
        not a control message) and by its SCTP association (stream/sctp.py)."""
        return self.stats.malformed_received + dropped_messages(self.pc.sctp)

    @property
    def connected(self) -> bool:
        return (
            self._keyframes is not None
            and self._motion is not None
            and self._keyframes.readyState == "open"
            and self._motion.readyState == "open"
        )

    # --- sending -------------------------------------------------------------------------------

    def pace(self, kbps: float | None) -> None:
        """Space the data channels' packets to `kbps` on the wire; None: send at once."""
        if self.pc.sctp is not None:
            pace_data(self.pc.sctp, kbps)

    def send_packet(self, data: bytes) -> bool:
        """Send one codec packet on the channel its type calls for; False if not sent."""
        if not self.connected:
            return False
        info = peek_packet(data)
        if info.reliable:
            assert self._keyframes is not None
            self._keyframes.send(data)
            if info.type in LAYER_TYPES:
                self.stats.layer_bytes_sent += len(data)
            else:
                self.stats.keyframe_bytes_sent += len(data)
        else:
            assert self._motion is not None
            if self._motion.bufferedAmount > MAX_MOTION_BUFFERED:
                self.stats.packets_dropped_congestion += 1
                return False
            self._motion.send(data)
            self.stats.motion_bytes_sent += len(data)
        self.stats.packets_sent += 1
        return True

    def send_control(self, text: str, reliable: bool = True) -> bool:
        """Send a JSON control message; feedback (reliable=False) goes on the motion channel."""
        if not self.connected:
            return False
        channel = self._keyframes if reliable else self._motion
        assert channel is not None
        channel.send(text)
        self.stats.control_bytes_sent += len(text)
        return True

    async def audio_bytes(self) -> tuple[int, int]:
        """(sent, received) RTP audio bytes so far."""
        sent = received = 0
        for report in (await self.pc.getStats()).values():
            kind = getattr(report, "kind", None)
            if report.type == "outbound-rtp" and kind == "audio":
                sent += report.bytesSent
            elif report.type == "inbound-rtp" and kind == "audio":
                received += getattr(report, "bytesReceived", 0)
        return sent, received

    # --- receiving -----------------------------------------------------------------------------

    def _message_handler(self, reliable: bool) -> Callable[[str | bytes], None]:
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                try:
                    control = parse_control(message)
                except BitstreamError:
                    self.stats.malformed_received += 1
                    return
                if not reliable and control["type"] not in FEEDBACK:
                    self.stats.malformed_received += 1  # the stream start must not be lost
                    return
                self.events.put_nowait(ControlReceived(control))
                return
            if self.options.impairment is not None and self.options.impairment.active:
                self.options.impairment.deliver(message, self._on_packet, reliable=reliable)
            else:
                self._on_packet(message)

        return on_message

    def _on_packet(self, data: bytes) -> None:
        try:
            info = peek_packet(data)
        except BitstreamError:
            self.stats.malformed_received += 1
            return
        if not info.reliable and self.events.qsize() >= MAX_QUEUED_PACKETS:
            self.stats.packets_dropped_congestion += 1  # the consumer is behind: shed motion
            return
        self.stats.packets_received += 1
        if is_intact(data):  # a damaged number would count thousands lost
            self.stats.note_seq(info.seq, info.reliable)
        if info.reliable:
            self.stats.keyframe_bytes_received += len(data)
        else:
            self.stats.motion_bytes_received += len(data)
        self.events.put_nowait(PacketReceived(data, info, time.time()))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        # Always drain remote audio: aiortc buffers undrained frames without bound.
        task = asyncio.ensure_future(self._drain_audio(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_audio(self, track: MediaStreamTrack) -> None:
        timeline = SoundTimeline(self._publish_audio)
        with contextlib.suppress(MediaStreamError):
            while True:
                try:  # the other side sends no packets while it is silent
                    frame = await asyncio.wait_for(track.recv(), AUDIO_FRAME_MS / 1000)
                except TimeoutError:
                    timeline.tick(time.monotonic())
                    continue
                if isinstance(frame, av.AudioFrame):
                    self.stats.audio_frames_received += 1
                    timeline.frame(frame, time.monotonic())

    def _publish_audio(self, frame: av.AudioFrame) -> None:
        if self.on_audio is not None:
            self.on_audio(frame)

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._emit_closed(f"connection {self.pc.connectionState}")

    def _emit_closed(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self.events.put_nowait(PeerClosed(reason))

    async def close(self) -> None:
        self._emit_closed("closed locally")
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
        for track in self._own_tracks:
            track.stop()  # a microphone's device and reading thread


class _SoundTrack(MediaStreamTrack):
    """A call's own sound: 48 kHz frames, timed by the samples sent before them."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._sent = 0

    def _stamp(self, frame: av.AudioFrame) -> av.AudioFrame:
        frame.pts = self._sent
        frame.sample_rate = RATE
        frame.time_base = Fraction(1, RATE)
        self._sent += frame.samples
        return frame


class FileAudioTrack(_SoundTrack):
    """A media file's sound, paced in real time, as 20 ms 48 kHz frames.

    On its own (`--audio FILE`) it loops its own length from the call's start. As the sound
    of the call's picture (`follow_video`) it goes with the frames: silence until the
    picture starts (`start_at`), then each moment's sound when its frame is due, from its
    start again each time the picture starts again (`start_at` once more: a looped picture),
    cut or padded to the loop. A clip's sound and picture rarely last exactly as long
    (grid_swiz3n: 2.978 s of sound, 3.000 s of frames), and looped on their own they drift
    apart by the difference every loop.

    aiortc's MediaPlayer would also decode (and queue without bound) the file's video, which
    the codec reads on its own; this reads the audio stream only.
    """

    def __init__(self, path: str, follow_video: bool = False) -> None:
        super().__init__()
        self._sound = FileSound(path)
        self._follow = follow_video
        self._starts: list[float] = []  # time.time()s at which the picture's frame 0 is due
        self._start: float | None = None  # time.monotonic() of the first sample sent
        self._own = 0  # on its own: the next sample of the file

    def start_at(self, t: float) -> None:
        """The picture's frame 0 is due at time.time() `t` (again, for a looped picture), and
        its sound with it; a start told late (a new session's) still takes its place."""
        bisect.insort(self._starts, t)

    def samples(self, due: float) -> np.ndarray:
        """The (FRAME, 2) samples to send at time.time() `due`."""
        if not self._follow:
            out = self._sound.read(self._own, FRAME)
            self._own += FRAME
            if self._sound.at_end(self._own):
                self._own = 0  # its own loop: the last frame ends in silence
            return out
        out = np.zeros((FRAME, 2), np.int16)  # silence before the picture starts
        # The starts in effect during this frame: the last one by `due`, and those after.
        first = max(bisect.bisect_right(self._starts, due) - 1, 0)
        last = bisect.bisect_left(self._starts, due + FRAME / RATE)
        at = [round((t - due) * RATE) for t in self._starts[first:last]]  # in this frame
        for k, start in enumerate(at):
            lo, hi = max(start, 0), min(at[k + 1] if k + 1 < len(at) else FRAME, FRAME)
            if hi > lo:
                out[lo:hi] = self._sound.read(lo - start, hi - lo)
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._sent / RATE
        await asyncio.sleep(due - time.monotonic())
        pcm = self.samples(due + time.time() - time.monotonic())
        if self._sound.at_end(0):  # a sound stream without a sample
            self.stop()
            raise MediaStreamError
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        return self._stamp(frame)


class MicrophoneTrack(_SoundTrack):
    """A capture device's sound as 20 ms 48 kHz frames (facecodec/capture/microphone.py),
    paced by the device."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self._mic = Microphone(None if device == "default" else device)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await asyncio.get_running_loop().run_in_executor(None, self._mic.next_frame)
        if frame is None:
            self.stop()
            raise MediaStreamError
        return self._stamp(frame)

    def stop(self) -> None:
        if self.readyState == "live":
            self._mic.close()
        super().stop()


async def _expect(signaling: SignalingClient, kind: str) -> dict[str, Any]:
    """Wait for an `kind` message from the other peer; a bye or error aborts the call setup."""
    while True:
        msg = await signaling.receive()
        if msg.get("type") == kind and isinstance(msg.get("sdp"), str):
            return msg
        if msg.get("type") in ("bye", "closed"):
            raise FacecodecError(f"the other peer left before sending its {kind}")
        if msg.get("type") == "error":
            raise FacecodecError(f"signaling error: {msg.get('message')}")
