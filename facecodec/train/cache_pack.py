"""Carry a built pair cache to a machine without the video and face stack.

The refiner's cache (`facecodec/train/dataset.py`) is about 200 kB a frame, 0.8 GB for the
train split; building it needs PyAV and MediaPipe, which a GPU machine may lack. `pack`
writes each clip's crops as an H.264 4:4:4 stream at crf 8 (about 45 dB PSNR against the
crops, under a thirtieth of their size) beside its meta.npz; `unpack` decodes them with
OpenCV back into crops.npy, and the trainer then finds the cache complete and imports
neither PyAV nor MediaPipe's face tracker. (It still reads MediaPipe's landmark connection
tables, `mediapipe.python.solutions.face_mesh_connections`, through
`facecodec/render/topology.py`: plain Python data.)

    python -m facecodec.train.cache_pack pack cache/refiner PACK
    python -m facecodec.train.cache_pack unpack PACK cache/refiner
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

from facecodec.errors import FacecodecError
from facecodec.files import path_arg

CRF = 8
VIDEO = "crops.mp4"


def _clip_dirs(src: Path, dst: Path, what: str) -> list[tuple[Path, Path]]:
    """(source folder, made destination folder) of every clip of every split under `src`."""
    dirs = sorted(p.parent for p in src.glob("*/*/meta.npz"))
    if not dirs:
        raise FacecodecError(f"no {what} clips under {src}")
    pairs = [(d, dst / d.relative_to(src)) for d in dirs]
    for _, d in pairs:
        d.mkdir(parents=True, exist_ok=True)
    return pairs


def write_frames(path: Path, frames: np.ndarray, crf: int = CRF) -> None:
    """(N, H, W, 3) uint8 RGB as an H.264 4:4:4 stream at `path` (crf 0: lossless)."""
    import av  # the packing machine has the project's full environment

    tmp = path.with_name(path.name + ".tmp")
    with av.open(str(tmp), "w", format="mp4") as box:
        s = box.add_stream("libx264", rate=25)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv444p"  # no chroma subsampling: the targets keep their colour
        s.options = {"crf": str(crf), "preset": "slow"}
        for f in frames:
            box.mux(s.encode(av.VideoFrame.from_ndarray(np.asarray(f), format="rgb24")))
        box.mux(s.encode())
    tmp.replace(path)


def read_frames(path: Path, n: int) -> np.ndarray:
    """The `n` frames of a stream written by `write_frames`, decoded by OpenCV."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while len(frames) <= n:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[..., ::-1])
    cap.release()
    if len(frames) != n:
        raise FacecodecError(f"{path}: {len(frames)} frames decoded, expected {n}")
    return np.ascontiguousarray(np.stack(frames))


def pack(cache: Path, out: Path) -> int:
    """Every clip of every split under `cache` into `out`; returns the clips packed."""
    pairs = _clip_dirs(cache, out, "cached")
    for d, dst in pairs:
        try:
            crops = np.load(d / "crops.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise FacecodecError(f"{d / 'crops.npy'}: not a cached crop array ({e})") from None
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise FacecodecError(f"{d / 'crops.npy'}: not (N, S, S, 3) uint8 crops")
        write_frames(dst / VIDEO, crops)
        shutil.copy(d / "meta.npz", dst / "meta.npz")
    return len(pairs)


def unpack(packed: Path, cache: Path) -> int:
    """The packed clips back into a cache the trainer reads; returns the clips unpacked."""
    pairs = _clip_dirs(packed, cache, "packed")
    for d, dst in pairs:
        try:
            n = len(np.load(d / "meta.npz")["index"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise FacecodecError(f"{d / 'meta.npz'}: not a cache's meta ({e})") from None
        crops = read_frames(d / VIDEO, n)
        tmp = dst / "crops.tmp.npy"
        np.save(tmp, crops)
        tmp.replace(dst / "crops.npy")
        shutil.copy(d / "meta.npz", dst / "meta.npz")
    return len(pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facecodec.train.cache_pack",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("pack", "unpack"))
    ap.add_argument("src", type=path_arg)
    ap.add_argument("dst", type=path_arg)
    a = ap.parse_args(argv)
    try:
        n = pack(a.src, a.dst) if a.action == "pack" else unpack(a.src, a.dst)
    except FacecodecError as e:
        print(f"facecodec: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"{a.action}ed {n} clips into {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
