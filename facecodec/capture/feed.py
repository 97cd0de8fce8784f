"""A camera stand-in: a clip played into a named pipe in real time, which the capture path
(facecodec/capture/camera.py) opens as it opens a device. For tests and benchmarks of live
calls on machines without a camera."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import av
import numpy as np


class LiveFeed:
    """A named pipe that a thread fills with `frames` as raw video (YUV4MPEG) in real
    time, `fps` a second, as a webcam's driver delivers them; `written` counts them.
    `claimed_fps`: the rate the stream says it has, if not `fps` (a camera that slows down
    in low light keeps reporting its nominal rate)."""

    def __init__(self, path: Path, frames: list[np.ndarray], fps: float,
                 claimed_fps: float | None = None) -> None:
        self.path, self.frames, self.fps = path, frames, fps
        self.claimed_fps = fps if claimed_fps is None else claimed_fps
        self.written = 0
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        h, w = self.frames[0].shape[:2]
        # Written by hand with Python's file I/O, which lets other threads run while the
        # pipe is full (PyAV's muxer holds the interpreter lock through a blocking write).
        header = f"YUV4MPEG2 W{w} H{h} F{round(self.claimed_fps)}:1 Ip A1:1 C420jpeg\n".encode()
        try:  # opening blocks until the reader opens; a reader that leaves breaks the pipe
            with open(self.path, "wb") as out:
                out.write(header)
                t0 = time.monotonic()
                for i, f in enumerate(self.frames):
                    time.sleep(max(0.0, t0 + i / self.fps - time.monotonic()))
                    yuv = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(
                        format="yuv420p").to_ndarray()
                    out.write(b"FRAME\n" + yuv.tobytes())
                    out.flush()
                    self.written += 1
        except OSError:
            pass

    def join(self, timeout: float = 15.0) -> None:
        self._thread.join(timeout)
