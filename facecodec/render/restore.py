"""Reference restoration: undo the keyframe codec's damage to the reference picture once,
before every frame is warped from it.

Why here: in a motion-only stream every frame is the reference moved, so the reference's
blocking, ringing and lost detail (it is coded at quality 25-60 to keep the stream small)
are on every frame. A network run once per keyframe costs nothing per frame, so it can be
far larger than anything the per-frame budget allows. It is trained on the train split's
face crops coded and decoded by the real keyframe codec at random qualities
(facecodec/train/restore.py) and sees only the decoded picture (blind: the same net serves
every quality and a reference drawn from a layer picture).

Architecture: pixel-unshuffled to half resolution (12 channels), a two-level U-Net of
residual blocks (half and quarter resolution, additive skip), pixel-shuffled back to a
residual on the decoded picture. The last layer is zero-initialised: untrained, it returns
the picture unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecodec.psnr import picture_luma
from facecodec.render.blocks import ResBlock
from facecodec.render.weights import content_id, load_model, save_model

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_WEIGHTS = ASSETS / "restore_v1.safetensors"
MODEL_PREFIX = "restore-v1"
ALIGN = 4  # one unshuffle by 2, one stride-2 convolution


@dataclass(frozen=True)
class RestoreConfig:
    """Widths and residual blocks at 1/2 and 1/4 resolution."""

    widths: tuple[int, int] = (32, 64)
    blocks: tuple[int, int] = (2, 2)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RestoreConfig:
        w, b = d.get("widths", cls.widths), d.get("blocks", cls.blocks)
        assert isinstance(w, list | tuple) and isinstance(b, list | tuple)
        return cls((int(w[0]), int(w[1])), (int(b[0]), int(b[1])))


class RestoreNet(nn.Module):
    """(B,3,H,W) decoded picture in [0,1] -> (B,3,H,W) restored; H, W multiples of 4."""

    def __init__(self, config: RestoreConfig | None = None) -> None:
        super().__init__()
        self.config = config or RestoreConfig()
        c1, c2 = self.config.widths
        n1, n2 = self.config.blocks
        self.stem = nn.Conv2d(12, c1, 3, padding=1)
        self.enc1 = nn.Sequential(*(ResBlock(c1) for _ in range(n1)))
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.mid = nn.Sequential(*(ResBlock(c2) for _ in range(n2)))
        self.lat = nn.Conv2d(c2, c1, 1)
        self.dec1 = ResBlock(c1)
        self.head = nn.Conv2d(c1, 12, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None  # a Conv2d made with one
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu
        e1 = self.enc1(act(self.stem(F.pixel_unshuffle(x, 2)), 0.2))
        m = self.mid(act(self.down(e1), 0.2))
        up = F.interpolate(self.lat(m), size=e1.shape[-2:], mode="bilinear", align_corners=False)
        d1 = self.dec1(e1 + up)
        return (x + F.pixel_shuffle(self.head(act(d1, 0.2)), 2)).clamp(0.0, 1.0)


def model_id_of(net: RestoreNet) -> str:
    return content_id(net, MODEL_PREFIX)


def save_weights(net: RestoreNet, path: Path, meta: Mapping[str, object] | None = None) -> str:
    return save_model(net, path, model_id_of(net), meta)


def load_net(path: Path = DEFAULT_WEIGHTS) -> RestoreNet:
    return load_model(path, "restoration weights",
                      lambda c: RestoreNet(RestoreConfig.from_dict(c)))


def restore(net: RestoreNet, image: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 -> (H,W,3) uint8; sides not a multiple of 4 are edge-padded."""
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    ph, pw = -h % ALIGN, -w % ALIGN
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    with torch.inference_mode():
        y = net(x)[0, :, :h, :w]
    return y.mul(255.0).round_().permute(1, 2, 0).to(torch.uint8).contiguous().numpy()


# BT.601 luma: the share is measured where the restorer matters to every later measure (the
# eyes' and lips' edges) and applied to all three colours alike. A second share for chroma
# was tried on the 6 validation clips: AKD 0.9318 against 0.9346 at quality 60 but 0.8856
# against 0.8816 at 92, VMAF level; one share keeps the packet's payload 3 bytes.
SHARE_STEPS = 255  # a share travels as a byte (docs/bitstream.md, RestorePayload)


def blend(decoded: np.ndarray, restored: np.ndarray, share: float) -> np.ndarray:
    """`decoded` plus `share` (0..1) of the restorer's change; uint8 in and out."""
    if share >= 1.0:
        return restored
    if share <= 0.0:
        return decoded
    out = decoded + share * (restored.astype(np.float32) - decoded)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def best_share(original: np.ndarray, decoded: np.ndarray, restored: np.ndarray) -> int:
    """The share, in 255ths, of the change from `decoded` to `restored` that brings its luma
    closest to `original`'s in squared error (least squares, clipped to 0..1): what a
    sender, which holds the original, tells the receiver."""
    change = picture_luma(restored.astype(np.float64) - decoded)
    error = picture_luma(original.astype(np.float64) - decoded)
    den = float((change * change).sum())
    a = float((change * error).sum()) / den if den > 0 else 0.0
    return round(min(max(a, 0.0), 1.0) * SHARE_STEPS)


class ShareMeter:
    """The sender's end of RESTORE packets: for a keyframe's original and decoded picture,
    the share of the restorer's change the receiver should take (55 ms a 256 px picture on
    2 cores, once per keyframe)."""

    def __init__(self, net: RestoreNet | None = None) -> None:
        self.net = net if net is not None else load_net()
        self.model_id = model_id_of(self.net)

    def __call__(self, original: np.ndarray, decoded: np.ndarray) -> int:
        return best_share(original, decoded, restore(self.net, decoded))
