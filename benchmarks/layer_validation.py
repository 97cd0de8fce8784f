"""The layer on validation clips: fusion network vs the training-free fusion vs the layer alone
(bicubic) vs the warp alone (motion only), at several layer rates.

Per clip (first 150 frames, facecodec's own 256 px crop as the reference, as in the bench),
the real stream is coded once per layer rate and decoded with each receiver mode; PSNR-Y,
MS-SSIM and VMAF (facecodec.bench.metrics) against the crop. Rates: the whole stream (header,
keyframe, motion, layer) per second, and the layer alone.

    .venv/bin/python benchmarks/layer_validation.py [--rates 4 8 15] [--json OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from facecodec.bench.choice import check_outputs, chosen, clips_named
from facecodec.bench.facecodec_system import analysis_of, facecodec_reference
from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import EncoderSettings, code_analysis
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODES = ("net", "gate", "bicubic", "off")
METRICS = ("psnr_y", "ms_ssim", "vmaf")


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--split", default="validation")
    ap.add_argument("--rates", type=float, nargs="+", default=[4.0, 8.0, 15.0])
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--clips", nargs="+", default=None, help="clip stems (default: all)")
    ap.add_argument("--json", type=path_arg, default=None)
    a = ap.parse_args()
    a.modes = chosen(a.modes, MODES, "layer mode")
    clips = clips_named(load_split(DATA, a.split), a.clips, f"split {a.split!r}")
    check_outputs(a.json)
    rows = []
    for clip in clips:
        ref = facecodec_reference(clip)
        feats = ReferenceFeatures.pixels(ref.frames)
        analysis = analysis_of(clip, ref.size, len(ref.frames))
        for rate in a.rates:
            r = code_analysis(analysis, EncoderSettings(layer_kbps=rate))
            total = r.total_kbps
            for mode in a.modes:
                frames = decode_packets(r.header, r.packets, len(ref.frames), layer=mode)
                s = evaluate(feats, frames, metrics=METRICS).mean
                row = {"clip": clip.stem, "layer_target": rate, "layer_kbps": r.layer_kbps,
                       "total_kbps": total, "mode": mode, **s}
                rows.append(row)
                print(f"{clip.stem:22s} layer {rate:4.1f} ({r.layer_kbps:5.2f} kbps, total "
                      f"{total:5.1f})  {mode:8s} PSNR-Y {s['psnr_y']:5.2f}  MS-SSIM "
                      f"{s['ms_ssim']:.4f}  VMAF {s['vmaf']:5.1f}", flush=True)
    print("\nmean over clips")
    for rate in a.rates:
        for mode in a.modes:
            sel = [x for x in rows if x["layer_target"] == rate and x["mode"] == mode]
            m = {k: float(np.mean([x[k] for x in sel]))
                 for k in ("layer_kbps", "total_kbps", *METRICS)}
            print(f"layer {rate:4.1f} ({m['layer_kbps']:5.2f} kbps, total {m['total_kbps']:5.1f})"
                  f"  {mode:8s} PSNR-Y {m['psnr_y']:5.2f}  MS-SSIM {m['ms_ssim']:.4f}  "
                  f"VMAF {m['vmaf']:5.1f}")
    if a.json:
        write_text(a.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
