"""What a second, open-mouthed picture would buy a motion-only stream (measured, not adopted).

    .venv/bin/python benchmarks/mouth_source.py [--split validation] [--frames 150]
        [--quality 40 60] [--patch 64] [--jobs 2] [--out out/mouth_source]

A mesh warp cannot show what its reference does not: where a frame's mouth opens wider than
the reference's, it stretches lip pixels over the gap (docs/neural_renderer.md). This asks
what sending, beside each keyframe, a `patch` x `patch` square of the crop around the mouth
of the segment's widest-open frame would give. Per clip: the sender's analysis of the first
`frames` frames with the file encoder's reference pictures; each reference and each patch
coded by the keyframe codec at `quality`; every frame drawn by the mesh warp from the
reference, and again from the reference with the patch pasted in, the second used inside
the frame's inner-mouth polygon (dilated 2 px, feathered) with a weight rising from 0 at the
reference's mouth area to 1 halfway to the patch's. The patch's own frame is left out of
the scores (there the mouth is drawn from itself). Scored against the original crops
(PSNR-Y, MS-SSIM, VMAF, AKD), over all frames and over those where the patch acts; prints
the coded bytes of the patch and of the reference picture.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neural_validation import DATA, SIZE  # noqa: E402

from facecodec.bench.choice import check_outputs
from facecodec.bench.metrics import ReferenceFeatures, evaluate  # noqa: E402
from facecodec.cli import run_guarded
from facecodec.codec.analysis import KeyframeEvent, MotionEvent  # noqa: E402
from facecodec.codec.encoder import EncoderSettings, analyze_file, original_crops  # noqa: E402
from facecodec.codec.keyframe import decode_image, encode_image  # noqa: E402
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.motion.basis import load_basis  # noqa: E402
from facecodec.render import topology as topo  # noqa: E402
from facecodec.render.mesh_warp import MeshWarper  # noqa: E402
from facecodec.render.warp import WarpRenderer  # noqa: E402
from facecodec.train.splits import load_split  # noqa: E402

METRICS = ("psnr_y", "ms_ssim", "vmaf", "akd")
INNER = np.array(topo.LIPS_INNER)


def mouth_area(points: np.ndarray) -> float:
    """The inner-lip polygon's area (px^2): how far the mouth is open."""
    q = points[INNER]
    return 0.5 * abs(float(np.dot(q[:, 0], np.roll(q[:, 1], 1)) -
                           np.dot(q[:, 1], np.roll(q[:, 0], 1))))


