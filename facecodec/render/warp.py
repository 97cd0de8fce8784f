"""The training-free renderer: a piecewise-affine warp of the reference over the face mesh."""

from __future__ import annotations

import numpy as np

from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion
from facecodec.render.base import Renderer
from facecodec.render.mesh_warp import MeshWarper


class WarpRenderer(Renderer):
    name = "warp"

    def __init__(self, basis: ExpressionBasis, size: int) -> None:
        super().__init__(basis, size)
        self.warper = MeshWarper(size)

    def _prepare(self, image: np.ndarray, motion: Motion) -> None:
        self.warper.set_reference(image, self.basis.landmarks(motion, self.size))

    def _render(self, target: Motion) -> np.ndarray:
        assert self.ref_motion is not None  # render() checks
        pts = self.points(target)
        return self.warper.warp(pts[:, :2], target.surround_towards(self.ref_motion), pts[:, 2])
