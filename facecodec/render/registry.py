"""Renderers by name, so the CLI and the decoder stay ignorant of their classes."""

from __future__ import annotations

from facecodec.errors import FacecodecError
from facecodec.motion.basis import ExpressionBasis
from facecodec.render.base import Renderer
from facecodec.render.warp import WarpRenderer

RENDERERS = {"warp": WarpRenderer}
DEFAULT_RENDERER = "warp"


def make_renderer(name: str, basis: ExpressionBasis, size: int) -> Renderer:
    try:
        cls = RENDERERS[name]
    except KeyError:
        known = ", ".join(sorted(RENDERERS))
        raise FacecodecError(f"unknown renderer {name!r} (available: {known})") from None
    return cls(basis, size)
