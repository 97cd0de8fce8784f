"""`--target-kbps`, every byte counted: how close each clip's file comes to the target, and
what motion alone and motion + layer each give at it, and which one the encoder keeps (the
layer when its decoded frames score encoder.LAYER_MARGIN_VMAF higher on VMAF; this also
scores PSNR-Y and AKD, which it does not look at).

    .venv/bin/python benchmarks/target_rate.py [--split validation] [--frames 150]
        [--targets 3 6 8 12 16] [--jobs 2]

`--frames 0`: whole clips. Per clip and target: total kbps and PSNR-Y / VMAF / AKD of
motion alone (`encoder.motion_to_target`: reference quality, then motion quantiser) and,
above 5 kbps, of motion + layer (`encoder.layer_to_target`), and which one `code_analysis`
keeps (`encoder.keeps_layer` on the encoder's own scores, codec/scoring.py). Clips run in
parallel worker processes, one thread each.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import torch

from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.cli import run_guarded
from facecodec.codec import encoder
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import EncoderSettings, analyze_file, original_crops
from facecodec.codec.layer_rate import uses_layer
from facecodec.codec.scoring import score_streams
from facecodec.errors import FacecodecError, OneLineParser
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("psnr_y", "vmaf", "akd")
SIZE = 256


def eval_clip(job: tuple[Path, int, list[float]]) -> tuple[str, list[dict[str, object]]]:
    clip, frames, targets = job
    torch.set_num_threads(1)
    analysis = analyze_file(clip, EncoderSettings(size=SIZE), max_frames=frames or None)
    crops = original_crops(clip, analysis.keyframes, SIZE, frames or None)
    feats = ReferenceFeatures.compute(crops)
    rows: list[dict[str, object]] = []
    for t in targets:
        settings = EncoderSettings(size=SIZE, target_kbps=t)
        row: dict[str, object] = {"target": t}
        coders = {"motion": encoder.motion_to_target}
        if uses_layer(t):
            coders["layer"] = encoder.layer_to_target
        streams = {}
        for name, code in coders.items():
            try:
                r = code(analysis, settings)
            except FacecodecError as e:
                row[name] = str(e)
                continue
            out = decode_packets(r.header, r.packets, len(crops))
            streams[name] = r
            row[name] = {"kbps": r.total_kbps, **evaluate(feats, out, metrics=METRICS).mean}
        row["kept"] = next(iter(streams), None)
        if len(streams) == 2:  # encoder._code_to_target's choice
            judged = score_streams(analysis, [streams["motion"], streams["layer"]], SIZE)
            row["kept"] = "layer" if encoder.keeps_layer(*judged) else "motion"
        rows.append(row)
    return clip.stem, rows


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--split", default="validation")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--targets", type=float, nargs="+", default=[3, 6, 8, 12, 16])
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    clips = load_split(DATA, a.split)
    results: dict[str, list[dict[str, object]]] = {}
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for stem, rows in pool.imap_unordered(
                eval_clip, [(c, a.frames, a.targets) for c in clips]):
            results[stem] = rows
            print(stem, flush=True)
            for row in rows:
                parts = []
                for name in ("motion", "layer"):
                    v = row.get(name)
                    if isinstance(v, dict):
                        parts.append(f"{name}: {v['kbps']:.2f} kbps PSNR-Y {v['psnr_y']:.2f} "
                                     f"VMAF {v['vmaf']:.1f} AKD {v['akd']:.3f}")
                    elif v is not None:
                        parts.append(f"{name}: {v}")
                print(f"  target {row['target']:g}: kept {row['kept']}; " + "; ".join(parts),
                      flush=True)
    print(f"mean over {len(results)} clips, the stream kept (and each where both were coded)")
    for i, t in enumerate(a.targets):
        rows = [r[i] for r in results.values()]
        kept = [r[r["kept"]] for r in rows if r["kept"]]  # type: ignore[index]
        line = f"  target {t:g}: kept " + " ".join(
            f"{k} {np.mean([x[k] for x in kept]):.3f}"  # type: ignore[index]
            for k in ("kbps", *METRICS))
        line += f" (motion kept on {sum(r['kept'] == 'motion' for r in rows)} of {len(rows)})"
        for name in ("motion", "layer"):
            both = [r[name] for r in rows if all(isinstance(r.get(n), dict)
                                                 for n in ("motion", "layer"))]
            if both:
                line += f"; {name} " + " ".join(
                    f"{k} {np.mean([x[k] for x in both]):.3f}"  # type: ignore[index]
                    for k in ("kbps", *METRICS))
        print(line)


if __name__ == "__main__":
    sys.exit(run_guarded(main))
