"""Train the layer fusion network: `python -m facecodec.train.layer --data D --out RUN/`.

Data (train split only): the refiner's cache of 256 px crops and Motion landmarks (every
2nd frame of the first 150, facecodec/train/dataset.py). The codec is in the loop: per clip,
a few layer streams are coded and decoded by the real layer codec (SVT-AV1 low delay,
intra at each keyframe segment, random size and quantiser), and the reference each segment
is warped from is the real AV1-coded keyframe. A sample is a random frame of a segment with
the layer picture of that frame or of 1-2 cached frames before it (2-4 source frames: the
age a reduced layer rate produces), a random 128 px patch, flipped half the time.

With `--sizes 256:1 --reference layer --move --keep-luma` it trains the colour network of
a layer as large as the crop (a file's, at every rate): the reference is the layer's own
intra picture (a file's keyframe takes it from the layer), an older picture is first warped
by the landmark motion since its frame, as the receiver does, the net told its age, and
the output keeps the picture's luma (docs/layer.md, "Colour of a full-size layer").

Loss: L1 + 0.3 (1 - MS-SSIM). Validation on the validation split's cache (fixed frames,
the first size of `--sizes` at `--val-crf`, ages 0 and 4) every `--val-every` steps; the
best by PSNR is kept. Seeded; one process; `--threads` torch threads.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from facecodec.codec.keyframe import round_trip
from facecodec.codec.layer import code_sequence, downscale
from facecodec.files import count, path_arg
from facecodec.render.fusion_model import DEFAULT_WEIGHTS
from facecodec.render.layer_fusion import (
    FusionConfig,
    FusionNet,
    age_input,
    gate_base,
    low_pass,
    save_fusion,
)
from facecodec.render.mesh_warp import MeshWarper
from facecodec.train.dataset import ClipData, build_cache
from facecodec.train.options import (
    command_line,
    hardware,
    prepare_run,
    save_best,
    training_parser,
)

STRIDE = 2  # the cache keeps every 2nd frame
SIZES = ((128, 0.6), (96, 0.2), (64, 0.2))
Q_RANGE = (36, 66)


def parse_sizes(text: str) -> tuple[tuple[int, float], ...]:
    """"128:0.6,96:0.2,64:0.2" -> ((128, 0.6), (96, 0.2), (64, 0.2)), weights normalised."""
    pairs = [(int(a), float(b)) for a, b in (item.split(":") for item in text.split(","))]
    total = sum(w for _, w in pairs)
    return tuple((s, w / total) for s, w in pairs)


@dataclass
class ClipLayers:
    clip: ClipData
    segments: list[np.ndarray]  # row indices of each segment (>= 2 rows)
    references: dict[int, np.ndarray]  # first row of a segment -> AV1-coded reference
    layers: list[tuple[int, np.ndarray]]  # (size, decoded pictures (N, s, s, 3)) per variant
    ref_from_layer: bool = False  # the reference is each variant's own intra layer picture


def prepare_clip(
    clip: ClipData, rng: np.random.Generator, variants: int,
    ref_quality: tuple[int, int] | None = (60, 60),
    sizes: tuple[tuple[int, float], ...] = SIZES, crf: tuple[int, int] = Q_RANGE,
) -> ClipLayers:
    """Coded references (keyframe quality drawn from `ref_quality`; None: the layer's intra
    pictures are the references) and coded layers."""
    segs = [np.flatnonzero(clip.segment == s) for s in np.unique(clip.segment)]
    starts = frozenset(int(r[0]) for r in segs)
    refs = {}
    if ref_quality is not None:
        lo, hi = ref_quality  # a fixed quality draws nothing: v1's random stream is kept
        for rows in segs:
            q = lo if lo == hi else int(rng.integers(lo, hi + 1))
            crop = np.asarray(clip.crops[rows[0]])
            refs[int(rows[0])] = round_trip(crop, q, fast=True)  # fast: as the weights were trained
    layers = []
    for _ in range(variants):
        size = int(rng.choice([s for s, _ in sizes], p=[p for _, p in sizes]))
        q = int(rng.integers(crf[0], crf[1] + 1))
        small = np.stack([downscale(np.asarray(c), size) for c in clip.crops])
        _, decoded = code_sequence(small, size, q, intra_at=starts)
        layers.append((size, np.stack(decoded)))
    return ClipLayers(clip, [r for r in segs if len(r) >= 2], refs, layers, ref_quality is None)


class Warps:
    """Mesh warpers per (clip, segment[, variant]), set up once (setting a reference costs
    ~10 ms)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cache: dict[tuple[str, int, int], MeshWarper] = {}

    def __call__(self, cl: ClipLayers, ref_row: int, row: int, variant: int = 0) -> np.ndarray:
        key = (cl.clip.name, ref_row, variant if cl.ref_from_layer else -1)
        w = self.cache.get(key)
        if w is None:
            ref = cl.layers[variant][1][ref_row] if cl.ref_from_layer else cl.references[ref_row]
            w = MeshWarper(self.size)
            w.set_reference(ref, cl.clip.points[ref_row])
            self.cache[key] = w
        return w.warp(cl.clip.points[row])


