"""Rate-distortion of the keyframe image codecs on 256x256 face crops.

Crops the first frame of a few shared clips (centre square, area-resized to 256x256: these
clips are face-centred, so the crop is mostly face), codes each with every codec of
`facecodec.codec.keyframe` at several qualities, and prints bytes, PSNR-Y and encode time,
then PSNR-Y interpolated at fixed byte budgets: the table behind the default codec choice.

    .venv/bin/python benchmarks/keyframe_codecs.py [--size 256] [--clips a.mp4 b.mpg ...]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facecodec.bench.choice import containing
from facecodec.bench.metrics import image_psnr_y
from facecodec.bench.reference import centre_square
from facecodec.cli import run_guarded
from facecodec.codec import keyframe as kf
from facecodec.errors import OneLineParser

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = [
    "clips/liveportrait_d19.mp4",
    "clips/liveportrait_d9.mp4",
    "clips/liveportrait_d14.mp4",
    "clips/grid_swiz3n.mpg",
    "clips/pcavs_Input_00098.mp4",
    "clips/edtalk_expression_source.mp4",
]
QUALITIES = [10, 20, 30, 40, 50, 60, 70, 80, 90]
BUDGETS = [1000, 2000, 4000, 8000, 16000]  # bytes


def _variant(encoder: str, decoder: str, options: Callable[[int], dict[str, str]]):
    """An encoder setting outside the shipped coder, to show why its presets were picked."""

    def run(rgb: np.ndarray, q: int) -> tuple[bytes, np.ndarray]:
        data = kf.encode_intra(encoder, rgb, options(q))
        return data, kf.decode_intra(decoder, data)

    return run


def _shipped(name: str):
    def run(rgb: np.ndarray, q: int) -> tuple[bytes, np.ndarray]:
        cid, data = kf.encode_image(rgb, q, name)
        return data, kf.decode_image(cid, data, rgb.shape[0])

    return run


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--clips", nargs="*", default=CLIPS, help="paths relative to shared/data")
    ap.add_argument("--only", default="", help="run only the coders whose name contains this")
    args = ap.parse_args()

    coders = {name: _shipped(name) for name in kf.CODEC_IDS}
    # Presets as shipped, and two with SVT-AV1's own screen-content guess (what
    # kf.AV1_PARAMS turns off).
    av1 = [(f"av1 preset {p}", p, kf.AV1_PARAMS) for p in (0, 1, 2, 4, 6, 8)]
    av1 += [(f"av1 p{p} scm auto", p, "") for p in (1, 6)]
    for name, preset, params in av1:
        def options(q: int, p: int = preset, x: str = params) -> dict[str, str]:
            return {"crf": str(kf._ladder(q, 63, 1)), "preset": str(p),
                    **({"svtav1-params": x} if x else {})}

        coders[name] = _variant("libsvtav1", "libdav1d", options)
    coders["hevc slow"] = _variant(
        "libx265",
        "hevc",
        lambda q: {
            "crf": str(kf._ladder(q, 51, 0)),
            "preset": "slow",
            "x265-params": "info=0:log-level=error",
        },
    )

    coders = {k: coders[k] for k in containing(args.only, coders, "coder")}
    images = [centre_square(DATA / c, args.size) for c in args.clips]
    print(f"{len(images)} crops of {args.size}x{args.size}: " + ", ".join(args.clips))
    print(f"\n{'codec':<14} {'quality':>7} {'bytes':>8} {'PSNR-Y':>7} {'enc ms':>7}")
    curves: dict[str, list[list[tuple[float, float]]]] = {}
    timing: dict[str, float] = {}
    slowest: dict[str, float] = {}
    for name, run in coders.items():
        per_image: list[list[tuple[float, float]]] = [[] for _ in images]
        times = []
        for q in QUALITIES:
            sizes, psnrs = [], []
            for i, img in enumerate(images):
                t = time.perf_counter()
                data, out = run(img, q)
                times.append(time.perf_counter() - t)
                p = image_psnr_y(img, out)
                per_image[i].append((len(data), p))
                sizes.append(len(data))
                psnrs.append(p)
            enc_ms = 1000 * np.mean(times[-len(images) :])
            print(f"{name:<14} {q:>7} {np.mean(sizes):>8.0f} {np.mean(psnrs):>7.2f} {enc_ms:>7.1f}")
        curves[name] = per_image
        timing[name] = 1000 * float(np.median(times))
        slowest[name] = 1000 * float(np.max(times))

    print("\nPSNR-Y (dB) at a byte budget, mean over crops (interpolated in log bytes;")
    print("'-' where a codec's quality range does not reach the budget on every crop)")
    print(f"{'codec':<14} " + " ".join(f"{b:>7}B" for b in BUDGETS)
          + f" {'enc ms':>7} {'max ms':>7}")
    for name, per_image in curves.items():
        cells = []
        for budget in BUDGETS:
            vals = []
            for points in per_image:
                pts = sorted(points)
                xs = np.log([p[0] for p in pts])
                if not xs[0] <= np.log(budget) <= xs[-1]:
                    break
                vals.append(np.interp(np.log(budget), xs, [p[1] for p in pts]))
            cells.append(f"{np.mean(vals):>8.2f}" if len(vals) == len(per_image) else f"{'-':>8}")
        print(f"{name:<14} " + " ".join(cells) + f" {timing[name]:>7.1f} {slowest[name]:>7.1f}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
