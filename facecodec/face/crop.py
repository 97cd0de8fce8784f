"""The square face crop: fixed between keyframes, re-centred when the face drifts.

A crop that follows the face every frame would jitter and would make the background move;
a crop fixed for the whole clip loses a face that walks away. So the crop stays put and a
new one (with a new keyframe) is chosen only when the face nears its edge or changes size a
lot, with a VoxCeleb-style margin that leaves room for ordinary head motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MARGIN = 1.8  # crop side / face landmark box side; room for head turns and hair
DRIFT = 0.14  # re-centre when the face centre moves this fraction of the side off-centre
ZOOM = 1.35  # ... or when the face grows or shrinks by this factor


def drifted(
    anchor: tuple[float, float], anchor_size: float, centre: tuple[float, float], size: float,
    side: float,
) -> bool:
    """Has the face moved or scaled enough since its crop was chosen to need a new one?
    Measured from where the face was (not from the crop centre, which may have been shifted
    to stay inside the frame)."""
    off = max(abs(centre[0] - anchor[0]), abs(centre[1] - anchor[1])) / side
    ratio = size / max(anchor_size, 1e-6)
    return off > DRIFT or not (1 / ZOOM < ratio < ZOOM)


@dataclass(frozen=True)
class CropBox:
    """Square region of the source frame, in source pixels (may extend past its edges)."""

    x: float
    y: float
    side: float

    @classmethod
    def around(
        cls, centre: tuple[float, float], face_size: float, frame: tuple[int, int] | None = None
    ) -> CropBox:
        """Square of MARGIN x the face around it. Given the frame's (width, height), the
        square is shrunk and shifted to stay inside the frame where the face allows, since
        edge-replicated borders look like streaks and cost bits in every codec."""
        side = max(face_size * MARGIN, 16.0)
        x, y = centre[0] - side / 2, centre[1] - side / 2
        if frame is not None:
            w, h = frame
            side = max(min(side, float(min(w, h))), min(face_size * 1.25, side))
            x, y = centre[0] - side / 2, centre[1] - side / 2
            if side <= w:
                x = min(max(x, 0.0), w - side)
            if side <= h:
                y = min(max(y, 0.0), h - side)
        return cls(x, y, side)

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Source-pixel landmarks (N,3) to crop pixels; z scales like x."""
        k = size / self.side
        out = points.astype(np.float64) * k
        out[:, 0] -= self.x * k
        out[:, 1] -= self.y * k
        return out

    def cut(self, frame: np.ndarray, size: int) -> np.ndarray:
        """The crop resized to size x size. Where it leaves the frame (a face that fills the
        picture), the frame's edge is carried on blurred: replicated edge pixels alone make
        streaks across the picture, which every frame drawn from it shows."""
        h, w = frame.shape[:2]
        k = size / self.side
        m = np.array([[k, 0, -self.x * k], [0, k, -self.y * k]], dtype=np.float64)
        if k < 1:
            # Downscaling: pre-filter like INTER_AREA would, then sample.
            blur = cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            kb = (blur.shape[1] / frame.shape[1], blur.shape[0] / frame.shape[0])
            m = np.array([[k / kb[0], 0, -self.x * k], [0, k / kb[1], -self.y * k]])
            frame = blur
        out = cv2.warpAffine(
            frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        if self.x >= 0 and self.y >= 0 and self.x + self.side <= w and self.y + self.side <= h:
            return out
        # How far inside the frame's edges within the crop each pixel is, faded over `soft`
        # pixels on the inside so that no seam shows where the fill starts.
        soft = size / 32
        grid = (np.arange(size) + 0.5) * self.side / size
        along = []
        for o, n in ((self.x, w), (self.y, h)):
            near = np.full(size, np.inf)
            if o < 0:
                near = np.minimum(near, grid + o)
            if o + self.side > n:
                near = np.minimum(near, n - grid - o)
            along.append(np.clip(near * size / self.side / soft, 0, 1))
        inside = (along[1][:, None] * along[0][None, :]).astype(np.float32)[..., None]
        # The blur at 1/8 of the size and back: the same fill for a fraction of the cost.
        small = cv2.resize(out, (size // 8, size // 8), interpolation=cv2.INTER_AREA)
        fill = cv2.resize(cv2.GaussianBlur(small, (0, 0), size / 128), (size, size),
                          interpolation=cv2.INTER_LINEAR)
        return (inside * out + (1 - inside) * fill).round().astype(np.uint8)
