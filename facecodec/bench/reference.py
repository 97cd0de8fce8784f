"""Reference clips: the fixed square face crop every system is scored against.

The default crop follows the BASELINES.md protocol so that conventional-codec numbers can
be cross-checked against it. Another crop (facecodec's own) plugs in as any callable with
the `ReferenceFn` signature.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from facecodec.bench.landmarks import track_landmarks
from facecodec.errors import FacecodecError

DEFAULT_CACHE = Path("out/cache")
# Bump when the crop protocol changes, so stale cache entries are never reused.
_PROTOCOL = "baselines-crop-v1"


@dataclass(frozen=True, eq=False)
class ReferenceClip:
    """The frames every system must reproduce: [T, S, S, 3] uint8 RGB at `fps`."""

    frames: np.ndarray
    fps: Fraction
    name: str

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[3] != 3 or f.shape[1] != f.shape[2] or f.dtype != np.uint8:
            raise ValueError(f"reference frames must be [T,S,S,3] uint8, got {f.shape} {f.dtype}")
        if f.shape[0] == 0:
            raise ValueError("reference clip has no frames")

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])

    @property
    def duration(self) -> float:
        """Seconds the clip lasts: the denominator of every bitrate."""
        return len(self.frames) / float(self.fps)

    def head(self, n: int) -> ReferenceClip:
        return ReferenceClip(self.frames[:n], self.fps, self.name)


ReferenceFn = Callable[[Path, int, int], ReferenceClip]


def read_video(path: Path, max_frames: int) -> tuple[list[np.ndarray], Fraction]:
    """First `max_frames` RGB frames of a video file, upright as shown, and its frame rate:
    the codec's own reader (capture.video), so the bench sees what the encoder sees."""
    from facecodec.capture.video import probe, read_frames

    # The reader's errors name the file and say what is wrong with it.
    return list(read_frames(path, max_frames)), probe(path).fps


def crop_square(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Centre (x, y) and side of the fixed crop from per-frame landmarks [T, N, 2] (NaN = none).

    Medians make the crop robust to a few bad tracking frames; 1.6x the face box keeps
    hair, chin and some background, like the crops talking-head papers use.
    """
    ok = ~np.isnan(landmarks[:, :, 0]).any(axis=1)
    if not ok.any():
        raise FacecodecError("no face found in any frame")
    pts = landmarks[ok]
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # [T', 2]
    centre = np.median((lo + hi) / 2, axis=0)
    side = 1.6 * float(np.median((hi - lo).max(axis=1)))
    return float(centre[0]), float(centre[1]), side


def cut_square(frame: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The square around (cx, cy), edge-replicated outside the frame, area-resized to size."""
    s = max(1, round(side))
    x0, y0 = round(cx - s / 2), round(cy - s / 2)
    h, w = frame.shape[:2]
    rows = np.clip(np.arange(y0, y0 + s), 0, h - 1)
    cols = np.clip(np.arange(x0, x0 + s), 0, w - 1)
    patch = frame[rows[:, None], cols[None, :]]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def centre_square(path: Path, size: int) -> np.ndarray:
    """Frame 0 of `path`, its centre square area-resized to `size` (face-centred clips: a
    picture that is mostly face, without tracking)."""
    frame = read_video(Path(path), 1)[0][0]
    h, w = frame.shape[:2]
    return cut_square(frame, w / 2, h / 2, min(h, w), size)


def frames_id(frames: np.ndarray) -> str:
    """A short digest of a clip's reference frames: what every system was scored against."""
    h = hashlib.sha256(str((frames.shape, frames.dtype.str)).encode())
    h.update(np.ascontiguousarray(frames).data)
    return h.hexdigest()[:32]


def _cache_key(path: Path, size: int, max_frames: int) -> str:
    st = path.stat()
    raw = f"{_PROTOCOL}|{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{size}|{max_frames}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def baselines_reference(path: Path, size: int = 256, max_frames: int = 150) -> ReferenceClip:
    """The BASELINES.md crop of `path`, without caching."""
    frames, fps = read_video(path, max_frames)
    lms = track_landmarks(frames)
    cx, cy, side = crop_square(lms)
    crops = np.stack([cut_square(f, cx, cy, side, size) for f in frames])
    return ReferenceClip(crops, fps, path.stem)


def reference_clip(
    path: Path,
    size: int = 256,
    max_frames: int = 150,
    cache_dir: Path | None = DEFAULT_CACHE,
    crop: ReferenceFn = baselines_reference,
) -> ReferenceClip:
    """The reference clip of `path`, from the on-disk cache when possible.

    Tracking a clip costs seconds; the bench asks for the same crops many times. The cache
    key covers path, mtime, size, parameters and the protocol, so a changed file or
    protocol never reads a stale entry. Only the BASELINES.md crop is kept: it depends on
    nothing else. Another crop (facecodec's follows its sender, whose analysis its system
    runs anyway) is cut again each time, where a kept one would go stale unseen.
    """
    path = Path(path)
    if size < 32 or max_frames < 1:
        raise FacecodecError(f"bad reference parameters: size={size}, max_frames={max_frames}")
    if not path.is_file():
        raise FacecodecError(f"no such video file: {path}")
    if cache_dir is None or crop is not baselines_reference:
        return crop(path, size, max_frames)
    key = _cache_key(path, size, max_frames) + "-" + crop.__name__
    npy, meta = cache_dir / f"{path.stem}-{key}.npy", cache_dir / f"{path.stem}-{key}.json"
    if npy.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            frames = np.load(npy)
            return ReferenceClip(frames, Fraction(info["fps"]), info["name"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is recomputed below
    clip = crop(path, size, max_frames)
    # Write under temporary names, rename when complete: a killed run leaves no half entry.
    tmp_npy = npy.with_suffix(f".{os.getpid()}.tmp.npy")
    tmp_meta = meta.with_suffix(f".{os.getpid()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(tmp_npy, clip.frames)
        os.replace(tmp_npy, npy)
        tmp_meta.write_text(json.dumps({"fps": str(clip.fps), "name": clip.name}))
        os.replace(tmp_meta, meta)
    except OSError as e:  # a file in the cache's way, a full disk: the run goes on uncached
        for tmp in (tmp_npy, tmp_meta):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        print(f"warning: reference crops not cached in {cache_dir}: {e.strerror or e}",
              file=sys.stderr)
    return clip
