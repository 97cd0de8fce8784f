"""Which low-delay codec, picture size and frame rate for the low-resolution layer.

On validation clips (facecodec's own 256 px crop, first 150 frames), each configuration
codes the crop downscaled to `size` px, keeping one picture every `divisor` frames, through
PyAV in true low delay (no reordering, no look-ahead, one thread), decodes it, upsamples it
bicubically to 256 px and holds it until the next picture. Rates count what a LAYER packet
would carry (packet framing and layer header included; AV1 temporal delimiters and x264's
settings SEI dropped). Prints per configuration the mean kbps and PSNR-Y / VMAF.

    .venv/bin/python benchmarks/layer_codecs.py [--clips N] [--stage codecs|sizes] [--json OUT]
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
    ap.add_argument("--stage", choices=("codecs", "sizes"), default="codecs")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    clips = [p for p in load_split(DATA, "validation") if "liveportrait" in p.stem][: a.clips]
    data = {p.stem: crops(p) for p in clips}
    if a.stage == "codecs":
        grid = [(n, 64, d) for n in SPECS for d in (1, 2)]
    else:
        grid = [("svtav1-ld", s, d) for s in (64, 96, 128) for d in (1, 2, 3, 4)]
    rows = []
    for name, size, divisor in grid:
        for q in SPECS[name].ladder:
            per = [score(f, name, size, divisor, q) for f in data.values()]
            m = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
            rows.append({"codec": name, "size": size, "divisor": divisor, "q": q, **m})
            print(f"{name:10s} {size:4d}px 1/{divisor} q={q:3d}  {m['kbps']:6.2f} kbps  "
                  f"PSNR-Y {m['psnr_y']:5.2f}  VMAF {m['vmaf']:5.1f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
