"""Sender: analysis events -> packets (keyframes, motion, resync, end), and file encoding."""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from facecodec.bitstream.container import SIZE_STEP, FcvWriter, LayerParams, StreamHeader
from facecodec.bitstream.packets import (
    IMAGE_FROM_LAYER,
    LAYER_TYPES,
    MOVE_MOTION,
    EndPayload,
    KeyframePayload,
    LayerGroupPayload,
    LayerPayload,
    MotionPayload,
    Packet,
    PacketType,
    RestorePayload,
    encode_packet,
)
from facecodec.capture.video import VideoInfo, probe, read_frames
from facecodec.codec.analysis import (
    AnalysisReport,
    FaceAnalyzer,
    KeyframeEvent,
    MotionEvent,
    stabilise,
)
from facecodec.codec.avatar import AvatarEvents
from facecodec.codec.background import background
from facecodec.codec.keyframe import decode_image, encode_image
from facecodec.codec.layer import MAX_Q, MIN_Q, downscale
from facecodec.codec.layer_rate import (
    FULL_LAYER_MOTION,
    LAYER_MOTION_PRESET,
    NET_FUSION_MAX_KBPS,
    LayerPlan,
    check_layer_kbps,
    full_size_layer,
    keyframe_quality_with_layer,
    plan_layer,
    uses_layer,
)
from facecodec.codec.moves import choose_moves
from facecodec.codec.reference import choose_references
from facecodec.errors import FacecodecError, RateTooLow
from facecodec.face.tracker import small_face_advice
from facecodec.files import check_writable
from facecodec.motion.basis import ExpressionBasis, load_basis
from facecodec.motion.coder import (
    CoderConfig,
    MotionEncoder,
    make_config,
    make_config_q,
    make_config_steps,
)
from facecodec.motion.motion import Motion
from facecodec.motion.presets import DEFAULT_PRESET, PRESETS
from facecodec.motion.stabilize import beta_for
from facecodec.render.fusion_model import FULL_SIZE_WEIGHTS, GATE_MODEL_ID, default_fusion_id

if TYPE_CHECKING:
    from facecodec.codec.scoring import StreamScore
    from facecodec.render.restore import ShareMeter

DEFAULT_KEYFRAME_QUALITY = 60
# A receiver keeps a packet's worth of layer pictures (decoder._LayerState.HISTORY).
MAX_FILE_PACKET_FRAMES = 60
REFERENCES = ("best", "first")
MAX_REFRESH_S = 3600.0  # --refresh: an hour between keyframes is as good as none
K_MEDIUM = 16  # expression coefficients at the medium preset (lowest: 4, low: 8, high: 32)


@dataclass(frozen=True)
class EncoderSettings:
    size: int = 256
    preset: str = DEFAULT_PRESET
    # Every byte of the file over its duration; overrides the preset (`_code_to_target`).
    target_kbps: float | None = None
    # 0..100, the user-facing quality of reference pictures; None: DEFAULT_KEYFRAME_QUALITY,
    # or with a layer the lower quality the layer's rate calls for (layer_rate.py)
    keyframe_quality: int | None = None
    packet_frames: int | None = None  # frames per motion packet; None: the resync interval
    resync_s: float = 1.0  # a lost packet damages at most this long
    refresh_s: float = 0.0  # periodic keyframe refresh (0: only when needed; 1..MAX_REFRESH_S)
    allow_several: bool = False  # code the largest face when several are present
    layer_kbps: float = 0.0  # low-resolution layer rate (0: motion only)
    # Constant quality: the layer's SVT-AV1 crf, fixed instead of searched for layer_kbps
    # (which still picks the layer's size and picture rate), as conventional codecs run at a
    # fixed crf; None: the crf whose rate is nearest layer_kbps.
    layer_crf: int | None = None
    # Motion alone carries its surround (facecodec/motion/surround.py); False: never.
    surround: bool = True
    # Motion alone: each segment's reference picture is the frame that draws the segment
    # best ("best", facecodec/codec/reference.py) or the frame where it starts ("first").
    reference: str = "best"
    # Appear as this portrait, driven by the video's face (codec/avatar.py): motion alone,
    # the face itself never coded.
    avatar: Path | None = None

    @property
    def with_layer(self) -> bool:
        """Whether these settings always code the low-resolution layer (a target rate may
        or may not: it needs the surround measured for motion alone)."""
        return self.layer_kbps > 0

    def validate(self) -> None:
        if not 128 <= self.size <= 512 or self.size % SIZE_STEP:
            raise FacecodecError(f"--size {self.size}: the crop's side must be a multiple of "
                                 f"{SIZE_STEP} within 128..512")
        if self.preset not in PRESETS:
            raise FacecodecError(f"unknown preset {self.preset!r} ({', '.join(PRESETS)})")
        if self.keyframe_quality is not None and not 0 <= self.keyframe_quality <= 100:
            raise FacecodecError("--keyframe-quality must be within 0..100")
        if self.target_kbps is not None and not 0.2 <= self.target_kbps <= 100:
            raise FacecodecError("--target-kbps must be within 0.2..100")
        check_layer_kbps(self.layer_kbps)
        if self.avatar is not None and self.layer_kbps > 0:
            raise FacecodecError("--avatar sends motion only: a layer's pictures would show "
                                 "the sender's own face (drop --layer-kbps)")
        if self.layer_crf is not None:
            if not MIN_Q <= self.layer_crf <= MAX_Q:
                raise FacecodecError(f"--layer-crf must be within {MIN_Q}..{MAX_Q}, "
                                     f"got {self.layer_crf}")
            if self.layer_kbps <= 0:
                raise FacecodecError("--layer-crf needs --layer-kbps (which picks the layer's "
                                     "size and picture rate)")
        if not (self.refresh_s == 0 or 1 <= self.refresh_s <= MAX_REFRESH_S):  # refuses NaN
            raise FacecodecError(f"--refresh must be 0 (a keyframe only when needed) or within "
                                 f"1..{MAX_REFRESH_S:g} s, got {self.refresh_s:g}")
        if not 0 < self.resync_s <= 1.0:
            raise FacecodecError("resync interval must be within (0, 1] s")
        if self.reference not in REFERENCES:
            raise FacecodecError(f"unknown reference choice {self.reference!r} "
                                 f"({', '.join(REFERENCES)})")


    def keyframe_quality_for(self, layer_kbps: float, live: bool = False) -> int:
        if self.keyframe_quality is not None:
            return self.keyframe_quality
        if layer_kbps > 0:
            return keyframe_quality_with_layer(layer_kbps, self.size, live)
        return DEFAULT_KEYFRAME_QUALITY


