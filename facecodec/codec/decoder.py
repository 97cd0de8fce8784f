"""Receiver: packets -> Motions -> rendered frames, for files and live streams alike."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facecodec.bitstream.container import FcvReader, HoldBudget, StreamHeader
from facecodec.bitstream.packets import (
    IMAGE_FROM_LAYER,
    LAYER_TYPES,
    MOVE_BETWEEN,
    MOVE_FLOW,
    MOVE_MOTION,
    EndPayload,
    KeyframePayload,
    MotionPayload,
    Packet,
    PacketType,
    RestorePayload,
    layer_pictures,
    type_name,
)
from facecodec.capture.video import VideoWriter
from facecodec.codec.background import background
from facecodec.codec.keyframe import decode_image
from facecodec.codec.layer import LayerDecoder
from facecodec.errors import BitstreamError, FacecodecError
from facecodec.motion.basis import ExpressionBasis, basis_for_id, load_basis
from facecodec.motion.coder import CoderConfig, MotionDecoder
from facecodec.motion.motion import Motion
from facecodec.render.base import Renderer
from facecodec.render.edits import Avatar, AvatarDriver, EyeContact, eye_radius
from facecodec.render.fusion_model import GATE_MODEL_ID, shipped_fusion_ids
from facecodec.render.held import FlowMover, fade
from facecodec.render.pose import PoseEdit
from facecodec.render.registry import DEFAULT_RENDERER, make_renderer
from facecodec.render.warp import WarpRenderer

MOTION_COMPENSATE = True  # warp held layer pictures by the motion since their frame


@dataclass
class Keyframe:
    image: np.ndarray | None  # None: the layer's picture of `timestamp`, not yet taken
    motion: Motion
    crop: tuple[float, float, float]
    timestamp: int = 0
    restore_share: float | None = None  # from a RESTORE packet
    shares_taken: int = 0  # RESTORE packets applied to this picture (MAX_SHARES)


@dataclass
class DecodeStats:
    frames_rendered: int = 0
    frames_undrawn: int = 0  # decoded but not drawn when asked (a receiver behind real time)
    # Motion packets missing from the sequence before a MOTION packet, which cannot be drawn
    # without them, counted from the last packet drawn (a RESYNC can be drawn: a gap before
    # one is not counted, nor are packets lost before the first one drawn).
    motion_packets_lost: int = 0
    # Motion packets that came while the picture was held after a loss, waiting for a RESYNC.
    motion_packets_held: int = 0
    # Motion packets that came after a later one (a call's motion channel is unordered):
    # their frames are past, so they are dropped, neither drawn late nor counted as lost.
    motion_packets_stale: int = 0
    keyframes: int = 0
    keyframes_bad: int = 0
    layer_pictures: int = 0  # layer pictures decoded
    layer_lost: int = 0  # gaps in the LAYER sequence (the layer pauses until an intra picture)
    layer_bad: int = 0  # LAYER packets that did not decode (dropped like lost ones)
    frames_fused: int = 0  # frames drawn with the layer
    # Frames drawn the cheap way when asked (`hurry`) that would have been drawn otherwise:
    # the neural renderer's warp without its refiner, the layer's training-free fusion.
    frames_hurried: int = 0
    # Times lost motion made a RESYNC worth asking for (the picture held, its keyframe here):
    # a live receiver asks then. Motion that came before its keyframe is dropped without a
    # hold; the first MOTION packet after the keyframe starts one, a RESYNC draws at once.
    motion_holds: int = 0
    restore_bad: int = 0  # RESTORE packets that did not parse (ignored: the share is advice)
    notes: list[str] = field(default_factory=list)


class PacketDecoder:
    """Decodes packets as they come (in order per channel; motion packets may be lost).

    A MOTION packet whose sequence number does not follow the last motion packet's means one
    was lost: frames are held until the next RESYNC packet. A keyframe that cannot be decoded, or
    motion for a keyframe never received, sets `needs_keyframe` so that a live sender can
    be asked for a new one.
    """

    def __init__(
        self,
        header: StreamHeader,
        renderer: str | Renderer = DEFAULT_RENDERER,
        pose: PoseEdit | None = None,
        avatar: Path | None = None,
        layer: str = "net",
        restore_behind: bool = False,
        eye_contact: EyeContact | None = None,
    ) -> None:
        """`layer`: how to use a stream's low-resolution layer: "net" (the fusion network),
        "gate" (training-free fusion), "bicubic" (the layer alone), "off" (motion only).
        `eye_contact`: draw the eyes turned up into the camera (edits.EyeContact).
        `restore_behind` (a call): a RESTORE share's picture is made in the background
        (codec/background.py) and drawn from once it is ready, the frames before it drawn
        as they would be without it; a file's decode takes it at once."""
        self.header = header
        self.basis = basis_for_id(header.basis_id)
        self.config = CoderConfig.from_bytes(header.coder_config, self.basis.std)
        if isinstance(renderer, str):
            renderer = make_renderer(renderer, self.basis, header.size)
        if header.model_id and header.model_id != renderer.model_id:
            raise FacecodecError(
                f"stream was made for renderer model {header.model_id!r}; "
                f"renderer {renderer.name!r} has {renderer.model_id or 'no model'!r}"
            )
        self.renderer = renderer
        # The shares were measured with the header's restorer: another one takes its own.
        self.restore_applies = bool(header.restorer) and header.restorer == renderer.restorer_id
        self.pose = pose or PoseEdit()
        self.avatar = (
            AvatarDriver(Avatar(avatar, self.basis, header.size, self.config.k))
            if avatar is not None else None
        )
        self.eye_contact = eye_contact
        # The renderer draws a change of gaze times its gain: the edit's turn is of the eye.
        self._eye_radius = eye_radius(self.basis) / renderer.iris_gain[1]
        self.motion = MotionDecoder(self.config)
        self.keyframes: dict[int, Keyframe] = {}
        self.active: int | None = None
        self.next_seq: int | None = None  # sequence number the next inter packet must carry
        self.total_frames: int | None = None
        self.last_frame: int | None = None  # index of the latest frame whose motion decoded
        self.stats = DecodeStats()
        self._needs_keyframe = False
        self._needs_resync = False
        self.newest_keyframe: int | None = None  # the id of the last keyframe packet
        self.restore_behind = restore_behind
        self._restoring: tuple[int, float, Future[np.ndarray]] | None = None
        # The layer shows the sender's own face as it was: fused into a redirected head or
        # an avatar it would paint the original back in, so receiver-side edits drop it.
        self.layer_ignored = bool(header.layer) and self.edited
        # Ignored, the layer is still decoded: a keyframe's picture may be one of its pictures.
        self.layer = (_LayerState(header, "off" if self.layer_ignored else layer, self.stats,
                                  self.basis) if header.layer else None)

    @property
    def edited(self) -> bool:
        """Whether a receiver-side edit changes what the sender's Motion says."""
        return self.pose.active or self.avatar is not None or self.eye_contact is not None

    def needs_keyframe(self) -> bool:
        return self._needs_keyframe

    def needs_resync(self) -> bool:
        """Whether motion was lost (or could not be decoded) and the frames are held until a
        RESYNC packet, which a live sender can be asked to send now."""
        return self._needs_resync

    def _hold(self, held: bool) -> None:
        self.stats.motion_holds += held and not self._needs_resync
        self._needs_resync = held

    def _use(self, kid: int) -> bool:
        if kid == self.active:
            return True
        kf = self.keyframes.get(kid)
        if kf is None:
            # A call sends each keyframe on its reliable channel before the motion that
            # refers to it, so a keyframe newer than any that came is on its way (the motion
            # overtook it): asking for another would queue one more behind it on a thin link.
            if not self._on_its_way(kid):
                self._needs_keyframe = True
            return False
        if kf.image is None and self.avatar is None:  # an avatar needs only its motion
            kf.image = self.layer.picture_at(kf.timestamp, kid) if self.layer else None
            if kf.image is None:  # that layer picture was lost: hold until the next keyframe
                self._needs_keyframe = True
                return False
        if self.avatar is not None:
            self.renderer.set_reference(self.avatar.avatar.image, self.avatar.avatar.motion)
            self.avatar.keyframe(kf.crop)
        else:
            assert kf.image is not None
            self.renderer.set_reference(kf.image, kf.motion, kf.restore_share)
        self.active = kid
        return True

    def _target(self, m: Motion) -> Motion:
        if self.avatar is not None and self.active is not None:
            m = self.avatar(m)
        m = self.pose(m)
        return m if self.eye_contact is None else self.eye_contact(m, self._eye_radius)

    def push(self, packet: Packet, draw: bool = True,
             hurry: bool = False) -> list[tuple[int, np.ndarray]]:
        """The frames this packet completes. `draw` False: decode its motion (every later
        packet is predicted from it) but draw none of its frames; a live receiver that is
        behind real time catches up this way instead of showing ever later frames. `hurry`:
        draw them the cheapest way there is (DecodeStats.frames_hurried), which a receiver
        a little behind takes before it has to leave frames out."""
        self.renderer.hurry = hurry
        if self._restoring is not None and self._restoring[2].done():
            kid, share, job = self._restoring
            self._restoring = None
            if job.exception() is None:  # the share is advice: a failure leaves it out
                self._take_share(kid, share)
        if packet.type == PacketType.KEYFRAME:
            self._keyframe(packet)
            return []
        if packet.type in LAYER_TYPES:
            if self.layer is not None:
                self.layer.push(packet)
            return []
        if packet.type == PacketType.END:
            total = EndPayload.from_bytes(packet.payload).total_frames
            if packet.timestamp != total:
                raise BitstreamError(f"END packet's timestamp {packet.timestamp} is not its "
                                     f"count of {total} frames")
            self.total_frames = total
            return []
        if packet.type == PacketType.RESTORE:
            try:
                self._restore(RestorePayload.from_bytes(packet.payload))
            except BitstreamError:
                self.stats.restore_bad += 1
            return []
        if packet.type not in (PacketType.MOTION, PacketType.RESYNC):
            return []  # unknown types are skipped (forward compatibility)
        p = MotionPayload.from_bytes(packet.payload)
        if self.last_frame is not None and packet.timestamp <= self.last_frame:
            # Overtaken: drawing it would step the picture back, and taking it as a loss
            # would hold the frames until the next RESYNC.
            self.stats.motion_packets_stale += 1
            return []
        intra = packet.type == PacketType.RESYNC
        if not intra and packet.seq != self.next_seq:
            if self.next_seq is None:
                self.stats.motion_packets_held += 1
            else:
                self.stats.motion_packets_lost += (packet.seq - self.next_seq) & 0xFFFF
            self.motion.reset()
            self.next_seq = None
            # Hold until the next RESYNC, which is worth asking for once the keyframe it
            # names is here (one on its way would only discard it again).
            self._hold(p.keyframe_id in self.keyframes)
            return []
        if not self._use(p.keyframe_id):
            self.motion.reset()
            self.next_seq = None
            return []
        try:
            motions = self.motion.decode(p.data, p.frame_count, intra)
            for i, m in enumerate(motions):
                self._check_face(m, f"frame {packet.timestamp + i}")
        except BitstreamError:
            self.motion.reset()
            self.next_seq = None
            self._hold(True)
            raise
        self._needs_resync = False
        self.next_seq = (packet.seq + 1) & 0xFFFF
        if motions:
            self.last_frame = packet.timestamp + len(motions) - 1
        out = []
        for i, m in enumerate(motions):
            target = self._target(m)
            if not draw:
                if self.layer is not None:
                    self.layer.note(packet.timestamp + i, m)
                self.stats.frames_undrawn += 1
                continue
            cheap = self._cheap_draws()
            if self.layer is not None:  # renders only if the layer leaves it anything to do
                def render(plain: bool, t: Motion = target) -> np.ndarray:
                    return self._draw(t, plain)

                frame = self.layer.fuse(packet.timestamp + i, p.keyframe_id, render, m, hurry)
            else:
                frame = self.renderer.render(target)
            self.stats.frames_hurried += self._cheap_draws() != cheap
            out.append((packet.timestamp + i, frame))
        self.stats.frames_rendered += len(out)
        return out

    def _check_face(self, m: Motion, what: str) -> None:
        """Refuse a Motion no tracked face gives: its face's landmarks not finite, smaller
        than MIN_FACE_PX or larger than MAX_FACE_CROPS crops, or centred further than
        MAX_FACE_CROPS crops from the crop. The checksums pass damage the sender's own
        encoder made and forgeries alike, and a warp from such points fails deep in a
        geometry library (or takes the machine's memory) instead of in one line."""
        size = self.header.size
        with np.errstate(all="ignore"):
            pts = self.basis.landmarks(m, size)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            extent, centre = float((hi - lo).max()), (lo + hi) / 2 / size - 0.5
        if not (np.isfinite(pts).all() and MIN_FACE_PX <= extent <= MAX_FACE_CROPS * size
                and np.abs(centre).max() <= MAX_FACE_CROPS):
            raise BitstreamError(f"{what}: its motion puts the face out of any picture "
                                 "(damaged values)")

    def _draw(self, target: Motion, plain: bool) -> np.ndarray:
        """The renderer's frame; `plain`: drawn its cheapest way (Renderer.plain)."""
        self.renderer.plain = plain
        try:
            return self.renderer.render(target)
        finally:
            self.renderer.plain = False

    def _cheap_draws(self) -> int:
        """How often the renderer and the layer's fusion have drawn the cheap way."""
        return self.renderer.hurried + (self.layer.hurried if self.layer is not None else 0)

    def _restore(self, p: RestorePayload) -> None:
        kf = self.keyframes.get(p.keyframe_id)
        if kf is None or not self.restore_applies:  # keyframe lost, or another restorer
            return
        if kf.shares_taken >= MAX_SHARES or (kf.shares_taken and p.fraction == kf.restore_share):
            return  # each share taken runs the restorer over the picture again
        kf.shares_taken += 1
        if self.restore_behind and kf.image is not None:
            job = background().submit(self.renderer.restoration, kf.image, p.fraction)
            self._restoring = (p.keyframe_id, p.fraction, job)  # a newer share replaces it
            return
        self._take_share(p.keyframe_id, p.fraction)

    def _take_share(self, keyframe_id: int, share: float) -> None:
        kf = self.keyframes.get(keyframe_id)
        if kf is None:
            return
        kf.restore_share = share
        if self.active == keyframe_id:  # already drawn from: prepare it again with it
            self.active = None

    def keyframe_damaged(self) -> None:
        """A KEYFRAME packet came too damaged to read (a receiver tells it by its type
        byte): a live sender is asked for another, as for one whose picture is damaged."""
        self.stats.keyframes_bad += 1
        self._needs_keyframe = True

    def _on_its_way(self, kid: int) -> bool:
        """Whether keyframe `kid` is newer (keyframe ids wrap at 16 bits) than every
        keyframe packet that came, whole or not."""
        newest = self.newest_keyframe
        return newest is None or 0 < (kid - newest) & 0xFFFF < 0x8000

    def _keyframe(self, packet: Packet) -> None:
        try:
            p = KeyframePayload.from_bytes(packet.payload)
            self.newest_keyframe = p.keyframe_id
            image = None
            if p.codec_id != IMAGE_FROM_LAYER:
                image = decode_image(p.codec_id, p.image, self.header.size)
            elif self.header.layer is None or self.header.layer.size != self.header.size:
                raise BitstreamError(
                    f"keyframe {p.keyframe_id} takes its picture from the layer, but the "
                    "stream has no layer as large as its crop"
                )
            try:
                motion = Motion.from_vector(np.array(p.motion))
            except ValueError as e:
                raise BitstreamError(f"keyframe {p.keyframe_id}: {e}") from None
            self._check_face(motion, f"keyframe {p.keyframe_id}")
        except BitstreamError:
            self.stats.keyframes_bad += 1
            self._needs_keyframe = True
            raise
        # A coded picture's RESTORE share follows it (a call's a few frames later, measured
        # off the sending loop): until it comes the picture is drawn as decoded, which is
        # what a share of 0 gives, instead of restored whole and then again with the share.
        share = 0.0 if image is not None and self.restore_applies else None
        # Held in the order they came (ids wrap at 16 bits: by number, keyframe 1 went
        # before the stale 65533..65535), and only a few: a live stream refreshes them
        # indefinitely.
        self.keyframes.pop(p.keyframe_id, None)
        self.keyframes[p.keyframe_id] = Keyframe(image, motion, p.crop, packet.timestamp,
                                                 share)
        while len(self.keyframes) > HELD_KEYFRAMES:
            del self.keyframes[next(iter(self.keyframes))]
        if self.active not in self.keyframes:
            self.active = None
        self.stats.keyframes += 1
        self._needs_keyframe = False


