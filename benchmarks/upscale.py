"""The two-times upscaler: parameters, GFLOPs, speed and quality against bicubic.

Speed: a 256 px reconstruction to 512 px and a 176x144 (QCIF) frame to 352x288, per frame,
with `--threads` torch threads. Quality: validation clips (never trained on), every 10th of
the first 60 frames, area-downscaled two times and upscaled back; PSNR-Y of the network and
of bicubic against the original frame. Then `decode --upscale` itself: the validation clips
whose source face is at least 480 px are coded at 256 px (medium) and their first 150
reconstructed frames upscaled to 512 by the network and by bicubic, scored (PSNR-Y, MS-SSIM,
VMAF) against the source cut at 512 px with the same crops; `--layer-kbps K` codes them
with a K kbps low-resolution layer as well (the upscaler then works on the fused frames).

    .venv/bin/python benchmarks/upscale.py [--threads 2] [--layer-kbps 15]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from facecodec.bench.metrics import image_psnr_y
from facecodec.capture.video import read_frames
from facecodec.cli import run_guarded
from facecodec.errors import OneLineParser
from facecodec.render.upscale import Upscaler

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layer-kbps", type=float, default=0.0,
                    help="code the reconstructions with a layer of this rate")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    up = Upscaler()
    params = sum(p.numel() for p in up.net.parameters())
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        up.net(torch.zeros(1, 3, 256, 256))
    print(f"{up.model_id}: {params} parameters, {fc.get_total_flops() / 1e9:.3f} GFLOPs "
          f"per 256 -> 512 frame; {a.threads} torch threads")
    rng = np.random.default_rng(0)
    for h, w in ((256, 256), (144, 176)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        up(frame)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            up(frame)
            times.append(time.perf_counter() - t)
        ms = 1000 * float(np.median(times))
        print(f"{w}x{h} -> {2 * w}x{2 * h}: {ms:6.2f} ms/frame = {1000 / ms:6.1f} fps (median)")
    clips = json.loads((DATA / "splits.json").read_text())["validation"]
    net_all, bic_all = [], []
    for c in clips:
        net, bic = [], []
        for i, hr in enumerate(read_frames(DATA / c, 60)):
            if i % 10:
                continue
            hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
            lr = cv2.resize(hr, (hr.shape[1] // 2, hr.shape[0] // 2), interpolation=cv2.INTER_AREA)
            net.append(image_psnr_y(up(lr), hr))
            bicubic = cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_CUBIC)
            bic.append(image_psnr_y(bicubic, hr))
        net_all += net
        bic_all += bic
        print(f"{Path(c).stem:28s} PSNR-Y network {np.mean(net):6.2f}  bicubic {np.mean(bic):6.2f}")
    print(f"{'mean':28s} PSNR-Y network {np.mean(net_all):6.2f}  bicubic {np.mean(bic_all):6.2f}")
    reconstructions(up, [DATA / c for c in clips if "liveportrait" in c], a.layer_kbps)


def reconstructions(
    up: Upscaler, clips: list[Path], layer_kbps: float = 0.0, frames: int = 150
) -> None:
    from facecodec.bench.metrics import ReferenceFeatures, evaluate
    from facecodec.codec.decoder import decode_packets
    from facecodec.codec.encoder import EncoderSettings, analyze_file, code_analysis, original_crops

    print(f"decode --upscale (256 px stream, layer {layer_kbps:g} kbps -> 512 px) against the "
          "source cut at 512 px:")
    for clip in clips:
        a = analyze_file(clip, EncoderSettings(), max_frames=frames)
        r = code_analysis(a, EncoderSettings(layer_kbps=layer_kbps))
        n = len(original_crops(clip, a.keyframes, 256, frames))
        rec = decode_packets(r.header, r.packets, n, "warp")
        feats = ReferenceFeatures.compute(original_crops(clip, a.keyframes, 512, frames),
                                          vmaf_every=3, ssim_every=3)
        for name, out in (("network", np.stack([up(f) for f in rec])),
                          ("bicubic", np.stack([cv2.resize(f, (512, 512),
                                                           interpolation=cv2.INTER_CUBIC)
                                                for f in rec]))):
            m = evaluate(feats, out, metrics=("psnr_y", "ms_ssim", "vmaf")).mean
            print(f"  {clip.stem:20s} {name:8s} PSNR-Y {m['psnr_y']:6.2f}  "
                  f"MS-SSIM {m['ms_ssim']:.4f}  VMAF {m['vmaf']:5.1f}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