def fusion_model_for(
    layer_kbps: float, layer_size: int, crop_size: int, live: bool = False
) -> str:
    """The fusion a layer of this rate and size is made for: below the crop's size the
    fusion network up to NET_FUSION_MAX_KBPS, the training-free fusion above; a layer as
    large as the crop gets the colour network in a file and is drawn as it is in a call
    (the training-free fusion adds no detail then). A call's machine also runs its sender
    and audio: the colour network costs ~12 ms a frame, and in a loopback call at 15 kbps
    it took the receiver to 121 % of a core (51-58 % without) for +0.001 MS-SSIM."""
    if layer_size >= crop_size:
        return GATE_MODEL_ID if live else default_fusion_id(FULL_SIZE_WEIGHTS)
    if layer_kbps <= NET_FUSION_MAX_KBPS:
        return default_fusion_id()
    return GATE_MODEL_ID


def frames_per_packet(settings: EncoderSettings, fps: Fraction) -> int:
    """Frames a file's motion packet carries (and its layer group): a resync interval (1 s),
    at most MAX_FILE_PACKET_FRAMES. Every packet costs ~16 bytes of framing: on a 5 s clip at
    30 fps, 1 s packets instead of 0.4 s saved 0.27 kbps of motion only and 0.55 kbps with an
    8 kbps layer (liveportrait_d19)."""
    resync = max(1, math.floor(float(fps) * settings.resync_s))
    return settings.packet_frames or min(resync, MAX_FILE_PACKET_FRAMES)


# Beside a layer the surround only moves held layer pictures over the few frames to the
# next one, and costs more than it gives: on 2 train clips at the lowest preset (layers at
# crf 64 / 61 / 55) it added 1.4-2.9 kbps of motion for +0.2..+1.5 VMAF, less than that
# rate buys as layer (benchmarks/motion_beside_layer.py --surround off on).
SURROUND_BESIDE_LAYER = False


def codes_surround(wanted: bool, beside_layer: bool) -> bool:
    """Whether a stream carries the surround: if the settings want it (`--no-surround`
    does not) and the motion is alone (or SURROUND_BESIDE_LAYER)."""
    return wanted and (SURROUND_BESIDE_LAYER or not beside_layer)


def coder_config(basis: ExpressionBasis, preset: str, beside_layer: bool,
                 surround: bool = True, full_layer: bool = False) -> CoderConfig:
    """The preset's quantiser. Motion alone carries its surround (facecodec/motion/surround.py)
    at every preset. At the lowest it cost 0.68 kbps (1.17 -> 1.85 steady) for +4.4 VMAF and
    +1.8 dB PSNR-Y on 6 train clips (measured with DCT steps coarser at high frequencies,
    not shipped), far above the line to the low preset (3.32 kbps, VMAF 28.9); on the
    validation bench as shipped, 1.64 -> 2.43 kbps steady, VMAF 39.5 -> 46.0. `--no-surround`
    and `--target-kbps` below the lowest preset's rate still give ~1 kbps without it. Beside
    a layer the layer draws the picture around the face. Beside a file's layer as large as
    the crop (`full_layer`), LAYER_MOTION_PRESET is coarser still (FULL_LAYER_MOTION)."""
    if full_layer and preset == LAYER_MOTION_PRESET:
        return make_config_steps(*FULL_LAYER_MOTION, basis.std)
    return make_config(preset, K_MEDIUM, basis.std,
                       surround=codes_surround(surround, beside_layer))


@functools.cache
def share_meter() -> ShareMeter:
    """The shipped restorer's sender side, loaded once a process (every stream sends its
    keyframes' RESTORE shares, whichever renderer will draw it)."""
    from facecodec.render.restore import ShareMeter  # torch: not for the analysis alone

    return ShareMeter()


