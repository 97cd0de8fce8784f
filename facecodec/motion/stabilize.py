"""Temporal stabilisation of the tracked face before coding.

MediaPipe landmarks jitter by 0.2-0.4 px per frame; warping with that jitter looks worse
than a still picture on a calm face. A One Euro filter (Casiez et al., CHI 2012) removes it
without lagging fast motion: its cutoff rises with the filtered speed, so a still face is
smoothed hard and a fast mouth passes almost unfiltered. It runs on the Motion vector
(pose, gaze, openness, expression) because those few numbers are what the receiver sees,
and it is causal so that a live call can use it; a file, whose frames are all there, runs it
backwards too and takes the mean, which does not lag (`analysis.stabilise`).

How hard to smooth depends on what the motion is coded beside. Every frame's fit is kept
unsmoothed by the analysis and the encoder stabilises the events for the stream it codes
(`analysis.stabilise`). Motion alone is the whole picture, and a filter that follows moving
features quickly (beta 0.4) is worth its bits at fine quantisers: on the 6 validation
clips, unquantised, it drew the warp with AKD 0.91 px instead of 1.68 and VMAF 44.8
instead of 42.9 against the slow filter (beta 0.02), for 35-46 % more motion bits.
Beside a layer the motion only moves held layer pictures between the layer's own; there
dropping the filter altogether lost VMAF at the same layer rate, so the slow filter stays.
"""

from __future__ import annotations

import math

import numpy as np

from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import FIXED_SIZE, SURROUND_SIZE, Motion
from facecodec.motion.surround import surround_from_dct, surround_to_dct

PX = 1 / 60  # one pixel at 256x256 in canonical units (a face ~60 px in radius)


def pixel_units(basis: ExpressionBasis, k: int) -> np.ndarray:
    """For each Motion dimension, the change that moves some landmark by about 1 px at 256."""
    comp = basis.components[:k].reshape(k, -1, 3)[:, :, :2]
    per_mode = np.sqrt((comp**2).sum(-1)).max(1)  # largest point displacement per unit
    fixed = [PX] * 3 + [1 / 256] * 2 + [PX] + [PX] * 4 + [PX] * 3
    return np.concatenate([fixed, PX / np.maximum(per_mode, 1e-6)])


class OneEuro:
    """Vectorised One Euro filter; speeds are measured in pixel units per second."""

    def __init__(
        self,
        units: np.ndarray,
        fps: float,
        min_cutoff: float = 0.2,
        beta: float = 0.02,
        d_cutoff: float = 4.0,
    ) -> None:
        self.units = np.asarray(units, dtype=np.float64)
        self.te = 1.0 / fps
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx = np.zeros_like(self.units)

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.te)

    def reset(self) -> None:
        self.x = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64) / self.units
        if self.x is None:
            self.x, self.dx = x, np.zeros_like(x)
            return x * self.units
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * (x - self.x) / self.te + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        a = self._alpha(cutoff)
        self.x = a * x + (1 - a) * self.x
        return self.x * self.units


# One Euro speed coefficients (min_cutoff stays 0.2 Hz, so a still face is smoothed hard).
QUICK_BETA = 0.4  # motion alone, quantised at the medium preset's steps or finer
SLOW_BETA = 0.02  # beside a layer, or quantised as coarsely as the lowest preset
SLOW_STEP_MUL, QUICK_STEP_MUL = 2.5, 1.0


def beta_for(step_mul: float | None, beside_layer: bool) -> float:
    """The filter's speed coefficient for motion quantised with this step multiplier
    (coder.py's presets: lowest 2.5, low 1.6, medium 1.0, high 0.6), alone or beside a
    layer. Coarse steps turn what the quick filter keeps into rate more than into
    quality (the low preset gained 0.9 VMAF for 35 % more motion bits, less than moving up
    to the medium preset gives), so between the two step sizes beta falls geometrically."""
    if beside_layer:
        return SLOW_BETA
    mul = 1.0 if step_mul is None else step_mul
    t = min(max((SLOW_STEP_MUL - mul) / (SLOW_STEP_MUL - QUICK_STEP_MUL), 0.0), 1.0)
    return SLOW_BETA * (QUICK_BETA / SLOW_BETA) ** t


class MotionStabiliser:
    """One Euro over Motions of a fixed expression size, and over their surround (its own
    filter, the same settings, 1 px at 256 as its unit) as the coder carries it: per DCT
    coefficient, so the filter follows the few large coefficients of a real motion and
    holds the small, noisy ones still. Filtering the cells instead gave the coded DCT
    hardly anything over coded cells (11 train clips, low preset, steady kbps / VMAF: cells
    4.55 / 30.6, DCT of filtered cells 4.52 / 30.7, filtered DCT 4.21 / 31.2)."""

    def __init__(self, basis: ExpressionBasis, k: int, fps: float, **kw: float) -> None:
        self.k = k
        self.filter = OneEuro(pixel_units(basis, k), fps, **kw)
        self.surround = OneEuro(np.full(SURROUND_SIZE, 1 / 256), fps, **kw)

    def reset(self) -> None:
        """Forget the past (a new crop or a face that reappeared: no smoothing across it)."""
        self.filter.reset()
        self.surround.reset()

    def __call__(self, m: Motion) -> Motion:
        v = m.to_vector()[: FIXED_SIZE + self.k]
        sur = None
        if len(m.surround):  # per DCT coefficient: see the class docstring
            sur = surround_from_dct(self.surround(surround_to_dct(m.surround)))
        return Motion.from_vector(self.filter(v), sur)
