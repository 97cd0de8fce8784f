"""The motion around the face, measured by the sender and drawn by the receiver.

Why it is sent: the face landmarks say nothing about the rest of the crop, and that is most
of the picture. On the 6 validation clips (unquantised Motions, the mesh warp inside the
face) pasting the true pixels outside the face oval raised VMAF from 44.9 to 82.6, inside it
only to 55.6. How the outside moves differs per clip: a still background, shoulders that
shift, hair that turns with the head, a car window passing by; the warp's fixed rings guess
one compromise for all, and a network that guessed from the reference picture did no better
on validation (docs/neural_renderer.md). The sender sees the truth, so it measures it:
optical flow from the frame to the reference (OpenCV's DIS at half resolution, ~2 ms),
averaged over the pixels outside the (dilated) face in each cell of a SURROUND_GRID^2 grid.
The receiver interpolates the cell values bilinearly to a dense backward map and uses it
outside the face oval, the mesh warp's map inside. With the true flow fitted this way
(unquantised) VMAF rose from 44.9 to 46.7 with one affine map, 54.0 with a 4x4 grid and 57.2
with 6x6.

Coded, on the bench's motion-only rungs (validation, warp renderer, mean of 6 clips; kbps
of the whole stream / VMAF at the low, medium and high presets; surround steps of half a
pixel times the preset's step multiplier, except the last two rows):

| grid | low | medium | high |
|---|---|---|---|
| none | 6.20 / 41.1 | 11.17 / 44.0 | 19.34 / 45.0 |
| 4x4 | 7.13 / 48.1 | 12.53 / 51.6 | 21.06 / 52.5 |
| 6x6 | 8.30 / 50.9 | 14.22 / 55.0 | 23.23 / 56.0 |
| 8x8 | 9.93 / 52.2 | 16.67 / 56.4 | 26.30 / 57.5 |
| 6x6, 1 px steps, cells | 7.65 / 50.5 | 13.30 / 54.9 | 22.15 / 56.0 |
| 6x6, 1 px, as its DCT (shipped) | 7.48 / 50.2 | 13.17 / 54.7 | 22.00 / 56.1 |

6x6 is above 4x4 at every rate they share; 8x8 is level with it near 10 kbps and better only
above ~15 kbps, where the layer is better still. One-pixel steps give the same curve as
half-pixel ones and reach lower rates; two-pixel steps fall below it (low: 7.17 / 48.6).

Streams with a layer do not carry it: there it only moves a held layer picture over the
few frames to the next one, and cost more rate than it gave (facecodec/codec/encoder.py,
`SURROUND_BESIDE_LAYER`). A renderer whose picture is not the keyframe's (a held layer
picture) moves it by the difference of the two frames' surrounds (`Motion.surround_towards`).

Cells with no pixel outside the face (all face) carry the mean of the measured ones, so
the field is smooth where the receiver blends it with the face.
"""

from __future__ import annotations

import cv2
import numpy as np

from facecodec.motion.motion import SURROUND_GRID, SURROUND_SIZE
from facecodec.render import topology as topo

FLOW_SIDE = 128  # flow is measured at this side (2 ms with DIS "medium" on one core)
FACE_MARGIN = 0.035  # crop fraction the face is dilated by before measuring the outside
MIN_WEIGHT = 0.05  # a cell with less than this share outside the face takes the mean
_OVAL = list(topo.FACE_OVAL)


def face_mask(points: np.ndarray, size: int, side: int) -> np.ndarray:
    """The face oval of landmarks `points` (crop `size` px) filled at `side` px, float32 0/1
    (antialiased edge)."""
    m = np.zeros((side, side), np.uint8)
    oval = (np.asarray(points, dtype=np.float64)[_OVAL, :2] + 0.5) * (side / size) - 0.5
    cv2.fillPoly(m, [np.round(oval * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return m.astype(np.float32) * (1.0 / 255.0)


class SurroundMeter:
    """The sender's side: per frame, the surround against the current reference frame."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.ref: np.ndarray | None = None
        k = max(3, int(round(FACE_MARGIN * FLOW_SIDE)) * 2 + 1)
        self._dilate = np.ones((k, k), np.uint8)

    def _grey(self, image: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return cv2.resize(g, (FLOW_SIDE, FLOW_SIDE), interpolation=cv2.INTER_AREA)

    def set_reference(self, image: np.ndarray) -> None:
        self.ref = self._grey(image)

    def __call__(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """SURROUND_SIZE values (crop fractions) for the crop `image` with landmarks `points`."""
        if self.ref is None:
            raise RuntimeError("set_reference must be called first")
        f = self.flow.calc(self._grey(image), self.ref, None)  # frame -> reference, px
        face = face_mask(points, self.size, FLOW_SIDE)
        outside = 1.0 - cv2.dilate((face > 0).astype(np.uint8), self._dilate).astype(np.float32)
        g = SURROUND_GRID
        w = cv2.resize(outside, (g, g), interpolation=cv2.INTER_AREA)
        s = cv2.resize(f * outside[..., None], (g, g), interpolation=cv2.INTER_AREA)
        ok = w >= MIN_WEIGHT
        cells = np.zeros((g, g, 2), np.float64)
        cells[ok] = s[ok] / w[ok][:, None]
        if ok.any():
            cells[~ok] = cells[ok].mean(axis=0)
        return (cells / FLOW_SIDE).reshape(SURROUND_SIZE)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II: row k is a_k cos(pi (2 i + 1) k / 2n), i = 0..n-1."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


_DCT = _dct_matrix(SURROUND_GRID)


def surround_to_dct(surround: np.ndarray) -> np.ndarray:
    """The surround as the coder carries it (coder config version 4): per component (dx,
    dy), the orthonormal 2-D DCT of its grid, in the same layout (row = vertical frequency,
    column = horizontal). Neighbouring cells move together, so the energy gathers in few
    coefficients, and the stabiliser smooths each coefficient (facecodec/motion/stabilize.py).
    Against cells coded and smoothed as such, at the same step, on 11 train clips (steady
    kbps / VMAF): low preset 4.55 / 30.6 -> 4.21 / 31.2, medium 7.06 / 34.2 -> 6.77 / 34.3.
    Coarser steps at higher frequencies ((1 + (u + v) / 2) x) traded rate for quality
    along the same curve on train clips and fell below it on validation, so the steps are
    uniform."""
    g = SURROUND_GRID
    cells = np.asarray(surround, dtype=np.float64).reshape(g, g, 2)
    return np.einsum("ui,ijc,vj->uvc", _DCT, cells, _DCT).reshape(SURROUND_SIZE)


def surround_from_dct(coefficients: np.ndarray) -> np.ndarray:
    """The inverse of `surround_to_dct`."""
    g = SURROUND_GRID
    c = np.asarray(coefficients, dtype=np.float64).reshape(g, g, 2)
    return np.einsum("ui,uvc,vj->ijc", _DCT, c, _DCT).reshape(SURROUND_SIZE)


def surround_map(surround: np.ndarray, side: int, size: int) -> np.ndarray:
    """The dense backward displacement (side, side, 2) in crop px (`size`) of a surround."""
    g = SURROUND_GRID
    cells = (np.asarray(surround, dtype=np.float32).reshape(g, g, 2) * size).astype(np.float32)
    return cv2.resize(cells, (side, side), interpolation=cv2.INTER_LINEAR)
