"""Speed and quality of the mesh-warp renderer on shared clips.

    .venv/bin/python benchmarks/mesh_warp.py                      # warps/s + PSNR table
    .venv/bin/python benchmarks/mesh_warp.py --video /tmp/sbs.mp4 # original | warp, to look at

Quality: a fixed 256x256 crop of each clip (first frame's landmark box, side 1.6x), MediaPipe
landmarks in tracking mode on every crop frame, frame 0 warped to each frame's landmarks and
compared with that frame (PSNR on Y), against the static frame 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facecodec.bench.choice import check_outputs  # noqa: E402
from facecodec.cli import run_guarded  # noqa: E402
from facecodec.errors import OneLineParser  # noqa: E402
from facecodec.files import path_arg  # noqa: E402
from facecodec.render.mesh_warp import MeshWarper  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def validation_clips() -> list[str]:
    """Read when the benchmark runs, so importing this module needs no shared data."""
    return list(json.loads((DATA / "splits.json").read_text())["validation"])


def _face_mesh(static: bool) -> Any:  # mediapipe's FaceMesh (untyped)
    os.environ.setdefault("GLOG_minloglevel", "2")
    with contextlib.redirect_stderr(io.StringIO()):
        import mediapipe as mp

        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static, max_num_faces=1, refine_landmarks=True
        )


def _landmarks(mesh: Any, rgb: np.ndarray) -> np.ndarray | None:
    res = mesh.process(rgb)
    if not res.multi_face_landmarks:
        return None
    h, w = rgb.shape[:2]
    lm = res.multi_face_landmarks[0].landmark
    return np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)


def load_clip(path: Path, max_frames: int = 150, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Fixed face crops (N, size, size, 3) uint8 RGB and their landmarks (N, 478, 2) px.

    Frames where tracking loses the face get the previous frame's landmarks.
    """
    with av.open(str(path)) as c:
        decoded = zip(range(max_frames), c.decode(video=0), strict=False)
        frames = [f.to_ndarray(format="rgb24") for _, f in decoded]
    if not frames:
        raise ValueError(f"{path}: no frames")
    with _face_mesh(static=True) as mesh:
        first = _landmarks(mesh, frames[0])
    if first is None:
        raise ValueError(f"{path}: no face in the first frame")
    lo, hi = first.min(axis=0), first.max(axis=0)
    side = int(round(1.6 * float((hi - lo).max())))
    x0, y0 = np.round((lo + hi) / 2 - side / 2).astype(int)
    crops: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    with _face_mesh(static=False) as mesh:
        for f in frames:
            pad = cv2.copyMakeBorder(f, side, side, side, side, cv2.BORDER_REPLICATE)
            cut = pad[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
            crop = np.ascontiguousarray(cv2.resize(cut, (size, size), interpolation=cv2.INTER_AREA))
            lm = _landmarks(mesh, crop)
            if lm is None:
                lm = marks[-1] if marks else first
            crops.append(crop)
            marks.append(lm)
    return np.stack(crops), np.stack(marks)


def smooth(marks: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Zero-phase Gaussian smoothing over time: takes out tracker jitter (0.2-0.4 px)."""
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([marks[:1].repeat(r, 0), marks, marks[-1:].repeat(r, 0)])
    return sum(w * pad[i:i + len(marks)] for i, w in enumerate(k))


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    w = np.array([0.299, 0.587, 0.114])
    d = (a.astype(np.float64) @ w) - (b.astype(np.float64) @ w)
    mse = float((d * d).mean())
    return 100.0 if mse < 1e-10 else 10.0 * np.log10(255.0**2 / mse)


def evaluate(frames: np.ndarray, marks: np.ndarray) -> tuple[float, float]:
    """Mean PSNR-Y over frames 1.. of (warp of frame 0, static frame 0)."""
    w = MeshWarper(frames.shape[1])
    w.set_reference(frames[0], marks[0])
    warp = [psnr_y(w.warp(m), f) for f, m in zip(frames[1:], marks[1:], strict=True)]
    static = [psnr_y(frames[0], f) for f in frames[1:]]
    return float(np.mean(warp)), float(np.mean(static))


def speed(frames: np.ndarray, marks: np.ndarray, size: int, batches: int = 7) -> float:
    """Warps per second, best of several short batches (others' load on a shared machine
    only ever slows a batch down)."""
    scale = size / frames.shape[1]
    ref = cv2.resize(frames[0], (size, size), interpolation=cv2.INTER_AREA)
    w = MeshWarper(size)
    w.set_reference(ref, marks[0] * scale)
    targets = marks * scale
    best = 0.0
    for b in range(batches):
        t0 = time.perf_counter()
        for i in range(40):
            w.warp(targets[(b * 40 + i) % len(targets)])
        best = max(best, 40 / (time.perf_counter() - t0))
    return best


def write_video(out: Path, frames: np.ndarray, marks: np.ndarray, fps: int = 25) -> None:
    w = MeshWarper(frames.shape[1])
    w.set_reference(frames[0], marks[0])
    tmp = out.with_name(out.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 2 * frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "18"}
        for f, m in zip(frames, marks, strict=True):
            sbs = np.concatenate([f, w.warp(m)], axis=1)
            c.mux(s.encode(av.VideoFrame.from_ndarray(sbs, format="rgb24")))
        c.mux(s.encode())
    tmp.replace(out)


def main() -> None:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", nargs="*", default=None,
                    help="paths under shared/data (default: the validation split)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--video", type=path_arg, help="write original | warp of the first clip")
    args = ap.parse_args()

    args.clips = args.clips or validation_clips()
    check_outputs(args.video)
    data = {c: load_clip(DATA / c, args.frames) for c in args.clips}
    if args.video:
        frames, marks = data[args.clips[0]]
        write_video(args.video, frames, smooth(marks))
        print(f"wrote {args.video}")
        return
    frames, marks = data[args.clips[0]]
    print(f"speed on {args.clips[0]}, {os.cpu_count()} CPU cores, one thread of Python:")
    for size in (128, 256, 512):
        print(f"size {size}: {speed(frames, marks, size):7.1f} warps/s")
    print(f"{'clip':32s} {'static':>7s} {'raw':>7s} {'smooth':>7s}  (PSNR-Y dB, mean of frames)")
    rows = []
    for c, (frames, marks) in data.items():
        raw, static = evaluate(frames, marks)
        sm, _ = evaluate(frames, smooth(marks))
        rows.append((static, raw, sm))
        print(f"{c:32s} {static:7.2f} {raw:7.2f} {sm:7.2f}")
    print(f"{'mean':32s} " + " ".join(f"{v:7.2f}" for v in np.mean(rows, axis=0)))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
