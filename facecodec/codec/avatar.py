"""Appearing as an avatar: a sender's analysis events with its face replaced by a portrait
that the face drives, so that the face itself is never coded (a call's `--avatar`, a
file's `encode --avatar`).

Every keyframe carries the portrait and the portrait's own Motion; every frame carries the
sender's change of expression, gaze, openness and pose since its first frame, applied to the
portrait's Motion (`AvatarDriver`, as a receiver's `--avatar` drives a portrait). The sender
must also leave out what is measured from its own pictures: the surround (measured around
its face), refreshed reference pictures and the layer.

A new crop of the sender's own video (its face re-centred, or back after leaving) sends no
keyframe: the portrait has not changed, and the driver places the avatar again itself. Only
the first keyframe, and those a receiver asks for or a file's `--refresh` sets (on whatever
frame they fall), resend the portrait; a new crop does not restart the refresh period
(analysis.FaceAnalyzer `crops_refresh`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from facecodec.codec.analysis import CROP_ONLY, KeyframeEvent, MotionEvent
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion
from facecodec.render.edits import Avatar, AvatarDriver


class AvatarEvents:
    """Maps a sender's events onto the portrait at `portrait` (refused in one line if it is
    not a picture of one face)."""

    def __init__(self, portrait: Path, basis: ExpressionBasis, size: int, k: int) -> None:
        self.driver = AvatarDriver(Avatar(portrait, basis, size, k))
        self.last: Motion | None = None  # the last frame's Motion as sent

    @property
    def avatar(self) -> Avatar:
        return self.driver.avatar

    def __call__(self, event: KeyframeEvent | MotionEvent) -> KeyframeEvent | MotionEvent | None:
        """The event as the portrait's; None for a keyframe only the sender's crop needs."""
        if isinstance(event, KeyframeEvent):
            self.driver.keyframe(event.crop)
            if event.reason in CROP_ONLY and not event.asked:  # never the first: "start"
                return None
            return replace(event, image=self.avatar.image, motion=self.avatar.motion,
                           picture_index=None, portrait=True)
        self.last = self.driver(event.motion).with_surround(None)
        return replace(event, motion=self.last)
