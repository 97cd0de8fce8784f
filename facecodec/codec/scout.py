"""A call's reference picture, chosen as it goes (causal).

A file encoder picks each segment's picture from the whole segment (codec/reference.py).
A call cannot look ahead: it must start from the frame where the face first appears, which
may catch it mid-blink or mid-word. The scout keeps a few recent crops of the segment
(one every `SAMPLE_S` over the last `WINDOW_S`), and every `PERIOD_S` measures how well
each of them, and the picture the receiver has, would draw the others (the mesh warp, mean
PSNR-Y; a candidate never scores itself). When a recent crop draws the recent frames better
by at least `MARGIN_DB`, it is sent as a refresh keyframe (reason "refresh", `picture_index`
the frame it shows): the recent past is the best guess at the near future.

The measuring is spread over the frames, `WORK` units a frame (a warp's set-up, about 18 ms
on one core, or one drawing, about 7 ms; both hardly depend on the size), so the sender's
frame time stays flat: a look at 7 pictures x 12 probes takes 91 frames, about 3 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion
from facecodec.psnr import image_psnr_y
from facecodec.render.warp import WarpRenderer

SAMPLE_S = 0.2  # one crop kept every ...
WINDOW_S = 6.0  # ... over the last ...
FIRST_S = 2.0  # first look this long after a segment starts
PERIOD_S = 4.0  # then one look every ... (from the end of the last)
CANDIDATES = 6  # recent crops tried as the picture, beside the receiver's
PROBES = 12  # recent crops each is drawn into
MARGIN_DB = 1.0  # a candidate must win by this much to be sent
MIN_GAP_S = 10.0  # at most one refresh of the scout's per ... (a keyframe costs 2-4 KB)
WORK = 1  # units of measuring a frame


def spread(items: list[int], n: int) -> list[int]:
    """At most `n` of `items`, evenly spaced, first and last included."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


@dataclass
class Sample:
    index: int
    picture: np.ndarray  # the crop
    motion: Motion  # without surround


@dataclass
class _Look:
    """One measurement in progress: every candidate drawn into every probe."""

    candidates: list[Sample]  # the receiver's picture first
    probes: list[Sample]
    scores: list[list[float]] = field(default_factory=list)  # per candidate set up so far
    c: int = 0
    p: int = 0


class ReferenceScout:
    """Feed it the segment's frames; `take()` says when a recent crop should be sent."""

    def __init__(self, basis: ExpressionBasis, size: int, fps: float) -> None:
        self.warp = WarpRenderer(basis, size)
        self.every = max(1, round(SAMPLE_S * fps))
        self.window = round(WINDOW_S * fps)
        self.first, self.period = round(FIRST_S * fps), round(PERIOD_S * fps)
        self.min_gap = round(MIN_GAP_S * fps)
        self.current: Sample | None = None  # the picture the receiver draws from
        self.samples: list[Sample] = []
        self.look: _Look | None = None
        self.next_look = 0
        self.pick: Sample | None = None

    def _sample(self, index: int, picture: np.ndarray, motion: Motion) -> Sample:
        # Scored without the surround: the same for every candidate, and a keyframe's
        # Motion sets it from its own picture.
        return Sample(index, picture, motion.with_surround(np.zeros(0)))

    def restart(self, index: int, picture: np.ndarray, motion: Motion) -> None:
        """A keyframe not of the scout's choosing: a new segment (the crop may have moved)."""
        self.current = self._sample(index, picture, motion)
        self.samples, self.look, self.pick = [], None, None
        self.next_look = index + self.first

    def adopted(self, pick: Sample, index: int) -> None:
        """The scout's pick went out as the keyframe of frame `index`; same crop, so the
        samples stay."""
        self.current, self.pick = pick, None
        self.next_look = index + self.min_gap

    def wants(self, index: int) -> bool:
        return self.current is not None and (
            not self.samples or index - self.samples[-1].index >= self.every)

    def add(self, index: int, picture: np.ndarray, motion: Motion) -> None:
        self.samples.append(self._sample(index, picture, motion))
        self.samples = [s for s in self.samples if index - s.index < self.window]

    def take(self) -> Sample | None:
        pick, self.pick = self.pick, None
        return pick

    def step(self, index: int) -> None:
        """Do this frame's share of the measuring."""
        if self.current is None:
            return
        if self.look is None:
            if index < self.next_look or len(self.samples) < 3:
                return
            recent = [s.index for s in self.samples if s.index != self.current.index]
            by_index = {s.index: s for s in self.samples}
            self.look = _Look([self.current, *(by_index[i] for i in spread(recent, CANDIDATES))],
                              [by_index[i] for i in spread(list(by_index), PROBES)])
        look = self.look
        for _ in range(WORK):
            cand = look.candidates[look.c]
            if len(look.scores) == look.c:
                self.warp.set_reference(cand.picture, cand.motion)
                look.scores.append([])
                continue
            probe = look.probes[look.p]
            if probe.index != cand.index:
                look.scores[-1].append(image_psnr_y(probe.picture, self.warp.render(probe.motion)))
            look.p += 1
            if look.p == len(look.probes):
                look.c, look.p = look.c + 1, 0
                if look.c == len(look.candidates):
                    self._decide(index)
                    return

    def _decide(self, index: int) -> None:
        assert self.look is not None
        means = [float(np.mean(s)) if s else -np.inf for s in self.look.scores]
        best = int(np.argmax(means[1:])) + 1
        if means[best] - means[0] >= MARGIN_DB:
            self.pick = self.look.candidates[best]
        self.look = None
        self.next_look = index + self.period
