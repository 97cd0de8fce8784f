"""Reconstruction losses for the refiner.

Multi-scale L1 (full, 1/2, 1/4 resolution) so low frequencies (shading, the dark mouth
interior) weigh as much as edges, plus 1 - MS-SSIM, which tracks the structure metrics the
codec is judged by. An optional weight map raises the loss where the warp is known to fail
(the target's mouth and eyes), which are a few percent of the pixels but most of the error
a viewer notices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

# 7-px windows (not 11) so that patches from 112 px on fit MS-SSIM's four downsamplings.
_WIN = 7
MIN_PATCH = (_WIN - 1) * 2**4 + 1


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    ms_ssim: float = 0.5
    region: float = 4.0  # extra L1 weight inside the target's mouth and eyes
    scales: int = 3
    mask: float = 0.0  # L1 on the blend mask: where the warp is right, leave it alone
    # A patch discriminator (facecodec/train/adversarial.py); 0 and 0: none is trained.
    adversarial: float = 0.0
    feature_matching: float = 0.0


def multiscale_l1(
    out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, scales: int
) -> torch.Tensor:
    total = out.new_zeros(())
    for s in range(scales):
        d = (out - target).abs()
        total = total + (d * weight).mean() if weight is not None else total + d.mean()
        if s + 1 < scales:
            out, target = F.avg_pool2d(out, 2), F.avg_pool2d(target, 2)
            weight = F.avg_pool2d(weight, 2) if weight is not None else None
    return total / scales


def ms_ssim_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - ms_ssim(out, target, data_range=1.0, win_size=_WIN)


def refiner_loss(
    out: torch.Tensor, target: torch.Tensor, cond: torch.Tensor, w: LossWeights,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts; `cond` channels 3 and 4 are the target mouth / eye masks."""
    weight = None
    if w.region > 0:
        masks = cond[:, 3:5].amax(dim=1, keepdim=True)
        weight = 1.0 + w.region * F.interpolate(masks, size=out.shape[-2:], mode="bilinear",
                                                align_corners=False)
    l1 = multiscale_l1(out, target, weight, w.scales)
    total = w.l1 * l1
    parts = {"l1": float(l1.detach())}
    if w.ms_ssim > 0:
        ss = ms_ssim_loss(out, target)
        total = total + w.ms_ssim * ss
        parts["ms_ssim"] = float(ss.detach())
    if w.mask > 0 and mask is not None:
        mm = (mask * (mask > 0)).mean()  # no push on pixels already at exactly the warp
        total = total + w.mask * mm
        parts["mask"] = float(mm.detach())
    parts["loss"] = float(total.detach())
    return total, parts
