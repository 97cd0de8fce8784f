"""Motion coder benchmark: bytes per frame, kbps and quantisation error per preset.

Real motion comes from MediaPipe FaceMesh on a shared clip, turned into `Motion` values by a
simple stand-in fitter (3D similarity fit to a canonical shape for pose, PCA of the aligned
residuals for expression). It is not the project's fitter, but its statistics (smoothness,
jitter, spread) are those of real tracked faces, which is what the coder's rate depends on.

    .venv/bin/python benchmarks/motion_coder.py [--clip PATH] [--frames N] [--k K]
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from facecodec.capture.video import probe
from facecodec.cli import run_guarded
from facecodec.errors import OneLineParser
from facecodec.files import count, path_arg
from facecodec.motion.coder import (
    CoderConfig,
    MotionDecoder,
    MotionEncoder,
    make_config,
)
from facecodec.motion.motion import FIXED_SIZE, Motion

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_CLIP = DATA / "clips" / "liveportrait_d19.mp4"
SIDE = 256
PACKET_OVERHEAD = 13  # bytes per packet outside the coder's payload (header, length, checksum)

# MediaPipe FaceMesh indices used for gaze and openness.
_IRIS = (468, 473)  # left, right iris centres
_EYE_CORNERS = ((33, 133), (362, 263))
_EYELIDS = ((159, 145), (386, 374))
_LIPS = (13, 14)


def track_clip(path: Path, max_frames: int) -> tuple[np.ndarray, Fraction]:
    """(n, 478, 3) landmarks in crop fractions of the clip resized to 256x256, and its fps."""
    import av
    import cv2

    os.environ.setdefault("GLOG_minloglevel", "2")
    with contextlib.redirect_stderr(io.StringIO()):
        import mediapipe as mp

    pts: list[np.ndarray] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = Fraction(s.average_rate or 25).limit_denominator(1001)
        with mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True
        ) as mesh:
            for frame in c.decode(s):
                rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (SIDE, SIDE),
                                 interpolation=cv2.INTER_AREA)
                res = mesh.process(rgb)
                if res.multi_face_landmarks:
                    lm = res.multi_face_landmarks[0].landmark
                    pts.append(np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64))
                elif pts:  # a missed frame repeats the last face, as a tracker would
                    pts.append(pts[-1])
                if len(pts) >= max_frames:
                    break
    if not pts:
        raise RuntimeError(f"{path}: no face found")
    return np.stack(pts), fps


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama fit dst ~ s * R @ src + t for (n, 3) point sets."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sv, vt = np.linalg.svd(b.T @ a)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag(d) @ vt
    s = float((sv * d).sum() / (a**2).sum())
    return s, r, md - s * r @ ms


def landmarks_to_motion(pts: np.ndarray, k: int) -> list[Motion]:
    """Pose, gaze, openness and K PCA expression coefficients, in canonical units."""
    ref = pts[0] - pts[0].mean(0)
    canon = ref / np.sqrt((ref**2).sum(1).mean())  # unit RMS radius
    fits = [_similarity(canon, p) for p in pts]
    aligned = np.stack([r.T @ (p - t).T / s for (s, r, t), p in zip(fits, pts, strict=True)])
    aligned = aligned.transpose(0, 2, 1)  # (n, 478, 3) canonical units
    resid = (aligned - canon).reshape(len(pts), -1)
    resid = resid - resid.mean(0)
    # Basis vectors scaled to unit RMS displacement per landmark, so a coefficient is the
    # RMS landmark displacement it causes (canonical units), as in the shipped basis.
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    n_pts = pts.shape[1]
    expr = resid @ vt[:k].T / np.sqrt(n_pts)
    out = []
    for (s, r, t), a, e in zip(fits, aligned, expr, strict=True):
        yaw = np.arcsin(np.clip(-r[2, 0], -1, 1))
        pitch = np.arctan2(r[2, 1], r[2, 2])
        roll = np.arctan2(r[1, 0], r[0, 0])
        gaze = [a[i, :2] - a[list(c)].mean(0)[:2] for i, c in zip(_IRIS, _EYE_CORNERS, strict=True)]
        open_ = [np.linalg.norm(a[u] - a[lo]) for u, lo in (*_EYELIDS, _LIPS)]
        out.append(Motion(rotation=np.asarray([yaw, pitch, roll]), translation=t[:2],
                          log_scale=np.log(s), gaze=np.concatenate(gaze),
                          openness=np.asarray(open_), expression=e))
    return out


def clip_motion(path: Path = DEFAULT_CLIP, frames: int = 100, k: int = 16
                ) -> tuple[list[Motion], float]:
    pts, fps = track_clip(path, frames)
    return landmarks_to_motion(pts, k), float(fps)


def code_stream(config: CoderConfig, motions: list[Motion], fps: float
                ) -> tuple[list[int], list[Motion]]:
    """Packet payload sizes with ~fps/4 frames per packet and a resync each second."""
    per_packet = max(1, round(fps / 4))
    per_second = max(1, round(fps))
    enc, dec = MotionEncoder(config), MotionDecoder(config)
    sizes: list[int] = []
    decoded: list[Motion] = []
    since_resync = per_second
    for i in range(0, len(motions), per_packet):
        chunk = motions[i : i + per_packet]
        intra = since_resync >= per_second
        since_resync = len(chunk) if intra else since_resync + len(chunk)
        data = enc.encode(chunk, intra=intra)
        decoded += dec.decode(data, len(chunk), intra=intra)
        sizes.append(len(data))
    return sizes, decoded


GROUPS = {"rotation": slice(0, 3), "translation": slice(3, 5), "log_scale": slice(5, 6),
          "gaze": slice(6, 10), "openness": slice(10, 13), "expression": slice(FIXED_SIZE, None)}


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=path_arg, default=DEFAULT_CLIP)
    ap.add_argument("--frames", type=count, default=300)
    ap.add_argument("--k", type=count, default=16, help="expression coefficients (medium preset)")
    args = ap.parse_args()
    probe(args.clip)  # a missing file or one that is not a video: one line, before the work

    motions, fps = clip_motion(args.clip, args.frames, 2 * args.k)
    vecs = np.stack([m.to_vector() for m in motions])
    expr_std = vecs[:, FIXED_SIZE:].std(0)
    print(f"{args.clip.name}: {len(motions)} frames at {fps:.2f} fps; "
          f"expression std {expr_std[0]:.4f}..{expr_std[args.k - 1]:.4f} (first {args.k})")
    for preset in ("low", "medium", "high"):
        cfg = make_config(preset, args.k, expr_std)
        t0 = time.perf_counter()
        sizes, decoded = code_stream(cfg, motions, fps)
        dt = time.perf_counter() - t0
        total = sum(sizes)
        kbps = (total + PACKET_OVERHEAD * len(sizes)) * 8 * fps / len(motions) / 1000
        ref = np.stack([cfg.dequantize(cfg.quantize(m)).to_vector() for m in motions])
        dec = np.stack([m.to_vector() for m in decoded])
        assert np.array_equal(ref, dec), "decoder output differs from dequantised input"
        src = vecs[:, : ref.shape[1]].copy()
        err = np.abs(ref - src)
        print(f"\n{preset}: k={cfg.k}  {total / len(motions):.2f} B/frame  "
              f"{kbps:.2f} kbps with {PACKET_OVERHEAD} B/packet ({len(sizes)} packets)  "
              f"config {len(cfg.to_bytes())} B  coding {1e3 * dt / len(motions):.2f} ms/frame")
        for name, sl in GROUPS.items():
            e = err[:, sl]
            print(f"  {name:12s} max {e.max():.5f}  rms {np.sqrt((e**2).mean()):.5f}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