def moved(cl: ClipLayers, picture: np.ndarray, from_row: int, to_row: int) -> np.ndarray:
    """A layer picture warped by the landmark motion between two frames (the receiver's
    motion compensation of a held picture)."""
    scale = picture.shape[0] / cl.clip.crops.shape[1]
    w = MeshWarper(picture.shape[0])
    w.set_reference(picture, cl.clip.points[from_row] * scale)
    return w.warp(cl.clip.points[to_row] * scale)


def sample(
    cl: ClipLayers, variant: int, rows: np.ndarray, t: int, age_rows: int, warps: Warps,
    move: bool = False,
) -> tuple[np.ndarray, float]:
    """(HxWx12 float32: warp | up(layer) | low(warp) | target, age in frames). `move`: an
    older layer picture is first warped to the frame's motion."""
    t_row = int(rows[t])
    l_row = int(rows[max(0, t - age_rows)])
    warp = warps(cl, int(rows[0]), t_row, variant)
    size, pics = cl.layers[variant]
    full = warp.shape[0]
    pic = moved(cl, pics[l_row], l_row, t_row) if move and l_row != t_row else pics[l_row]
    up = cv2.resize(pic, (full, full), interpolation=cv2.INTER_CUBIC)
    low = low_pass(warp, size)
    target = np.asarray(cl.clip.crops[t_row])
    stackd = np.concatenate([warp, up, low, target], -1).astype(np.float32) * (1 / 255)
    return stackd, float((t_row - l_row) * STRIDE)


def to_batch(items: list[tuple[np.ndarray, float]]) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(np.stack([i[0] for i in items])).permute(0, 3, 1, 2).contiguous()
    age = torch.tensor([[age_input(i[1])] for i in items], dtype=torch.float32)
    return x[:, 0:3], x[:, 3:6], x[:, 6:9], age, x[:, 9:12]


