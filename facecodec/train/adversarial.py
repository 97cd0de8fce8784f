"""Patch discriminator and its losses for the refiner (as pix2pixHD trains its generator).

L1 and MS-SSIM reward the average of what an opened mouth could hold, which is smooth: the
refiner trained on them alone gains PSNR-Y and AKD over the warp but loses VMAF, which
prefers the warp's sharp (if stretched) lips. A patch discriminator penalises that
smoothness, and matching its features between output and target keeps the generator's
gradients stable. No pretrained network is needed, so it trains here from scratch.

The discriminator sees the frame and the target's mouth and eye masks (where the refiner
draws); hinge losses. With `crop`, it sees only a square around each target mouth: the
gated refiner draws nowhere else, and on whole patches the mouth is a few percent of what
the discriminator judges, so it barely learned (hinge loss 2.00 -> 1.95 in 2,000 steps).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

MASK_CHANNELS = slice(3, 5)  # of the refiner's conditioning: target mouth, target eyes


class PatchDiscriminator(nn.Module):
    """(frame (B,3,H,W), cond (B,5,H/2,W/2)) -> the features of each layer, the last being
    a real/fake logit per 16 x 16 px block (H/16 x W/16), each seeing about 78 px."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 128)) -> None:
        super().__init__()
        layers, cin = [], 3 + 2
        for w in widths:
            layers.append(nn.Conv2d(cin, w, 4, stride=2, padding=1))
            cin = w
        self.body = nn.ModuleList(layers)
        self.head = nn.Conv2d(cin, 1, 3, padding=1)

    def forward(self, frame: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        masks = F.interpolate(cond[:, MASK_CHANNELS], size=frame.shape[-2:], mode="bilinear",
                              align_corners=False)
        h = torch.cat([frame * 2 - 1, masks], 1)
        feats = []
        for conv in self.body:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        feats.append(self.head(h))
        return feats


def mouth_crops(
    frame: torch.Tensor, cond: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,3,size,size) frames and (B,5,size/2,size/2) conds centred on each target mouth
    mask's centroid (the patch's centre where the patch holds no mouth), kept inside the
    frame; even offsets so the half-resolution cond stays aligned."""
    h, w = frame.shape[-2:]
    if size >= min(h, w):
        return frame, cond
    with torch.no_grad():
        m = cond[:, 3].float()
        ys = torch.arange(m.shape[1], dtype=m.dtype, device=m.device).view(1, -1, 1) + 0.5
        xs = torch.arange(m.shape[2], dtype=m.dtype, device=m.device).view(1, 1, -1) + 0.5
        mass = m.sum((1, 2))
        cy = torch.where(mass > 1e-3, (m * ys).sum((1, 2)) / mass.clamp_min(1e-3),
                         torch.full_like(mass, m.shape[1] / 2)) * 2
        cx = torch.where(mass > 1e-3, (m * xs).sum((1, 2)) / mass.clamp_min(1e-3),
                         torch.full_like(mass, m.shape[2] / 2)) * 2
    frames, conds = [], []
    for i in range(frame.shape[0]):
        top = min(max(int(cy[i]) - size // 2, 0), h - size) // 2 * 2
        left = min(max(int(cx[i]) - size // 2, 0), w - size) // 2 * 2
        frames.append(frame[i, :, top:top + size, left:left + size])
        conds.append(cond[i, :, top // 2:(top + size) // 2, left // 2:(left + size) // 2])
    return torch.stack(frames), torch.stack(conds)


def _judge(
    disc: nn.Module, out: torch.Tensor, target: torch.Tensor, cond: torch.Tensor, crop: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The discriminator's features of (output, target), in one forward."""
    both, cc = torch.cat([out, target]), torch.cat([cond, cond])
    if crop:
        both, cc = mouth_crops(both, cc, crop)
    return _split(disc(both, cc))


def _split(feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    n = feats[0].shape[0] // 2
    return [f[:n] for f in feats], [f[n:] for f in feats]


def generator_terms(
    disc: nn.Module, out: torch.Tensor, target: torch.Tensor, cond: torch.Tensor, crop: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial loss, feature-matching L1) for the refiner's output. Output and target go
    through the discriminator as one batch: one forward per backward, as DDP requires."""
    fake, real = _judge(disc, out, target.detach(), cond, crop)
    adv = -fake[-1].mean()
    # A tensor, not sum()'s starting 0: the discriminator gives several feature maps.
    fm = cast(torch.Tensor, sum((a - b.detach()).abs().mean()
                                for a, b in zip(fake[:-1], real[:-1], strict=True)))
    return adv, fm / (len(fake) - 1)


def discriminator_loss(
    disc: nn.Module, out: torch.Tensor, target: torch.Tensor, cond: torch.Tensor, crop: int = 0
) -> torch.Tensor:
    """Hinge loss: real patches above +1, the refiner's below -1."""
    fake, real = _judge(disc, out.detach(), target, cond, crop)
    return F.relu(1 - real[-1]).mean() + F.relu(1 + fake[-1]).mean()
