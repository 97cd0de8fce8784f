"""What restoring the reference picture buys a motion-only stream, on held-out clips.

    .venv/bin/python benchmarks/reference_restore.py [--split validation] [--frames 150]
        [--quality 25 40 60 92] [--weights PATH] [--jobs 2] [--out out/restore]

Per clip and keyframe quality: the sender's analysis gives the crops and the (unquantised)
Motions; each keyframe's crop is coded and decoded by the keyframe codec at that quality,
as a stream's reference is, and every frame is drawn by the mesh warp from that decoded
reference three times: as decoded, restored by the network (facecodec/render/restore.py),
and taking the share of the restorer's change a sender measures and sends (RESTORE packets).
Scored against the original crops (PSNR-Y, MS-SSIM, VMAF, AKD); also the PSNR-Y of the
references themselves. Writes `<out>/<split>.json`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neural_validation import DATA, SIZE, render_clip, write_means  # noqa: E402

from facecodec.bench.choice import check_outputs
from facecodec.bench.metrics import ReferenceFeatures, evaluate, luma, psnr_y  # noqa: E402
from facecodec.cli import run_guarded
from facecodec.codec.keyframe import round_trip  # noqa: E402
from facecodec.errors import OneLineParser
from facecodec.files import path_arg  # noqa: E402
from facecodec.motion.basis import ExpressionBasis, load_basis  # noqa: E402
from facecodec.motion.motion import Motion  # noqa: E402
from facecodec.render.base import Renderer  # noqa: E402
from facecodec.render.restore import (  # noqa: E402
    DEFAULT_WEIGHTS,
    SHARE_STEPS,
    RestoreNet,
    best_share,
    blend,
    load_net,
    model_id_of,
    restore,
)
from facecodec.render.warp import WarpRenderer  # noqa: E402
from facecodec.train.splits import load_split  # noqa: E402

METRICS = ("psnr_y", "ms_ssim", "vmaf", "akd")


class CodedReference(WarpRenderer):
    """The mesh warp from the reference as a stream carries it: coded at `quality`, then
    restored when `net` is given, by the sender's share of its change with `share`. Records
    each reference's PSNR-Y against the crop, and the shares."""

    def __init__(self, basis: ExpressionBasis, quality: int, net: RestoreNet | None = None,
                 share: bool = False) -> None:
        super().__init__(basis, SIZE)
        self.quality, self.net, self.share = quality, net, share
        self.ref_psnr: list[float] = []
        self.shares: list[float] = []

    def set_reference(self, image: np.ndarray, motion: Motion,
                      restore_share: float | None = None) -> None:
        coded = round_trip(image, self.quality)
        if self.net is not None:
            fixed = restore(self.net, coded)
            if self.share:
                self.shares.append(best_share(image, coded, fixed) / SHARE_STEPS)
                fixed = blend(coded, fixed, self.shares[-1])
            coded = fixed
        self.ref_psnr.append(float(psnr_y(luma(image[None]), luma(coded[None]))[0]))
        super().set_reference(coded, motion)


def eval_clip(job: tuple[Path, int, tuple[int, ...], Path]) -> tuple[str, dict]:
    clip, frames, qualities, weights = job
    torch.set_num_threads(1)
    basis, net = load_basis(), load_net(weights)
    renderers: dict[str, Renderer] = {}
    for q in qualities:
        renderers[f"q{q}"] = CodedReference(basis, q)
        renderers[f"q{q}+restore"] = CodedReference(basis, q, net)
        renderers[f"q{q}+share"] = CodedReference(basis, q, net, share=True)
    crops, rec, _ = render_clip(clip, frames, renderers)
    feats = ReferenceFeatures.compute(crops)
    out = {}
    for n, r in rec.items():
        s = evaluate(feats, r, metrics=METRICS).mean
        coded = renderers[n]
        assert isinstance(coded, CodedReference)
        s["reference_psnr_y"] = float(np.mean(coded.ref_psnr))
        # as decoded: none of the change; restored: all of it
        s["share"] = float(np.mean(coded.shares)) if coded.shares else float(coded.net is not None)
        out[n] = s
    return clip.stem, out


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--split", default="validation")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--quality", type=int, nargs="+", default=[25, 40, 60, 92])
    p.add_argument("--weights", type=path_arg, default=DEFAULT_WEIGHTS)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=path_arg, default=Path("out/restore"))
    a = p.parse_args()
    clips = load_split(DATA, a.split)
    check_outputs(a.out / f"{a.split}.json")
    jobs = [(c, a.frames, tuple(a.quality), a.weights) for c in clips]
    results: dict[str, dict] = {}
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for stem, scores in pool.imap_unordered(eval_clip, jobs):
            results[stem] = scores
            print(stem, json.dumps({n: {m: round(v, 4) for m, v in s.items()}
                                    for n, s in scores.items()}), flush=True)
    names = list(next(iter(results.values())))
    write_means(results, names, [*METRICS, "reference_psnr_y", "share"],
                model_id_of(load_net(a.weights)), a.split, a.frames, a.out)

if __name__ == "__main__":
    sys.exit(run_guarded(main))