class _LayerState:
    """The receiving end of the low-resolution layer: decodes LAYER packets, pauses after a
    lost or bad one until the next intra picture, and fuses the latest picture of the same
    crop into each rendered frame. Never raises: the motion must survive any layer damage."""

    # Pictures kept. A file's motion packet covers up to 60 frames (1 s) and its layer
    # pictures come first, so this must hold a packet's worth at one picture per frame.
    HISTORY = 64

    def __init__(
        self, header: StreamHeader, mode: str, stats: DecodeStats, basis: ExpressionBasis
    ) -> None:
        from facecodec.render.layer_fusion import LayerFusion  # torch: only for a layer

        assert header.layer is not None
        self.params = header.layer
        self.size = header.size
        self.decoder = LayerDecoder(self.params.size, self.params.codec)
        if mode == "net" and self.params.model == GATE_MODEL_ID:
            mode = "gate"  # made by a build without the network: draw what it checked
        self.mode = mode
        self.stats = stats
        self.hurried = 0  # frames fused the training-free way when asked to hurry
        self.fusion = None if mode == "off" else LayerFusion(mode, model=self.params.model)
        if (self.fusion is not None and mode == "net" and self.params.model
                and self.params.model != self.fusion.model_id):
            raise FacecodecError(
                f"stream's layer was made for fusion model {self.params.model!r}, this build "
                f"has {', '.join(map(repr, shipped_fusion_ids()))}; decode with a matching "
                "facecodec or with --layer off"
            )
        self.next_seq: int | None = None
        # timestamp -> (keyframe, RGB, how to move it on: packets.MOVE_*)
        self.pictures: dict[int, tuple[int, np.ndarray, int]] = {}
        # Motion of recent frames, to bring a held layer picture up to the current frame.
        self.motions: dict[int, Motion] = {}
        self.mover = WarpRenderer(basis, self.params.size) if MOTION_COMPENSATE else None
        self._moving: int | None = None  # timestamp of the picture the mover holds
        self.flow = FlowMover()
        # Frame index -> timestamp of the older picture it was drawn from, kept only when a
        # caller sets it: the sender choosing the moves (codec/moves.py) reads and empties it.
        self.held_from: dict[int, int] | None = None

    def push(self, packet: Packet) -> None:
        """A LAYER packet (one picture) or a LAYER_GROUP packet (several, in frame order)."""
        try:
            pictures = layer_pictures(packet)
        except BitstreamError:
            self._bad()
            return
        if packet.seq != self.next_seq and self.next_seq is not None:
            self.stats.layer_lost += 1
            self.decoder.reset()
        in_run = packet.seq == self.next_seq
        self.next_seq = (packet.seq + 1) & 0xFFFF
        for timestamp, keyframe_id, intra, data, move in pictures:
            if not (in_run or intra):
                continue  # after a gap, only an intra picture restarts the run
            try:
                picture = self.decoder.decode(data, intra)
            except BitstreamError:
                self._bad()
                return
            in_run = True
            if picture is None:
                continue
            self.stats.layer_pictures += 1
            self.pictures[timestamp] = (keyframe_id, picture, move)
        for old in sorted(self.pictures)[:-self.HISTORY]:
            del self.pictures[old]
        if not in_run:
            self.next_seq = None  # nothing decoded: the next packet must start a run too

    def picture_at(self, timestamp: int, keyframe_id: int) -> np.ndarray | None:
        """The decoded picture of that frame and keyframe, if it arrived intact."""
        kid, picture, _ = self.pictures.get(timestamp, (None, None, None))
        return picture if kid == keyframe_id else None

    def previous(self, timestamp: int, keyframe_id: int) -> int | None:
        """Timestamp of the picture of that keyframe's crop before `timestamp`, if held."""
        return max((t for t, (kid, _, _) in self.pictures.items()
                    if t < timestamp and kid == keyframe_id), default=None)

    def following(self, timestamp: int, keyframe_id: int) -> int | None:
        """Timestamp of the next picture of that keyframe's crop after `timestamp`, if it
        has come and no picture of another crop lies between."""
        after = min((t for t in self.pictures if t > timestamp), default=None)
        return after if after is not None and self.pictures[after][0] == keyframe_id else None

    def _bad(self) -> None:
        self.stats.layer_bad += 1
        self.decoder.reset()
        self.next_seq = None

    def note(self, index: int, motion: Motion) -> None:
        """The Motion of frame `index` (drawn or not): a held picture is moved on by it."""
        self.motions[index] = motion
        for old in sorted(self.motions)[:-self.HISTORY]:
            del self.motions[old]

    def fuse(self, index: int, keyframe_id: int, render: Callable[[bool], np.ndarray],
             motion: Motion, hurry: bool = False) -> np.ndarray:
        """The frame fused with the latest layer picture at or before it, of the same crop
        and at most one layer period old; the frame itself otherwise. A picture older than
        the frame is first moved on as its move says (packets.MOVE_*). `render(plain)` draws
        the frame from the reference, called only when it is needed; plain beside a picture
        smaller than the frame, whose fusion keeps only the detail the two agree on (beside
        a call's 128 px layer the refiner changed VMAF by under 0.02, and its cost made a
        lone call's receiver hurry a fifth to a quarter of its frames, docs/live_calls.md).
        `hurry`: the training-free fusion in place of the network (counted in `hurried`)."""
        self.note(index, motion)
        if self.fusion is None:
            return render(False)
        ts = max((t for t in self.pictures if t <= index), default=None)
        if ts is None or index - ts >= self.params.divisor:
            return render(False)
        kid, picture, move = self.pictures[ts]
        if kid != keyframe_id:
            return render(False)
        age = index - ts
        if age and self.held_from is not None:
            self.held_from[index] = ts
        moved = False
        if age and move == MOVE_MOTION and self.mover is not None and ts in self.motions:
            if self._moving != ts:
                self.mover.set_reference(picture, self.motions[ts])
                self._moving = ts
            picture, moved = self.mover.render(motion), True
        elif age and move == MOVE_FLOW and (prev := self.previous(ts, kid)) is not None:
            flow = self.flow.flow(picture, self.pictures[prev][1], (ts, prev))
            picture, moved = self.flow.move(picture, flow, age / (ts - prev)), True
        elif age and move == MOVE_BETWEEN and (after := self.following(ts, kid)) is not None:
            picture, moved = fade(picture, self.pictures[after][1], age / (after - ts)), True
        if moved and not self.fusion.moved:  # trained on unmoved pictures: a moved one is current
            age = 0
        self.stats.frames_fused += 1
        plain = hurry and self.fusion.mode == "net"
        self.hurried += plain
        if self.fusion.as_is(picture.shape[0], self.size, plain):
            return picture
        return self.fusion(render(picture.shape[0] < self.size), picture, age, plain)


