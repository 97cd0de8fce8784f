"""Renderers by name, so the CLI and the decoder stay ignorant of their classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from facecodec.errors import FacecodecError

if TYPE_CHECKING:  # the renderers load on use: the command line names them without loading
    from facecodec.motion.basis import ExpressionBasis
    from facecodec.render.base import Renderer


def _warp(basis: ExpressionBasis, size: int) -> Renderer:
    from facecodec.render.warp import WarpRenderer

    return WarpRenderer(basis, size)


def _neural(basis: ExpressionBasis, size: int) -> Renderer:
    # Imported on use: the refiner needs torch, which the warp-only decoder never loads.
    from facecodec.render.neural import NeuralRenderer

    return NeuralRenderer(basis, size)


def _neural_onnx(basis: ExpressionBasis, size: int) -> Renderer:
    from facecodec.render.neural import NeuralRenderer

    # The same weights (and model id), the refiner exported to ONNX at start (~0.6 s) and
    # run by onnxruntime: a path off PyTorch, no faster here (docs/neural_renderer.md).
    return NeuralRenderer(basis, size, onnx=True)


RENDERERS: dict[str, Callable[[ExpressionBasis, int], Renderer]] = {
    "warp": _warp,
    "neural": _neural,
    "neural-onnx": _neural_onnx,
}
# The neural renderer, since the sender's RESTORE shares: on the validation bench ahead of the
# warp on VMAF, MS-SSIM and PSNR-Y on every motion-only rung and on AKD over the whole
# ladder (docs/neural_renderer.md). A live call keeps the warp (CALL_RENDERER).
DEFAULT_RENDERER = "neural"
# Both ends of a call share the CPU with the face tracker and the encoder: the warp's 4-6 ms
# a frame leave the most room (a receiver's CPU in a loopback call: 25-30 % of a core, 41-65 %
# with the neural renderer; with two calls on the same 2 cores the warp still drew every
# frame and the neural renderer three in four: docs/live_calls.md); `--renderer neural`
# asks for the other.
CALL_RENDERER = "warp"


def check_renderer(name: str) -> None:
    """Refuse a renderer name not in RENDERERS."""
    if name not in RENDERERS:
        known = ", ".join(sorted(RENDERERS))
        raise FacecodecError(f"unknown renderer {name!r} (available: {known})")


def make_renderer(name: str, basis: ExpressionBasis, size: int) -> Renderer:
    check_renderer(name)
    return RENDERERS[name](basis, size)
