"""What a system under test hands the bench: decoded frames and what they cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecodec.bench.reference import ReferenceClip


@dataclass(frozen=True, eq=False)
class SystemPoint:
    """One rate point of one system on one clip.

    bytes_all: every byte the receiver gets (for a conventional codec: the whole
    elementary stream; for facecodec: reference picture plus motion packets).
    bytes_net: minus what a decoder does not need (encoder-settings SEI, AV1 temporal
    delimiters); equal to bytes_all where nothing is dispensable.
    bytes_steady: net bytes without the first keyframe / reference picture, spread over
    frames 1..T-1: what a long call pays per second once the picture is there.
    y: the decoded Y plane [T, H, W] when the system decodes to YUV; metrics then score it
    as is instead of converting RGB back.
    """

    system: str
    setting: str
    frames: np.ndarray
    bytes_all: int
    bytes_net: int
    bytes_steady: int
    y: np.ndarray | None = None
    # Settings of one family can be tuned between their points; a system with several is
    # compared along the cheapest at each quality (bench/curves.py `frontier`).
    family: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.bytes_steady <= self.bytes_net <= self.bytes_all:
            raise ValueError(
                f"{self.system} {self.setting}: need 0 <= steady <= net <= all bytes, got "
                f"{self.bytes_steady}, {self.bytes_net}, {self.bytes_all}"
            )

    def kbps(self, fps: float) -> dict[str, float]:
        """Rates in kbit/s: all and net over the clip, steady over frames 1..T-1."""
        t = len(self.frames)
        dur = t / fps
        steady_dur = max(t - 1, 1) / fps
        return {
            "kbps_all": self.bytes_all * 8 / dur / 1000,
            "kbps_net": self.bytes_net * 8 / dur / 1000,
            "kbps_steady": self.bytes_steady * 8 / steady_dur / 1000,
        }


@dataclass(frozen=True)
class Skipped:
    """A setting a system could not code this clip at (`why`, one line): the bench says so
    and records it, and the report's mean curves leave the setting out."""

    system: str
    setting: str
    why: str


# The plug-in point for the codec under test: given the reference clip (and the source
# file, for systems that crop or track on their own), return one point per rate setting,
# each with exactly as many decoded frames as the reference has, or a Skipped in its place.
SystemFn = Callable[[ReferenceClip, Path], Sequence[SystemPoint | Skipped]]
