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
from facecodec.face.tracker import (
    Face,
    FaceCheck,
    FaceMesh,
    find_small_faces,
    shrunk,
    small_face_advice,
)
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
        mesh = FaceMesh(max_faces=2, static=True)
        try:
            rgb, faces, turn = stand_upright(rgb, mesh)
        finally:
            mesh.close()
        if turn:
            print(f"note: {portrait}: the face was {_TURNED[turn]}; the portrait is turned "
                  "upright", file=sys.stderr)
        if not faces:
            h, w = rgb.shape[:2]
            raise FacecodecError(f"{portrait}: no face found in the portrait (give a head-"
                                 f"and-shoulders picture: {small_face_advice(w, h)}, nor one "
                                 "that fills all of it or is cut by its edge)")
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
# A face is taken as lying on a side or upside down within this many degrees of it, and as
# stood up within this many of upright: a face tilted between is left as it is.
LYING_WITHIN_DEG = 30.0
# A face found turned is taken over the picture as it is only if the face detector is this
# sure of it, and surer by this much than of the face as it is (FaceCheck, on the shared
# portraits at each quarter turn: standing faces 0.89 and more, faces the mesh fitted to
# a background at most 0.74; no wrong turn in 195 cases there; on first frames of training
# clips 3 in 312: a quarter turn missed, and two 50-degree tilts turned to stand within 30).
TURNED_FACE_SCORE, TURNED_FACE_MARGIN = 0.7, 0.1
SEARCH_SIDE = 1024  # the turns are compared on a picture this large at most


def standing_turns(points: np.ndarray) -> int | None:
    """Quarter turns of the picture (as np.rot90 counts them) after which a face, from its
    landmarks (478, 2+) in pixels, stands within LYING_WITHIN_DEG of upright, its mouth
    below its eyes; None for a face tilted between."""
    eyes = points[list(T.RIGID_EYE_CORNERS), :2].mean(axis=0)
    right, down = (float(v) for v in points[list(T.LIPS_INNER), :2].mean(axis=0) - eyes)
    for turns in range(4):
        if abs(math.degrees(math.atan2(right, down))) <= LYING_WITHIN_DEG:
            return turns
        right, down = down, -right  # np.rot90 once: what pointed right points up
    return None


def stand_upright(rgb: np.ndarray, mesh: FaceMesh) -> tuple[np.ndarray, list[Face], int]:
    """A portrait stood up if its face lies on a side or upside down (a photograph with no
    orientation tag): the picture, the faces the mesh finds in it, and the quarter turns
    (np.rot90's) it was given. The mesh is run at each quarter turn; a turn is taken where
    it finds one face standing that the face detector believes (FaceCheck) clearly more
    than the face found as it is. The mesh alone cannot tell: on an upside-down picture it
    fits a standing face to the background. A face tilted between is left as it is."""
    search, scale = shrunk(rgb, SEARCH_SIDE)
    turned = [np.ascontiguousarray(np.rot90(search, k)) for k in range(4)]
    found = [mesh(picture) for picture in turned]
    check = FaceCheck()
    try:
        belief = [check(turned[k], found[k][0]) if len(found[k]) == 1 else 0.0
                  for k in range(4)]
        lying = len(found[0]) == 1 and bool(standing_turns(found[0][0].points))
        as_is = 0.0 if lying else belief[0]
        standing = [k for k in (1, 2, 3)
                    if len(found[k]) == 1 and standing_turns(found[k][0].points) == 0]
        best = max(standing, key=lambda k: belief[k], default=0)
        turn = best if best and belief[best] >= TURNED_FACE_SCORE and (
            belief[best] > as_is + TURNED_FACE_MARGIN) else 0
        picture = np.ascontiguousarray(np.rot90(rgb, turn)) if turn else rgb
        faces = found[turn] if scale == 1 else mesh(picture)
        if not faces:  # a small face (a photograph of a whole person), taken only standing
            faces = [f for f in find_small_faces(picture, mesh)
                     if standing_turns(f.points) == 0
                     and check(picture, f) >= TURNED_FACE_SCORE]
    finally:
        check.close()
    return picture, faces, turn


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
