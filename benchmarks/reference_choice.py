"""Which reference picture: the frame where each segment starts against the frame the file
encoder chooses (facecodec/codec/reference.py), on held-out clips.

    .venv/bin/python benchmarks/reference_choice.py [--split validation] [--frames 150]
        [--quality 40] [--jobs 2]

Per clip: the sender's analysis of the first `frames` frames; for each choice, every
segment is drawn by the mesh warp from its keyframe's picture (coded by the keyframe codec
at `quality`, as a file's receiver has it) and Motion, with the frames' unquantised,
unsmoothed Motions (their surround measured against that picture), and scored against the
original crops (PSNR-Y, MS-SSIM, VMAF, AKD). Also prints which frame was chosen and how long
the choice took. Clips run in parallel worker processes, one thread each.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.cli import run_guarded
from facecodec.codec.analysis import KeyframeEvent, MotionEvent
from facecodec.codec.encoder import EncoderSettings, analyze_file, original_crops
from facecodec.codec.keyframe import decode_image, encode_image
from facecodec.errors import OneLineParser
from facecodec.motion.basis import load_basis
from facecodec.render.warp import WarpRenderer
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("psnr_y", "ms_ssim", "vmaf", "akd")
SIZE = 256
Event = KeyframeEvent | MotionEvent


def draw(events: list[Event], n: int, quality: int) -> np.ndarray:
    """Every frame drawn by the mesh warp from its segment's coded picture."""
    warp = WarpRenderer(load_basis(), SIZE)
    keys = [e for e in events if isinstance(e, KeyframeEvent)]
    frames: dict[int, np.ndarray] = {}
    for e in events:
        if isinstance(e, KeyframeEvent):
            cid, data = encode_image(e.image, quality)
            warp.set_reference(decode_image(cid, data, SIZE), e.motion)
        elif e.index < n:
            frames[e.index] = warp.render(e.motion)
    # Frames before the first face show the first picture, as in the decoder.
    return np.stack([frames.get(i, keys[0].image) for i in range(n)])


def eval_clip(job: tuple[Path, int, int]) -> tuple[str, dict[str, object]]:
    clip, n, quality = job
    torch.set_num_threads(1)
    analysis = analyze_file(clip, EncoderSettings(size=SIZE), max_frames=n)
    crops = original_crops(clip, analysis.keyframes, SIZE, n)
    t = time.perf_counter()
    chosen = analysis.events_with_chosen_references(SIZE)
    seconds = time.perf_counter() - t
    feats = ReferenceFeatures.compute(crops)
    scores = {name: evaluate(feats, draw(ev, len(crops), quality), metrics=METRICS).mean
              for name, ev in (("first", analysis.events), ("best", chosen))}
    picks = [(k.index, k.picture_index) for k in chosen if isinstance(k, KeyframeEvent)]
    return clip.stem, {"scores": scores, "picks": picks, "seconds": seconds,
                       "frames": len(crops)}


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--split", default="validation")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--quality", type=int, default=40, help="keyframe quality of the pictures")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    clips = load_split(DATA, a.split)
    results: dict[str, dict[str, object]] = {}
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for stem, r in pool.imap_unordered(eval_clip, [(c, a.frames, a.quality) for c in clips]):
            results[stem] = r
            s = r["scores"]
            assert isinstance(s, dict)
            row = "  ".join(f"{n}: " + " ".join(f"{m} {v:.3f}" for m, v in s[n].items())
                            for n in ("first", "best"))
            print(f"{stem:28s} picks (keyframe, frame) {r['picks']}, choice {r['seconds']:.1f} s "
                  f"for {r['frames']} frames\n    {row}", flush=True)
    print(f"mean over {len(results)} clips (keyframe quality {a.quality})")
    for n in ("first", "best"):
        means = {m: float(np.mean([r["scores"][n][m] for r in results.values()]))  # type: ignore[index]
                 for m in METRICS}
        print(f"  {n:6s} " + "  ".join(f"{m} {v:.4f}" for m, v in means.items()))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