def mouth_mask(points: np.ndarray) -> np.ndarray:
    """(SIZE, SIZE, 1) float32: the inner-lip polygon, dilated 2 px and feathered."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(m, [np.round(points[INNER] * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    m = cv2.dilate(m, np.ones((5, 5), np.uint8)).astype(np.float32) / 255
    return cv2.GaussianBlur(m, (0, 0), 1.5)[..., None]


def with_patch(reference: np.ndarray, crop: np.ndarray, centre: np.ndarray, side: int,
               quality: int) -> tuple[np.ndarray, int]:
    """The reference with the crop's `side` px square about `centre` pasted in, that square
    coded and decoded at `quality` (on the codec's 8 px grid); and its coded bytes."""
    x0, y0 = (int(np.clip(round(c - side / 2) // 8 * 8, 0, SIZE - side)) for c in centre)
    cid, data = encode_image(np.ascontiguousarray(crop[y0:y0 + side, x0:x0 + side]), quality)
    out = reference.copy()
    out[y0:y0 + side, x0:x0 + side] = decode_image(cid, data, side)
    return out, len(data)


def eval_clip(job: tuple[Path, int, int, int]) -> tuple[str, dict]:
    clip, frames, quality, side = job
    torch.set_num_threads(1)
    basis = load_basis()
    analysis = analyze_file(clip, EncoderSettings(size=SIZE), max_frames=frames)
    crops = original_crops(clip, analysis.keyframes, SIZE, frames)
    events = analysis.events_with_chosen_references(SIZE)
    keys = {e.index: e for e in events if isinstance(e, KeyframeEvent)}
    motions = {e.index: e.motion for e in events if isinstance(e, MotionEvent)}
    starts, first = sorted(keys), min(keys)
    warp, source = WarpRenderer(basis, SIZE), MeshWarper(SIZE)
    plain: list[np.ndarray] = []
    mouth: list[np.ndarray] = []
    acts, own, patch_bytes, ref_bytes = [], [], [], []
    ref_area = src_area = 0.0
    for i in range(len(crops)):
        if i in keys:
            k = keys[i]
            cid, data = encode_image(k.image, quality)
            ref_bytes.append(len(data))
            warp.set_reference(decode_image(cid, data, SIZE), k.motion)
            assert warp.reference is not None  # set just above
            end = next((s for s in starts if s > i), len(crops))
            seg = {j: warp.points(motions[j])[:, :2] for j in range(i, end) if j in motions}
            src = max(seg, key=lambda j: mouth_area(seg[j]))
            picture, size = with_patch(warp.reference, crops[src],
                                       seg[src][INNER].mean(0), side, quality)
            patch_bytes.append(size)
            source.set_reference(picture, seg[src])
            ref_area = mouth_area(basis.landmarks(k.motion, SIZE))
            src_area = mouth_area(seg[src])
            own.append(src)
        if i < first:
            plain.append(keys[first].image)
            mouth.append(keys[first].image)
            acts.append(False)
            continue
        m = motions[i]
        base = warp.render(m)
        plain.append(base)
        pts = warp.points(m)[:, :2]
        gap = src_area - ref_area
        w = float(np.clip(2 * (mouth_area(pts) - ref_area) / gap, 0, 1)) if gap > 0 else 0.0
        acts.append(w > 0)
        if w == 0:
            mouth.append(base)
            continue
        assert warp.ref_motion is not None
        alt = source.warp(pts, m.surround_towards(warp.ref_motion)).astype(np.float32)
        mask = mouth_mask(pts) * w
        mouth.append(np.clip(base * (1 - mask) + alt * mask + 0.5, 0, 255).astype(np.uint8))
    keep = np.array([j not in own for j in range(len(crops))])
    act = np.array(acts) & keep
    feats = ReferenceFeatures.compute(crops)
    out: dict = {"frames": len(crops), "acting": int(act.sum()), "patch_bytes": patch_bytes,
                 "reference_bytes": ref_bytes}
    for name, rec in (("warp", plain), ("mouth", mouth)):
        s = evaluate(feats, np.stack(rec), metrics=METRICS)
        out[name] = {m: float(np.nanmean(s.frames[m][keep])) for m in METRICS}
        out[name + "_acting"] = {m: float(np.nanmean(s.frames[m][act])) if act.any()
                                 else float("nan") for m in METRICS}
    return clip.stem, out


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--split", default="validation")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--quality", type=int, nargs="+", default=[40, 60])
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=path_arg, default=Path("out/mouth_source"))
    a = p.parse_args()
    clips = load_split(DATA, a.split)
    check_outputs(a.out / f"{a.split}.json")
    summary = {}
    for q in a.quality:
        jobs = [(c, a.frames, q, a.patch) for c in clips]
        results: dict[str, dict] = {}
        with mp.get_context("spawn").Pool(a.jobs) as pool:
            for stem, r in pool.imap_unordered(eval_clip, jobs):
                results[stem] = r
                print(f"q{q} {stem}: frames {r['frames']}, patch acts on {r['acting']}, "
                      f"patch bytes {r['patch_bytes']}, reference bytes {r['reference_bytes']}",
                      flush=True)
                for n in ("warp", "mouth", "warp_acting", "mouth_acting"):
                    print(f"  {n:13s} " + "  ".join(f"{m} {v:.4f}" for m, v in r[n].items()))
        mean = {n: {m: float(np.nanmean([r[n][m] for r in results.values()])) for m in METRICS}
                for n in ("warp", "mouth", "warp_acting", "mouth_acting")}
        bytes_mean = float(np.mean([b for r in results.values() for b in r["patch_bytes"]]))
        ref_mean = float(np.mean([b for r in results.values() for b in r["reference_bytes"]]))
        print(f"q{q} mean over {len(results)} clips (a keyframe's picture {ref_mean:.0f} bytes, "
              f"its patch {bytes_mean:.0f})")
        for n, s in mean.items():
            print(f"  {n:13s} " + "  ".join(f"{m} {v:.4f}" for m, v in s.items()))
        summary[f"q{q}"] = {"mean": mean, "patch_bytes": bytes_mean, "reference_bytes": ref_mean,
                            "clips": dict(sorted(results.items()))}
    write_text(a.out / f"{a.split}.json", json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
