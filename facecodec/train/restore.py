"""Train the reference restorer: `python -m facecodec.train.restore --data D --out RUN/`.

Data (train split only): frames of the refiner's cache (facecodec's 256 px face crops,
facecodec/train/dataset.py), each coded and decoded by the real keyframe codec (AV1 intra,
the file encoder's preset) at random qualities in `--quality`. The pairs (decoded, crop)
are made once into a pool; `--save-pool DIR` writes it as H.264 4:4:4 streams (decoded
pictures lossless, crops at crf 8) and `--pool DIR` trains from such a pool, without PyAV,
MediaPipe or the clips (a GPU machine: `--device cuda`). The pool lives on the training
device; a batch is random 128 px patches at offsets on the codec's 8 px grid, flipped half
the time.

Loss: L1 + 0.2 (1 - MS-SSIM). Validation: the validation split's pool (whole pictures),
PSNR-Y of the restored against the decoded reference, every `--val-every` steps; the best
is kept. Seeded.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zipfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from facecodec.errors import FacecodecError
from facecodec.files import count, path_arg
from facecodec.render.restore import (
    DEFAULT_WEIGHTS,
    RestoreConfig,
    RestoreNet,
    save_weights,
)
from facecodec.train.options import (
    command_line,
    hardware,
    prepare_run,
    save_best,
    training_parser,
)

GRID = 8  # AV1's smallest transform: patches keep the block grid's phase


def code_pair(args: tuple[np.ndarray, int]) -> np.ndarray:
    """One crop coded and decoded by the keyframe codec at a quality (a worker's task)."""
    from facecodec.codec.keyframe import round_trip

    return round_trip(*args)


def make_pool(
    clips: list, rng: np.random.Generator, frames: int, codes: int, quality: tuple[int, int],
    jobs: int,
) -> dict[str, np.ndarray]:
    """{crops (N,S,S,3), decoded (N*codes,S,S,3), owner (N*codes,), quality (N*codes,)}."""
    crops: list[np.ndarray] = []
    tasks, owner, qs = [], [], []
    for clip in clips:
        n = len(clip.crops)
        for row in np.linspace(0, n - 1, frames).astype(int):
            crop = np.ascontiguousarray(clip.crops[int(row)])
            for q in rng.integers(quality[0], quality[1] + 1, size=codes):
                tasks.append((crop, int(q)))
                owner.append(len(crops))
                qs.append(int(q))
            crops.append(crop)
    with get_context("forkserver").Pool(jobs) as pool:
        decoded = pool.map(code_pair, tasks, chunksize=4)
    return {"crops": np.stack(crops), "decoded": np.stack(decoded),
            "owner": np.asarray(owner, np.int64), "quality": np.asarray(qs, np.int64)}


def save_pool(pool: dict[str, np.ndarray], root: Path, split: str) -> None:
    from facecodec.train.cache_pack import write_frames

    root.mkdir(parents=True, exist_ok=True)
    write_frames(root / f"{split}_crops.mp4", pool["crops"])
    write_frames(root / f"{split}_decoded.mp4", pool["decoded"], crf=0)
    np.savez(root / f"{split}.npz", owner=pool["owner"], quality=pool["quality"],
             crops=len(pool["crops"]))


def load_pool(root: Path, split: str) -> dict[str, np.ndarray]:
    from facecodec.train.cache_pack import read_frames

    meta = np.load(root / f"{split}.npz")
    owner = meta["owner"]
    return {"crops": read_frames(root / f"{split}_crops.mp4", int(meta["crops"])),
            "decoded": read_frames(root / f"{split}_decoded.mp4", len(owner)),
            "owner": owner, "quality": meta["quality"]}


def to_device(pool: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    """Pictures as (N,3,S,S) uint8 on the training device."""
    out = {k: torch.from_numpy(pool[k]).permute(0, 3, 1, 2).contiguous().to(device)
           for k in ("crops", "decoded")}
    out["owner"] = torch.from_numpy(pool["owner"]).to(device)
    return out


def random_batch(
    pool: dict[str, torch.Tensor], gen: torch.Generator, n: int, patch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoded, crop) patches (n,3,patch,patch) in [0,1]."""
    dev = pool["decoded"].device
    size = pool["decoded"].shape[-1]
    i = torch.randint(len(pool["owner"]), (n,), generator=gen, device="cpu").to(dev)
    cells = (size - patch) // GRID + 1
    yx = torch.randint(cells, (n, 2), generator=gen) * GRID
    rows = torch.arange(patch)
    ys = (yx[:, 0:1] + rows).to(dev)  # (n, patch)
    xs = (yx[:, 1:2] + rows).to(dev)
    flip = torch.rand(n, generator=gen) < 0.5
    xs[flip.to(dev)] = xs[flip.to(dev)].flip(-1)

    def cut(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        sel = images[idx]  # (n,3,S,S)
        sel = torch.gather(sel, 2, ys[:, None, :, None].expand(-1, 3, -1, size))
        sel = torch.gather(sel, 3, xs[:, None, None, :].expand(-1, 3, patch, -1))
        return sel.float() / 255.0

    return cut(pool["decoded"], i), cut(pool["crops"], pool["owner"][i])


def luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def evaluate(net: RestoreNet, pool: dict[str, torch.Tensor], qualities: np.ndarray,
             batch: int = 16) -> dict[str, float]:
    """Mean PSNR-Y (whole pictures, 0..255 luma) of the decoded and restored references,
    overall and by quality band."""
    net.eval()
    err_in: list[torch.Tensor] = []
    err_out: list[torch.Tensor] = []
    with torch.inference_mode():
        for s in range(0, len(pool["owner"]), batch):
            x = pool["decoded"][s:s + batch].float() / 255.0
            y = pool["crops"][pool["owner"][s:s + batch]].float() / 255.0
            out = (net(x) * 255.0).round() / 255.0
            for a, store in ((x, err_in), (out, err_out)):
                mse = ((luma(a) - luma(y)) ** 2).mean((1, 2)).clamp_min(1e-10)
                store.append((10 * torch.log10(1.0 / mse)).cpu())
    net.train()
    p_in, p_out = torch.cat(err_in).numpy(), torch.cat(err_out).numpy()
    res = {"decoded": float(p_in.mean()), "restored": float(p_out.mean())}
    for lo, hi in ((0, 29), (30, 49), (50, 100)):
        sel = (qualities >= lo) & (qualities <= hi)
        if sel.any():
            res[f"gain_q{lo}_{hi}"] = float((p_out[sel] - p_in[sel]).mean())
    return res


def main(argv: list[str] | None = None) -> int:
    ap = training_parser("python -m facecodec.train.restore", __doc__, steps=20000,
                         minutes=25.0, batch=16, patch=128, weights=DEFAULT_WEIGHTS)
    ap.add_argument("--cache", type=path_arg, default=Path("cache/refiner"))
    ap.add_argument("--frames", type=count, default=6, help="crops taken from each clip")
    ap.add_argument("--codes", type=count, default=4, help="random qualities per crop")
    ap.add_argument("--quality", type=int, nargs=2, default=(10, 70), metavar=("LO", "HI"))
    ap.add_argument("--jobs", type=count, default=2, help="processes coding the pool")
    ap.add_argument("--save-pool", type=path_arg, default=None)
    ap.add_argument("--pool", type=path_arg, default=None, help="train from a saved pool")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--widths", type=int, nargs=2, default=(48, 96))
    ap.add_argument("--blocks", type=int, nargs=2, default=(3, 3))
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.pool is not None:  # read before the run folder is made: a bad pool leaves none
        try:
            pools = {s: load_pool(a.pool, s) for s in ("train", "validation")}
        except (FacecodecError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            print(f"facecodec: error: pool {a.pool}: {e}", file=sys.stderr)
            return 2
    rng = prepare_run(a, splits=a.pool is None)
    if a.pool is None:
        from facecodec.train.dataset import build_cache

        pools = {}
        for s in ("train", "validation"):
            clips = build_cache(a.data, s, a.cache, max_clips=a.max_clips)
            pools[s] = make_pool(clips, rng, a.frames, a.codes, (a.quality[0], a.quality[1]),
                                 a.jobs)
            if a.save_pool is not None:
                save_pool(pools[s], a.save_pool, s)
    prep_s = time.time() - t0
    train, val = to_device(pools["train"], a.device), to_device(pools["validation"], a.device)
    val_q = pools["validation"]["quality"]
    print(f"data: {len(train['owner'])} coded crops (train), {len(val['owner'])} (validation), "
          f"{prep_s:.0f} s", flush=True)

    gen = torch.Generator().manual_seed(a.seed)
    net = RestoreNet(RestoreConfig(tuple(a.widths), tuple(a.blocks))).to(a.device)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    best = evaluate(net, val, val_q)
    print(f"step 0 val {json.dumps({k: round(v, 3) for k, v in best.items()})}", flush=True)
    best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    best_step, step, log = 0, 0, []
    t_train = time.time()
    while step < a.steps and (time.time() - t_train) < a.time_limit_min * 60:
        done = max(step / a.steps, (time.time() - t_train) / (a.time_limit_min * 60))
        lr = a.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = random_batch(train, gen, a.batch, a.patch)
        out = net(x)
        l1 = F.l1_loss(out, y)
        loss = l1 + 0.2 * (1.0 - ms_ssim(out, y, data_range=1.0, win_size=7))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {float(loss):.4f} l1 {float(l1):.4f} lr {lr:.2e} "
                  f"{time.time() - t_train:.0f} s", flush=True)
        if step % a.val_every == 0:
            v = evaluate(net, val, val_q)
            log.append({"step": step, **v})
            print(f"step {step} val {json.dumps({k: round(x, 3) for k, x in v.items()})}",
                  flush=True)
            if v["restored"] > best["restored"]:
                best, best_step = v, step
                best_state = {k: t.detach().cpu().clone() for k, t in net.state_dict().items()}
    train_s = time.time() - t_train
    v = evaluate(net, val, val_q)
    log.append({"step": step, **v})
    if v["restored"] > best["restored"]:
        best, best_step = v, step
        best_state = {k: t.detach().cpu().clone() for k, t in net.state_dict().items()}
    net = net.cpu()
    save_weights(net, a.out / "last.safetensors")
    net.load_state_dict(best_state)
    meta = {
        "training": {
            "command": command_line("python -m facecodec.train.restore", argv),
            "seed": a.seed, "steps": step, "best_step": best_step, "batch": a.batch,
            "patch": a.patch, "lr": a.lr, "data_prep_s": round(prep_s, 1),
            "train_time_s": round(train_s, 1), "hardware": hardware(a.device),
            "data": f"train split only: {a.frames} cached crops a clip, each coded by the "
                    f"keyframe codec (AV1 intra) at {a.codes} random qualities in "
                    f"{a.quality[0]}..{a.quality[1]}",
        },
        "validation_psnr_y": {k: round(float(x), 3) for k, x in best.items()},
        "validation_log": log,
    }
    mid = save_best(save_weights, net, a.out, a.export, meta)
    print(f"best step {best_step}: {mid} val {json.dumps(best)}; {step} steps in "
          f"{train_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    from facecodec.cli import run_guarded

    sys.exit(run_guarded(main))
