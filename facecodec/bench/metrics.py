"""Quality metrics between a reference clip and its reconstruction.

Pixel fidelity (PSNR-Y, MS-SSIM, VMAF) follows what codec papers report; face-specific
metrics (AKD, AED, temporal jitter) follow the talking-head literature, where pixel
metrics miss a wrong expression or a changed identity.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from facecodec.bench.landmarks import track_landmarks
from facecodec.psnr import image_psnr_y  # noqa: F401  (re-exported: single pictures)

if TYPE_CHECKING:
    import dlib
    from vmaf_torch import VMAF

PSNR_CAP = 100.0  # identical frames: FFmpeg says inf; a cap keeps means finite
ALL_METRICS = ("psnr_y", "ms_ssim", "vmaf", "akd", "aed", "jitter")
# A sampled metric must not alias with a stream's period: facecodec's layer draws a
# fresh picture every 1st to 5th frame and moves it over the frames between, and scoring
# every 3rd frame saw only fresh pictures of a 1-in-3 layer (validation means VMAF +4.5
# and +3.8 on those two rungs, up to +10.5 on one clip). VMAF and MS-SSIM score every
# frame; the costly identity embeddings (dlib) every 7th, prime to every layer period.
SAMPLING: dict[str, int] = {"vmaf_every": 1, "ssim_every": 1, "aed_every": 7}
# Higher is better for these; lower for the rest (distances).
HIGHER_IS_BETTER = {"psnr_y": True, "ms_ssim": True, "vmaf": True,
                    "akd": False, "aed": False, "jitter": False}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    The metrics are small convolutions; on a 2-core machine shared with other work, torch's
    thread pool spends its time waiting for cores (VMAF measured 5x slower with 2 threads
    than with 1 under load), and the bench is a batch job that gains little from it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def luma(frames: np.ndarray) -> np.ndarray:
    """Y plane [T, H, W] uint8 of RGB frames as FFmpeg's rgb24 -> yuv420p makes it.

    swscale's default is BT.601 limited range; using it (through PyAV) rather than a
    formula keeps PSNR and VMAF identical to FFmpeg's for the same pictures.
    """
    import av

    out = np.empty(frames.shape[:3], np.uint8)
    h = frames.shape[1]
    for i, f in enumerate(frames):
        yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        out[i] = yuv.reformat(format="yuv420p").to_ndarray()[:h]
    return out


def psnr_y(ref_y: np.ndarray, rec_y: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of Y planes [T, H, W], capped at PSNR_CAP."""
    d = ref_y.astype(np.float64) - rec_y.astype(np.float64)
    mse = (d * d).reshape(len(d), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        p = 10 * np.log10(255.0**2 / mse)
    return np.minimum(p, PSNR_CAP)


def ms_ssim(ref: np.ndarray, rec: np.ndarray, batch: int = 16) -> np.ndarray:
    """Per-frame MS-SSIM of RGB frames [T, H, W, 3] uint8, computed on RGB in [0, 1]."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    out = []
    with torch.no_grad(), single_thread():
        for i in range(0, len(ref), batch):
            a = torch.from_numpy(ref[i : i + batch]).permute(0, 3, 1, 2).float() / 255
            b = torch.from_numpy(rec[i : i + batch]).permute(0, 3, 1, 2).float() / 255
            out.append(_ms_ssim(a, b, data_range=1.0, size_average=False).numpy())
    return np.concatenate(out).astype(np.float64)


@lru_cache(maxsize=1)
def _vmaf_model() -> VMAF:
    from vmaf_torch import VMAF

    # vmaf_torch ships vmaf_v0.6.1 as its default model: nothing is downloaded.
    model = VMAF(temporal_pooling=False, enable_motion=True, clip_score=True)
    return model.eval()


def vmaf_motion2(ref_y: np.ndarray, chunk: int = 64) -> np.ndarray:
    """VMAF's motion2 feature [T, 1] of the reference: it depends on the reference alone,
    so it is computed once per clip, not once per system point."""
    model = _vmaf_model()
    t = len(ref_y)
    out = np.empty((t, 1), np.float32)
    with torch.no_grad(), single_thread():
        for start in range(0, t, chunk):
            # motion2 of frame i needs frames i-1 and i+1: chunks overlap by one frame
            # each side and drop the overlap, so the result equals one pass.
            stop = min(t, start + chunk)
            lo, hi = max(0, start - 1), min(t, stop + 1)
            m = model.compute_motion2(torch.from_numpy(ref_y[lo:hi]).float()[:, None])
            out[start:stop] = m.numpy()[start - lo : start - lo + stop - start]
    return out


def vmaf(
    ref_y: np.ndarray,
    rec_y: np.ndarray,
    every: int = 1,
    motion2: np.ndarray | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """Per-frame VMAF (vmaf_v0.6.1) of Y planes [T, H, W]; NaN on frames not scored.

    every > 1 scores every n-th frame, like libvmaf's --subsample: motion2 still comes
    from consecutive reference frames, only the costly ADM and VIF features are sampled.
    """
    model = _vmaf_model()
    m2 = vmaf_motion2(ref_y) if motion2 is None else motion2
    idx = np.arange(0, len(ref_y), max(1, every))
    scores = np.full(len(ref_y), np.nan)
    with torch.no_grad(), single_thread():
        for k in range(0, len(idx), chunk):
            sel = idx[k : k + chunk]
            a = torch.from_numpy(ref_y[sel]).float()[:, None]
            b = torch.from_numpy(rec_y[sel]).float()[:, None]
            adm = model.compute_adm_score(a, b)
            vif = model.compute_vif_features(a, b)
            s = model.predict(adm, torch.from_numpy(m2[sel]), vif)
            scores[sel] = s.reshape(-1).numpy()
    return scores


def landmark_distance(ref_lm: np.ndarray, rec_lm: np.ndarray) -> np.ndarray:
    """Per-frame mean landmark distance in px (NaN where either frame has no face)."""
    return np.linalg.norm(ref_lm - rec_lm, axis=2).mean(axis=1)


def landmark_jitter(ref_lm: np.ndarray, rec_lm: np.ndarray) -> np.ndarray:
    """Per-frame mean |v_rec - v_ref| of landmark velocities in px/frame (frame 0: NaN).

    A reconstruction can sit close to the right landmarks on average yet shake around
    them; this isolates that temporal error, which viewers notice first.
    """
    out = np.full(len(ref_lm), np.nan)
    if len(ref_lm) > 1:
        v_ref = np.diff(ref_lm, axis=0)
        v_rec = np.diff(rec_lm, axis=0)
        out[1:] = np.linalg.norm(v_rec - v_ref, axis=2).mean(axis=1)
    return out


@lru_cache(maxsize=1)
def _dlib_models() -> tuple[dlib.shape_predictor, dlib.face_recognition_model_v1]:
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    return shape, rec


def face_embeddings(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """128-d dlib identity embeddings [N, 128] of RGB frames, each in its face box.

    Boxes (x0, y0, x1, y1) come from the reference's landmarks, so the original and the
    reconstruction are described from the same region and no detector can miss a face.
    """
    import dlib

    shape_pred, rec = _dlib_models()
    out = np.full((len(frames), 128), np.nan)
    for i, (img, box) in enumerate(zip(frames, boxes, strict=True)):
        if np.isnan(box).any():
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = dlib.rectangle(x0, y0, x1, y1)
        rgb = np.ascontiguousarray(img)
        shape = shape_pred(rgb, rect)
        out[i] = np.array(rec.compute_face_descriptor(rgb, shape))
    return out


def landmark_boxes(lm: np.ndarray) -> np.ndarray:
    """Face box (x0, y0, x1, y1) per frame from landmarks [T, N, 2]; NaN where no face."""
    return np.concatenate([lm.min(axis=1), lm.max(axis=1)], axis=1)


@dataclass
class ReferenceFeatures:
    """What the metrics need from the reference, computed once per clip and reused for
    every system and ladder point, with the frame sampling that bounds the bench's cost
    (the sampled metrics are the slow ones: VMAF ~50 ms, MS-SSIM ~20 ms, dlib ~70 ms a
    frame on 2 cores)."""

    frames: np.ndarray
    y: np.ndarray
    landmarks: np.ndarray
    motion2: np.ndarray
    vmaf_every: int
    ssim_every: int
    aed_index: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def compute(
        cls, frames: np.ndarray, vmaf_every: int = 1, ssim_every: int = 1, aed_every: int = 5
    ) -> ReferenceFeatures:
        lm = track_landmarks(frames)
        y = luma(frames)
        idx = np.arange(0, len(frames), max(1, aed_every))
        emb = face_embeddings(frames[idx], landmark_boxes(lm[idx]))
        return cls(frames, y, lm, vmaf_motion2(y), max(1, vmaf_every), max(1, ssim_every), idx, emb)

    @classmethod
    def pixels(cls, frames: np.ndarray) -> ReferenceFeatures:
        """What PSNR, MS-SSIM and VMAF need, every frame (no landmarks or face embeddings)."""
        y = luma(frames)
        none = np.empty(0)
        return cls(frames, y, none, vmaf_motion2(y), 1, 1, none, none)


@dataclass
class Scores:
    """Per-clip means (`mean`) and per-frame values (`frames`) of every metric computed."""

    mean: dict[str, float] = field(default_factory=dict)
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    no_face_frames: list[int] = field(default_factory=list)


def _nanmean(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def evaluate(
    ref: ReferenceFeatures,
    rec: np.ndarray,
    rec_y: np.ndarray | None = None,
    metrics: tuple[str, ...] = ALL_METRICS,
) -> Scores:
    """Scores of reconstruction `rec` [T, H, W, 3] uint8 against the reference.

    rec_y: the decoded Y plane when a system produces YUV (conventional codecs): scoring
    it directly avoids a lossy YUV -> RGB -> YUV round trip.
    """
    if rec.shape != ref.frames.shape:
        raise ValueError(f"reconstruction {rec.shape} does not match reference {ref.frames.shape}")
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics: {sorted(unknown)}")
    s = Scores()
    y = rec_y if rec_y is not None else (luma(rec) if {"psnr_y", "vmaf"} & set(metrics) else None)
    if "psnr_y" in metrics:
        assert y is not None  # rec_y, or rec's luma for these metrics
        s.frames["psnr_y"] = psnr_y(ref.y, y)
    if "ms_ssim" in metrics:
        sel = slice(None, None, ref.ssim_every)
        per = np.full(len(rec), np.nan)
        per[sel] = ms_ssim(ref.frames[sel], rec[sel])
        s.frames["ms_ssim"] = per
    if "vmaf" in metrics:
        assert y is not None  # rec_y, or rec's luma for these metrics
        s.frames["vmaf"] = vmaf(ref.y, y, ref.vmaf_every, ref.motion2)
    if {"akd", "jitter"} & set(metrics):
        rec_lm = track_landmarks(rec)
        missing = np.isnan(rec_lm[:, :, 0]).any(axis=1) & ~np.isnan(ref.landmarks[:, :, 0]).any(
            axis=1
        )
        s.no_face_frames = [int(i) for i in np.flatnonzero(missing)]
        if "akd" in metrics:
            s.frames["akd"] = landmark_distance(ref.landmarks, rec_lm)
        if "jitter" in metrics:
            s.frames["jitter"] = landmark_jitter(ref.landmarks, rec_lm)
    if "aed" in metrics:
        emb = face_embeddings(rec[ref.aed_index], landmark_boxes(ref.landmarks[ref.aed_index]))
        s.frames["aed"] = np.linalg.norm(emb - ref.embeddings, axis=1)
    s.mean = {k: _nanmean(v) for k, v in s.frames.items()}
    return s
