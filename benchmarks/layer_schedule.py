"""Which layer size and picture rate at a given layer rate, on real streams.

For each `RATE,SIZE,DIVISOR` given, every clip is coded as `--target-kbps` would code it
(low motion preset, the reference quality the layer's rate calls for) but with that layer
size and one picture every DIVISOR frames, the crf searched for the rate; then decoded with
the fusion the stream names. Means over clips of the whole stream's kbps, PSNR-Y, MS-SSIM
and VMAF against facecodec's 256 px crop (first 150 frames). Defaults to the 6 train clips
the layer's defaults were chosen on (docs/layer.md), so choices are not made on validation.

    .venv/bin/python benchmarks/layer_schedule.py 8,128,3 8,256,3 15,256,2 [--split validation]
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import facecodec.codec.layer_rate as layer_rate
from facecodec.bench.choice import check_outputs
from facecodec.bench.facecodec_system import analysis_of, facecodec_reference
from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.bench.reference import ReferenceClip
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import Analysis, EncoderSettings, code_analysis
from facecodec.codec.layer_rate import LAYER_MOTION_PRESET
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAIN_CLIPS = ("grid_bbaf2n", "liveportrait_d10", "eamm_video_happy", "pcavs_Input_00002",
               "spectre_MEAD_W023_level_2_surprised_010", "deepavsr_00008")
METRICS = ("psnr_y", "ms_ssim", "vmaf")


def parse_combo(text: str) -> tuple[float, int, int]:
    rate, size, divisor = text.split(",")
    return float(rate), int(size), int(divisor)


def scored_clips(split: str) -> Iterator[tuple[Path, ReferenceClip, ReferenceFeatures, Analysis]]:
    """(clip, its reference crop, that crop's metric features, the sender's analysis) for
    each clip of the split; of the train split, the 6 clips the layer was tuned on."""
    clips = load_split(DATA, split)
    if split == "train":
        clips = [c for c in clips if c.stem in TRAIN_CLIPS]
    for clip in clips:
        ref = facecodec_reference(clip)
        yield clip, ref, ReferenceFeatures.pixels(ref.frames), analysis_of(
            clip, ref.size, len(ref.frames))


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("combos", nargs="+", type=parse_combo, help="RATE,SIZE,DIVISOR")
    ap.add_argument("--split", default="train")
    ap.add_argument("--json", type=path_arg, default=None)
    a = ap.parse_args()
    check_outputs(a.json)
    rows = []
    for clip, ref, feats, analysis in scored_clips(a.split):
        for rate, size, divisor in a.combos:
            layer_rate.SCHEDULE = ((math.inf, size, divisor),)
            r = code_analysis(analysis, EncoderSettings(layer_kbps=rate,
                                                        preset=LAYER_MOTION_PRESET))
            frames = decode_packets(r.header, r.packets, len(ref.frames))
            s = evaluate(feats, frames, metrics=METRICS).mean
            rows.append({"clip": clip.stem, "rate": rate, "size": size, "divisor": divisor,
                         "layer_kbps": r.layer_kbps,
                         "total_kbps": r.total_kbps, **s})
            print(f"{clip.stem:40s} {rate:4.1f} kbps {size:3d} px 1/{divisor}: total "
                  f"{rows[-1]['total_kbps']:6.2f}  VMAF {s['vmaf']:5.1f}", flush=True)
    print("\nmean over clips")
    for rate, size, divisor in a.combos:
        sel = [x for x in rows if (x["rate"], x["size"], x["divisor"]) == (rate, size, divisor)]
        m = {k: float(np.mean([x[k] for x in sel])) for k in ("layer_kbps", "total_kbps", *METRICS)}
        print(f"layer {rate:4.1f} kbps {size:3d} px 1/{divisor}: layer {m['layer_kbps']:6.2f} "
              f"total {m['total_kbps']:6.2f}  PSNR-Y {m['psnr_y']:5.2f}  MS-SSIM "
              f"{m['ms_ssim']:.4f}  VMAF {m['vmaf']:5.1f}")
    if a.json:
        write_text(a.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
