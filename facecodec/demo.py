"""The main job: encode + decode one talking-head clip, then put facecodec's bitrate and
quality next to what H.264 (x264 real-time, the video-call anchor) and AV1 in low delay
(SVT-AV1, the strongest real-time opponent measured here) need for the same quality.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from facecodec.bench.conventional import anchor_rates_for_quality
from facecodec.bench.metrics import SAMPLING, ReferenceFeatures, evaluate
from facecodec.bench.reference import ReferenceClip
from facecodec.capture.video import VideoWriter, read_frames
from facecodec.codec.decoder import decode_file
from facecodec.codec.encoder import EncoderSettings, encode_file, original_crops
from facecodec.errors import FacecodecError
from facecodec.face.tracker import without_face_advice
from facecodec.files import check_writable, make_folder, publish, temp_beside
from facecodec.motion.presets import DEFAULT_PRESET
from facecodec.render.registry import DEFAULT_RENDERER, check_renderer

DEMO_METRICS = ("psnr_y", "ms_ssim", "vmaf")
FCV, RECON, SIDE = "clip.fcv", "reconstruction.mp4", "side_by_side.mp4"
ANCHORS = (("x264-rt", "H.264 (x264 real-time)"), ("svtav1-ld", "AV1 (SVT-AV1 low delay)"))


def side_by_side(left: np.ndarray, right: np.ndarray, dst: Path, fps: object) -> None:
    with VideoWriter(dst, fps, left.shape[2] * 2, left.shape[1]) as w:  # type: ignore[arg-type]
        for a, b in zip(left, right, strict=True):
            w.write(np.concatenate([a, b], axis=1))


def run_demo(
    src: Path, out: Path, quality: str = DEFAULT_PRESET, target_kbps: float | None = None,
    renderer: str = DEFAULT_RENDERER,
) -> int:
    """`target_kbps`: every byte counted; above 5 also tries motion + the low-resolution
    layer (docs/layer.md). `renderer` draws the stream."""
    settings = EncoderSettings(preset=quality, target_kbps=target_kbps)
    settings.validate()  # before any output exists
    check_renderer(renderer)
    make_folder(out)
    for name in (FCV, RECON, SIDE):
        check_writable(out / name)
    # The three outputs are made aside and moved in together once scored: a run stopped or
    # failed part-way leaves the last run's set as it was, never a mix of two runs.
    try:
        work = Path(tempfile.mkdtemp(prefix=".demo.", dir=out))
    except OSError as e:
        raise FacecodecError(f"cannot write in {out}: {e.strerror or e}") from None
    try:
        return _demo(src, out, work, settings, renderer)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish_together(work: Path, out: Path) -> None:
    """Move the three outputs in: each first copied beside where it lands (a link in --out
    may lead to another file system, where a rename cannot reach), then all renamed."""
    staged: list[Path] = []
    try:
        for name in (FCV, RECON, SIDE):
            fd, tmp = temp_beside(out / name)
            os.close(fd)
            staged.append(tmp)
            shutil.copyfile(work / name, tmp)
        for name, tmp in zip((FCV, RECON, SIDE), staged, strict=True):
            publish(tmp, out / name)
    except OSError as e:
        raise FacecodecError(f"cannot write in {out}: {e.strerror or e}") from None
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)


def _demo(src: Path, out: Path, work: Path, settings: EncoderSettings, renderer: str) -> int:
    try:
        enc = encode_file(src, work / FCV, settings, progress=sys.stderr.isatty())
    except FacecodecError as e:
        if without_face_advice(str(e)) == str(e):
            raise
        raise FacecodecError(without_face_advice(str(e))) from None
    dec = decode_file(work / FCV, work / RECON, renderer=renderer)
    size = enc.header.size
    original = original_crops(src, enc.keyframes, size)
    rendered = np.stack(list(read_frames(work / RECON)))
    n = min(len(original), len(rendered))
    side_by_side(original[:n], rendered[:n], work / SIDE, enc.header.fps)

    ref = ReferenceClip(original[:n], enc.header.fps, src.stem)
    feats = ReferenceFeatures.compute(ref.frames, **SAMPLING)
    scores = evaluate(feats, rendered[:n], metrics=DEMO_METRICS).mean
    total_kbps = enc.total_kbps
    steady_kbps = enc.motion_kbps
    h = enc.header
    lines = [f"\nclip          {src}  ({n} frames, {float(h.fps):.2f} fps, "
             f"{h.source_width}x{h.source_height}; scored on its {size}x{size} face crop)"]
    layer = f", layer {enc.layer_kbps:.2f} kbps" if enc.header.layer else ""
    lines.append(f"facecodec     total {total_kbps:6.2f} kbps (keyframe included), "
                 f"motion {steady_kbps:.2f} kbps{layer}")
    lines.append("quality       " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
                 + f"  (drawn by the {renderer} renderer)")
    targets = {metric: scores[metric] for metric in ("vmaf", "ms_ssim")}
    for system, name in ANCHORS:
        for metric, need in anchor_rates_for_quality(ref, targets, system).items():
            if math.isinf(need):
                verdict = "not reached on its ladder"
            else:
                verdict = f"{need:6.2f} kbps ({need / total_kbps:.1f}x facecodec's total)"
            lines.append(f"{name} for equal {metric}: {verdict}")
    _publish_together(work, out)
    print("\n".join(lines))
    print(f"\nwrote {out / FCV}, {out / RECON}, {out / SIDE}")
    if dec.error:
        print(f"decode stopped early: {dec.error}")
        return 3
    return 0
