"""A call's reference picture: the frame where the face first appears against the scout's
choice as the call goes (facecodec/codec/scout.py), on held-out clips at full length.

    .venv/bin/python benchmarks/live_reference.py [--splits validation validation_unseen]
        [--preset medium] [--jobs 2]

Per clip: the live sender (`StreamEncoder(live=True)`, one frame a packet, the call's
keyframe quality) and the receiver (`StreamDecoder`, mesh warp) run frame by frame over the
whole clip, no loss; the rendered frames are scored against the original crops (PSNR-Y,
MS-SSIM, VMAF, AKD), over the whole clip and over its frames from 4 s on (the scout's first
pick comes 4-5 s in). Clips shorter than 8 s are left out: there the scout has no time to
act, and both choices give the same stream. Also: motion and keyframe kbps, the keyframes
sent and why, and the sender's time a frame (one thread; two clips run at once in worker
processes, so the times are rough).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facecodec.bench.metrics import ReferenceFeatures, evaluate
from facecodec.bitstream.packets import PacketType, decode_packet
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.codec.analysis import KeyframeEvent, MotionEvent
from facecodec.codec.encoder import iter_crops
from facecodec.codec.stream import StreamDecoder, StreamEncoder
from facecodec.errors import OneLineParser
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("psnr_y", "ms_ssim", "vmaf", "akd")
SIZE = 256
LATE_S = 4.0
MIN_S = 8.0


def call(clip: Path, reference: str, preset: str) -> dict[str, object]:
    info = probe(clip)
    frames = list(read_frames(clip))
    h, w = frames[0].shape[:2]
    enc = StreamEncoder(SIZE, info.fps, preset, live=True, source_size=(w, h),
                        reference=reference)
    keys: list[KeyframeEvent] = []
    analyse = enc.analyzer.push

    def push(frame: np.ndarray, index: int) -> list[KeyframeEvent | MotionEvent]:
        events = analyse(frame, index)
        keys.extend(e for e in events if isinstance(e, KeyframeEvent))
        return events

    enc.analyzer.push = push  # type: ignore[method-assign]
    dec = StreamDecoder(enc.header_bytes())
    rendered: dict[int, np.ndarray] = {}
    sizes = {PacketType.KEYFRAME: 0, PacketType.MOTION: 0}
    seconds = 0.0
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        packets = enc.push(frame, i)
        seconds += time.perf_counter() - t
        for data in packets:
            p, _ = decode_packet(data)
            kind = PacketType.KEYFRAME if p.type == PacketType.KEYFRAME else PacketType.MOTION
            sizes[kind] += len(data)
            rendered.update(dec.push(data))
    enc.close()
    crops = np.stack(list(iter_crops(clip, keys, SIZE)))
    first = rendered[min(rendered)]
    out = np.stack([rendered.get(i, first) for i in range(len(crops))])
    late = int(LATE_S * float(info.fps))
    duration = len(frames) / float(info.fps)
    whole = evaluate(ReferenceFeatures.compute(crops), out, metrics=METRICS).mean
    tail = evaluate(ReferenceFeatures.compute(crops[late:]), out[late:], metrics=METRICS).mean
    return {
        "whole": whole, "late": tail,
        "motion_kbps": sizes[PacketType.MOTION] * 8 / 1000 / duration,
        "keyframe_kbps": sizes[PacketType.KEYFRAME] * 8 / 1000 / duration,
        "keyframes": [(k.index, k.reason, k.picture_index) for k in keys],
        "ms_per_frame": seconds / len(frames) * 1000, "frames": len(frames),
    }


def eval_clip(job: tuple[Path, str]) -> tuple[str, dict[str, dict[str, object]]]:
    clip, preset = job
    torch.set_num_threads(1)
    return clip.stem, {r: call(clip, r, preset) for r in ("first", "best")}


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--splits", nargs="+", default=["validation", "validation_unseen"])
    p.add_argument("--preset", default="medium")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    clips = [c for s in a.splits for c in load_split(DATA, s)]
    short = [c for c in clips if sum(1 for _ in read_frames(c)) < MIN_S * float(probe(c).fps)]
    print("left out (shorter than 8 s): " + ", ".join(c.stem for c in short))
    clips = [c for c in clips if c not in short]
    results: dict[str, dict[str, dict[str, object]]] = {}
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for stem, r in pool.imap_unordered(eval_clip, [(c, a.preset) for c in clips]):
            results[stem] = r
            print(f"{stem} ({r['first']['frames']} frames)", flush=True)
            for name, v in r.items():
                scores = "  ".join(f"{part} " + " ".join(
                    f"{m} {x:.3f}" for m, x in v[part].items())  # type: ignore[attr-defined]
                    for part in ("whole", "late"))
                print(f"  {name:5s} kbps motion {v['motion_kbps']:.2f} keyframes "
                      f"{v['keyframe_kbps']:.2f}, {v['ms_per_frame']:.1f} ms/frame, "
                      f"keyframes {v['keyframes']}\n        {scores}", flush=True)
    print(f"mean over {len(results)} clips")
    for name in ("first", "best"):
        rs = [r[name] for r in results.values()]
        parts = "  ".join(
            f"{part}: " + " ".join(
                f"{m} {np.mean([x[part][m] for x in rs]):.3f}"  # type: ignore[index]
                for m in METRICS)
            for part in ("whole", "late"))
        kb = np.mean([x["motion_kbps"] + x["keyframe_kbps"] for x in rs])  # type: ignore[operator]
        ms = np.mean([x["ms_per_frame"] for x in rs])
        print(f"  {name:5s} kbps {kb:.2f}  {ms:.1f} ms/frame  {parts}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
