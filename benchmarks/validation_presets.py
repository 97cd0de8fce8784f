"""Rate and quality of every preset on the validation clips (the default renderer, neural).

    .venv/bin/python benchmarks/validation_presets.py [--split validation] [--frames N]
        [--json OUT] [--side-by-side CLIP_STEM --out DIR]

Per clip and preset: motion kbps (MOTION + RESYNC packets with their overhead), total kbps
(header, keyframes and motion over the clip's duration), and PSNR-Y / MS-SSIM of the
reconstruction against the source cut with the encoder's own crops.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from facecodec.bench.choice import check_outputs, clips_named
from facecodec.bench.metrics import luma, ms_ssim, psnr_y
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import (
    PRESETS,
    EncoderSettings,
    analyze_file,
    code_analysis,
    original_crops,
)
from facecodec.demo import side_by_side
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--split", default="validation")
    ap.add_argument("--frames", type=int, default=None, help="the first N of each clip")
    ap.add_argument("--json", type=path_arg, default=None)
    ap.add_argument("--side-by-side", default=None, help="clip stem to write a video for")
    ap.add_argument("--out", type=path_arg, default=Path("out/validation"))
    a = ap.parse_args()
    clips = load_split(DATA, a.split)
    if a.side_by_side is not None:
        clips_named(clips, [a.side_by_side], f"split {a.split!r}")
    check_outputs(a.json, a.out / f"{a.side_by_side}_side_by_side.mp4" if a.side_by_side else None)
    rows = []
    print(f"{'clip':28} {'preset':7} {'frames':>6} {'motion':>8} {'total':>8} {'PSNR-Y':>7} "
          f"{'MS-SSIM':>7}")
    for clip in clips:
        analysis = analyze_file(clip, max_frames=a.frames)
        crops = original_crops(clip, analysis.keyframes, 256, a.frames)
        for preset in PRESETS:
            r = code_analysis(analysis, EncoderSettings(preset=preset))
            rec = decode_packets(r.header, r.packets, len(crops))
            row = {
                "clip": clip.stem,
                "preset": preset,
                "frames": len(crops),
                "fps": float(r.header.fps),
                "motion_kbps": r.motion_kbps,
                "total_kbps": r.total_kbps,
                "keyframes": len(r.keyframes),
                "psnr_y": float(np.mean(psnr_y(luma(crops), luma(rec)))),
                "ms_ssim": float(np.mean(ms_ssim(crops, rec))),
            }
            rows.append(row)
            print(f"{clip.stem:28} {preset:7} {row['frames']:6d} {row['motion_kbps']:8.2f} "
                  f"{row['total_kbps']:8.2f} {row['psnr_y']:7.2f} {row['ms_ssim']:7.4f}",
                  flush=True)
            if a.side_by_side == clip.stem and preset == "medium":
                side_by_side(crops, rec, a.out / f"{clip.stem}_side_by_side.mp4", r.header.fps)
    for preset in PRESETS:
        sel = [r for r in rows if r["preset"] == preset]
        print(f"{'mean':28} {preset:7} {'':6} "
              f"{np.mean([r['motion_kbps'] for r in sel]):8.2f} "
              f"{np.mean([r['total_kbps'] for r in sel]):8.2f} "
              f"{np.mean([r['psnr_y'] for r in sel]):7.2f} "
              f"{np.mean([r['ms_ssim'] for r in sel]):7.4f}")
    if a.json:
        write_text(a.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