# The most a decoded face may span (crops) or be centred away from its crop, and the least
# it may span (px): PacketDecoder._check_face.
MAX_FACE_CROPS = 4.0
# RESTORE shares a picture takes: its own and a live sender's retries. Past them a forged
# stream alternating shares (16 bytes a frame) would have the restorer rerun on every frame,
# 38 times the decoding time of the same frames.
MAX_SHARES = 3
HELD_KEYFRAMES = 4  # references a decoder keeps (a RESYNC may name any of them)
MIN_FACE_PX = 2.0


class FrameSink:
    """Writes rendered frames in order, holding the last frame over gaps (no face before the
    first frame, lost packets) so that the output has exactly one frame per input frame;
    HoldBudget bounds the frames held."""

    def __init__(self, writer: VideoWriter, fps: float) -> None:
        self.writer = writer
        self.budget = HoldBudget(fps)
        self.last: np.ndarray | None = None
        self.held = 0

    @property
    def next(self) -> int:
        """The number of frames written."""
        return self.budget.next

    def put(self, index: int, frame: np.ndarray) -> None:
        if index < self.next:
            return
        gap = self.budget.hold_to(index, "frame")
        fill = self.last if self.last is not None else frame
        for _ in range(gap):
            self.writer.write(fill)
        self.held += gap
        self.writer.write(frame)
        self.last = frame
        self.budget.drawn(index)

    def finish(self, total: int | None) -> None:
        if self.last is None or total is None:
            return
        if total < self.next:
            raise BitstreamError(f"the END packet's count of {total} frames is short of "
                                 f"the {self.next} frames before it")
        gap = self.budget.hold_to(total, "the END packet's count of")
        for _ in range(gap):
            self.writer.write(self.last)
        self.held += gap


