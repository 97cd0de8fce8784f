"""Which low-delay codec, picture size and frame rate for the low-resolution layer.

On validation clips (facecodec's own 256 px crop, first 150 frames), each configuration
codes the crop downscaled to `size` px, keeping one picture every `divisor` frames, through
PyAV in true low delay (no reordering, no look-ahead, one thread), decodes it, upsamples it
bicubically to 256 px and holds it until the next picture. Rates count what a LAYER packet
would carry (packet framing and layer header included; AV1 temporal delimiters and x264's
settings SEI dropped). Prints per configuration the mean kbps and PSNR-Y / VMAF.

    .venv/bin/python benchmarks/layer_codecs.py [--clips N] [--stage codecs|sizes|large]
        [--json OUT]

`--stage large` compares 128, 192 and 256 px at 1 picture in 1-4 frames on all validation
clips (the sizes a layer above ~5.5 kbps may use).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facecodec.bench.conventional import dispensable_bytes
from facecodec.bench.facecodec_system import facecodec_reference
from facecodec.bench.metrics import luma, psnr_y, vmaf
from facecodec.codec.layer import LAYER_PACKET_OVERHEAD, LayerCodecSpec, code_sequence, upsample
from facecodec.train.landmarks import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE = Path(__file__).resolve().parents[1] / "out" / "cache" / "layer_crops"

SPECS = {
    "svtav1-ld": LayerCodecSpec("libsvtav1", "libdav1d", "av1", (63, 58, 52, 46, 40)),
    "x264-rt": LayerCodecSpec("libx264", "h264", "h264", (51, 46, 41, 36, 31)),
    "vp9-rt": LayerCodecSpec("libvpx-vp9", "vp9", "vp9", (63, 56, 50, 44, 38)),
}

# crf per size for --stage large: from about 4 to 40 kbps over 1 in 1..4 frames.
LARGE_LADDER = {128: (58, 52, 46, 40, 34, 28), 192: (61, 56, 52, 46, 40, 34),
                256: (63, 59, 56, 50, 44, 38)}


def crops(path: Path) -> np.ndarray:
    f = CACHE / f"{path.stem}.npy"
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, facecodec_reference(path).frames)
    return np.load(f)


def score(frames: np.ndarray, name: str, size: int, divisor: int, q: int) -> dict[str, float]:
    spec = SPECS[name]
    coded, decoded = code_sequence(frames[::divisor], size, q, spec)
    nbytes = sum(len(c) - dispensable_bytes(c, spec.bitstream) + LAYER_PACKET_OVERHEAD
                 for c in coded)
    up = np.repeat(np.stack([upsample(d, frames.shape[1]) for d in decoded]), divisor, 0)
    up = up[: len(frames)]
    ry, uy = luma(frames), luma(up)
    return {
        "kbps": nbytes * 8 / 1000 / (len(frames) / 25.0),
        "psnr_y": float(psnr_y(ry, uy).mean()),
        "vmaf": float(np.nanmean(vmaf(ry, uy, every=3))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--stage", choices=("codecs", "sizes", "large"), default="codecs")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    clips = load_split(DATA, "validation")
    if a.stage != "large":
        clips = [p for p in clips if "liveportrait" in p.stem][: a.clips]
    data = {p.stem: crops(p) for p in clips}
    if a.stage == "codecs":
        grid = [(n, 64, d) for n in SPECS for d in (1, 2)]
    elif a.stage == "sizes":
        grid = [("svtav1-ld", s, d) for s in (64, 96, 128) for d in (1, 2, 3, 4)]
    else:
        grid = [("svtav1-ld", s, d) for s in (128, 192, 256) for d in (1, 2, 3, 4)]
    rows = []
    for name, size, divisor in grid:
        ladder = LARGE_LADDER.get(size, SPECS[name].ladder) if a.stage == "large" else \
            SPECS[name].ladder
        for q in ladder:
            per = [score(f, name, size, divisor, q) for f in data.values()]
            m = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
            rows.append({"codec": name, "size": size, "divisor": divisor, "q": q, **m})
            print(f"{name:10s} {size:4d}px 1/{divisor} q={q:3d}  {m['kbps']:6.2f} kbps  "
                  f"PSNR-Y {m['psnr_y']:5.2f}  VMAF {m['vmaf']:5.1f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