class Packetizer:
    """Turns analysis events into packets. Motion packets never span a keyframe or a resync
    point; the first packet after either is a RESYNC (intra) packet."""

    def __init__(
        self,
        config: CoderConfig,
        resync_interval: int,
        packet_frames: int,
        keyframe_quality: int,
        fast_keyframes: bool = False,
        shares: ShareMeter | None = None,
        defer_shares: bool = False,
        layer_groups: bool = True,
    ) -> None:
        """`shares`: measures each keyframe picture's RESTORE share (none sent without).
        `defer_shares` (a call): measure it in the background (codec/background.py) and
        send the RESTORE packet with the first push after it is ready; the receiver draws
        the picture as decoded until the share comes (docs/bitstream.md, RESTORE).
        `layer_groups`: with several frames a packet, a file's layer pictures go as one
        LAYER_GROUP before it; a call's (False) each as a LAYER packet as soon as it is
        coded."""
        self.config = config
        self.shares = shares
        self.defer_shares = defer_shares
        self._share_jobs: list[tuple[int, int, Future[int]]] = []  # (keyframe id, frame, job)
        self.coder = MotionEncoder(config)
        self.resync_interval = max(1, resync_interval)
        self.packet_frames = max(1, min(packet_frames, 255))
        self.keyframe_quality = keyframe_quality
        self.fast_keyframes = fast_keyframes  # a call: see keyframe.AV1_PRESET_FAST
        self.seq = {"motion": 0, "layer": 0, "other": 0}  # sequences (docs/bitstream.md)
        self.layer: LayerPlan | None = None
        # Layer pictures of the pending frames; with several frames a packet (files) they go
        # out as one LAYER_GROUP before the motion packet, else each as a LAYER packet.
        self.layer_pending: list[tuple[int, bool, bytes]] = []
        self.layer_held: list[Packet] = []  # LAYER packets, each sent with its frame's motion
        self.layer_groups = layer_groups
        self.layer_ahead: int | None = None  # a picture sent with the group before its own
        # A file's layer frames, sorted: its plan is whole before the first packet (a call's
        # layer pictures come a frame at a time and are never looked ahead to).
        self.layer_frames: list[int] = []
        # A file whose layer is as large as the crop: a keyframe whose frame carries an intra
        # layer picture sends no image of its own, the receiver takes that picture.
        self.reference_from_layer = False
        self.keyframe_id = -1
        self.pending: list[MotionEvent] = []
        self.last_resync = -(10**9)
        self.force_intra = True

    def resync_next(self) -> None:
        """Start a RESYNC packet at the next frame, whatever the interval (a live receiver
        that lost motion asks for it)."""
        self.last_resync = -(10**9)

    def _packet(self, ptype: PacketType, timestamp: int, payload: bytes) -> Packet:
        channel = ("motion" if ptype in (PacketType.MOTION, PacketType.RESYNC)
                   else "layer" if ptype in LAYER_TYPES else "other")
        p = Packet(ptype, self.seq[channel], timestamp, payload)
        self.seq[channel] = (self.seq[channel] + 1) & 0xFFFF
        return p

    def _next_picture(self, after: int) -> tuple[int, bool, bytes] | None:
        """The first layer picture after frame `after`, if it continues the same run."""
        if self.layer is None:
            return None
        k = bisect.bisect_right(self.layer_frames, after)
        if k == len(self.layer_frames) or self.layer.pictures[i := self.layer_frames[k]][0]:
            return None  # none, or intra: a new run (every keyframe starts one)
        return i, *self.layer.pictures[i]

    def _layer_group(self) -> list[Packet]:
        if not self.layer_pending:
            return []
        first = self.layer_pending[0][0]
        # The next packet's first picture goes too when it continues the run, so that the
        # frames after this group's last picture can fade into it (packets.MOVE_BETWEEN)
        # instead of showing that picture as it is.
        ahead = self._next_picture(self.layer_pending[-1][0])
        if ahead is not None and ahead[0] - first <= 255:
            self.layer_pending.append(ahead)
            self.layer_ahead = ahead[0]
        # Moves are chosen once the whole stream can be decoded (codec/moves.py).
        group = tuple((i - first, intra, data, MOVE_MOTION)
                      for i, intra, data in self.layer_pending)
        self.layer_pending = []
        payload = LayerGroupPayload(self.keyframe_id, group).to_bytes()
        return [self._packet(PacketType.LAYER_GROUP, first, payload)]

    def flush(self) -> list[Packet]:
        # Before the motion: the pictures are there when it renders. A call's pictures wait
        # for their motion packet (its frames cannot be drawn sooner), so that both leave
        # together and share an SCTP packet (stream/sctp.py).
        out = [*self._layer_group(), *self.layer_held]
        self.layer_held = []
        if not self.pending:
            return out
        first = self.pending[0].index
        intra = self.force_intra
        data = self.coder.encode([e.motion for e in self.pending], intra=intra)
        payload = MotionPayload(self.keyframe_id, len(self.pending), data).to_bytes()
        self.pending = []
        self.force_intra = False
        return [*out, self._packet(PacketType.RESYNC if intra else PacketType.MOTION, first,
                                   payload)]

    def _restore(self, keyframe_id: int, index: int, share: int) -> Packet:
        payload = RestorePayload(keyframe_id, share).to_bytes()
        return self._packet(PacketType.RESTORE, index, payload)

    def ready_shares(self, wait: bool = False) -> list[Packet]:
        """RESTORE packets of the deferred shares measured by now (`wait`: all of them)."""
        out = []
        while self._share_jobs and (wait or self._share_jobs[0][2].done()):
            keyframe_id, index, job = self._share_jobs.pop(0)
            out.append(self._restore(keyframe_id, index, job.result()))
        return out

    def close(self) -> None:
        for _, _, job in self._share_jobs:  # a stream that ends sends no more shares
            job.cancel()
        self._share_jobs = []

    def push(self, event: KeyframeEvent | MotionEvent) -> list[Packet]:
        out: list[Packet] = self.ready_shares()
        if isinstance(event, KeyframeEvent):
            out += self.flush()
            self.keyframe_id = (self.keyframe_id + 1) & 0xFFFF
            picture = self.layer.pictures.get(event.index) if self.layer is not None else None
            if self.reference_from_layer and picture is not None and picture[0]:
                codec_id, image = IMAGE_FROM_LAYER, b""
            else:
                codec_id, image = encode_image(event.image, self.keyframe_quality,
                                               fast=self.fast_keyframes)
            ref = self.config.dequantize(self.config.quantize(event.motion))
            c = event.crop
            payload = KeyframePayload(
                self.keyframe_id,
                (c.x, c.y, c.side),
                codec_id,
                tuple(float(v) for v in ref.to_vector()),
                image,
            )
            out.append(self._packet(PacketType.KEYFRAME, event.index, payload.to_bytes()))
            if self.shares is not None and codec_id != IMAGE_FROM_LAYER:
                decoded = decode_image(codec_id, image, event.image.shape[0])
                if self.defer_shares:
                    job = background().submit(self.shares, event.image, decoded)
                    self._share_jobs.append((self.keyframe_id, event.index, job))
                else:
                    out.append(self._restore(self.keyframe_id, event.index,
                                             self.shares(event.image, decoded)))
            self.force_intra, self.last_resync = True, event.index
            return out
        if self.keyframe_id < 0:
            return out
        picture = self.layer.pictures.get(event.index) if self.layer is not None else None
        if self.pending and event.index != self.pending[-1].index + 1:
            # A packet says only its first frame and its count: frames a call skipped (a
            # camera's empty slot, a sender behind) end it.
            out += self.flush()
            if self.resync_interval <= self.packet_frames:  # every packet a RESYNC (loss)
                self.force_intra, self.last_resync = True, event.index
        if event.index - self.last_resync >= self.resync_interval:
            out += self.flush()
            self.force_intra, self.last_resync = True, event.index
        if picture is not None and event.index != self.layer_ahead:
            intra, data = picture
            if self.layer_groups and self.packet_frames > 1:
                self.layer_pending.append((event.index, intra, data))
            else:  # with the motion packet that covers this frame, just before it
                layer_payload = LayerPayload(self.keyframe_id, intra, data).to_bytes()
                self.layer_held.append(self._packet(PacketType.LAYER, event.index, layer_payload))
        self.pending.append(event)
        if len(self.pending) >= self.packet_frames:
            out += self.flush()
        return out

    def end(self, total_frames: int) -> list[Packet]:
        out = self.flush() + self.ready_shares(wait=True)
        out.append(self._packet(PacketType.END, total_frames, EndPayload(total_frames).to_bytes()))
        return out