@dataclass
class DecodeResult:
    header: StreamHeader
    frames_written: int
    stats: DecodeStats
    error: str | None = None  # damage that stopped decoding; frames before it were written
    ended: bool = True  # the stream's END packet came (a stream cut at a packet's end has none)


def decode_file(
    src: str | Path,
    dst: str | Path,
    renderer: str = DEFAULT_RENDERER,
    pose: PoseEdit | None = None,
    avatar: Path | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
    layer: str = "net",
    upscale: bool = False,
    eye_contact: EyeContact | None = None,
    on_header: Callable[[StreamHeader], None] | None = None,
    progress: bool = False,
) -> DecodeResult:
    """Decode an .fcv file to a video. On damage, the frames before it are still written and
    the result carries the error; nothing is written if no frame could be rendered.
    `upscale`: write frames at twice the stream's size (render/upscale.py). `on_header`
    sees the header once a decoder for it is ready, before any frame. `progress`: a bar on
    stderr counting the frames drawn."""
    reader = FcvReader(src)
    header = reader.header
    try:
        dec = PacketDecoder(header, renderer, pose, avatar, layer, eye_contact=eye_contact)
    except BitstreamError as e:  # what the header asks that no decoder here has
        raise type(e)(f"{src}: {e}") from None
    if on_header is not None:
        on_header(header)
    up = None
    if upscale:
        from facecodec.render.upscale import Upscaler

        up = Upscaler()
    total = reader.frames_said()  # before the writer's file: its guard starts below
    side = header.size * (2 if up is not None else 1)
    # An avatar's pictures are the portrait's (square pixels), not the source's.
    aspect = header.pixel_aspect if avatar is None else Fraction(1)
    writer = VideoWriter(dst, header.fps, side, side, pixel_aspect=aspect)
    sink = FrameSink(writer, float(header.fps))
    error = None
    bar = tqdm(total=total, desc="decode", unit="frame", leave=False, disable=not progress)
    try:
        try:
            for packet, offset, _ in reader.entries():
                try:
                    drawn = dec.push(packet)
                except BitstreamError as e:  # named as the reader names its own damage
                    raise BitstreamError(f"{type_name(packet.type)} packet (seq {packet.seq}, "
                                         f"at byte {offset}): {e}") from None
                for index, frame in drawn:
                    sink.put(index, up(frame) if up is not None else frame)
                    if on_frame is not None:
                        on_frame(index, frame)
                bar.update(len(drawn))
            sink.finish(dec.total_frames)
        except BitstreamError as e:  # the frames before the damage are kept
            error = str(e)
        if sink.last is None:  # nothing written: the damage is the command's error
            raise BitstreamError(f"{src}: {error or 'the stream holds no decodable frame'}")
        writer.close()
    except BaseException:  # a full disk, an interruption: nothing half-written is left
        writer.abort()
        raise
    finally:
        bar.close()
    return DecodeResult(header, sink.next, dec.stats, error, dec.total_frames is not None)


