"""Training pairs for the refiner: (source frame, driving frame) of one clip and crop.

The cache is built once per split from the sender's own analysis, so the net learns from the
Motions the receiver will see (stabilised, fitted to the basis), not from raw landmarks:
per clip, up to `max_frames` frames tracked, every `stride`-th kept as a 256 crop with its
rendered landmarks and the keyframe segment it belongs to. Crops change at keyframes, so
pairs are drawn within one segment only. Warping happens on the fly (~5 ms a pair), which
keeps the cache at crops + landmarks (about 200 kB a frame).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from facecodec.errors import FacecodecError
from facecodec.files import content_id, same_name
from facecodec.render.neural import Conditioner
from facecodec.render.topology import N_LANDMARKS
from facecodec.train.splits import load_split

SIZE = 256
CACHE_VERSION = 1


@dataclass
class ClipData:
    name: str
    crops: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    points: np.ndarray  # (N, 478, 2) float32 landmarks rendered from the frame's Motion
    segment: np.ndarray  # (N,) keyframe index the frame's crop belongs to
    index: np.ndarray  # (N,) frame number in the clip
    path: Path  # the clip's cache folder

    def __getstate__(self) -> dict[str, object]:
        # Sent to a worker process as its folder: the worker maps the crops itself.
        return {**self.__dict__, "crops": None}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.crops = np.load(self.path / "crops.npy", mmap_mode="r")


def built_from(out_dir: Path) -> str | None:
    """The content id a built clip records: None if it is not built (or is damaged), ""
    if it was built before clips were recorded."""
    try:
        with np.load(out_dir / "meta.npz") as meta:
            return str(meta["source"]) if "source" in meta.files else ""
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # built again


def build_clip(path: Path, out_dir: Path, max_frames: int, stride: int,
               source: str = "") -> None:
    """Analyse one clip like the encoder does and store what the pairs need; `source`: its
    content id, recorded."""
    # Imported here: a built cache trains without the video and face stack (a GPU machine
    # may have neither).
    from facecodec.codec.analysis import EventStabiliser, MotionEvent
    from facecodec.codec.encoder import EncoderSettings, analyze_file, original_crops
    from facecodec.motion.basis import load_basis
    from facecodec.motion.stabilize import SLOW_BETA

    basis = load_basis()
    analysis = analyze_file(path, EncoderSettings(size=SIZE), max_frames=max_frames)
    keys = sorted(k.index for k in analysis.keyframes)
    crops = original_crops(path, analysis.keyframes, SIZE, max_frames)
    # Smoothed as beside a layer, by the causal filter alone (as a call smooths; a file's
    # smoothing now also runs backwards): the shipped refiner and fusion networks were
    # trained so.
    smooth = EventStabiliser(basis, float(analysis.info.fps), SLOW_BETA)
    events = [smooth(e) for e in analysis.events]
    rows = [e for e in events
            if isinstance(e, MotionEvent) and e.face_seen and e.index % stride == 0
            and e.index < len(crops)]
    idx = np.array([e.index for e in rows], dtype=np.int64)
    seg = np.array([max(k for k in keys if k <= i) if i >= keys[0] else keys[0] for i in idx])
    pts = np.stack([basis.landmarks(e.motion, SIZE)[:, :2] for e in rows]).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed (a process that mapped the earlier crops keeps them); the
    # earlier meta.npz goes first and the new one, renamed last, marks the clip as built.
    tmp = out_dir / f"crops.npy.{os.getpid()}.tmp"  # two processes may build one clip
    try:
        with tmp.open("wb") as f:
            np.save(f, np.ascontiguousarray(crops[idx]))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    (out_dir / "meta.npz").unlink(missing_ok=True)
    os.replace(tmp, out_dir / "crops.npy")
    tmp = out_dir / f"meta.npz.{os.getpid()}.tmp"
    with tmp.open("wb") as f:
        np.savez(f, points=pts, segment=seg, index=idx, source=np.array(source))
    os.replace(tmp, out_dir / "meta.npz")


def build_cache(
    data_dir: Path, split: str, cache_dir: Path, max_frames: int = 150, stride: int = 2,
    max_clips: int | None = None, progress: bool = True, build: bool = True,
) -> list[ClipData]:
    """Build (missing clips only) and load the cache of one split (its first `max_clips`);
    `build` False: only load what another process built."""
    root = cache_dir / f"{split}_f{max_frames}_s{stride}_v{CACHE_VERSION}"
    clips = load_split(data_dir, split)[:max_clips]
    pair = same_name(clips)  # one cache folder a name
    if pair:
        raise FacecodecError(f"two {split} clips are named {pair[0].stem} ({pair[0]} and "
                             f"{pair[1]}); the pair cache tells clips by name")
    if not build:
        return load_cache(root, [p.stem for p in clips])
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacecodecError(f"cannot use {cache_dir} as the pair cache: {e.strerror}") from None
    skipped: dict[str, str] = {}
    absent = 0
    bar = progress and sys.stderr.isatty()  # a bar's redraws only litter a log
    for path in tqdm(clips, desc=f"cache {split}", unit="clip", disable=not bar):
        d = root / path.stem
        if not path.is_file() and (d / "meta.npz").exists():
            # Taken as built: a cache carried to a machine without the videos (cache_pack).
            absent += 1
            continue
        source = content_id(path) if path.is_file() else ""
        was = built_from(d)
        if not source or was != source:  # not built, or built from other (or unknown) bytes
            try:
                build_clip(path, d, max_frames, stride, source)
            except Exception as e:  # a clip without a face, or no video: skip it, say so
                why = (str(e).splitlines() or [e.__class__.__name__])[0]
                if was == "":  # built before clips were recorded: kept, as it was used
                    print(f"warning: {split} clip {path} could not be built again ({why}); "
                          f"its earlier pairs in {d} are used", file=sys.stderr, flush=True)
                    continue
                if was:  # pairs of another video of that name
                    for f in ("meta.npz", "crops.npy"):
                        (d / f).unlink(missing_ok=True)
                skipped[path.stem] = why
                print(f"warning: {split} clip {path} skipped: {why}", file=sys.stderr,
                      flush=True)
    if absent:
        print(f"note: {split} clips not in {data_dir}: {absent}; their pairs are taken from "
              f"{root} as they were built", file=sys.stderr, flush=True)
    record = root / "skipped.json"  # this build's skipped clips (they are tried again)
    if skipped:
        record.write_text(json.dumps(skipped, indent=1) + "\n")
    else:
        record.unlink(missing_ok=True)
    return load_cache(root, [p.stem for p in clips])


def load_cache(root: Path, names: list[str]) -> list[ClipData]:
    """The built clips among `names`; FacecodecError for one whose files are damaged."""
    out = []
    for n in names:
        d = root / n
        if not (d / "meta.npz").exists():
            continue
        try:
            meta = np.load(d / "meta.npz")
            clip = ClipData(n, np.load(d / "crops.npy", mmap_mode="r"), meta["points"],
                            meta["segment"], meta["index"], d)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise FacecodecError(f"damaged pair cache {d} ({e.__class__.__name__}): remove it "
                                 "to rebuild") from None
        rows = len(clip.index)
        if not (clip.crops.shape[1:] == (SIZE, SIZE, 3) and clip.crops.dtype == np.uint8
                and len(clip.crops) == rows and clip.points.shape[1:] == (N_LANDMARKS, 2)
                and len(clip.points) == rows == len(clip.segment)):
            raise FacecodecError(f"damaged pair cache {d} (arrays of the wrong shape): remove "
                                 "it to rebuild")
        out.append(clip)
    return out


def segment_pairs(clip: ClipData) -> list[np.ndarray]:
    """Frame row indices of each keyframe segment with at least two frames."""
    return [np.flatnonzero(clip.segment == s) for s in np.unique(clip.segment)
            if (clip.segment == s).sum() >= 2]


@dataclass
class Sample:
    image: torch.Tensor  # (6, P, P): warped | reference, [0, 1]
    cond: torch.Tensor  # (5, P/2, P/2)
    target: torch.Tensor  # (3, P, P)


def coded(image: np.ndarray, quality: int) -> np.ndarray:
    """The picture as the receiver gets a keyframe: through the keyframe codec (its fast
    setting, which the shipped weights were trained on)."""
    from facecodec.codec.keyframe import round_trip

    return round_trip(image, quality, fast=True)


def make_sample(
    clip: ClipData, src: int, drv: int, cond: Conditioner, rng: np.random.Generator | None,
    patch: int = SIZE, ref_quality: tuple[int, int] | None = None,
) -> Sample:
    """One pair, warped; with `rng`: a random patch, horizontal flip and colour jitter;
    with `ref_quality` too: the reference through the keyframe codec at a random quality
    in that range, as the receiver has it."""
    ref, tgt = np.asarray(clip.crops[src]), np.asarray(clip.crops[drv])
    if rng is not None and ref_quality is not None:
        ref = coded(ref, int(rng.integers(ref_quality[0], ref_quality[1] + 1)))
    cond.set_reference(ref, clip.points[src])
    warped, c = cond(clip.points[drv])
    img = np.concatenate([warped, ref, tgt], axis=-1).astype(np.float32) * (1.0 / 255.0)
    if rng is not None:
        n = img.shape[0]
        y, x = (rng.integers(0, (n - patch) // 2 + 1, size=2) * 2).tolist()
        img = img[y:y + patch, x:x + patch]
        c = c[y // 2:(y + patch) // 2, x // 2:(x + patch) // 2]
        if rng.random() < 0.5:
            img, c = img[:, ::-1], c[:, ::-1].copy()
            c[..., 0] *= -1.0  # horizontal displacement changes sign
        gain = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
        bias = rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
        img = np.clip(img * np.tile(gain, 3) + np.tile(bias, 3), 0.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    return Sample(t[:6].contiguous(), torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1)
                  .contiguous(), t[6:].contiguous())


class PairSampler:
    """Endless random pairs: a clip uniformly, a segment, two distinct frames of it. With
    `min_opening`, pairs whose mouth uncovers less (`Conditioner.opening`) are drawn again, up to
    MAX_TRIES times: a refiner gated on the opening learns nothing from them."""

    MAX_TRIES = 40

    def __init__(self, clips: list[ClipData], seed: int | Sequence[int], patch: int,
                 ref_quality: tuple[int, int] | None = None, min_opening: float = 0.0) -> None:
        self.items = [(c, s) for c in clips for s in segment_pairs(c)]
        if not self.items:
            raise ValueError("no clip has a segment with two frames")
        self.rng = np.random.default_rng(seed)
        self.patch = patch
        self.ref_quality = ref_quality
        self.min_opening = min_opening
        self.cond = Conditioner(SIZE)

    def _pair(self) -> tuple[ClipData, int, int]:
        clip, rows = self.items[int(self.rng.integers(len(self.items)))]
        src, drv = self.rng.choice(rows, size=2, replace=False)
        return clip, int(src), int(drv)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        samples = []
        for _ in range(n):
            clip, src, drv = self._pair()
            for _ in range(self.MAX_TRIES if self.min_opening > 0 else 0):
                if self.cond.opening(clip.points[src], clip.points[drv]) >= self.min_opening:
                    break
                clip, src, drv = self._pair()
            samples.append(make_sample(clip, src, drv, self.cond, self.rng, self.patch,
                                       self.ref_quality))
        return stack(samples)

    def batches(self, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Endless batches of `n` pairs."""
        while True:
            yield self.batch(n)


