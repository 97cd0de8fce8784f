"""Reference-guided super-resolution of the low-resolution layer.

The receiver has two pictures of the current frame: the layer (right colours, right
expression, no detail: 64-96 px) and the reference warped by the Motion (full detail, but
wrong wherever the landmark warp is wrong: mouth interior, eyelids, hair). The fusion
starts from a training-free rule and a small network corrects it:

    base = up(layer) + g * (warp - low(warp))

`up` is bicubic upsampling, `low(warp)` the warp passed through the layer's own
downscale/upscale (so `warp - low(warp)` is exactly the detail the layer cannot carry) and
`g` a gate that is 1 where warp and layer agree at low frequency and falls to 0 where they
disagree (misaligned warp: confidently wrong detail is worse than none). The network sees
warp, up(layer), low(warp) and the layer's age (frames since the layer picture: at a reduced
layer rate the layer lags the motion) and adds a residual, predicted at 1/4 resolution and
pixel-shuffled to full resolution; its last layer is zero-initialised, so an untrained net
is exactly `base`. Nothing runs at full resolution except element-wise operations, which
keeps the fusion near 10 ms a frame on two cores (benchmarks/layer_fusion_speed.py).

A layer as large as the frame needs no detail from the warp (`base` is the picture itself);
there a net trained with `keep_luma` restores the picture's colour only, the coarsely
quantised 4:2:0 chroma of a low-rate AV1 picture, and returns its luma unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecodec.errors import FacecodecError
from facecodec.render.blocks import ResBlock
from facecodec.render.fusion_model import (
    DEFAULT_WEIGHTS,
    GATE_MODEL_ID,
    MODEL_PREFIX,
    weights_for,
)
from facecodec.render.weights import content_id, load_model, save_model

AGE_SCALE = 4.0  # age in frames / AGE_SCALE, clipped at 2, as the net's age input
GATE_TAU = 0.06  # low-frequency disagreement (mean |RGB| in [0,1]) where the gate is 1/e
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # BT.601, as the metrics' Y


@dataclass(frozen=True)
class FusionConfig:
    """Widths at 1/4 and 1/8 resolution and residual blocks at each. `moved`: trained on
    held layer pictures warped by the motion since their frame, with their age (the receiver
    passes the age then; a net without it was trained on unmoved pictures and sees age 0)."""

    widths: tuple[int, int] = (32, 48)
    blocks: tuple[int, int] = (2, 2)
    gate_tau: float = GATE_TAU
    moved: bool = False
    keep_luma: bool = False  # restore colour only: the output keeps the layer's luma

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> FusionConfig:
        w, b = d.get("widths", cls.widths), d.get("blocks", cls.blocks)
        assert isinstance(w, list | tuple) and isinstance(b, list | tuple)
        return cls((int(w[0]), int(w[1])), (int(b[0]), int(b[1])),
                   float(d.get("gate_tau", GATE_TAU)),  # type: ignore[arg-type]
                   bool(d.get("moved", False)), bool(d.get("keep_luma", False)))

    def identity(self) -> dict[str, object]:
        """What the model id hashes: the later switches only when set, so that nets trained
        before they existed keep their ids."""
        d = asdict(self)
        for later in ("moved", "keep_luma"):
            if not d[later]:
                del d[later]
        return d


def gate_base(
    warp: torch.Tensor, lr_up: torch.Tensor, warp_low: torch.Tensor, tau: float
) -> torch.Tensor:
    """The training-free fusion: layer + warp detail where warp and layer agree."""
    dis = F.avg_pool2d((warp_low - lr_up).abs().mean(1, keepdim=True), 4)
    g = torch.exp(-((dis / tau) ** 2))
    g = F.interpolate(g, size=warp.shape[-2:], mode="bilinear", align_corners=False)
    return lr_up + g * (warp - warp_low)


class FusionNet(nn.Module):
    """(warp, up(layer), low(warp): (B,3,H,W) in [0,1]; age (B,1)) -> (B,3,H,W) in [0,1].
    H and W must be multiples of 8."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        self.config = config or FusionConfig()
        c1, c2 = self.config.widths
        self.stem = nn.Conv2d(9 * 16 + 1, c1, 1)
        self.blocks1 = nn.Sequential(*[ResBlock(c1) for _ in range(self.config.blocks[0])])
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.blocks2 = nn.Sequential(*[ResBlock(c2) for _ in range(self.config.blocks[1])])
        self.lat = nn.Conv2d(c2, c1, 1)
        self.head = nn.Conv2d(c1, 3 * 16, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None  # a Conv2d made with one
        nn.init.zeros_(self.head.bias)

    def forward(
        self, warp: torch.Tensor, lr_up: torch.Tensor, warp_low: torch.Tensor, age: torch.Tensor
    ) -> torch.Tensor:
        base = gate_base(warp, lr_up, warp_low, self.config.gate_tau)
        x = F.pixel_unshuffle(torch.cat([warp, lr_up, warp_low], 1), 4)
        a = age.view(-1, 1, 1, 1).expand(-1, 1, x.shape[2], x.shape[3])
        act = F.leaky_relu
        e1 = self.blocks1(act(self.stem(torch.cat([x, a], 1)), 0.2))
        e2 = self.blocks2(act(self.down(e1), 0.2))
        up = F.interpolate(self.lat(e2), scale_factor=2.0, mode="bilinear", align_corners=False)
        d = act(e1 + up, 0.2)
        out = base + F.pixel_shuffle(self.head(d), 4)
        if self.config.keep_luma:
            # Shift R, G and B alike: that moves luma (BT.601 weights) and no colour
            # difference, so the output takes the layer's luma and keeps the net's colour.
            out = out + ((lr_up - out) * LUMA.to(out.dtype)).sum(1, keepdim=True)
        return out.clamp(0.0, 1.0)


def model_id_of(net: FusionNet) -> str:
    return content_id(net, MODEL_PREFIX)


def save_fusion(net: FusionNet, path: Path, meta: Mapping[str, object] | None = None) -> str:
    """safetensors + a JSON beside it (config, model id, `meta`); returns the model id."""
    return save_model(net, path, model_id_of(net), meta)


def load_fusion(path: Path) -> FusionNet:
    return load_model(path, "layer fusion weights", lambda c: FusionNet(FusionConfig.from_dict(c)))


def low_pass(warp: np.ndarray, layer_size: int) -> np.ndarray:
    """The warp through the layer's downscale (area) and upscale (bicubic)."""
    small = cv2.resize(warp, (layer_size, layer_size), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, warp.shape[1::-1], interpolation=cv2.INTER_CUBIC)


def age_input(age_frames: float) -> float:
    return min(age_frames / AGE_SCALE, 2.0)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().mul_(1 / 255)


class LayerFusion:
    """Fuses a rendered (warped) frame with the latest layer picture.

    `mode`: "net" (the shipped network; the training-free fusion if none ships), "gate"
    (training-free), "bicubic" (the layer alone, upsampled: for measurements). `weights`
    None with mode "net" means: the default asset if present.
    """

    def __init__(self, mode: str = "net", weights: Path | None = None,
                 net: FusionNet | None = None, model: str | None = None) -> None:
        if mode not in ("net", "gate", "bicubic"):
            raise FacecodecError(f"unknown layer fusion mode {mode!r} (net, gate, bicubic)")
        self.mode = mode
        self.net: FusionNet | None = net
        if mode == "net" and net is None:
            # `model`: the fusion a stream names, found among the shipped weights.
            path = weights or (weights_for(model) if model else DEFAULT_WEIGHTS)
            if path is not None and (weights is not None or path.exists()):
                self.net = load_fusion(path)
        if self.net is None and mode == "net":
            self.mode = "gate"
        self.model_id = model_id_of(self.net) if self.net is not None else GATE_MODEL_ID
        self.tau = self.net.config.gate_tau if self.net is not None else GATE_TAU

    def as_is(self, layer_size: int, frame_size: int, plain: bool = False) -> bool:
        """Whether a layer picture is the fused frame itself, the rendered frame unused: one
        as large as the frame, unless the network fuses it (the training-free fusion adds no
        detail then, bit for bit). `plain`: as `__call__`'s."""
        net = self.net is not None and self.mode == "net" and not plain
        return layer_size == frame_size and not net

    @property
    def moved(self) -> bool:
        """Whether the net wants a motion-compensated picture's age (FusionConfig.moved)."""
        return self.net is not None and self.mode == "net" and self.net.config.moved

    def __call__(self, warp: np.ndarray, layer: np.ndarray, age_frames: float,
                 plain: bool = False) -> np.ndarray:
        """(S,S,3) uint8 frame from the (S,S,3) rendered frame and an (s,s,3) layer picture.
        `plain`: the training-free fusion even where a network would run (a receiver behind
        real time)."""
        size = warp.shape[0]
        if self.as_is(layer.shape[0], size, plain):
            return layer
        # A picture as large as the frame needs no upscaling and the warp loses nothing
        # through its size: skip the identity resizes and the second tensor of the warp.
        full = layer.shape[0] == size
        lr_up = layer if full else cv2.resize(layer, (size, size), interpolation=cv2.INTER_CUBIC)
        if self.mode == "bicubic":
            return lr_up
        with torch.inference_mode():
            w, u = _t(warp), _t(lr_up)
            lo = w if full else _t(low_pass(warp, layer.shape[0]))
            if self.net is not None and self.mode == "net" and not plain:
                out = self.net(w, u, lo, torch.tensor([[age_input(age_frames)]]))
            else:
                out = gate_base(w, u, lo, self.tau).clamp(0.0, 1.0)
        return out[0].mul(255.0).round_().permute(1, 2, 0).to(torch.uint8).contiguous().numpy()
