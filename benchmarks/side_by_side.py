"""Side-by-side videos to watch, on validation clips (facecodec's own 256 px crop, first 150
frames), each panel labelled with its system, rate and VMAF:

- `<clip>_<R>kbps.mp4`: original | x264 real time at facecodec's rate | facecodec, at about
  5 kbps (motion only, `low` preset) and about 15 kbps (motion + a 4 kbps layer). x264's
  crf is searched for the total bytes closest to facecodec's (both count every byte the
  decoder needs, keyframes included).
- `<clip>_renderers.mp4`: original | mesh warp | neural renderer, on one `medium` stream.
- `<clip>_redirect.mp4`: original | warp and neural with the head turned 20 degrees (yaw).
- `<clip>_avatar.mp4`: original | warp and neural driving another portrait.

    .venv/bin/python benchmarks/side_by_side.py [--clips NAME ...] [--out out/video]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from facecodec.bench.conventional import CODECS, HEADLINE_ANCHOR, encode_decode
from facecodec.bench.facecodec_system import analysis_of, facecodec_reference
from facecodec.bench.metrics import SAMPLING, ReferenceFeatures, evaluate
from facecodec.bench.system import SystemPoint
from facecodec.capture.video import VideoWriter
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import EncoderSettings, code_analysis
from facecodec.codec.layer_rate import LAYER_MOTION_PRESET
from facecodec.errors import OneLineParser
from facecodec.files import make_folder, path_arg
from facecodec.render.pose import PoseEdit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# (label, preset, keyframe quality, layer kbps): motion + layer near 5 and 15 kbps in all
# (150 frames; the motion-only stream is in the renderer panels).
RUNGS = (("5kbps", LAYER_MOTION_PRESET, None, 4.0), ("15kbps", LAYER_MOTION_PRESET, None, 13.0))
AVATAR = DATA / "portraits" / "liveportrait_s0.jpg"


def _label(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """White text on a darkened band at the top of the panel."""
    out = np.ascontiguousarray(frame)
    band = out[: 6 + 16 * len(lines)]
    band[:] = (band * 0.45).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(out, text, (6, 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _write(dst: Path, fps: object, panels: list[tuple[list[str], np.ndarray]]) -> None:
    n, s = len(panels[0][1]), panels[0][1].shape[1]
    with VideoWriter(dst, fps, s * len(panels), s, crf=20) as w:  # type: ignore[arg-type]
        for i in range(n):
            w.write(np.concatenate([_label(f[i].copy(), text) for text, f in panels], axis=1))
    print(f"wrote {dst}: " + " | ".join(", ".join(text) for text, _ in panels))


def _x264_at(ref: object, target_bytes: int) -> SystemPoint:
    """x264 real time at the crf whose stream size is closest to target_bytes."""
    cfg = CODECS[HEADLINE_ANCHOR]
    lo, hi, best = 0, 51, None
    while lo <= hi:  # size falls as crf rises
        crf = (lo + hi) // 2
        p = encode_decode(ref, cfg, crf)  # type: ignore[arg-type]
        if best is None or abs(p.bytes_all - target_bytes) < abs(best.bytes_all - target_bytes):
            best = p
        lo, hi = (crf + 1, hi) if p.bytes_all > target_bytes else (lo, crf - 1)
    assert best is not None
    return best


def run(clip: Path, out: Path) -> None:
    ref = facecodec_reference(clip)
    n, fps, seconds = len(ref.frames), ref.fps, len(ref.frames) / float(ref.fps)
    feats = ReferenceFeatures.compute(ref.frames, **SAMPLING)

    def vmaf(frames: np.ndarray) -> float:
        return evaluate(feats, frames, metrics=("vmaf",)).mean["vmaf"]

    a = analysis_of(clip, ref.size, n)
    original = (["original"], ref.frames)
    for label, preset, kq, layer in RUNGS:
        r = code_analysis(a, EncoderSettings(preset=preset, keyframe_quality=kq, layer_kbps=layer))
        fc = decode_packets(r.header, r.packets, n, "warp")
        x = _x264_at(ref, r.total_bytes)
        fc_kbps, x_kbps = r.total_bytes * 8e-3 / seconds, x.bytes_all * 8e-3 / seconds
        what = "motion + layer" if layer else "motion only"
        _write(out / f"{ref.name}_{label}.mp4", fps, [
            original,
            ([f"x264 real time {x.setting}", f"{x_kbps:.1f} kbps  VMAF {vmaf(x.frames):.1f}"],
             x.frames),
            ([f"facecodec {what}", f"{fc_kbps:.1f} kbps  VMAF {vmaf(fc):.1f}"], fc),
        ])

    r = code_analysis(a, EncoderSettings(preset="medium"))
    kbps = r.total_bytes * 8e-3 / seconds
    panels = [original]
    for renderer in ("warp", "neural"):
        f = decode_packets(r.header, r.packets, n, renderer)
        panels.append(([f"facecodec {renderer}", f"{kbps:.1f} kbps  VMAF {vmaf(f):.1f}"], f))
    _write(out / f"{ref.name}_renderers.mp4", fps, panels)
    for name, edit in (("redirect", {"pose": PoseEdit(yaw=20.0)}), ("avatar", {"avatar": AVATAR})):
        what = "yaw +20 deg" if name == "redirect" else f"avatar {AVATAR.stem}"
        panels = [original]
        for renderer in ("warp", "neural"):
            f = decode_packets(r.header, r.packets, n, renderer, **edit)
            panels.append(([f"{renderer}, {what}"], f))
        _write(out / f"{ref.name}_{name}.mp4", fps, panels)


def main() -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", nargs="+", default=["liveportrait_d19", "grid_swiz3n"],
                    help="validation clip names (files under ../shared/data/clips)")
    ap.add_argument("--out", type=path_arg, default=Path("out/video"))
    args = ap.parse_args()
    clips = []
    for name in args.clips:
        matches = sorted((DATA / "clips").glob(f"{name}.*"))
        if not matches:
            print(f"error: no clip named {name} in {DATA / 'clips'}", file=sys.stderr)
            return 2
        clips.append(matches[0])
    make_folder(args.out)
    for clip in clips:
        run(clip, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
