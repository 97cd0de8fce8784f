"""Which low-delay codec, picture size and frame rate for the low-resolution layer.

On validation clips (facecodec's own 256 px crop, first 150 frames), each configuration
codes the crop downscaled to `size` px, keeping one picture every `divisor` frames, through
PyAV in true low delay (no reordering, no look-ahead, one thread), decodes it, upsamples it
bicubically to 256 px and holds it until the next picture. Rates count what a LAYER packet
would carry (packet framing and layer header included; AV1 temporal delimiters and x264's
settings SEI dropped). Prints per configuration the mean kbps and PSNR-Y / VMAF.

    .venv/bin/python benchmarks/layer_codecs.py [--clips N]
        [--stage codecs|sizes|large|presets|params] [--json OUT]

`--stage large` compares 128, 192 and 256 px at 1 picture in 1-4 frames on all validation
clips (the sizes a layer above ~5.5 kbps may use). `--stage presets` compares SVT-AV1
presets 8, 4 and 3 for a 256 px layer at 1 picture in 1 and in 3 frames on all validation
clips, scoring the coded pictures themselves, and prints each preset's BD-rate against 8.
`--stage params` scores the same way, at every frame, the file layer's settings (preset 4)
with more SVT-AV1 parameters (quantisation matrices, the visual-quality tune) and prints
each one's BD-rate against the settings as shipped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from facecodec.bench.choice import check_outputs
from facecodec.bench.conventional import dispensable_bytes
from facecodec.bench.curves import bd_rate
from facecodec.bench.facecodec_system import facecodec_reference
from facecodec.bench.metrics import luma, ms_ssim, psnr_y, vmaf
from facecodec.cli import run_guarded
from facecodec.codec.layer import (
    LAYER_PACKET_OVERHEAD,
    SPEC_AV1,
    LayerCodecSpec,
    code_sequence,
    upsample,
)
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE = Path(__file__).resolve().parents[1] / "out" / "cache" / "layer_crops"

SPECS = {
    "svtav1-ld": LayerCodecSpec("libsvtav1", "libdav1d", "av1", (63, 58, 52, 46, 40)),
    "x264-rt": LayerCodecSpec("libx264", "h264", "h264", (51, 46, 41, 36, 31)),
    "vp9-rt": LayerCodecSpec("libvpx-vp9", "vp9", "vp9", (63, 56, 50, 44, 38)),
    "svtav1-ld-p4": LayerCodecSpec("libsvtav1", "libdav1d", "av1", (63, 58, 52, 46), preset=4),
    "svtav1-ld-p3": LayerCodecSpec("libsvtav1", "libdav1d", "av1", (63, 58, 52, 46), preset=3),
}
PRESETS = ("svtav1-ld", "svtav1-ld-p4", "svtav1-ld-p3")
# --stage params: extra svtav1-params on top of the file layer's settings.
PARAMS = ("", "enable-qm=1", "enable-qm=1:qm-min=0:qm-max=8", "tune=0")
PARAMS_LADDER = (60, 52, 44, 36)

# crf per size for --stage large: from about 4 to 40 kbps over 1 in 1..4 frames.
LARGE_LADDER = {128: (58, 52, 46, 40, 34, 28), 192: (61, 56, 52, 46, 40, 34),
                256: (63, 59, 56, 50, 44, 38)}


def crops(path: Path) -> np.ndarray:
    f = CACHE / f"{path.stem}.npy"
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, facecodec_reference(path).frames)
    return np.load(f)


def _packet_bytes(coded: list[bytes], spec: LayerCodecSpec) -> int:
    """What LAYER packets would carry for these pictures."""
    return sum(len(c) - dispensable_bytes(c, spec.bitstream) + LAYER_PACKET_OVERHEAD
               for c in coded)


def score(frames: np.ndarray, name: str, size: int, divisor: int, q: int) -> dict[str, float]:
    spec = SPECS[name]
    coded, decoded = code_sequence(frames[::divisor], size, q, spec)
    nbytes = _packet_bytes(coded, spec)
    up = np.repeat(np.stack([upsample(d, frames.shape[1]) for d in decoded]), divisor, 0)
    up = up[: len(frames)]
    ry, uy = luma(frames), luma(up)
    return {
        "kbps": nbytes * 8 / 1000 / (len(frames) / 25.0),
        "psnr_y": float(psnr_y(ry, uy).mean()),
        "vmaf": float(np.nanmean(vmaf(ry, uy, every=3))),
    }


def score_pictures(frames: np.ndarray, name: str, divisor: int, q: int) -> dict[str, float]:
    """A 256 px layer's own pictures against the crops they were cut from (no holding, so
    a codec setting is judged on what it codes)."""
    spec = SPECS[name]
    originals = frames[::divisor]
    coded, decoded = code_sequence(originals, 256, q, spec)
    nbytes = _packet_bytes(coded, spec)
    dec = np.stack(decoded)
    ry, dy = luma(originals), luma(dec)
    return {
        "kbps": nbytes * 8 / 1000 / (len(frames) / 25.0),
        "psnr_y": float(psnr_y(ry, dy).mean()),
        "vmaf": float(np.nanmean(vmaf(ry, dy))),
        "ms_ssim": float(ms_ssim(originals, dec).mean()),
    }


def compare(data: dict[str, np.ndarray], names: tuple[str, ...],
            divisors: tuple[int, ...]) -> list[dict[str, float | int | str]]:
    """Each 256 px configuration's pictures over its ladder, and its BD-rate against the
    first of `names`."""
    rows: list[dict[str, float | int | str]] = []
    for divisor in divisors:
        curves = {}
        for name in names:
            pts = []
            for q in SPECS[name].ladder:
                per = [score_pictures(f, name, divisor, q) for f in data.values()]
                m = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
                rows.append({"codec": name, "size": 256, "divisor": divisor, "q": q, **m})
                pts.append(m)
                print(f"{name:13s} 256px 1/{divisor} q={q:3d}  {m['kbps']:6.2f} kbps  PSNR-Y "
                      f"{m['psnr_y']:5.2f}  VMAF {m['vmaf']:5.1f}  MS-SSIM {m['ms_ssim']:.4f}",
                      flush=True)
            curves[name] = {k: np.array([p[k] for p in pts]) for k in pts[0]}
        base = curves[names[0]]
        for name in names[1:]:
            c = curves[name]
            bd = [bd_rate(base["kbps"], base[k], c["kbps"], c[k])
                  for k in ("psnr_y", "vmaf", "ms_ssim")]
            print(f"1/{divisor} {name} against {names[0]}: BD-rate PSNR-Y {bd[0]:+.1f} %, "
                  f"VMAF {bd[1]:+.1f} %, MS-SSIM {bd[2]:+.1f} %", flush=True)
    return rows


def with_params() -> tuple[str, ...]:
    """Register the file layer's settings with each of PARAMS; their names."""
    names = []
    for extra in PARAMS:
        name = f"p4 {extra}" if extra else "p4 as shipped"
        SPECS[name] = replace(SPEC_AV1, ladder=PARAMS_LADDER, params=extra)
        names.append(name)
    return tuple(names)


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--stage", choices=("codecs", "sizes", "large", "presets", "params"),
                    default="codecs")
    ap.add_argument("--json", type=path_arg, default=None)
    a = ap.parse_args()
    if a.clips < 1:
        ap.error("--clips must be 1 or more")
    check_outputs(a.json)
    clips = load_split(DATA, "validation")
    if a.stage not in ("large", "presets", "params"):
        clips = [p for p in clips if "liveportrait" in p.stem][: a.clips]
    data = {p.stem: crops(p) for p in clips}
    if a.stage in ("presets", "params"):
        rows = compare(data, PRESETS, (1, 3)) if a.stage == "presets" else \
            compare(data, with_params(), (1,))
        if a.json:
            write_text(a.json, json.dumps(rows, indent=1))
        return
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
        write_text(a.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