def decode_packets(
    header: StreamHeader, packets: list[Packet], n_frames: int,
    renderer: str | Renderer = DEFAULT_RENDERER, layer: str = "net",
    pose: PoseEdit | None = None, avatar: Path | None = None, hurry: bool = False,
    eye_contact: EyeContact | None = None,
) -> np.ndarray:
    """Decode an in-memory stream to [n_frames, S, S, 3], holding frames over gaps like the
    file decoder does (used by benchmarks, which score many streams without writing files).
    `hurry`: every packet drawn as a live receiver behind real time draws it."""
    dec = PacketDecoder(header, renderer, pose, avatar, layer, eye_contact=eye_contact)
    out: list[np.ndarray | None] = [None] * n_frames
    for p in packets:
        for i, f in dec.push(p, hurry=hurry):
            if 0 <= i < n_frames:
                out[i] = f
    first = next((f for f in out if f is not None), None)
    if first is None:
        raise BitstreamError("the stream holds no decodable frame")
    last = first
    filled: list[np.ndarray] = []
    for held in out:
        last = held if held is not None else last
        filled.append(last)
    return np.stack(filled)


def warm_up(renderer: str, size: int) -> None:
    """Load and run once what a live receiver's first frames would otherwise wait for, about
    a second each: the renderer's networks (Renderer.warm_up) and torch with the layer
    fusion, which a peer's layer needs. Draws nothing."""
    from facecodec.render.layer_fusion import LayerFusion

    make_renderer(renderer, load_basis(), size).warm_up()
    frame = np.zeros((size, size, 3), np.uint8)
    LayerFusion("net")(frame, frame[: size // 2, : size // 2], 0.0)
