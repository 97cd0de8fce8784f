"""Two-times super-resolution: a motion-only reconstruction to 512 px, or any low-resolution
video to twice its size.

A small residual network on top of bicubic upsampling. It works at half the input
resolution (pixel-unshuffle in, pixel-shuffle x4 out), which keeps a 256 -> 512 frame
near 2 GFLOPs on the CPU, and predicts only the detail bicubic misses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecodec.errors import FacecodecError
from facecodec.render.blocks import ResBlock
from facecodec.render.weights import content_id, load_model, save_model

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_WEIGHTS = ASSETS / "upscale_v1.safetensors"
MODEL_PREFIX = "upscale-v1"
MAX_OUTPUT_SIDE = 4096  # larger outputs are refused rather than exhausting memory
# An ordinary video keeps its rate, a phone's slow motion (240 fps) included; a .fcv
# stream's limit (120) is the codec's, not a video's.
MAX_FPS = 1000


@dataclass(frozen=True)
class UpscaleConfig:
    width: int = 32
    blocks: int = 3

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> UpscaleConfig:
        return cls(int(d.get("width", cls.width)), int(d.get("blocks", cls.blocks)))  # type: ignore[call-overload]


class UpscaleNet(nn.Module):
    """(N,3,H,W) in [0,1] -> (N,3,2H,2W); H and W even."""

    def __init__(self, config: UpscaleConfig | None = None) -> None:
        super().__init__()
        self.config = config or UpscaleConfig()
        c = self.config.width
        self.stem = nn.Conv2d(12, c, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(self.config.blocks)])
        self.head = nn.Conv2d(c, 3 * 16, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # starts as plain bicubic
        assert self.head.bias is not None  # a Conv2d made with one
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
        h = F.leaky_relu(self.stem(F.pixel_unshuffle(x, 2)), 0.2)
        return base + F.pixel_shuffle(self.head(self.body(h)), 4)


def model_id_of(net: UpscaleNet) -> str:
    return content_id(net, MODEL_PREFIX)


def save_upscaler(net: UpscaleNet, path: Path, meta: Mapping[str, object] | None = None) -> str:
    return save_model(net, path, model_id_of(net), meta)


def load_upscaler(path: Path = DEFAULT_WEIGHTS) -> UpscaleNet:
    return load_model(path, "upscaling weights",
                      lambda c: UpscaleNet(UpscaleConfig.from_dict(c)))


def check_size(width: int, height: int, what: str = "frames") -> None:
    if 2 * max(width, height) > MAX_OUTPUT_SIDE:
        raise FacecodecError(f"{what} of {width}x{height} would upscale past "
                             f"{MAX_OUTPUT_SIDE} px; downscale them first")


class Upscaler:
    """uint8 RGB frame (H, W, 3) -> (2H, 2W, 3) with the shipped network."""

    def __init__(self, weights: Path = DEFAULT_WEIGHTS) -> None:
        # torch's stubs leave memory_format out of Module.to
        self.net = load_upscaler(weights).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model_id = model_id_of(self.net)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        check_size(w, h)
        # The network needs even sides: pad by one replicated row/column where odd.
        ph, pw = h % 2, w % 2
        src = cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_REPLICATE) if ph or pw else rgb
        x = torch.from_numpy(np.ascontiguousarray(src)).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            y = self.net(x.contiguous(memory_format=torch.channels_last))
        out = y[0, :, : 2 * h, : 2 * w].clamp(0.0, 1.0).mul(255.0).round_()
        return out.permute(1, 2, 0).to(torch.uint8).contiguous().numpy()


def upscale_file(src: Path, dst: Path, weights: Path = DEFAULT_WEIGHTS,
                 progress: bool = False) -> int:
    """Upscale every frame of a video two times into an mp4; returns the frame count.
    Nothing is left at `dst` unless the whole video was written. `progress`: a bar on
    stderr."""
    from tqdm import tqdm

    from facecodec.capture.video import VideoWriter, probe, read_frames

    info = probe(src, MAX_FPS)
    check_size(info.width, info.height, f"{src}: frames")  # before any output is created
    up = Upscaler(weights)
    # H.264 in yuv420p needs even sides; doubling makes them even. Anamorphic pixels stay
    # so, so that the output is shown in the input's shape.
    with VideoWriter(dst, info.fps, 2 * info.width, 2 * info.height,
                     pixel_aspect=info.pixel_aspect, sound_from=src) as w:
        picture: np.ndarray | None = None
        drawn = np.zeros(0, np.uint8)
        frames = tqdm(read_frames(src, info=info), total=info.frames, desc="upscale",
                      unit="frame", leave=False, disable=not progress)
        for frame in frames:
            if frame is not picture:  # a picture held through a pause is drawn once
                picture, drawn = frame, up(frame)
            w.write(drawn)
        return w.frames
