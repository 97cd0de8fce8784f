"""Frame-at-a-time encoder and decoder for live calls, speaking packet bytes.

The same analysis, packetiser and decoder as file mode, with one frame per motion packet
(no batching delay), a keyframe whenever the receiver asks for one, and optionally the
low-resolution layer under live rate control (layer_rate.LiveLayer).
"""

from __future__ import annotations

import sys
from collections import deque
from fractions import Fraction
from pathlib import Path
from statistics import mean

import numpy as np

from facecodec.bitstream.container import LayerParams, StreamHeader
from facecodec.bitstream.packets import (
    LAYER_TYPES,
    MOTION_TYPES,
    PacketType,
    decode_packet,
    encode_packet,
)
from facecodec.codec.analysis import EventStabiliser, FaceAnalyzer, KeyframeEvent, MotionEvent
from facecodec.codec.avatar import AvatarEvents
from facecodec.codec.decoder import DecodeStats, PacketDecoder, warm_up
from facecodec.codec.encoder import (
    EncoderSettings,
    Packetizer,
    coder_config,
    frames_per_packet,
    fusion_model_for,
    share_meter,
)
from facecodec.codec.keyframe import decode_image, encode_image
from facecodec.codec.layer import AV1
from facecodec.codec.layer_rate import LayerPlan, LiveLayer
from facecodec.errors import BitstreamError, FacecodecError
from facecodec.motion.basis import load_basis
from facecodec.motion.stabilize import beta_for
from facecodec.render.edits import EyeContact
from facecodec.render.pose import PoseEdit
from facecodec.render.registry import DEFAULT_RENDERER
from facecodec.render.warp import WarpRenderer
from facecodec.stream.wire import CHUNK_OVERHEAD, wire_bytes

# Loss reports: a share of lost motion packets at or above LOSSY switches the sender to
# intra-only motion until LOSS_MEMORY reports in a row come back clean.
LOSSY = 0.01
LOSS_MEMORY = 5
# A call's motion packets carry at most this many frames: each one more waits a frame longer.
MAX_CALL_PACKET_FRAMES = 3
# Motion packets that queued this long in the network say the link is full: a path's own
# jitter is tens of ms, a slow uplink's router buffers hundreds.
CONGESTED_MS = 100.0
# Reports (about one a second) a link that lost or queued stays treated as full: ten, so
# that a call whose rate falls back under it does not rise again at once.
CONGESTION_MEMORY = 10
# Frames a packet while it is (liveportrait_d19 through 40 and 30 kbps bottlenecks drew as
# many frames with 2 as with 3, and 3 costs a frame's time more).
CONGESTED_FRAMES = 2
# The sender's own rate beside the layer, measured over this long: the motion, and the
# keyframes it sent lately (a keyframe is tens of KB at once).
SENT_WINDOW_S = 3.0
# The receiver's estimate fell (an overuse: it drops to 0.85 of what arrived) when it is
# under this share of the one before.
RATE_FELL = 0.95
# Beside a layer, while the link is full, the data channels' packets are paced to this
# multiple of the receiver's estimate (stream/sctp.py, pace_data): the estimate mostly sits
# under what the link carries (0.75-0.95 of a 30 kbps bottleneck), and an intra picture's
# or a keyframe's burst then waits at the sender instead of overflowing the router's queue.
PACE_FACTOR = 1.2
# A frame that sends this much beside its motion is a burst: beside a layer a keyframe is
# some 550 bytes and an intra picture 1-2 KB, where a frame's motion and inter picture are
# tens of bytes (liveportrait_d19, 15 kbps layer). Loss reported within BURST_S of bursts
# says they overflow a queue when it is, on average, twice what the reports with no burst
# saw. A link that only loses loses as much either way, and a pace there holds bursts back
# for nothing (liveportrait_d19 with a layer under 5 % random loss, paced on single
# reports' loss after a burst: latency p95 184 and 295 ms, unpaced 115 and 104).
BURST_BYTES = 512
CALM_REPORTS = 3  # reports with no burst before, to compare the loss after bursts with
BURST_S = 2.0


def check_packet_frames(frames: int) -> None:
    if not 1 <= frames <= MAX_CALL_PACKET_FRAMES:
        raise FacecodecError(f"--packet-frames {frames}: a call's motion packets carry 1 to "
                             f"{MAX_CALL_PACKET_FRAMES} frames")


