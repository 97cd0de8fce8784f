"""The still-picture system: frame 0 as a JPEG, shown for the whole clip.

It is the floor any motion-driven codec must beat (BASELINES.md: "static frame 0"): it
costs only the reference picture and carries no motion at all.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facecodec.bench.reference import ReferenceClip
from facecodec.bench.system import SystemFn, SystemPoint


def still_system(qualities: tuple[int, ...] = (30, 60, 90), name: str = "still") -> SystemFn:
    """A `SystemFn` sending frame 0 once as a JPEG at each quality, then nothing."""

    def run(ref: ReferenceClip, source: Path) -> list[SystemPoint]:
        del source
        points = []
        bgr = cv2.cvtColor(ref.frames[0], cv2.COLOR_RGB2BGR)
        for q in qualities:
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            frame = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            frames = np.repeat(frame[None], len(ref.frames), axis=0)
            n = int(data.size)
            points.append(SystemPoint(name, f"jpeg_q={q}", frames, n, n, 0))
        return points

    run.__name__ = name
    return run
