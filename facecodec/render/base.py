"""The `Renderer` interface: (reference frame, reference Motion, target Motion) -> frame.

The codec does not know which renderer runs; each keyframe sets a new reference, and every
frame after it is rendered from that reference and the frame's Motion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace

import numpy as np

from facecodec.errors import FacecodecError
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion

# The face tracker reports only part of an iris's move: moving what lies inside the eye
# openings of train crops, it reported 0.49 of a sideways and 0.11 of an up-down move
# (benchmarks/eyes.py --calibrate). A frame drawn to its Motion's gaze would show the eyes
# barely moving, so each iris is drawn moved from the reference's by IRIS_GAIN times the
# change of gaze (x, y). Undoing the whole shortfall draws the tracker's noise as well: on 14
# train clips 1.5 on both axes brought the iris landmarks closest and AKD lowest, for 0.013
# dB less PSNR-Y in the eye openings than 1 (docs/neural_renderer.md, "Eyes").
IRIS_GAIN = (1.5, 1.5)


class Renderer(ABC):
    name: str = ""

    def __init__(self, basis: ExpressionBasis, size: int) -> None:
        self.basis = basis
        self.size = size
        self.reference: np.ndarray | None = None
        self.ref_motion: Motion | None = None
        # The sender's share (0..1) of `restorer_id`'s change the reference takes (RESTORE
        # packets); None: not given.
        self.restore_share: float | None = None
        # True: draw the cheapest way this renderer has (set by PacketDecoder.push for a
        # live receiver behind real time); `hurried` counts the frames drawn so that would
        # have been drawn otherwise.
        self.hurry = False
        self.hurried = 0
        # True: draw the cheapest way too, since what follows keeps little of the rest (a
        # layer picture smaller than the frame fused with it); not counted in `hurried`.
        self.plain = False
        self.iris_gain = IRIS_GAIN  # (x, y); benchmarks/eyes.py compares others

    @property
    def model_id(self) -> str:
        """The trained model a stream must name to be rendered by this renderer ('' if none)."""
        return ""

    @property
    def restorer_id(self) -> str:
        """The reference restorer this renderer runs ('' if none): a stream's RESTORE packets
        apply only if its header names the same."""
        return ""

    def restoration(self, image: np.ndarray, share: float | None) -> np.ndarray:
        """The picture this renderer draws from for `image` with the sender's `share`
        (None: not given): `image` itself without a restorer. Safe to call on another
        thread ahead of `set_reference` (a call does, codec/background.py)."""
        return image

    def set_reference(self, image: np.ndarray, motion: Motion,
                      restore_share: float | None = None) -> None:
        if image.shape != (self.size, self.size, 3):
            raise FacecodecError(f"reference of shape {image.shape}, expected {self.size}^2 RGB")
        self.reference, self.ref_motion = image, motion
        self.restore_share = restore_share
        self._prepare(image, motion)

    def points(self, target: Motion) -> np.ndarray:
        """The landmarks a frame is drawn to, (478, 3): x, y and depth px (larger is farther
        from the camera); the target's, each iris moved from the reference's by IRIS_GAIN
        times the change of gaze."""
        assert self.ref_motion is not None
        gain = np.tile(self.iris_gain, 2)
        gaze = self.ref_motion.gaze + gain * (target.gaze - self.ref_motion.gaze)
        return self.basis.landmarks(replace(target, gaze=gaze), self.size, depth=True)

    def render(self, target: Motion) -> np.ndarray:
        if self.reference is None or self.ref_motion is None:
            raise FacecodecError("renderer has no reference frame yet")
        return self._render(target)

    def __call__(self, reference: np.ndarray, ref_motion: Motion, target: Motion) -> np.ndarray:
        if reference is not self.reference or ref_motion is not self.ref_motion:
            self.set_reference(reference, ref_motion)
        return self.render(target)

    def warm_up(self) -> None:
        """Run once whatever is slow the first time in a process (a network's first pass),
        so that a live receiver's first frames do not wait for it. Draws nothing; the
        mesh warp has nothing to warm."""
        return None

    @abstractmethod
    def _prepare(self, image: np.ndarray, motion: Motion) -> None: ...

    @abstractmethod
    def _render(self, target: Motion) -> np.ndarray: ...