class PairStream(IterableDataset):
    """Endless batches from worker processes (a DataLoader with `batch_size=None` and a fork
    server: workers forked from the training process can deadlock on its OpenCV threads,
    and spawned ones abort in C++ teardown when the loader stops them): each worker
    draws with its own PairSampler seeded by (seed, worker, start step), so a resumed run
    does not redraw the pairs it began with. Warping runs on the CPU (10-22 ms a pair),
    which alone cannot keep a GPU busy."""

    def __init__(self, clips: list[ClipData], seed: int, start_step: int, batch: int,
                 patch: int, ref_quality: tuple[int, int] | None, min_opening: float) -> None:
        self.clips, self.seed, self.start_step = clips, seed, start_step
        self.batch_size, self.patch = batch, patch
        self.ref_quality, self.min_opening = ref_quality, min_opening

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        sampler = PairSampler(self.clips, [self.seed, worker, self.start_step], self.patch,
                              self.ref_quality, self.min_opening)
        return sampler.batches(self.batch_size)

    def batches(self, workers: int, pin_memory: bool = False) -> Iterator[
            tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Endless batches drawn by `workers` processes (the start method: class docstring)."""
        return iter(DataLoader(self, batch_size=None, num_workers=workers, prefetch_factor=4,
                               pin_memory=pin_memory, multiprocessing_context="forkserver",
                               timeout=300))


def stack(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cl = torch.channels_last
    return (torch.stack([s.image for s in samples]).contiguous(memory_format=cl),
            torch.stack([s.cond for s in samples]).contiguous(memory_format=cl),
            torch.stack([s.target for s in samples]).contiguous(memory_format=cl))


def validation_pairs(clips: list[ClipData], per_clip: int) -> Iterator[Sample]:
    """Fixed full-frame pairs: each segment's first frame drives `per_clip` evenly spaced
    later frames of the clip (the receiver's situation: keyframe -> following frames)."""
    cond = Conditioner(SIZE)
    for clip in clips:
        segs = segment_pairs(clip)
        if not segs:
            continue
        rows = segs[0]
        for drv in rows[np.linspace(1, len(rows) - 1, min(per_clip, len(rows) - 1)).astype(int)]:
            yield make_sample(clip, int(rows[0]), int(drv), cond, None)
