"""PSNR of a single picture, light enough for the encoder (no torch, no metric models)."""

from __future__ import annotations

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])


def image_psnr_y(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB of the full-range BT.601 luma of two RGB images: a quick score for single
    pictures (keyframe tables, the encoder's choice of reference); clips are scored on
    FFmpeg's Y plane (`facecodec.bench.metrics.luma`)."""
    d = ref.astype(np.float64) @ _LUMA - rec.astype(np.float64) @ _LUMA
    return float(10 * np.log10(255.0**2 / max(float(np.mean(d * d)), 1e-10)))
