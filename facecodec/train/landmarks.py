"""A landmark cache over the shared clips, built once and reused by every fitter/trainer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facecodec.capture.video import probe, read_frames
from facecodec.face.tracker import FaceTracker

TRACK_MAX_SIDE = 640  # MediaPipe works on a 256 px face crop anyway; smaller frames decode faster


def track_clip(path: Path, stride: int = 1, max_frames: int | None = None) -> np.ndarray:
    """(T, 478, 3) landmarks in source pixels; NaN rows where no face was tracked."""
    info = probe(path)
    scale = min(1.0, TRACK_MAX_SIDE / max(info.width, info.height))
    tracker = FaceTracker(allow_several=True)
    out: list[np.ndarray] = []
    for i, frame in enumerate(read_frames(path)):
        if max_frames is not None and len(out) >= max_frames:
            break
        if scale < 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        face = tracker(frame, i)  # every frame, so tracking mode stays engaged
        if i % stride:
            continue
        if face is None:
            out.append(np.full((478, 3), np.nan, np.float32))
        else:
            out.append(face.points / scale)
    tracker.close()
    return np.stack(out).astype(np.float32)


def build_cache(clips: list[Path], cache_dir: Path, stride: int = 1, max_frames: int = 400) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    for clip in tqdm(clips, desc="landmarks", unit="clip"):
        dst = cache_dir / f"{clip.stem}.npy"
        if dst.exists():
            continue
        lm = track_clip(clip, stride=stride, max_frames=max_frames)
        tmp = dst.with_suffix(".tmp.npy")
        np.save(tmp, lm)
        tmp.replace(dst)