@dataclass
class EncodeResult:
    header: StreamHeader
    packets: list[Packet]
    report: AnalysisReport
    keyframes: list[KeyframeEvent]
    motions: dict[int, Motion] = field(default_factory=dict)
    # A target's choice between motion alone and a layer, and the scores that made it.
    choice: str | None = None

    @property
    def duration_s(self) -> float:
        return self.report.frames / float(self.header.fps)

    def bytes_of(self, *types: PacketType) -> int:
        return sum(len(encode_packet(p)) for p in self.packets if p.type in types)

    @property
    def motion_kbps(self) -> float:
        b = self.bytes_of(PacketType.MOTION, PacketType.RESYNC)
        return b * 8 / 1000 / self.duration_s

    @property
    def layer_kbps(self) -> float:
        return self.bytes_of(*LAYER_TYPES) * 8 / 1000 / self.duration_s

    @property
    def total_bytes(self) -> int:
        return len(self.header.to_bytes()) + sum(len(encode_packet(p)) for p in self.packets)

    @property
    def total_kbps(self) -> float:
        return self.total_bytes * 8 / 1000 / self.duration_s


def packetize(
    events: list[KeyframeEvent | MotionEvent],
    config: CoderConfig,
    settings: EncoderSettings,
    fps: Fraction,
    total_frames: int,
    layer: LayerPlan | None = None,
    layer_kbps: float = 0.0,
    shares: ShareMeter | None = None,
) -> list[Packet]:
    resync = max(1, math.floor(float(fps) * settings.resync_s))
    per_packet = frames_per_packet(settings, fps)
    pk = Packetizer(config, resync, per_packet, settings.keyframe_quality_for(layer_kbps),
                    shares=shares)
    pk.layer = layer
    pk.layer_frames = sorted(layer.pictures) if layer is not None else []
    # Unless a reference quality was asked for (then the reference is coded as asked).
    pk.reference_from_layer = (layer is not None and layer.size >= settings.size
                               and settings.keyframe_quality is None)
    packets: list[Packet] = []
    for e in events:
        packets += pk.push(e)
    return packets + pk.end(total_frames)


