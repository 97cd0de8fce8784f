"""What a call's receiver draws from a live layer, and what a hurried receiver gives up.

Per validation clip (first 150 frames), the stream is coded as a call's sender codes it
(StreamEncoder: one frame a packet, the live layer's size, schedule and rate control), and
decoded four ways:

- neural: the call's neural receiver at leisure (restored reference, refiner, fusion network);
- neural, hurried: the same receiver with every packet late (`PacketDecoder.push(hurry=True)`:
  the warp unrefined, the layer fused by the training-free rule);
- warp: the mesh-warp receiver (the call's default), fusion network;
- warp, hurried: the same in a hurry (the training-free fusion).

Scores (PSNR-Y, MS-SSIM, VMAF) are against the sender's own crop of each frame, so they
hold wherever the live crop moved. Rates are the stream's bytes per second.

    .venv/bin/python benchmarks/live_layer_quality.py [--rates 4] [--json OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from facecodec.bench.choice import check_outputs, clips_named
from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.bitstream.container import StreamHeader
from facecodec.bitstream.packets import Packet, decode_packet
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.stream import StreamEncoder
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FRAMES = 150
RECEIVERS = (("neural", False), ("neural", True), ("warp", False), ("warp", True))
METRICS = ("psnr_y", "ms_ssim", "vmaf")


def live_stream(clip: Path, kbps: float) -> tuple[StreamHeader, list[Packet], np.ndarray, float]:
    """(header, packets, the sender's crop of each frame, kbps) of a call's first frames."""
    info = probe(clip)
    enc = StreamEncoder(256, info.fps, layer_kbps=kbps, source_size=(info.width, info.height))
    packets: list[Packet] = []
    crops: list[np.ndarray] = []
    size = 0
    for i, frame in enumerate(read_frames(str(clip))):
        if i == FRAMES:
            break
        for data in enc.push(frame, i):
            size += len(data)
            packets.append(decode_packet(data)[0])
        crop = enc.analyzer.crop
        crops.append(crop.cut(frame, 256) if crop is not None else crops[-1])
    header = enc.header_bytes()
    enc.close()
    seconds = len(crops) / float(info.fps)
    return StreamHeader.from_bytes(header), packets, np.stack(crops), size * 8 / 1000 / seconds


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--split", default="validation")
    ap.add_argument("--rates", type=float, nargs="+", default=[4.0])
    ap.add_argument("--clips", nargs="+", default=None, help="clip stems (default: all)")
    ap.add_argument("--json", type=path_arg, default=None)
    a = ap.parse_args()
    clips = clips_named(load_split(DATA, a.split), a.clips, f"split {a.split!r}")
    check_outputs(a.json)
    rows = []
    for clip in clips:
        for rate in a.rates:
            header, packets, crops, kbps = live_stream(clip, rate)
            feats = ReferenceFeatures.pixels(crops)
            layer = header.layer
            for renderer, hurry in RECEIVERS:
                frames = decode_packets(header, packets, len(crops), renderer, hurry=hurry)
                s = evaluate(feats, frames, metrics=METRICS).mean
                rows.append({"clip": clip.stem, "layer_target": rate, "kbps": kbps,
                             "layer_size": layer.size if layer else 0, "renderer": renderer,
                             "hurry": hurry, **s})
                print(f"{clip.stem:22s} layer {rate:4.1f} ({layer.size if layer else 0} px, "
                      f"stream {kbps:5.2f} kbps)  {renderer:6s} {'hurried' if hurry else '':7s} "
                      f"PSNR-Y {s['psnr_y']:5.2f}  MS-SSIM {s['ms_ssim']:.4f}  "
                      f"VMAF {s['vmaf']:5.1f}", flush=True)
    print("\nmean over clips")
    for rate in a.rates:
        for renderer, hurry in RECEIVERS:
            sel = [x for x in rows if x["layer_target"] == rate and x["renderer"] == renderer
                   and x["hurry"] == hurry]
            m = {k: float(np.mean([x[k] for x in sel])) for k in ("kbps", *METRICS)}
            print(f"layer {rate:4.1f} (stream {m['kbps']:5.2f} kbps)  {renderer:6s} "
                  f"{'hurried' if hurry else '':7s} PSNR-Y {m['psnr_y']:5.2f}  MS-SSIM "
                  f"{m['ms_ssim']:.4f}  VMAF {m['vmaf']:5.1f}")
    if a.json:
        write_text(a.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
