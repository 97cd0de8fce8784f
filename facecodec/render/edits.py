"""Receiver-side edits: they change only the Motion handed to the renderer.

- Redirection: show the head frontal, or turned by given angles (eye contact with the camera).
- Avatar: drive another portrait with the sender's expression and relative head motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facecodec.errors import FacecodecError
from facecodec.face.crop import CropBox
from facecodec.face.tracker import FaceMesh
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion


@dataclass(frozen=True)
class PoseEdit:
    """`frontal` zeroes the head rotation; yaw/pitch/roll (degrees) are then added."""

    frontal: bool = False
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    @property
    def active(self) -> bool:
        return self.frontal or any((self.yaw, self.pitch, self.roll))

    def __call__(self, m: Motion) -> Motion:
        if not self.active:
            return m
        base = np.zeros(3) if self.frontal else m.rotation
        delta = np.radians([self.yaw, self.pitch, self.roll])
        # The measured surround belongs to the real pose; the mesh warp's rings turn hair
        # and ears with the new one.
        return m.with_pose(rotation=base + delta).with_surround(None)


class Avatar:
    """Another portrait driven by the sender: it takes the sender's change of expression,
    gaze, openness and pose since `sender_ref` (the decoder passes the first frame drawn from
    each keyframe) and applies it to the portrait's own Motion, so the portrait keeps its
    identity and framing."""

    def __init__(self, portrait: Path, basis: ExpressionBasis, size: int, k: int) -> None:
        img = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
        if img is None:
            raise FacecodecError(f"{portrait}: not an image file")
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        mesh = FaceMesh(max_faces=2, static=True)
        faces = mesh(rgb)
        mesh.close()
        if not faces:
            raise FacecodecError(f"{portrait}: no face found in the portrait")
        face = max(faces, key=lambda f: f.size)
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
