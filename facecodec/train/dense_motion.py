"""Train the dense-motion net: `python -m facecodec.train.dense_motion --data D --out RUN/`.

Pairs (source, driving) of one clip and keyframe segment from the refiner's cache of the
train split (the sender's own analysis: crops and the landmarks of the coded Motions). A
batch draws a few sources and several driving frames for each (the mesh warp's reference
set-up is the costly part). The net's backward map, upsampled as the renderer does, warps
the full-resolution source; the loss is L1 against the driving frame (the face inside the
oval is the mesh warp's either way, so the loss there is constant). Validation (validation
split, each segment's first frame driving evenly spaced later frames, as a receiver does)
every `--val-every` steps: PSNR-Y of the net and of the plain mesh warp; the best is kept.
Seeded; CPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facecodec.render.dense_motion import (
    DEFAULT_WEIGHTS,
    DenseMotionConfig,
    DenseMotionNet,
    MotionCandidates,
    as_tensors,
    load_dense_motion,
    normalised,
    save_dense_motion,
)
from facecodec.render.mesh_warp import MeshWarper
from facecodec.train.dataset import SIZE, ClipData, build_cache, segment_pairs
from facecodec.train.options import seeded, training_parser
from facecodec.train.trainer import DEFAULT_CACHE

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _image(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().mul_(1 / 255)


def draw(ref: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Full-resolution references (B,3,S,S) through map-resolution backward maps (B,2,L,L),
    upsampled bilinearly like the renderer's cv2.resize + cv2.remap."""
    s = ref.shape[-1]
    full = F.interpolate(maps, size=(s, s), mode="bilinear", align_corners=False)
    return F.grid_sample(ref, normalised(full, s), mode="bilinear", padding_mode="border",
                         align_corners=False)


class Batches:
    """Inputs and targets for (source, driving) pairs, `drivers` per source."""

    def __init__(self, clips: list[ClipData]) -> None:
        self.items = [(c, rows) for c in clips for rows in segment_pairs(c)]
        if not self.items:
            raise ValueError("no clip has a segment with two frames")
        self.cand = MotionCandidates(MeshWarper(SIZE))

    def pairs(self, pairs: list[tuple[ClipData, int, list[int]]]) -> tuple[torch.Tensor, ...]:
        refs, smalls, maps, faces, tgts = [], [], [], [], []
        for clip, src, drvs in pairs:
            ref = np.asarray(clip.crops[src])
            self.cand.set_reference(ref, clip.points[src])
            for d in drvs:
                m, f = self.cand(clip.points[d])
                refs.append(ref)
                smalls.append(self.cand.ref_small)
                maps.append(m)
                faces.append(f)
                tgts.append(np.asarray(clip.crops[d]))
        small, m, f = as_tensors(np.stack(smalls), np.stack(maps), np.stack(faces))
        return _image(np.stack(refs)), small, m, f, _image(np.stack(tgts))

    def random(self, rng: np.random.Generator, sources: int, drivers: int) -> tuple[torch.Tensor, ...]:
        chosen = []
        for _ in range(sources):
            clip, rows = self.items[int(rng.integers(len(self.items)))]
            src = int(rng.choice(rows))
            drv = rng.choice(rows[rows != src], size=drivers, replace=len(rows) - 1 < drivers)
            chosen.append((clip, src, [int(d) for d in drv]))
        return self.pairs(chosen)

    def validation(self, per_clip: int) -> list[tuple[torch.Tensor, ...]]:
        """Per clip, its first segment's first frame driving `per_clip` evenly spaced ones."""
        out, seen = [], set()
        for clip, rows in self.items:
            if clip.name in seen:
                continue
            seen.add(clip.name)
            drv = rows[np.linspace(1, len(rows) - 1, min(per_clip, len(rows) - 1)).astype(int)]
            out.append(self.pairs([(clip, int(rows[0]), [int(d) for d in drv])]))
        return out


def luma_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    ya, yb = (a * _LUMA).sum(1), (b * _LUMA).sum(1)
    return float(10 * torch.log10(1.0 / F.mse_loss(ya, yb)))