def random_batch(
    data: list[ClipLayers], rng: np.random.Generator, warps: Warps, n: int, patch: int,
    move: bool = False,
) -> tuple[torch.Tensor, ...]:
    items = []
    for _ in range(n):
        cl = data[int(rng.integers(len(data)))]
        if not cl.segments:
            continue
        rows = cl.segments[int(rng.integers(len(cl.segments)))]
        t = int(rng.integers(len(rows)))
        age = int(rng.choice([0, 1, 2], p=[0.4, 0.3, 0.3]))
        img, a = sample(cl, int(rng.integers(len(cl.layers))), rows, t, age, warps, move)
        full = img.shape[0]
        y, x = (rng.integers(0, (full - patch) // 4 + 1, size=2) * 4).tolist()
        img = img[y:y + patch, x:x + patch]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        items.append((np.ascontiguousarray(img), a))
    return to_batch(items)


def validation_set(
    clips: list[ClipData], warps: Warps, per_clip: int = 6,
    ref_quality: tuple[int, int] | None = (60, 60), size: int = 128, crf: int = 52,
    move: bool = False,
) -> list[tuple]:
    """Fixed full frames: a layer of `size` at `crf`, ages 0 and 4 frames."""
    rng = np.random.default_rng(1234)
    out = []
    for clip in clips:
        cl = prepare_clip(clip, rng, 0, ref_quality)
        small = np.stack([downscale(np.asarray(c), size) for c in clip.crops])
        starts = frozenset(int(r[0]) for r in cl.segments)
        _, dec = code_sequence(small, size, crf, intra_at=starts)
        cl.layers = [(size, np.stack(dec))]
        if not cl.segments:
            continue
        rows = cl.segments[0]
        for t in np.linspace(2, len(rows) - 1, per_clip).astype(int):
            for age in (0, 2):
                out.append(to_batch([sample(cl, 0, rows, int(t), age, warps, move)]))
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def evaluate(net: FusionNet, val: list[tuple]) -> dict[str, float]:
    """Mean PSNR (RGB) on the validation frames of the net, the training-free gate, the
    layer alone (bicubic) and the warp alone."""
    acc = {"net": 0.0, "gate": 0.0, "bicubic": 0.0, "warp": 0.0}
    net.eval()
    with torch.inference_mode():
        for warp, up, low, age, target in val:
            acc["net"] += psnr(net(warp, up, low, age), target)
            acc["gate"] += psnr(gate_base(warp, up, low, net.config.gate_tau).clamp(0, 1), target)
            acc["bicubic"] += psnr(up, target)
            acc["warp"] += psnr(warp, target)
    net.train()
    return {k: v / max(1, len(val)) for k, v in acc.items()}


def main(argv: list[str] | None = None) -> int:
    ap = training_parser("python -m facecodec.train.layer", __doc__, steps=4000, minutes=25.0,
                         batch=8, patch=128, weights=DEFAULT_WEIGHTS)
    ap.add_argument("--cache", type=path_arg, default=Path("cache/refiner"))
    ap.add_argument("--variants", type=count, default=3, help="coded layer streams per clip")
    ap.add_argument("--ref-quality", type=int, nargs=2, default=(60, 60), metavar=("LO", "HI"),
                    help="keyframe quality range of the references (v1: 60 60)")
    ap.add_argument("--reference", choices=("keyframe", "layer"), default="keyframe",
                    help="references coded by the keyframe codec, or each layer's own intra "
                         "picture (a file's keyframe with a layer as large as the crop)")
    ap.add_argument("--sizes", type=parse_sizes, default=SIZES, metavar="S:W,...",
                    help="layer sizes and their weights (default 128:0.6,96:0.2,64:0.2)")
    ap.add_argument("--crf", type=int, nargs=2, default=Q_RANGE, metavar=("LO", "HI"),
                    help="the layer's SVT-AV1 crf range (default 36 66)")
    ap.add_argument("--val-crf", type=int, default=52)
    ap.add_argument("--keep-luma", action="store_true",
                    help="restore colour only: the output keeps the layer picture's luma")
    ap.add_argument("--move", action="store_true",
                    help="warp an older layer picture by the motion since its frame first "
                         "(the receiver's motion compensation) and give the net its age")
    a = ap.parse_args(argv)
    crop = 256
    if a.reference == "layer" and any(s != crop for s, _ in a.sizes):
        ap.error(f"--reference layer needs layers as large as the crop ({crop} px)")
    rng = prepare_run(a)
    t0 = time.time()
    train_clips = build_cache(a.data, "train", a.cache, max_clips=a.max_clips)
    val_clips = build_cache(a.data, "validation", a.cache, max_clips=a.max_clips)
    rq = (a.ref_quality[0], a.ref_quality[1]) if a.reference == "keyframe" else None
    crf = (a.crf[0], a.crf[1])
    data = [prepare_clip(c, rng, a.variants, rq, a.sizes, crf) for c in train_clips]
    warps = Warps(train_clips[0].crops.shape[1])
    val = validation_set(val_clips, warps, ref_quality=rq, size=a.sizes[0][0], crf=a.val_crf,
                         move=a.move)
    prep_s = time.time() - t0
    print(f"data: {len(data)} train clips x {a.variants} coded layers, {len(val)} validation "
          f"frames, {prep_s:.0f} s", flush=True)

    net = FusionNet(FusionConfig(moved=a.move, keep_luma=a.keep_luma))
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    best = evaluate(net, val)
    print(f"step 0 val {json.dumps({k: round(v, 3) for k, v in best.items()})}", flush=True)
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    best_step = 0
    t_train = time.time()
    step = 0
    log: list[dict[str, float]] = []
    while step < a.steps and (time.time() - t_train) < a.time_limit_min * 60:
        # Cosine decay over whichever ends first, the steps or the time limit.
        done = max(step / a.steps, (time.time() - t_train) / (a.time_limit_min * 60))
        lr = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))
        for g in opt.param_groups:
            g["lr"] = lr
        warp, up, low, age, target = random_batch(data, rng, warps, a.batch, a.patch, a.move)
        out = net(warp, up, low, age)
        l1 = F.l1_loss(out, target)
        ss = 1.0 - ms_ssim(out, target, data_range=1.0, win_size=7)
        loss = l1 + 0.3 * ss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {float(loss):.4f} l1 {float(l1):.4f} lr {lr:.2e} "
                  f"{time.time() - t_train:.0f} s", flush=True)
        if step % a.val_every == 0:
            v = evaluate(net, val)
            v["step"] = step
            log.append(v)
            print(f"step {step} val {json.dumps({k: round(x, 3) for k, x in v.items()})}",
                  flush=True)
            if v["net"] > best["net"]:
                best, best_step = v, step
                best_state = {k: t.clone() for k, t in net.state_dict().items()}
    train_s = time.time() - t_train
    v = evaluate(net, val)
    v["step"] = step
    log.append(v)
    if v["net"] > best["net"]:
        best, best_step = v, step
        best_state = {k: t.clone() for k, t in net.state_dict().items()}
    save_fusion(net, a.out / "last.safetensors")
    net.load_state_dict(best_state)
    meta = {
        "training": {
            "command": command_line("python -m facecodec.train.layer", argv),
            "seed": a.seed, "steps": step, "best_step": best_step, "batch": a.batch,
            "patch": a.patch, "lr": a.lr, "variants": a.variants, "threads": a.threads,
            "data_prep_s": round(prep_s, 1), "train_time_s": round(train_s, 1),
            "data": "train split only: refiner cache (150 frames, every 2nd), layer coded by "
                    "SVT-AV1 low delay at random size ("
                    + "/".join(str(sz) for sz, _ in a.sizes) + f") and crf {crf[0]}..{crf[1]}, "
                    + ("AV1-coded references" if rq else "the layer's intra pictures as "
                       "references") + (", older pictures motion-compensated" if a.move else ""),
            "hardware": hardware(),
        },
        "validation_psnr_rgb": {k: round(float(x), 3) for k, x in best.items()},
        "validation_log": log,
    }
    mid = save_best(save_fusion, net, a.out, a.export, meta)
    print(f"best step {best_step}: {mid} val {json.dumps(best)}; {step} steps in "
          f"{train_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    from facecodec.cli import run_guarded

    sys.exit(run_guarded(main))
