"""Sender analysis: frames in, keyframe and Motion events out (causal, one frame at a time).

This is everything the sender decides before coding: which face, which crop, when a new
reference picture is needed, and the fitted Motion of every frame. File encoding and
live calls both run it, so they make the same decisions. How much to smooth the Motions
depends on what they are coded beside (facecodec/motion/stabilize.py), so the encoder
smooths them for the stream it codes (`stabilise`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from facecodec.codec.scout import ReferenceScout
from facecodec.face.crop import CropBox, drifted
from facecodec.face.tracker import FaceTracker
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import SURROUND_SIZE, Motion
from facecodec.motion.stabilize import MotionStabiliser
from facecodec.motion.surround import SurroundMeter
from facecodec.psnr import picture_luma

# Keyframe reasons (KeyframeEvent.reason) that only a new crop of the sender's video sets;
# "start" takes a crop too, and the other reasons keep the one there is.
CROP_ONLY = frozenset({"recentre", "reappeared", "turn"})
# Light on the face (mean luma of the crop's middle) that changed this many grey levels from
# the reference picture's, for LIGHT_HOLD_S, takes a new picture, at most one a LIGHT_GAP_S:
# every frame of motion alone is drawn from the reference, and a lamp switched on left half
# a clip drawn at 9 dB. A flash or a hand passing is shorter; a flickering light (a screen's
# glow) would otherwise take a picture three times a second; auto-exposure drifting that far
# is a change too. A layer carries the light itself: beside one this is off.
LIGHT_STEP = 24.0
LIGHT_HOLD_S = 0.25
LIGHT_GAP_S = 3.0
# A head (or camera) rolled this far from the reference picture's takes a new one: the warp
# turns the picture with it, and its corners and the face's far side were drawn from pixels
# the picture does not have (an 80 degree roll drew its ends at 19 dB). The fitted roll, which
# a turned head's yaw does not change (the eye line's slope in the picture it does).
ROLL_STEP_DEG = 30.0


@dataclass(frozen=True)
class KeyframeEvent:
    """A new reference picture, valid from frame `index` on."""

    index: int
    crop: CropBox
    image: np.ndarray  # (size, size, 3) uint8
    motion: Motion  # the picture's
    reason: str  # "start", "recentre", "reappeared", "turn", "light", "refresh", "requested"
    # The frame the picture shows, if not frame `index`: a later frame of the same crop (a
    # file's chosen reference, facecodec/codec/reference.py) or an earlier one (a call's,
    # facecodec/codec/scout.py).
    picture_index: int | None = None
    # Whether a receiver asked for a keyframe, or a refresh was due, here whatever `reason`
    # says: a keyframe of a new crop answers those too, so they are not kept waiting.
    asked: bool = False
    # The picture is an avatar's portrait, no frame of the video: frame `index` is drawn
    # from its own (driven) Motion, as every other frame, not as the picture.
    portrait: bool = False


@dataclass(frozen=True)
class MotionEvent:
    index: int
    motion: Motion
    face_seen: bool  # False: the face was not visible and the last Motion is held


@dataclass
class AnalysisReport:
    frames: int = 0
    frames_without_face: list[int] = field(default_factory=list)
    keyframes: list[tuple[int, str]] = field(default_factory=list)
    several_faces: int = 0
    face_joined: int | None = None  # the first frame where another face was seen, later on


class FaceAnalyzer:
    def __init__(
        self,
        basis: ExpressionBasis,
        size: int,
        fps: float,
        k: int | None = None,
        allow_several: bool = False,
        refresh_s: float = 0.0,
        surround: bool = True,
        scout: bool = False,
        crops_refresh: bool = True,
        follow_light: bool = False,
    ) -> None:
        """`scout`: a call's choice of reference picture as it goes (codec/scout.py).
        `crops_refresh` False: a keyframe of a new crop does not restart the refresh period,
        for a sender that does not send those (an avatar's, codec/avatar.py).
        `follow_light`: a change of light takes a new picture (LIGHT_STEP), for a sender of
        its own face without a layer."""
        self.basis, self.size = basis, size
        # Every Motion carries its surround; a coder beside a layer drops it.
        self.meter = SurroundMeter(size) if surround else None
        self.k = basis.k_max if k is None else k
        self.tracker = FaceTracker(allow_several=allow_several)
        self.refresh = int(round(refresh_s * fps)) if refresh_s > 0 else 0
        self.scout = ReferenceScout(basis, size, fps) if scout else None
        self.crop: CropBox | None = None
        self.anchor: tuple[float, float] = (0.0, 0.0)
        self.anchor_size = 1.0
        self.last: Motion | None = None
        self.crops_refresh = crops_refresh
        self.refreshed = -1  # the last keyframe that restarted the refresh period
        self.lost = False
        self.want_keyframe = False
        self.follow_light = follow_light
        self.light_hold = max(1, round(LIGHT_HOLD_S * fps))
        self.light_gap = round(LIGHT_GAP_S * fps)
        self.key_light = 0.0  # the reference picture's light on the face
        self.light_off = 0  # frames in a row whose light is LIGHT_STEP off it
        self.last_light = -self.light_gap  # the frame of the last keyframe light took
        self.key_roll = 0.0  # the reference picture's fitted roll, radians
        self.report = AnalysisReport()

    def request_keyframe(self) -> None:
        self.want_keyframe = True

    def push(self, frame: np.ndarray, index: int) -> list[KeyframeEvent | MotionEvent]:
        self.report.frames += 1
        face = self.tracker(frame, index)
        self.report.several_faces = self.tracker.several_seen
        self.report.face_joined = self.tracker.joined
        if face is None:
            self.report.frames_without_face.append(index)
            self.lost = self.crop is not None
            if self.last is None:
                return []  # nothing to show yet: the receiver fills these with the first frame
            return [MotionEvent(index, self.last, face_seen=False)]
        events: list[KeyframeEvent | MotionEvent] = []
        due = bool(self.refresh) and index - self.refreshed >= self.refresh
        asked = self.want_keyframe or due
        reason = ""
        fitted: Motion | None = None
        image: np.ndarray | None = None
        if self.crop is None:
            reason = "start"
        elif self.lost:
            reason = "reappeared"
        elif drifted(self.anchor, self.anchor_size, face.centre, face.size, self.crop.side):
            reason = "recentre"
        else:
            # The crop stays for now: the frame's fit and picture in it, kept unless a
            # keyframe below takes a new crop.
            fitted = self.basis.fit(self.crop.to_crop(face.points, self.size), self.size,
                                    self.k)
            if self.follow_light:
                image = self.crop.cut(frame, self.size)
            if abs(_turn(fitted.rotation[2] - self.key_roll)) > np.radians(ROLL_STEP_DEG):
                reason = "turn"
            elif image is not None and self._light_changed(image, index):
                reason = "light"
            elif self.want_keyframe:
                reason = "requested"
            elif due:
                reason = "refresh"
        pick = self.scout.take() if self.scout is not None else None
        if pick is not None and not reason:
            reason = "refresh"
        elif pick is not None:
            pick = None  # another keyframe comes first; the scout starts over from it
        if reason == "start" or reason in CROP_ONLY:  # the others keep the crop
            h, w = frame.shape[:2]
            self.crop = CropBox.around(face.centre, face.size, (w, h))
            self.anchor, self.anchor_size = face.centre, face.size
            fitted = image = None
        assert self.crop is not None
        points = self.crop.to_crop(face.points, self.size)
        if fitted is None:
            fitted = self.basis.fit(points, self.size, self.k)
        motion = fitted
        scouting = self.scout is not None and not reason and self.scout.wants(index)
        if image is None and (reason or scouting or self.meter is not None):
            image = self.crop.cut(frame, self.size)
        if reason:
            assert image is not None
            # The keyframe's picture and its Motion: this frame's, or the scout's pick.
            key_image, key_motion = (image, motion) if pick is None else (pick.picture,
                                                                          pick.motion)
            if self.meter is not None:
                self.meter.set_reference(key_image)
                key_motion = key_motion.with_surround(np.zeros(SURROUND_SIZE))
            if pick is None:
                motion = key_motion
            events.append(KeyframeEvent(index, self.crop, key_image, key_motion, reason,
                                        None if pick is None else pick.index, asked))
            self.key_light, self.light_off = crop_light(key_image), 0
            self.key_roll = float(key_motion.rotation[2])
            if reason == "light":
                self.last_light = index
            self.report.keyframes.append((index, reason))
            self.lost, self.want_keyframe = False, False
            if self.crops_refresh or reason not in CROP_ONLY:
                self.refreshed = index
        if self.meter is not None and (not reason or pick is not None):
            assert image is not None
            motion = motion.with_surround(self.meter(image, points))
        if self.scout is not None:
            if pick is not None:
                self.scout.adopted(pick, index)
            elif reason:
                assert image is not None
                self.scout.restart(index, image, fitted)
            elif scouting:
                assert image is not None
                self.scout.add(index, image, fitted)
            self.scout.step(index)
        self.last = motion
        events.append(MotionEvent(index, motion, face_seen=True))
        return events

    def _light_changed(self, image: np.ndarray, index: int) -> bool:
        """Whether the light on the face has stayed LIGHT_STEP off the reference picture's
        for LIGHT_HOLD_S, LIGHT_GAP_S or more after the last keyframe light took."""
        off = abs(crop_light(image) - self.key_light) > LIGHT_STEP
        self.light_off = self.light_off + 1 if off else 0
        return self.light_off >= self.light_hold and index - self.last_light >= self.light_gap

    def close(self) -> None:
        self.tracker.close()


def _turn(radians: float) -> float:
    """An angle brought within -pi..pi."""
    return float((radians + np.pi) % (2 * np.pi) - np.pi)


def crop_light(image: np.ndarray) -> float:
    """Mean luma of a crop's middle half, where the face is, every 2nd pixel."""
    q = image.shape[0] // 4
    return float(np.mean(picture_luma(image[q:3 * q:2, q:3 * q:2])))


class EventStabiliser:
    """Smooths the Motions of analysis events one at a time (causal, so a call can use it),
    restarting at every keyframe: the crop, and with it the coordinates, may change there.
    A frame without a face holds the last smoothed Motion, as the analysis held the last fit."""

    def __init__(self, basis: ExpressionBasis, fps: float, beta: float) -> None:
        self.basis, self.fps, self.beta = basis, fps, beta
        self.filter: MotionStabiliser | None = None
        self.last: Motion | None = None
        self.last_key = -1

    def __call__(self, e: KeyframeEvent | MotionEvent) -> KeyframeEvent | MotionEvent:
        if isinstance(e, KeyframeEvent):
            if self.filter is None or self.filter.k != e.motion.k:
                self.filter = MotionStabiliser(self.basis, e.motion.k, self.fps, beta=self.beta)
            self.filter.reset()
            if e.picture_index is not None or e.portrait:
                # The picture's Motion describes that picture; the segment's frames are
                # smoothed from its first frame on.
                self.last, self.last_key = None, -1
                return e
            self.last, self.last_key = self.filter(e.motion), e.index
            return replace(e, motion=self.last)
        # A keyframe's own frame was smoothed with it; later frames are filtered in turn.
        if e.face_seen and e.index != self.last_key and self.filter is not None:
            self.last = self.filter(e.motion)
        return replace(e, motion=self.last if self.last is not None else e.motion)


def stabilise(
    events: list[KeyframeEvent | MotionEvent], basis: ExpressionBasis, fps: float, beta: float,
) -> list[KeyframeEvent | MotionEvent]:
    """A file's events with their Motions smoothed: a call's causal filter (EventStabiliser)
    run forwards and, over each keyframe's frames, backwards too, and the two averaged. The
    causal filter lags a moving face (on 4 of the 6 validation clips a decoded frame matched
    the source frame before it better than its own); backwards it leads by as much, so their
    mean does not lag. A keyframe's own Motion, which describes its picture, is kept."""
    ahead = EventStabiliser(basis, fps, beta)
    forward = [ahead(e) for e in events]
    out = list(forward)
    starts = [i for i, e in enumerate(events) if isinstance(e, KeyframeEvent)]
    for s, t in zip(starts, [*starts[1:], len(events)], strict=True):
        key = events[s]
        assert isinstance(key, KeyframeEvent)
        # Its frame drawn as its picture, or (another frame's picture, a portrait) smoothed.
        own = key.index if key.picture_index is None and not key.portrait else None
        smoothed = [i for i in range(s + 1, t) if isinstance(e := events[i], MotionEvent)
                    and e.face_seen and e.index != own]
        behind = MotionStabiliser(basis, key.motion.k, fps, beta=beta)
        back = {i: behind(events[i].motion) for i in reversed(smoothed)}
        last = forward[s].motion if own is not None else None
        for i in range(s + 1, t):
            if i in back:
                last = mean_motion(forward[i].motion, back[i])
            if last is not None:  # a frame without a face holds the last, as forwards
                out[i] = replace(forward[i], motion=last)
    return out


def mean_motion(a: Motion, b: Motion) -> Motion:
    surround = (a.surround + b.surround) / 2 if len(a.surround) else None
    return Motion.from_vector((a.to_vector() + b.to_vector()) / 2, surround)