def evaluate(net: DenseMotionNet, val: list[tuple[torch.Tensor, ...]]) -> tuple[float, float]:
    """Mean PSNR-Y over the validation pairs: (net, plain mesh warp)."""
    got, warp = [], []
    with torch.inference_mode():
        for ref, small, maps, face, tgt in val:
            m, _ = net(small, maps, face)
            got.append(luma_psnr(draw(ref, m), tgt))
            warp.append(luma_psnr(draw(ref, maps[:, 0]), tgt))
    return float(np.mean(got)), float(np.mean(warp))


def main(argv: list[str] | None = None) -> int:
    ap = training_parser("python -m facecodec.train.dense_motion", __doc__, steps=3000,
                         minutes=25.0, batch=4, patch=SIZE, weights=DEFAULT_WEIGHTS)
    ap.add_argument("--drivers", type=int, default=4, help="driving frames per source")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = ap.parse_args(argv)
    rng = seeded(a)
    t0 = time.monotonic()
    train = Batches(build_cache(a.data, "train", a.cache, max_clips=a.max_clips))
    val_clips = build_cache(a.data, "validation", a.cache)
    val = Batches(val_clips).validation(per_clip=6)
    prep_s = time.monotonic() - t0
    net = DenseMotionNet(DenseMotionConfig())
    psnr0, psnr_warp = evaluate(net, val)
    print(f"{len(train.items)} training segments, {sum(len(v[0]) for v in val)} validation "
          f"pairs ({prep_s:.0f} s); untrained {psnr0:.3f} dB, mesh warp {psnr_warp:.3f} dB")
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    a.out.mkdir(parents=True, exist_ok=True)
    log = (a.out / "log.csv").open("w")
    log.write("step,seconds,loss,psnr_net,psnr_warp\n")
    best, best_step, step, losses = -1.0, 0, 0, []
    t_train = time.monotonic()
    limit = a.time_limit_min * 60
    while step < a.steps and time.monotonic() - t_train < limit:
        ref, small, maps, face, tgt = train.random(rng, a.batch, a.drivers)
        frac = min(1.0, max((time.monotonic() - t_train) / limit, step / a.steps))
        for g in opt.param_groups:  # cosine decay to 1/10 over the run
            g["lr"] = a.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        m, _ = net(small, maps, face)
        loss = F.l1_loss(draw(ref, m), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % a.val_every == 0 or step == a.steps:
            net.eval()
            psnr, _ = evaluate(net, val)
            net.train()
            log.write(f"{step},{time.monotonic() - t_train:.1f},{np.mean(losses):.5f},"
                      f"{psnr:.3f},{psnr_warp:.3f}\n")
            log.flush()
            print(f"step {step}: loss {np.mean(losses):.4f}  validation PSNR-Y {psnr:.3f} dB "
                  f"(mesh warp {psnr_warp:.3f})", flush=True)
            losses = []
            if psnr > best:
                best, best_step = psnr, step
                save_dense_motion(net, a.out / "best.safetensors")
    best_net = load_dense_motion(a.out / "best.safetensors") if best_step else net.eval()
    meta = {"training": {
        "command": "python -m facecodec.train.dense_motion " + " ".join(argv or sys.argv[1:]),
        "seed": a.seed, "steps": step, "best_step": best_step or step, "sources": a.batch,
        "drivers": a.drivers, "lr": a.lr, "threads": a.threads,
        "train_segments": len(train.items), "data_prep_s": round(prep_s, 1),
        "train_time_s": round(time.monotonic() - t_train, 1),
        "hardware": "CPU", "data": "train split only",
    }, "validation": {"psnr_net": round(best, 3), "psnr_warp": round(psnr_warp, 3),
                      "protocol": "validation split, segment's first frame -> 6 later frames "
                                  "per clip, full-frame PSNR-Y"}}
    mid = save_dense_motion(best_net, a.out / "best.safetensors", meta)
    if a.export is not None:
        save_dense_motion(best_net, a.export, meta)
    print(json.dumps({"model_id": mid, **meta["validation"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
