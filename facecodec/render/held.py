"""A layer picture brought to the frames after its own from the layer itself: moved on by
the layer's optical flow (packets.MOVE_FLOW) or faded into the next picture
(packets.MOVE_BETWEEN).

Between two layer pictures the receiver shows the latest one, brought to the current frame.
The flow from a picture back to the run's previous one says how the content moved over
those frames; carried on at the same speed it says where it is `age` frames later. This
costs no bytes and knows the whole picture (hair, shoulders, background), where the Motion
knows the face's landmarks only; the sender says per picture which way draws its frames
best (docs/layer.md, "Frames between layer pictures").
"""

from __future__ import annotations

import cv2
import numpy as np


class FlowMover:
    """Flow between consecutive layer pictures (DIS, OpenCV), computed once per picture."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._key: tuple[int, int] | None = None
        self._flow: np.ndarray | None = None
        self._grid: np.ndarray | None = None

    def flow(self, picture: np.ndarray, previous: np.ndarray,
             key: tuple[int, int] | None = None) -> np.ndarray:
        """For each pixel of `picture`, its displacement to where it was in `previous`
        (float32 [H, W, 2]); `key` names the pair, to reuse the flow for it."""
        if key is None or key != self._key or self._flow is None:
            grey = [cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in (picture, previous)]
            self._flow = self._dis.calc(grey[0], grey[1], None)
            self._key = key
        return self._flow

    def move(self, picture: np.ndarray, flow: np.ndarray, fraction: float) -> np.ndarray:
        """`picture` carried on by `fraction` of `flow` (the frames since it over the frames
        between it and the previous picture)."""
        h, w = flow.shape[:2]
        if self._grid is None or self._grid.shape[:2] != (h, w):
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = np.stack([gx, gy], axis=-1)
        where = self._grid + flow * np.float32(fraction)
        return cv2.remap(picture, where[..., 0], where[..., 1], cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)


def fade(picture: np.ndarray, following: np.ndarray, fraction: float) -> np.ndarray:
    """`picture` faded into the next picture by `fraction` (packets.MOVE_BETWEEN)."""
    return cv2.addWeighted(picture, 1.0 - fraction, following, fraction, 0.0)
