"""Receiver-side edits: they change only the Motion handed to the renderer.

- Redirection (render/pose.py): show the head frontal, or turned by given angles.
- Eye contact: the eyes look into the camera instead of at the screen below it.
- Avatar: drive another portrait with the sender's expression and relative head motion;
  `AvatarDriver` keeps what it is driven relative to, for a receiver that draws the sender
  as an avatar and for a sender that appears as one (codec/avatar.py).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facecodec.capture.picture import read_picture
from facecodec.errors import FacecodecError
from facecodec.face.crop import CropBox
from facecodec.face.tracker import FaceMesh, upright_turns
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion
from facecodec.render import topology as T

# How far (a share of the face's width) its landmarks may lie outside a portrait: the
# tracker's estimate of a chin or ear at the very edge.
EDGE_MARGIN = 0.02


class Avatar:
    """Another portrait driven by the sender: it takes the sender's change of expression,
    gaze, openness and pose since `sender_ref` (the decoder passes the first frame drawn from
    each keyframe) and applies it to the portrait's own Motion, so the portrait keeps its
    identity and framing."""

    def __init__(self, portrait: Path, basis: ExpressionBasis, size: int, k: int) -> None:
        rgb = read_picture(portrait, "portrait")
        # A picture taken on its side or upside down, with no orientation tag to stand it
        # up, made an avatar lying as the face lay (upside down, of a false face found in
        # the background): it is turned upright, and said.
        turn = upright_turns(rgb)
        if turn:
            rgb = np.ascontiguousarray(np.rot90(rgb, turn))
            print(f"note: {portrait}: the face was {_TURNED[turn]}; the portrait is turned "
                  "upright", file=sys.stderr)
        mesh = FaceMesh(max_faces=2, static=True)
        faces = mesh(rgb)
        mesh.close()
        if not faces:
            raise FacecodecError(f"{portrait}: no face found in the portrait (give a head-"
                                 "and-shoulders picture: a face that fills very little or all "
                                 "of it, or is cut by its edge, is not found)")
        if len(faces) > 1:  # which one is meant is the user's to say, as for encoding
            raise FacecodecError(f"{portrait}: several faces in the portrait; an avatar is "
                                 "drawn from a portrait of one person")
        face = faces[0]
        x0, y0, x1, y1 = face.box
        h, w = rgb.shape[:2]
        margin = EDGE_MARGIN * (x1 - x0)
        if x0 < -margin or y0 < -margin or x1 > w + margin or y1 > h + margin:
            # The tracker places the hidden part; drawn, it would be the edge's pixels smeared.
            raise FacecodecError(f"{portrait}: the face is cut off by the portrait's edge")
        crop = CropBox.around(face.centre, face.size)
        self.image = crop.cut(rgb, size)
        self.motion = basis.fit(crop.to_crop(face.points, size), size, k)

    def drive(self, sender_ref: Motion, m: Motion) -> Motion:
        k = min(m.k, self.motion.k, sender_ref.k)
        own = self.motion
        return Motion(
            rotation=own.rotation + (m.rotation - sender_ref.rotation),
            translation=own.translation
            + (m.translation - sender_ref.translation)
            * math.exp(own.log_scale - sender_ref.log_scale),
            log_scale=own.log_scale + (m.log_scale - sender_ref.log_scale),
            expression=own.expression[:k] + (m.expression[:k] - sender_ref.expression[:k]),
            gaze=own.gaze + (m.gaze - sender_ref.gaze),
            openness=np.maximum(own.openness + (m.openness - sender_ref.openness), 0.0),
        )


# How the face lay, by the quarter turns (np.rot90's, anticlockwise) that stand it up.
_TURNED = {1: "on its left side", 2: "upside down", 3: "on its right side"}


class AvatarDriver:
    """An Avatar driven by a stream's Motions relative to the first frame drawn in a crop,
    not to the keyframe's picture: a file's picture is the frame that draws the segment best
    (codec/reference.py), often with the mouth open, and the avatar's own face should stand
    for how the sender looked when the drive began. A new picture of the same crop (a
    refresh) keeps the coordinates, so the avatar does not jump back to its own face. A new
    crop (the face re-centred, or back after leaving) moves the origin's position and size
    to its first frame, since the crop's coordinates changed, and keeps its turn,
    expression, gaze and openness, which no crop changes: the avatar is placed again but
    keeps the sender's look instead of snapping back to its own."""

    def __init__(self, avatar: Avatar) -> None:
        self.avatar = avatar
        self._from: Motion | None = None
        self._crop: object = None
        self._placed = False  # whether `_from`'s position is of the current crop

    @property
    def origin(self) -> Motion | None:
        """The Motion the avatar is driven relative to now (None before a frame of this crop)."""
        return self._from if self._placed else None

    def keyframe(self, crop: object) -> None:
        """A keyframe of `crop` (its box, compared by value) is drawn from now on."""
        if crop != self._crop:
            self._crop, self._placed = crop, False

    def __call__(self, m: Motion) -> Motion:
        if self._from is None:
            self._from = m
        elif not self._placed:
            self._from = self._from.with_pose(translation=m.translation,
                                              log_scale=m.log_scale)
        self._placed = True
        return self.avatar.drive(self._from, m)


# Eyes turn about 35-45 degrees up at most; a camera further above the picture than this
# asks for a turn that would take the iris under the upper lid.
MAX_EYE_TURN_DEG = 30.0


@dataclass(frozen=True)
class EyeContact:
    """Eyes that look into the camera. The sender looks at the picture on their screen,
    whose middle is some way below the camera, so the receiver sees eyes turned down. Like
    a phone's eye-contact setting, this draws both irises turned up by the camera's angle
    above where the sender looks (`degrees`, about 5-15 for a laptop's camera at arm's
    length), in the head's own axes: glances, blinks and head turns stay as they were.
    Where the sender does look into the camera the eyes then look above it; the face
    tracker's up-down iris reading is too faint to tell (benchmarks/eyes.py), so the
    correction does not adapt."""

    degrees: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.degrees <= MAX_EYE_TURN_DEG:  # also refuses NaN
            raise FacecodecError(f"--eye-contact must be within 0..{MAX_EYE_TURN_DEG:g} "
                                 f"degrees, got {self.degrees:g}")

    def __call__(self, m: Motion, radius: float) -> Motion:
        """`m` with the irises moved up; `radius`: the eyes' radius (eye_radius)."""
        up = radius * math.sin(math.radians(self.degrees))
        return replace(m, gaze=m.gaze - np.array([0.0, up, 0.0, up]))


def eye_radius(basis: ExpressionBasis) -> float:
    """Canonical distance from an iris's centre to the eye's centre of rotation: about 10.5
    mm, against an adult iris's 11.7 mm across (the basis's mean iris)."""
    width = [np.ptp(basis.mean[list(iris[1:]), 0]) for iris in (T.LEFT_IRIS, T.RIGHT_IRIS)]
    return float(np.mean(width)) * 10.5 / 11.7
