"""Encode and decode speed of facecodec on this machine (frames per second, one process).

    .venv/bin/python benchmarks/codec_speed.py [CLIP] [--frames N] [--size 256]

Encode = face tracking + pose/expression fit + stabilisation + motion coding, on frames that
are already 256x256 face crops (as a camera pipeline would hand them over). Decode = packet
parsing + motion decoding + mesh-warp rendering, without writing a video file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import torch

from facecodec.bitstream.container import SIZE_STEP, StreamHeader
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.codec.analysis import FaceAnalyzer
from facecodec.codec.decoder import PacketDecoder
from facecodec.codec.encoder import EncoderSettings, Packetizer, coder_config
from facecodec.errors import OneLineParser
from facecodec.files import count, path_arg
from facecodec.motion.basis import load_basis

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("clip", nargs="?", type=path_arg, default=DATA / "clips/liveportrait_d19.mp4")
    ap.add_argument("--frames", type=count, default=250)
    ap.add_argument("--size", type=int, default=256, help="crop side: a multiple of "
                    f"{SIZE_STEP} within 128..512, as for encode")
    a = ap.parse_args()
    if not 128 <= a.size <= 512 or a.size % SIZE_STEP:
        ap.error(f"--size must be a multiple of {SIZE_STEP} within 128..512, got {a.size}")
    torch.set_num_threads(2)
    fps = probe(a.clip).fps
    frames = [
        cv2.resize(f, (a.size, a.size), interpolation=cv2.INTER_AREA)
        for f in read_frames(a.clip, a.frames)
    ]
    basis = load_basis()
    cfg = coder_config(basis, "medium", beside_layer=False)
    settings = EncoderSettings(size=a.size)
    warm = FaceAnalyzer(basis, a.size, float(fps))  # model loading is not steady state
    warm.push(frames[0], 0)
    warm.close()
    analyzer = FaceAnalyzer(basis, a.size, float(fps))
    pk = Packetizer(cfg, int(fps), max(1, round(float(fps) / 2)),
                    settings.keyframe_quality_for(0.0))
    packets = []
    t = time.perf_counter()
    for i, f in enumerate(frames):
        for e in analyzer.push(f, i):
            packets += pk.push(e)
    packets += pk.end(len(frames))
    enc_s = time.perf_counter() - t
    analyzer.close()

    header = StreamHeader(a.size, fps.numerator, fps.denominator, a.size, a.size,
                          basis.basis_id, "", "medium", int(fps), cfg.to_bytes())
    dec = PacketDecoder(header, "warp")
    t = time.perf_counter()
    n = 0
    for p in packets:
        n += len(dec.push(p))
    dec_s = time.perf_counter() - t
    print(f"clip {a.clip.name}, {len(frames)} frames at {a.size}x{a.size}, "
          f"{torch.get_num_threads()} threads")
    print(f"encode: {len(frames) / enc_s:7.1f} fps  (tracking + fit + stabilise + motion coding"
          f" + keyframe coding)")
    print(f"decode: {n / dec_s:7.1f} fps  (motion decoding + mesh warp rendering)")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