class StreamEncoder:
    """Sender side of a call: push camera frames, get packets to send."""

    def __init__(
        self,
        size: int = 256,
        fps: Fraction | float = Fraction(25),
        preset: str = "medium",
        live: bool = True,
        keyframe_quality: int | None = None,
        source_size: tuple[int, int] | None = None,
        allow_several: bool = True,
        layer_kbps: float = 0.0,
        reference: str = "best",
        packet_frames: int = 1,
        start_full: bool = False,
        layer_follows_link: bool = True,
        avatar: Path | None = None,
        pixel_aspect: Fraction = Fraction(1),
    ) -> None:
        """`reference`: "best" lets a motion-only call send a recent frame as a new
        reference picture when it draws the recent frames better (codec/scout.py); "first"
        keeps the picture of the frame where each segment starts. `packet_frames` (a call):
        frames a motion packet carries, 1..MAX_CALL_PACKET_FRAMES; each packet costs some
        110 bytes of framing and IP, UDP, DTLS and SCTP headers, and each frame more in it
        waits a frame at the sender. `start_full` (a call over a network): start as on a
        full link (report_loss), two frames a packet until the receiver's reports say
        otherwise, and the layer at its lowest rate (layer_rate.LiveLayer) until they tell
        what the link carries. `layer_follows_link` False: the layer keeps its rate
        whatever the receiver estimates of the link (report_loss). `avatar`: a portrait
        this sender appears as (below). `pixel_aspect`: the source's pixel width over its
        height (anamorphic video), for the receiver to show the crop as the source is shown;
        an avatar is the portrait's square pixels."""
        settings = EncoderSettings(size=size, preset=preset, keyframe_quality=keyframe_quality,
                                   layer_kbps=layer_kbps, reference=reference, avatar=avatar)
        settings.validate()
        fps = Fraction(fps).limit_denominator(1001)
        basis = load_basis()
        config = coder_config(basis, preset, beside_layer=layer_kbps > 0)
        resync = max(1, int(float(fps)))
        check_packet_frames(packet_frames)
        # Appearing as an avatar (codec/avatar.py): the sender's face never leaves this
        # machine; no surround, no refreshed reference, no layer.
        self.avatar = (AvatarEvents(avatar, basis, size, config.k)
                       if avatar is not None else None)
        self._avatar_view: WarpRenderer | None = None
        per_packet = packet_frames if live else frames_per_packet(settings, fps)
        w, h = source_size or (size, size)
        self.layer = (LiveLayer(layer_kbps, float(fps), size,
                                start_low=start_full and layer_follows_link)
                      if layer_kbps > 0 else None)
        self.layer_follows_link = layer_follows_link
        self.header = StreamHeader(
            size, fps.numerator, fps.denominator, w, h, basis.basis_id, "", preset, resync,
            config.to_bytes(),
            layer=None if self.layer is None else LayerParams(
                AV1, self.layer.size, self.layer.divisor,
                fusion_model_for(layer_kbps, self.layer.size, size, live)),
            restorer=share_meter().model_id,
            pixel_aspect=pixel_aspect if avatar is None else Fraction(1),
            avatar=avatar is not None,
        )
        # A call keeps going when someone walks behind the speaker: follow the largest face.
        # Beside a layer the reference picture matters less, and a keyframe restarts the layer.
        own_face = self.layer is None and self.avatar is None
        self.analyzer = FaceAnalyzer(basis, size, float(fps), allow_several=allow_several,
                                     surround=own_face, follow_light=own_face,
                                     scout=live and reference == "best" and own_face)
        self.stabiliser = EventStabiliser(basis, float(fps),
                                          beta_for(config.step_mul, layer_kbps > 0))
        self.packetizer = Packetizer(config, resync, per_packet,
                                     settings.keyframe_quality_for(layer_kbps, live),
                                     fast_keyframes=live, shares=share_meter(),
                                     defer_shares=live, layer_groups=not live)
        if self.layer is not None:
            self.packetizer.layer = LayerPlan(AV1, self.layer.size, self.layer.divisor, 0)
        self.size = size
        self.fps = float(fps)
        # (frame, wire bytes of its motion packets, of its other packets but the layer's),
        # for layer_budget and pace_kbps
        self._sent: deque[tuple[int, int, int]] = deque(
            maxlen=round(SENT_WINDOW_S * self.fps) + 1)
        self._link_kbps: float | None = None  # the receiver's estimate the layer follows
        self.link_full = False  # the last report saw loss or queueing
        self.link_congested = False  # and the link was full, not only lossy (report_loss)
        self._last_rate: float | None = None  # the receiver's last estimate
        self._resync = resync
        self._packet_frames = per_packet
        self._loss_history: deque[bool] = deque(maxlen=LOSS_MEMORY)
        # A call starts as on a full link, until CONGESTION_MEMORY reports say otherwise:
        # its first keyframe already fills a thin link's queue, and a queue full from the
        # start shows no queueing delay, only loss. Through 48 kbps, a speech call
        # (grid_swiz3n, 16 kbps Opus in 60 ms frames) drew 429 and 454 of 454 frames at p50
        # 101-102 ms so; 277 at 581 ms when it started with one frame a packet, and 326 at
        # 573 ms when it went back to one after 3 reports. The cost: its first 10 s are a
        # frame later.
        self._queue_history = deque([start_full], maxlen=CONGESTION_MEMORY)
        # A layer call's reports that said a burst overflowed the link's queue, or that the
        # link queued: while any of the last CONGESTION_MEMORY did, it is paced (pace_kbps).
        self._pace_history: deque[bool] = deque(maxlen=CONGESTION_MEMORY)
        self._last_burst = -1 << 30  # the last frame that sent a burst (BURST_BYTES)
        # Loss of the last reports with a burst within BURST_S before them, and without
        self._burst_loss: deque[float] = deque(maxlen=CONGESTION_MEMORY)
        self._calm_loss: deque[float] = deque(maxlen=CONGESTION_MEMORY)
        self._adapt()

    def header_bytes(self) -> bytes:
        return self.header.to_bytes()

    def request_keyframe(self) -> None:
        self.analyzer.request_keyframe()

    def request_resync(self) -> None:
        """The receiver lost motion: its next packet is a RESYNC."""
        self.packetizer.resync_next()

    def report_loss(self, fraction: float, queue_ms: float = 0.0,
                    rate_kbps: float | None = None) -> None:
        """Adapt to the receiver's loss reports (about one a second).

        Motion packets are predicted from the previous frame, so one lost packet costs every
        frame up to the next RESYNC. While any of the last LOSS_MEMORY reports saw loss
        (after the first, below), every packet is a RESYNC: a loss then costs that packet's
        frames only, for ~4 kbps more (measured on a validation clip: 6.5 kbps with a
        RESYNC a second, 10.7 with one every frame).

        Loss may also be a full link, whose router drops what its queue cannot hold; so
        may `queue_ms`, how long the motion packets waited in the network's queues
        (stream/congestion.py), at CONGESTED_MS or more. While any of the last
        CONGESTION_MEMORY reports saw either, packets carry at least CONGESTED_FRAMES
        frames: half the packets, whose headers cost more than their motion, so about a
        third less on the wire, and a RESYNC packet's intra frame is one of two. On a link
        that only loses, that costs the same share of frames (half the packets, two frames
        each) and a frame's time of latency.

        `rate_kbps`, the receiver's estimate of what the link carries of the data channels
        (stream/congestion.py, LinkRate, headers counted), less what this sender sent of
        everything but the layer over the last SENT_WINDOW_S, is what the layer may have
        (layer_rate.LiveLayer.limit)."""
        # Loss is first taken for a full link: intra-only motion, 4 kbps more, is what a full
        # link cannot carry. Only loss that goes on with two frames a packet is answered
        # with it.
        was_full = self.congested
        self._loss_history.append(fraction >= LOSSY and was_full)
        full = self.link_full = fraction >= LOSSY or queue_ms >= CONGESTED_MS
        self._queue_history.append(full)
        if self.layer is not None:  # only a layer call is paced
            self._pace_history.append(queue_ms >= CONGESTED_MS or self._overflow(fraction))
            self.layer.short_runs = self._paced  # smaller intra pictures while paced
        self._adapt()
        # A full link, not only a lossy one: its queue shows, or the loss comes with a fall
        # of the receiver's estimate (it falls only when the delay grows: an overuse).
        fell = (rate_kbps is not None and self._last_rate is not None
                and rate_kbps < RATE_FELL * self._last_rate)
        self.link_congested = queue_ms >= CONGESTED_MS or (fraction >= LOSSY and fell)
        if rate_kbps is not None:
            self._last_rate = rate_kbps
        if self.layer is not None and rate_kbps is not None and self.layer_follows_link:
            # The estimate also falls on the delay of a burst (an intra picture, a keyframe)
            # through a link with room to spare; a fall counts when the report saw the link
            # full (loss, or a queue).
            if full or self._link_kbps is None or rate_kbps > self._link_kbps:
                self._link_kbps = rate_kbps
            self.layer.limit(self.layer_budget(self._link_kbps), self._newest() / self.fps)

    def _overflow(self, fraction: float) -> bool:
        """Whether loss after bursts, above what the link loses without them (a link that
        only loses loses as much either way), says the bursts overflow a queue. Means over
        reports: one report's share of a few dozen packets swings by half around 5 %."""
        burst = self._newest() - self._last_burst <= BURST_S * self.fps
        (self._burst_loss if burst else self._calm_loss).append(fraction)
        after, calm = self._burst_loss, self._calm_loss
        return (burst and len(after) >= 2 and len(calm) >= CALM_REPORTS
                and mean(after) >= max(LOSSY, 2 * mean(calm)))

    def layer_budget(self, rate_kbps: float) -> float:
        """What the layer's packets may carry when the data channels may carry `rate_kbps`
        on the wire: the rest of the call's packets and the layer's own headers come first
        (a picture's DATA chunk header: it shares its motion packet's, stream/sctp.py),
        counted as the receiver's estimate counts them (wire_bytes)."""
        assert self.layer is not None
        pictures = self.fps / self.layer.divisor
        return (rate_kbps - self._sent_kbps(motion_only=False)
                - pictures * CHUNK_OVERHEAD * 8 / 1000)

    def _sent_kbps(self, motion_only: bool) -> float:
        """What this sender sent on the wire over the last SENT_WINDOW_S of frames: its
        motion packets, and (not `motion_only`) the others but the layer's."""
        window = max(1, round(SENT_WINDOW_S * self.fps))
        newest = self._newest()
        sent = sum(m + (0 if motion_only else o)
                   for i, m, o in self._sent if i > newest - window)  # bytes
        return sent * self.fps / window * 8 / 1000

    @property
    def pace_kbps(self) -> float | None:
        """The rate to pace this sender's data channels at on the wire (stream/sctp.py,
        pace_data), or None: send at once. A call with a layer is paced at PACE_FACTOR
        times the receiver's last estimate while any of the last CONGESTION_MEMORY reports
        saw the link queue, or lose packets after a burst (BURST_BYTES); never under
        PACE_FACTOR times what the motion and the layer send steadily (the estimate of a
        link the sound shares may sit under that, and a pace under what is sent queues
        ever more).

        Only beside a layer: its encoders start with an intra picture (every 3 s while
        paced, layer_rate.LiveLayer.short_runs), bursts that a full link's queue dropped,
        and the layer then paid for the loss. A call without
        one bursts only at its keyframes, and where its motion and sound overfill the
        link the pace turned the bottleneck's drops into delay: through 48 kbps, a speech
        call drew 612 of 703 frames paced at latency p50 / p95 578 / 2,298 ms, against
        477 at 239 / 602 ms unpaced (docs/live_calls.md)."""
        if self._last_rate is None or not self._paced:
            return None
        assert self.layer is not None
        steady = self._sent_kbps(motion_only=True) + self.layer.kbps
        kbps = PACE_FACTOR * max(self._last_rate, steady)
        return kbps if kbps > 0 else None  # a receiver may report 0 before anything came

    @property
    def _paced(self) -> bool:
        """Whether a report lately said this layer call's bursts are to be paced (never with
        `layer_follows_link` False: such a call keeps its rates whatever the link)."""
        return (self.layer is not None and self.layer_follows_link
                and any(self._pace_history))

    def _newest(self) -> int:
        """The newest frame pushed (0 before any)."""
        return self._sent[-1][0] if self._sent else 0

    def _adapt(self) -> None:
        """Frames a packet and RESYNC interval, from what the reports said."""
        frames = self._packet_frames
        if self.congested:
            frames = max(frames, CONGESTED_FRAMES)
        self.packetizer.packet_frames = frames
        lossy = any(self._loss_history)
        self.packetizer.resync_interval = frames if lossy else self._resync

    @property
    def congested(self) -> bool:
        """True while the receiver's reports say the link may be full."""
        return any(self._queue_history)

    @property
    def resilient(self) -> bool:
        """True while every motion packet is sent intra-coded."""
        return self.packetizer.resync_interval == self.packetizer.packet_frames

    def sent_face(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """The face this sender sends, as the receiver is to show it (a self-view): the
        crop of `frame_rgb` it codes, or its avatar drawn to the last Motion sent (the mesh
        warp); None before the first face."""
        if self.avatar is not None:
            if self.avatar.last is None:
                return None
            if self._avatar_view is None:
                self._avatar_view = WarpRenderer(self.analyzer.basis, self.size)
                self._avatar_view.set_reference(self.avatar.avatar.image,
                                                self.avatar.avatar.motion)
            return self._avatar_view.render(self.avatar.last)
        crop = self.analyzer.crop
        return None if crop is None else crop.cut(frame_rgb, self.size)

    def push(self, frame_rgb: np.ndarray, index: int) -> list[bytes]:
        packets = []
        for event in map(self.stabiliser, self.analyzer.push(frame_rgb, index)):
            if self.avatar is not None:
                portrait = self.avatar(event)
                if portrait is None:
                    continue
                event = portrait
            if self.layer is not None:
                self._layer_picture(event, frame_rgb)
            packets += self.packetizer.push(event)
        out = [encode_packet(p) for p in packets]
        motion = other = layer = 0
        for p, data in zip(packets, out, strict=True):
            if p.type in MOTION_TYPES:
                motion += wire_bytes(len(data))
            elif p.type in LAYER_TYPES:
                layer += len(data)
            else:
                other += wire_bytes(len(data))
        self._sent.append((index, motion, other))
        if other + layer >= BURST_BYTES:
            self._last_burst = index
        return out

    def warm_up(self) -> None:
        """Set up, on a faceless grey picture, what the first frames would otherwise pay
        for: the face meshes, the keyframe codec and the restorer's first pass (in a call
        the first 16 frames were skipped while they loaded). Nothing is sent and the
        stream's state is unchanged."""
        self.analyzer.tracker.warm_up(self.header.source_width, self.header.source_height)
        grey = np.full((self.size, self.size, 3), 128, np.uint8)
        codec_id, image = encode_image(grey, self.packetizer.keyframe_quality, fast=True)
        if self.packetizer.shares is not None:
            self.packetizer.shares(grey, decode_image(codec_id, image, self.size))

    def _layer_picture(self, event: KeyframeEvent | MotionEvent, frame_rgb: np.ndarray) -> None:
        """Code this frame's layer picture, if it carries one, for the packetiser to send."""
        assert self.layer is not None and self.packetizer.layer is not None
        pictures = self.packetizer.layer.pictures
        pictures.clear()
        if isinstance(event, KeyframeEvent):
            self.layer.restart(event.index)
            return
        crop = self.analyzer.crop
        if not event.face_seen or crop is None:
            return  # a held Motion: nothing new to show
        picture = self.layer.picture(event.index, crop.cut(frame_rgb, self.size))
        if picture is not None:
            pictures[event.index] = picture

    def close(self) -> None:
        self.packetizer.close()
        self.analyzer.close()
        if self.layer is not None:
            self.layer.encoder.restart()


class StreamDecoder:
    """Receiver side of a call: push packet bytes as they arrive, get rendered frames."""

    def __init__(self, header_bytes: bytes, renderer: str = DEFAULT_RENDERER,
                 threads: int | None = None, eye_contact: EyeContact | None = None,
                 pose: PoseEdit | None = None) -> None:
        """`threads`: torch threads for the decoder's networks (a call's machine also runs
        its sender), set on the thread that decodes, since a thread keeps the count it had
        when it first ran a network. `eye_contact`: the eyes drawn turned up (None: as
        sent). `pose`: the head drawn turned (None: as sent)."""
        self.decoder = PacketDecoder(StreamHeader.from_bytes(header_bytes), renderer,
                                     pose=pose, restore_behind=True, eye_contact=eye_contact)
        torch = sys.modules.get("torch")  # not loaded: no network to set (warp, no layer)
        if threads is not None and torch is not None:
            torch.set_num_threads(threads)

    @staticmethod
    def warm_up(renderer: str, size: int) -> None:
        """Before a stream starts: load and run its networks once (decoder.warm_up)."""
        warm_up(renderer, size)

    def push(self, packet: bytes, draw: bool = True,
             hurry: bool = False) -> list[tuple[int, np.ndarray]]:
        """`draw` False: decode without drawing (PacketDecoder.push). `hurry`: draw the
        cheapest way there is (PacketDecoder.push)."""
        try:
            p, end = decode_packet(packet)
        except BitstreamError:
            # A damaged keyframe came (its type byte says so): it is not on its way, and
            # motion that refers to it would otherwise wait for it forever.
            if len(packet) > 1 and packet[1] == PacketType.KEYFRAME:
                self.decoder.keyframe_damaged()
            raise
        if end != len(packet):
            raise BitstreamError(f"{len(packet) - end} stray bytes after a packet")
        return self.decoder.push(p, draw, hurry)

    @property
    def last_frame(self) -> int | None:
        return self.decoder.last_frame

    def needs_keyframe(self) -> bool:
        return self.decoder.needs_keyframe()

    def needs_resync(self) -> bool:
        return self.decoder.needs_resync()

    @property
    def stats(self) -> DecodeStats:
        return self.decoder.stats
