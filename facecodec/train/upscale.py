"""Train the two-times upscaler: `python -m facecodec.train.upscale --data D --out RUN/`.

Data (train split only): every 6th of the first 60 frames of each clip, scaled so the
longer side is at most 512 px. A sample is a random 96 px patch (flipped half the time) and
its area-downscaled 48 px version; the network learns the detail bicubic upsampling misses.
Loss L1. Validation (validation split, 4 whole frames per clip, same degradation) every
`--val-every` steps: PSNR-Y of the network and of bicubic; the best is kept. Seeded.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facecodec.capture.video import read_frames
from facecodec.render.upscale import (
    DEFAULT_WEIGHTS,
    UpscaleConfig,
    UpscaleNet,
    load_upscaler,
    save_upscaler,
)
from facecodec.train.options import (
    command_line,
    hardware,
    prepare_run,
    save_best,
    training_parser,
)
from facecodec.train.splits import load_split

MAX_SIDE = 512


def _frames(clip: Path, every: int, count: int) -> list[np.ndarray]:
    out = []
    for i, f in enumerate(read_frames(clip, max_frames=count)):
        if i % every == 0:
            s = min(1.0, MAX_SIDE / max(f.shape[:2]))
            h, w = (int(f.shape[0] * s) // 2 * 2, int(f.shape[1] * s) // 2 * 2)
            out.append(cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA))
    return out


def degrade(hr: np.ndarray) -> np.ndarray:
    return cv2.resize(hr, (hr.shape[1] // 2, hr.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _t(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0


def luma_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    ya, yb = (a.clamp(0, 1) * w).sum(1), (b * w).sum(1)
    return float(10 * torch.log10(1.0 / F.mse_loss(ya, yb)))


def bicubic_psnr(val: list[np.ndarray]) -> float:
    """The baseline the network must beat, computed once per run."""
    scores = []
    for hr in val:
        x = _t([degrade(hr)])
        bic = F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
        scores.append(luma_psnr(bic, _t([hr])))
    return float(np.mean(scores))


def evaluate(net: UpscaleNet, val: list[np.ndarray]) -> float:
    """Mean PSNR-Y of the network on the validation frames."""
    with torch.inference_mode():
        return float(np.mean([luma_psnr(net(_t([degrade(hr)])), _t([hr])) for hr in val]))


def main(argv: list[str] | None = None) -> int:
    ap = training_parser("python -m facecodec.train.upscale", __doc__, steps=6000,
                         minutes=20.0, batch=16, patch=96, weights=DEFAULT_WEIGHTS)
    a = ap.parse_args(argv)
    rng = prepare_run(a)
    t0 = time.monotonic()
    train = [f for c in load_split(a.data, "train")[: a.max_clips] for f in _frames(c, 6, 60)]
    train = [f for f in train if min(f.shape[:2]) >= a.patch]
    val = [f for c in load_split(a.data, "validation") for f in _frames(c, 15, 60)]
    prep_s = time.monotonic() - t0
    print(f"{len(train)} training frames, {len(val)} validation frames ({prep_s:.0f} s)")
    psnr_bicubic = bicubic_psnr(val)

    net = UpscaleNet(UpscaleConfig())
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    log = (a.out / "log.csv").open("w")
    log.write("step,seconds,loss,psnr_net,psnr_bicubic\n")
    best, best_step, step, losses = -1.0, 0, 0, []
    t_train = time.monotonic()
    limit = a.time_limit_min * 60
    while step < a.steps and time.monotonic() - t_train < limit:
        hrs, lrs = [], []
        for _ in range(a.batch):
            f = train[rng.integers(len(train))]
            y0 = rng.integers(0, f.shape[0] - a.patch + 1) // 2 * 2
            x0 = rng.integers(0, f.shape[1] - a.patch + 1) // 2 * 2
            hr = f[y0:y0 + a.patch, x0:x0 + a.patch]
            if rng.random() < 0.5:
                hr = hr[:, ::-1]
            hr = np.ascontiguousarray(hr)
            hrs.append(hr)
            lrs.append(degrade(hr))
        frac = min(1.0, (time.monotonic() - t_train) / limit, step / a.steps)
        for g in opt.param_groups:  # cosine decay to 1/10 over the run
            g["lr"] = a.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        loss = F.l1_loss(net(_t(lrs)), _t(hrs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % a.val_every == 0 or step == a.steps:
            net.eval()
            psnr = evaluate(net, val)
            net.train()
            log.write(f"{step},{time.monotonic() - t_train:.1f},{np.mean(losses):.5f},"
                      f"{psnr:.3f},{psnr_bicubic:.3f}\n")
            log.flush()
            print(f"step {step}: loss {np.mean(losses):.4f}  validation PSNR-Y "
                  f"{psnr:.2f} dB (bicubic {psnr_bicubic:.2f})", flush=True)
            losses = []
            if psnr > best:
                best, best_step = psnr, step
                save_upscaler(net, a.out / "best.safetensors")
    net.eval()
    final = evaluate(net, val)
    best_net = load_upscaler(a.out / "best.safetensors") if best_step else net
    scores = {"psnr_net": best if best_step else final, "psnr_bicubic": psnr_bicubic}
    meta = {"training": {
        "command": command_line("python -m facecodec.train.upscale", argv),
        "seed": a.seed, "steps": step, "best_step": best_step or step, "batch": a.batch,
        "patch": a.patch, "lr": a.lr, "threads": a.threads, "train_frames": len(train),
        "data_prep_s": round(prep_s, 1),
        "train_time_s": round(time.monotonic() - t_train, 1),
        "hardware": hardware(), "data": "train split only",
    }, "validation": {**{k: round(v, 3) for k, v in scores.items()},
                      "final_step_psnr_net": round(final, 3),
                      "frames": len(val), "protocol": "x2 of area-downscaled frames, PSNR-Y"}}
    mid = save_best(save_upscaler, best_net, a.out, a.export, meta)
    print(json.dumps({"model_id": mid, **meta["validation"]}))
    return 0


if __name__ == "__main__":
    from facecodec.cli import run_guarded

    sys.exit(run_guarded(main))
