"""Neural renderer against the mesh warp on held-out clips: PSNR-Y, MS-SSIM, VMAF, AKD.

    .venv/bin/python benchmarks/neural_validation.py [--split validation] [--frames 150]
        [--weights PATH] [--videos 2] [--every N] [--out out/neural]

Per clip: the sender's analysis of the first `frames` frames gives the crops and the
(unquantised, unsmoothed) Motions; each keyframe segment is rendered from its keyframe's
crop (frame 0 of the segment) and Motion, by both renderers, and scored against the
original crops with `facecodec.bench.metrics.evaluate`. The crop is not coded, so the
neural renderer's restorer, made for coded references, sees a clean one here
(benchmarks/reference_restore.py codes them). Frames before the first face use
the first keyframe. Clips are scored in parallel worker processes (`--jobs`, one thread
each). Writes `<out>/<split>.json` and, for the first `videos` clips, side-by-side videos
(original | warp | neural) `<out>/<clip>_side_by_side.mp4`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from facecodec.bench.choice import check_outputs
from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.capture.video import VideoWriter
from facecodec.cli import run_guarded
from facecodec.codec.analysis import MotionEvent
from facecodec.codec.encoder import EncoderSettings, analyze_file, original_crops
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.motion.basis import load_basis
from facecodec.render.base import Renderer
from facecodec.render.neural import DEFAULT_WEIGHTS, NeuralRenderer, load_net, model_id_of
from facecodec.render.warp import WarpRenderer
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("psnr_y", "ms_ssim", "vmaf", "akd")
SIZE = 256


def render_clip(path: Path, frames: int, renderers: dict[str, Renderer]) -> tuple[
        np.ndarray, dict[str, np.ndarray], float]:
    analysis = analyze_file(path, EncoderSettings(size=SIZE), max_frames=frames)
    crops = original_crops(path, analysis.keyframes, SIZE, frames)
    keys = {k.index: k for k in analysis.keyframes}
    motions = {e.index: e.motion for e in analysis.events if isinstance(e, MotionEvent)}
    first = min(keys)
    out: dict[str, list[np.ndarray]] = {n: [] for n in renderers}
    for i in range(len(crops)):
        if i in keys:
            for r in renderers.values():
                r.set_reference(keys[i].image, keys[i].motion)
        elif i < first:
            for n in renderers:
                out[n].append(keys[first].image)
            continue
        m = motions[i]
        for n, r in renderers.items():
            out[n].append(r.render(m))
    return crops, {n: np.stack(v) for n, v in out.items()}, float(analysis.info.fps)


def side_by_side(path: Path, crops: np.ndarray, rec: dict[str, np.ndarray], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, Fraction(fps).limit_denominator(1001), 3 * SIZE, SIZE) as w:
        for i in range(len(crops)):
            w.write(np.concatenate([crops[i], rec["warp"][i], rec["neural"][i]], axis=1))


def eval_clip(job: tuple[Path, int, Path, Path | None]) -> tuple[str, dict[str, dict[str, float]]]:
    """Scores of both renderers on one clip (run in a worker process, one thread)."""
    clip, frames, weights, video = job
    torch.set_num_threads(1)
    basis = load_basis()
    renderers: dict[str, Renderer] = {
        "warp": WarpRenderer(basis, SIZE),
        "neural": NeuralRenderer(basis, SIZE, net=load_net(weights)),
    }
    crops, rec, fps = render_clip(clip, frames, renderers)
    feats = ReferenceFeatures.compute(crops)
    if video is not None:
        side_by_side(video, crops, rec, fps)
    return clip.stem, {n: evaluate(feats, r, metrics=METRICS).mean for n, r in rec.items()}


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--split", default="validation")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--weights", type=path_arg, default=DEFAULT_WEIGHTS)
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--clips", type=int, default=None, help="first N clips only")
    p.add_argument("--every", type=int, default=1, help="every N-th clip of the split")
    p.add_argument("--jobs", type=int, default=2, help="clips scored in parallel")
    p.add_argument("--out", type=path_arg, default=Path("out/neural"))
    a = p.parse_args()
    clips = load_split(DATA, a.split)[::a.every][:a.clips]
    check_outputs(a.out / f"{a.split}.json")
    jobs = [(c, a.frames, a.weights, a.out / f"{c.stem}_side_by_side.mp4" if k < a.videos
             else None) for k, c in enumerate(clips)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for stem, scores in pool.imap_unordered(eval_clip, jobs):
            results[stem] = scores
            row = "  ".join(f"{n}: " + " ".join(f"{m} {v:.4f}" for m, v in s.items())
                            for n, s in scores.items())
            print(f"{stem:28s} {row}", flush=True)
    write_means(results, ("warp", "neural"), METRICS, model_id_of(load_net(a.weights)),
                a.split, a.frames, a.out)


def write_means(results: dict[str, dict[str, dict[str, float]]], names: Sequence[str],
                keys: Sequence[str], model_id: str, split: str, frames: int, out: Path) -> None:
    """Print each system's means over the clips (weighted equally) and write them with the
    per-clip scores to `out`/`split`.json."""
    mean = {n: {m: float(np.nanmean([results[c][n][m] for c in results])) for m in keys}
            for n in names}
    print(f"mean over {len(results)} clips (weighted equally)")
    for n, s in mean.items():
        print(f"  {n:12s} " + "  ".join(f"{m} {v:.4f}" for m, v in s.items()))
    write_text(out / f"{split}.json", json.dumps(
        {"model_id": model_id, "split": split, "frames": frames, "mean": mean,
         "clips": dict(sorted(results.items()))}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
