"""How fast the refiner's training pairs are drawn: pairs per second in the training loop
itself and through `workers` worker processes (the trainer's DataLoader), for a config.

    .venv/bin/python benchmarks/training_pairs.py [--config configs/refiner_gpu_open.json]
        [--workers 0 2] [--seconds 20] [--cache cache/refiner]

A GPU step of the refiner takes milliseconds, so this rate, not the GPU, sets how many
steps a GPU run makes (docs/neural_renderer.md, "Training on a GPU"). Builds the train
split's cache first if it is missing (about 85 s on 2 cores).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import torch

from facecodec.cli import run_guarded
from facecodec.errors import OneLineParser
from facecodec.files import path_arg
from facecodec.train.dataset import PairSampler, PairStream, build_cache
from facecodec.train.trainer import DEFAULT_CACHE, TrainConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rate(batches: Iterable[object], batch: int, seconds: float) -> float:
    """Pairs a second over `seconds`, after one batch of warm-up (starting workers, first maps)."""
    it = iter(batches)
    next(it)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        next(it)
        n += batch
    return n / (time.monotonic() - t0)


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=path_arg, default=Path("configs/refiner_gpu_open.json"))
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--cache", type=path_arg, default=DEFAULT_CACHE)
    a = p.parse_args()
    cfg = TrainConfig.load(a.config)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    clips = build_cache(DATA, "train", a.cache, cfg.max_frames, cfg.stride, cfg.max_clips)
    rq = (int(cfg.ref_quality[0]), int(cfg.ref_quality[1])) if cfg.ref_quality else None
    print(f"{a.config}: batch {cfg.batch}, patch {cfg.patch}, min_opening {cfg.min_opening}")
    for w in a.workers:
        # Drawn as the trainer draws them (TrainConfig.workers).
        batches = (PairSampler(clips, cfg.seed, cfg.patch, rq, cfg.min_opening).batches(cfg.batch)
                   if w == 0 else
                   PairStream(clips, cfg.seed, 0, cfg.batch, cfg.patch, rq,
                              cfg.min_opening).batches(w))
        r = rate(batches, cfg.batch, a.seconds)
        print(f"workers {w}: {r:.0f} pairs/s ({1000 / r:.1f} ms a pair)", flush=True)


if __name__ == "__main__":
    sys.exit(run_guarded(main))
