"""Decode speed with the layer on: mesh warp + layer picture decode + fusion, 256 px.

Encodes a real clip with a layer, then times `PacketDecoder.push` over all its packets
(motion decoding, warp rendering, AV1 layer decoding, fusion) and the fusion alone, with
`--threads` torch threads. Prints frames per second, the fusion network's parameters and
its GFLOPs per 256 px frame (torch's FLOP counter; one multiply-add = 2 FLOPs).

    .venv/bin/python benchmarks/layer_fusion_speed.py [--clip C] [--layer-kbps 8] [--threads 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from facecodec.cli import run_guarded
from facecodec.codec.decoder import PacketDecoder
from facecodec.codec.encoder import EncoderSettings, analyze_file, code_analysis
from facecodec.errors import OneLineParser
from facecodec.files import path_arg
from facecodec.render.layer_fusion import FusionNet, LayerFusion

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def gflops(net: FusionNet, size: int = 256) -> float:
    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(x, x, x, torch.zeros(1, 1))
    return fc.get_total_flops() / 1e9


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--clip", type=path_arg, default=DATA / "clips" / "liveportrait_d14.mp4")
    ap.add_argument("--layer-kbps", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    torch.set_num_threads(a.threads)
    r = code_analysis(analyze_file(a.clip, EncoderSettings(), max_frames=150),
                      EncoderSettings(layer_kbps=a.layer_kbps))
    assert r.header.layer is not None
    print(f"{a.clip.name}: layer {r.layer_kbps:.2f} kbps, {r.header.layer.size} px, 1 picture "
          f"in {r.header.layer.divisor} frames; {a.threads} torch threads")
    for mode in ("off", "gate", "net"):
        best = np.inf
        for _ in range(a.repeat):
            dec = PacketDecoder(r.header, layer=mode)
            t = time.perf_counter()
            n = sum(len(dec.push(p)) for p in r.packets)
            best = min(best, (time.perf_counter() - t) / n)
        print(f"decode, layer {mode:4s}: {1000 * best:6.2f} ms/frame = {1 / best:6.1f} fps "
              f"({dec.stats.frames_fused} of {n} frames fused)")
    fusion = LayerFusion("net", model=r.header.layer.model)
    if fusion.net is None:
        print(f"the stream names {r.header.layer.model}: no network in use")
        return
    rng = np.random.default_rng(0)
    warp = rng.integers(0, 255, (256, 256, 3), np.uint8)
    layer = rng.integers(0, 255, (r.header.layer.size, r.header.layer.size, 3), np.uint8)
    for _ in range(5):
        fusion(warp, layer, 1)
    t = time.perf_counter()
    for _ in range(50):
        fusion(warp, layer, 1)
    dt = (time.perf_counter() - t) / 50
    params = sum(p.numel() for p in fusion.net.parameters())
    print(f"fusion alone: {1000 * dt:.2f} ms/frame; {fusion.model_id}: {params} parameters, "
          f"{gflops(fusion.net):.3f} GFLOPs per 256 px frame")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
