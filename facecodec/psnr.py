"""PSNR of a single picture, light enough for the encoder (no torch, no metric models)."""

from __future__ import annotations

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])


def picture_luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 luma of an RGB picture (or of differences of pictures), float64:
    for single pictures the encoder judges; clips are scored on FFmpeg's Y plane
    (`facecodec.bench.metrics.luma`)."""
    return rgb.astype(np.float64) @ _LUMA


def image_psnr_y(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB of the full-range BT.601 luma of two RGB images: a quick score for single
    pictures (keyframe tables, the encoder's choice of reference)."""
    d = picture_luma(ref) - picture_luma(rec)
    return float(10 * np.log10(255.0**2 / max(float(np.mean(d * d)), 1e-10)))
