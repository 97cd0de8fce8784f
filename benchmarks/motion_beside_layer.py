"""Which motion preset beside the layer, at equal overall rate.

Each clip is coded as `--target-kbps T` codes it (the layer gets what the motion leaves),
once per motion preset given, then decoded with the fusion the stream names. Means over
clips of the whole stream's kbps, the motion's kbps, PSNR-Y, MS-SSIM and VMAF against
facecodec's 256 px crop (first 150 frames). Defaults to the 6 train clips the layer's
defaults were chosen on (docs/layer.md).

    .venv/bin/python benchmarks/motion_beside_layer.py --presets low lowest --targets 6.5 10 17

`--full-layer off on`: beside a layer as large as the crop, the preset given codes the
motion as it does elsewhere, or as FULL_LAYER_MOTION (facecodec/codec/layer_rate.py; what
the encoder does, the default).
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
from layer_schedule import METRICS, scored_clips  # a sibling script

import facecodec.codec.encoder as encoder
from facecodec.bench.metrics import evaluate
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import EncoderSettings, code_analysis
from facecodec.errors import OneLineParser
from facecodec.motion.presets import PRESETS


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--presets", nargs="+", choices=PRESETS, default=["low", "lowest"])
    ap.add_argument("--targets", nargs="+", type=float, default=[6.5, 10.0, 17.0])
    ap.add_argument("--split", default="train")
    ap.add_argument("--surround", nargs="+", choices=("off", "on"), default=["off"],
                    help="code the Motion's surround beside the layer")
    ap.add_argument("--full-layer", nargs="+", choices=("off", "on"), default=["on"],
                    help="beside a layer as large as the crop, code the preset's motion "
                         "as FULL_LAYER_MOTION (on) or as the preset (off)")
    a = ap.parse_args()
    rows = []
    full_size_layer = encoder.full_size_layer
    for clip, ref, feats, analysis in scored_clips(a.split):
        for preset, sur, full in itertools.product(a.presets, a.surround, a.full_layer):
            encoder.LAYER_MOTION_PRESET = preset  # what --target-kbps codes the motion at
            encoder.SURROUND_BESIDE_LAYER = sur == "on"
            encoder.full_size_layer = full_size_layer if full == "on" else lambda *_: False
            name = f"{preset} {sur} {full}"
            for target in a.targets:
                r = code_analysis(analysis, EncoderSettings(target_kbps=target))
                frames = decode_packets(r.header, r.packets, len(ref.frames))
                s = evaluate(feats, frames, metrics=METRICS).mean
                total = r.total_kbps
                rows.append((name, target, total, r.motion_kbps, *(s[m] for m in METRICS)))
                print(f"{clip.stem:40s} {name:14s} {target:5.1f}: total {total:6.2f}  "
                      f"motion {r.motion_kbps:5.2f}  VMAF {s['vmaf']:5.1f}", flush=True)
    print("\nmean over clips (preset, surround, full layer)")
    for preset, sur, full in itertools.product(a.presets, a.surround, a.full_layer):
        name = f"{preset} {sur} {full}"
        for target in a.targets:
            m = np.mean([x[2:] for x in rows if x[:2] == (name, target)], axis=0)
            print(f"{name:14s} target {target:5.1f}: total {m[0]:6.2f}  motion {m[1]:5.2f}  "
                  f"PSNR-Y {m[2]:6.3f}  MS-SSIM {m[3]:.4f}  VMAF {m[4]:5.2f}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
