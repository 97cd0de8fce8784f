"""Patch discriminator and its losses for the refiner (as pix2pixHD trains its generator).

L1 and MS-SSIM reward the average of what an opened mouth could hold, which is smooth: the
refiner trained on them alone gains PSNR-Y and AKD over the warp but loses VMAF, which
prefers the warp's sharp (if stretched) lips. A patch discriminator penalises that
smoothness, and matching its features between output and target keeps the generator's
gradients stable. No pretrained network is needed, so it trains here from scratch.

The discriminator sees the frame and the target's mouth and eye masks (where the refiner
draws); hinge losses.
"""

from __future__ import annotations

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


def _split(feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    n = feats[0].shape[0] // 2
    return [f[:n] for f in feats], [f[n:] for f in feats]


def generator_terms(
    disc: nn.Module, out: torch.Tensor, target: torch.Tensor, cond: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial loss, feature-matching L1) for the refiner's output. Output and target go
    through the discriminator as one batch: one forward per backward, as DDP requires."""
    fake, real = _split(disc(torch.cat([out, target.detach()]), torch.cat([cond, cond])))
    adv = -fake[-1].mean()
    fm = sum((a - b.detach()).abs().mean() for a, b in zip(fake[:-1], real[:-1], strict=True))
    return adv, fm / (len(fake) - 1)


def discriminator_loss(
    disc: nn.Module, out: torch.Tensor, target: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """Hinge loss: real patches above +1, the refiner's below -1."""
    fake, real = _split(disc(torch.cat([out.detach(), target]), torch.cat([cond, cond])))
    return F.relu(1 - real[-1]).mean() + F.relu(1 + fake[-1]).mean()