def smooth_for(
    events: list[KeyframeEvent | MotionEvent],
    basis: ExpressionBasis,
    fps: Fraction,
    config: CoderConfig,
    beside_layer: bool,
) -> list[KeyframeEvent | MotionEvent]:
    """The analysis' Motions smoothed for coding with `config` (motion/stabilize.py); their
    surround dropped if `config` does not code it."""
    if not config.surround:
        events = [replace(e, motion=e.motion.with_surround(None)) for e in events]
    return stabilise(events, basis, float(fps), beta_for(config.step_mul, beside_layer))


def motion_rate(
    events: list[KeyframeEvent | MotionEvent],
    basis: ExpressionBasis,
    config: CoderConfig,
    settings: EncoderSettings,
    fps: Fraction,
    total: int,
    beside_layer: bool,
) -> float:
    """kbps of the MOTION and RESYNC packets `config` makes of `events`, smoothed for it."""
    packets = packetize(smooth_for(events, basis, fps, config, beside_layer), config, settings,
                        fps, total)
    n = sum(len(encode_packet(p)) for p in packets
            if p.type in (PacketType.MOTION, PacketType.RESYNC))
    return n * 8 / 1000 / (total / float(fps))


def _search_config(
    basis: ExpressionBasis,
    events: list[KeyframeEvent | MotionEvent],
    settings: EncoderSettings,
    fps: Fraction,
    total: int,
    budget: float,
) -> CoderConfig | None:
    """The finest quantiser whose motion stream fits `budget` kbps (bisection on quality;
    the Motions are smoothed for each candidate quantiser, as they will be coded). With the
    surround if even the coarsest quantiser leaves room for it, else without; None if not
    even the coarsest fits."""
    def kbps(cfg: CoderConfig) -> float:
        return motion_rate(events, basis, cfg, settings, fps, total, beside_layer=False)

    surround = settings.surround
    if surround:
        floor = kbps(make_config_q(0.0, 2 * K_MEDIUM, basis.std, surround=True))
        surround = floor <= budget

    def config(q: float) -> CoderConfig:
        return make_config_q(q, 2 * K_MEDIUM, basis.std, surround=surround)

    if not surround:
        floor = kbps(config(0.0))
    if floor > budget:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(10):
        mid = (lo + hi) / 2
        if kbps(config(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return config(lo)


# Layer pictures an analysis keeps for rate control's passes: 512 MiB is 2,730 frames of a
# 256 px layer (91 s at 30 fps). A 196 s clip held them all, and peaked at 2.8 GB.
HELD_LAYER_BYTES = 512 << 20


@dataclass
class Analysis:
    """What tracking a whole file produced; coding it at several rates reuses it."""

    info: VideoInfo
    events: list[KeyframeEvent | MotionEvent]
    report: AnalysisReport
    source: Path | None = None  # read again, only for a layer
    max_frames: int | None = None
    _pictures: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _chosen: dict[int, list[KeyframeEvent | MotionEvent]] = field(default_factory=dict,
                                                                  repr=False)
    # coded layers by (size, crop size, divisor, crf): rate control revisits them
    layer_codes: dict[tuple[int, int, int, int], dict[int, tuple[bool, bytes]]] = field(
        default_factory=dict, repr=False)

    def events_with_chosen_references(self, size: int) -> list[KeyframeEvent | MotionEvent]:
        """The events with each segment's best reference picture (reference.py); kept, since
        rate control and the bench code them several times."""
        if size not in self._chosen:
            if self.source is None:
                raise FacecodecError("this analysis has no source to choose references from")
            source = self.source
            self._chosen[size] = choose_references(
                self.events, lambda: iter_crops(source, self.keyframes, size, self.max_frames),
                load_basis(), size)
        return self._chosen[size]

    @property
    def keyframes(self) -> list[KeyframeEvent]:
        return [e for e in self.events if isinstance(e, KeyframeEvent)]

    def layer_pictures(self, size: int, crop_size: int) -> Callable[[], Iterator[np.ndarray]]:
        """Every frame's crop downscaled to the layer `size`, in frame order, as a fresh
        iterator each call (rate control codes them several times). The crop is cut at
        `crop_size` first, like the receiver's frame, then area-downscaled, like training
        did. A clip whose pictures fit HELD_LAYER_BYTES keeps them; a longer one is read
        from its source again for each pass, so memory does not grow with its length."""
        if self.source is None:
            raise FacecodecError("this analysis has no source to cut layer pictures from")
        source, keyframes, max_frames = self.source, self.keyframes, self.max_frames

        def read() -> Iterator[np.ndarray]:
            return (downscale(c, size)
                    for c in iter_crops(source, keyframes, crop_size, max_frames))

        if self.report.frames * size * size * 3 > HELD_LAYER_BYTES:
            return read
        key = (size, crop_size)
        if key not in self._pictures:
            held = np.empty((self.report.frames, size, size, 3), np.uint8)
            n = 0
            for picture in itertools.islice(read(), len(held)):
                held[n] = picture
                n += 1
            self._pictures[key] = held[:n]
        held = self._pictures[key]
        return lambda: iter(held)


def analyze_file(
    src: str | Path,
    settings: EncoderSettings = EncoderSettings(),  # noqa: B008 - frozen dataclass
    progress: bool = False,
    max_frames: int | None = None,
) -> Analysis:
    settings.validate()
    info = probe(src)
    # The surround is measured only where the settings may code it (1.3 ms a frame).
    analyzer = FaceAnalyzer(
        load_basis(), settings.size, float(info.fps), allow_several=settings.allow_several,
        refresh_s=settings.refresh_s,
        surround=codes_surround(settings.surround, settings.with_layer),
        crops_refresh=settings.avatar is None,
        follow_light=settings.avatar is None and not settings.with_layer,
    )
    events: list[KeyframeEvent | MotionEvent] = []
    try:
        frames = read_frames(src, max_frames, info)
        if progress:
            frames = tqdm(frames, total=info.frames, desc="encode", unit="frame", leave=False)
        for i, frame in enumerate(frames):
            events += analyzer.push(frame, i)
    finally:
        analyzer.close()
    if not any(isinstance(e, KeyframeEvent) for e in events):
        raise FacecodecError(f"{src}: no face found in {analyzer.report.frames} frames "
                             f"({small_face_advice(info.width, info.height)}: cut the video "
                             "closer around it)")
    return Analysis(info, events, analyzer.report, Path(src), max_frames)


def code_analysis(
    analysis: Analysis,
    settings: EncoderSettings = EncoderSettings(),  # noqa: B008 - frozen dataclass
    progress: bool = False,
) -> EncodeResult:
    """Packets for an analysed file at the settings' preset, or at their target rate
    (`progress`: a bar on stderr through the target's trials, which take a while)."""
    settings.validate()
    if settings.target_kbps is not None:
        return _code_to_target(analysis, settings, progress)
    layer_kbps = settings.layer_kbps
    # Beside a layer the references stay at their segments' first frames: a layer as large as
    # the crop gives them (its intra pictures), and a smaller one replaces them within frames.
    events = analysis.events
    if settings.reference == "best" and layer_kbps <= 0:
        events = analysis.events_with_chosen_references(settings.size)
    config = coder_config(load_basis(), settings.preset, beside_layer=layer_kbps > 0,
                          surround=settings.surround,
                          full_layer=full_size_layer(layer_kbps, settings.size))
    return with_moves(analysis, _code(analysis, settings, events, config, settings.preset,
                                      layer_kbps))


def with_moves(analysis: Analysis, result: EncodeResult) -> EncodeResult:
    """The result with its layer pictures' moves chosen on the source (codec/moves.py);
    the rate does not change."""
    if result.header.layer is None or analysis.source is None:
        return result
    crops = iter_crops(analysis.source, analysis.keyframes, result.header.size,
                       analysis.max_frames)
    packets = choose_moves(result.header, result.packets, crops, result.report.frames)
    return replace(result, packets=packets)


def _code(
    analysis: Analysis,
    settings: EncoderSettings,
    events: list[KeyframeEvent | MotionEvent],
    config: CoderConfig,
    preset: str,
    layer_kbps: float,
    layer_at_most: bool = False,
) -> EncodeResult:
    """Packets for `events` with the motion quantiser `config` and a layer of `layer_kbps`
    (nearest, or with `layer_at_most` not above it)."""
    basis = load_basis()
    info, report = analysis.info, analysis.report
    fps = info.fps
    events = smooth_for(events, basis, fps, config, layer_kbps > 0)
    layer = None
    if layer_kbps > 0:
        layer = plan_layer(analysis, layer_kbps, settings.size, float(fps),
                           frames_per_packet(settings, fps), settings.layer_crf,
                           layer_at_most)
    header = StreamHeader(
        size=settings.size,
        fps_num=fps.numerator,
        fps_den=fps.denominator,
        source_width=info.width,
        source_height=info.height,
        basis_id=basis.basis_id,
        model_id="",
        preset=preset,
        resync_interval=max(1, math.floor(float(fps) * settings.resync_s)),
        coder_config=config.to_bytes(),
        layer=None if layer is None else LayerParams(
            layer.codec, layer.size, layer.divisor,
            fusion_model_for(layer_kbps, layer.size, settings.size)
        ),
        restorer=share_meter().model_id,
        # The crop is square in stored pixels: a player shows it as wide as the source's.
        pixel_aspect=info.pixel_aspect if settings.avatar is None else Fraction(1),
        avatar=settings.avatar is not None,  # the receiver says whom it shows
    )
    packets = packetize(events, config, settings, fps, report.frames, layer,
                        layer_kbps if layer is not None else 0.0, share_meter())
    motions = {e.index: e.motion for e in events if isinstance(e, MotionEvent)}
    keyframes = [e for e in events if isinstance(e, KeyframeEvent)]
    return EncodeResult(header, packets, report, keyframes, motions)


# --target-kbps counts every byte of the file. Motion alone gives its reference pictures
# about half of it, as the bench's motion-only rungs do on 3-6 s clips (reference share of
# all bytes: lowest-k40 60 %, low-k40 49 %, medium-k60 50 %, high-k80 53 %), at the finest
# of these qualities that fits; above 80 a reference adds little (high-k92 against high-k80:
# +0.3 VMAF for 14 kbps more). On a long clip the pictures cost less per second and the
# motion gets the rest, up to its finest quantiser.
TARGET_KEYFRAME_QUALITIES = (5, 15, 25, 32, 40, 50, 60, 70, 80)
TARGET_REFERENCE_SHARE = 0.5
# Which of the two streams a target keeps is judged by VMAF, the bench's headline score,
# measured by the encoder on its own decoded frames (codec/scoring.py). PSNR-Y, the earlier
# judge (layer kept at a 1 dB lead), favours the layer's blur and picked against VMAF on 5
# of 18 validation clip-targets at 6-12 kbps; VMAF's choice kept +0.2 / +0.2 / +0.9 VMAF
# at 6 / 8 / 12 kbps (benchmarks/target_rate.py, docs/layer.md "Target rates"). Motion
# alone is kept unless the layer leads by this much: it costs the receiver less and keeps
# the landmarks better at equal VMAF.
LAYER_MARGIN_VMAF = 0.5


def _code_to_target(analysis: Analysis, settings: EncoderSettings,
                    progress: bool = False) -> EncodeResult:
    """The file at `settings.target_kbps`, every byte counted. Up to MOTION_ONLY_MAX_KBPS
    motion alone; above, motion alone and motion + layer are both coded, and the layer is
    kept when its decoded frames score LAYER_MARGIN_VMAF higher: which wins depends on the
    clip and on how long it is (motion alone sends its reference pictures once, a layer
    keeps sending pictures)."""
    assert settings.target_kbps is not None
    if not uses_layer(settings.target_kbps) or settings.avatar is not None:
        return motion_to_target(analysis, settings)
    results: list[EncodeResult] = []
    error: FacecodecError | None = None
    # Both streams are coded, then decoded and scored frame by frame: a step each. Steps
    # differ in cost (coding one takes as long as scoring a third to all of the frames), so
    # the bar gives the time taken, not a time left.
    bar = tqdm(total=2 + analysis.report.frames, leave=False, disable=not progress,
               bar_format="{desc}{percentage:3.0f}%|{bar}| {elapsed}")
    with bar:
        for code, what in ((motion_to_target, "motion alone"),
                           (layer_to_target, "motion + layer")):
            bar.set_description(f"{settings.target_kbps:g} kbps, coding {what}")
            try:
                results.append(code(analysis, settings))
            except FacecodecError as e:  # a clip whose pictures leave one of them no room
                error = error or e
            bar.update()
        if not results:
            assert error is not None
            raise error
        if len(results) == 1:
            return results[0]
        from facecodec.codec.scoring import score_streams  # it imports this module

        motion, layered = results
        bar.set_description(f"{settings.target_kbps:g} kbps, scoring both")
        alone, beside = score_streams(analysis, [motion, layered], settings.size, bar.update)
    scores = (f"VMAF {beside.vmaf:.1f} with a {layered.layer_kbps:.2f} kbps layer, "
              f"{alone.vmaf:.1f} with motion alone")
    if keeps_layer(alone, beside):
        return replace(layered, choice=f"the layer kept: {scores}")
    return replace(motion, choice=f"motion alone kept: {scores} (the layer is kept only "
                                  f"when it scores {LAYER_MARGIN_VMAF:g} higher)")


def keeps_layer(motion: StreamScore, layered: StreamScore) -> bool:
    return layered.vmaf > motion.vmaf + LAYER_MARGIN_VMAF


def motion_to_target(analysis: Analysis, settings: EncoderSettings) -> EncodeResult:
    """Motion alone at the target: reference quality first (see TARGET_REFERENCE_SHARE),
    then the finest motion quantiser the rest allows."""
    assert settings.target_kbps is not None
    target = settings.target_kbps
    events = analysis.events
    if settings.reference == "best":
        events = analysis.events_with_chosen_references(settings.size)
    pictures = [e.image for e in events if isinstance(e, KeyframeEvent)]
    basis, fps, frames = load_basis(), analysis.info.fps, analysis.report.frames
    duration = frames / float(fps)
    cost: dict[int, float] = {}

    def reference_kbps(q: int) -> float:
        if q not in cost:
            cost[q] = sum(len(encode_image(p, q)[1]) for p in pictures) * 8 / 1000 / duration
        return cost[q]

    if settings.keyframe_quality is not None:
        qualities: tuple[int, ...] = (settings.keyframe_quality,)
    else:  # the finest that fits its share (rates rise with quality: bisect), then coarser
        lo, hi = 0, len(TARGET_KEYFRAME_QUALITIES) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if reference_kbps(TARGET_KEYFRAME_QUALITIES[mid]) <= TARGET_REFERENCE_SHARE * target:
                lo = mid
            else:
                hi = mid - 1
        qualities = TARGET_KEYFRAME_QUALITIES[lo::-1]
    label = f"target{target:g}"
    for quality in qualities:
        settings = replace(settings, keyframe_quality=quality)
        rest = reference_kbps(quality)  # with the header and framing, corrected below
        for _ in range(3):
            config = _search_config(basis, events, settings, fps, frames, target - rest)
            if config is None:
                break
            result = _code(analysis, settings, events, config, label, 0.0)
            if result.total_kbps <= target:
                return result
            rest += result.total_kbps - target + 0.005 * target
    # The coarsest of everything: the lowest rate this clip allows, every byte counted.
    coarsest = make_config_q(0.0, 2 * K_MEDIUM, basis.std, surround=False)
    low = _code(analysis, settings, events, coarsest, label, 0.0)
    if low.total_kbps <= target:
        return low
    # The rate named is met when asked for: rounded up, and counted with a header label as
    # long as any that target gives ("target4.70" is "target4.7"); a longer label only adds
    # bytes, so this settles within a few rounds.
    lowest = math.ceil(low.total_kbps * 100) / 100
    while len(f"target{lowest:.2f}") > len(label):
        label = f"target{lowest:.2f}"
        low = _code(analysis, settings, events, coarsest, label, 0.0)
        lowest = math.ceil(low.total_kbps * 100) / 100
    raise RateTooLow(
        f"--target-kbps {target:g} is below the lowest rate this clip allows ({lowest:.2f} "
        f"kbps: motion {low.motion_kbps:.2f}, reference pictures and framing "
        f"{low.total_kbps - low.motion_kbps:.2f})")


def layer_to_target(analysis: Analysis, settings: EncoderSettings) -> EncodeResult:
    """Motion at LAYER_MOTION_PRESET, and the layer what the motion, the reference pictures
    and the header leave of the target (measured on a first coding, then corrected)."""
    assert settings.target_kbps is not None
    target = settings.target_kbps
    basis, fps, frames = load_basis(), analysis.info.fps, analysis.report.frames
    # The layer's rate is not known yet; a file's layer has one size at every rate
    # (SCHEDULE), so the target's decides whether it is as large as the crop.
    config = coder_config(basis, LAYER_MOTION_PRESET, beside_layer=True,
                          full_layer=full_size_layer(target, settings.size))
    label = f"target{target:g}"
    layer_kbps = target - motion_rate(analysis.events, basis, config, settings, fps, frames,
                                      beside_layer=True)
    # Not one correction: a lower layer rate can call for finer reference pictures.
    for _ in range(8):
        result = _code(analysis, settings, analysis.events, config, label, layer_kbps, True)
        over = result.total_kbps - target
        if over <= 0:
            return with_moves(analysis, result)
        # Off the rate the layer made, not its budget, and by at least 1 % of it: integer crfs
        # leave the layer under its budget, and a smaller cut picks the same crf again (the
        # rate search counts a few bytes of framing fewer than the packets carry).
        layer_kbps = min(layer_kbps, result.layer_kbps) - max(over, 0.01 * result.layer_kbps)
        if layer_kbps <= 0:
            break
    # A target is a ceiling: _code_to_target then keeps motion alone.
    raise FacecodecError(f"--target-kbps {target:g} leaves no room for the layer "
                         f"(its last coding came to {result.total_kbps:.2f} kbps)")


def encode_file(
    src: str | Path,
    dst: str | Path | None,
    settings: EncoderSettings = EncoderSettings(),  # noqa: B008 - frozen dataclass
    progress: bool = False,
) -> EncodeResult:
    """Encode a video file. `dst` None: encode in memory only."""
    settings.validate()
    if dst is not None:
        check_writable(Path(dst))  # now, not after the analysis; makes a missing folder
    avatar = None
    if settings.avatar is not None:  # a portrait it cannot use is refused before the work
        basis = load_basis()
        avatar = AvatarEvents(settings.avatar, basis, settings.size, basis.k_max)
        # Nothing measured from the video's pictures but the face's motion.
        settings = replace(settings, reference="first", surround=False)
    analysis = analyze_file(src, settings, progress)
    if avatar is not None:
        events = (avatar(e) for e in analysis.events)
        analysis = replace(analysis, events=[e for e in events if e is not None])
    result = code_analysis(analysis, settings, progress)
    if dst is not None:
        with FcvWriter(dst) as w:
            w.write_header(result.header)
            for p in result.packets:
                w.write_packet(p)
    return result


def iter_crops(
    src: str | Path, keyframes: list[KeyframeEvent], size: int, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """The source frames cut with the crops the encoder chose, one by one. Frames before
    the first keyframe use the first crop."""
    sched = sorted((k.index, k.crop) for k in keyframes)
    j = 0
    for i, frame in enumerate(read_frames(src, max_frames)):
        while j + 1 < len(sched) and sched[j + 1][0] <= i:
            j += 1
        yield sched[j][1].cut(frame, size)


def original_crops(
    src: str | Path, keyframes: list[KeyframeEvent], size: int, max_frames: int | None = None
) -> np.ndarray:
    """The source frames cut with the crops the encoder chose: what the receiver should show."""
    return np.stack(list(iter_crops(src, keyframes, size, max_frames)))
