"""A webcam as a call's source, through OpenCV's platform backend (V4L2 on Linux,
AVFoundation on macOS, Media Foundation on Windows): PyAV's wheels carry no capture devices.

A thread reads the camera as fast as it delivers and keeps only the newest picture, so a
sender that falls behind sends what the camera sees now, not a queue of old frames.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import cv2
import numpy as np

from facecodec.errors import FacecodecError

# Asked of the camera; it keeps the nearest mode it has. 720p gives a face at arm's length
# more pixels than the 256 px crop needs; a camera without it gives 640x480.
WANT_SIZE = (1280, 720)
WANT_FPS = 30.0
OPEN_TIMEOUT_S = 5.0  # a camera that gives no picture by then is not usable
STALL_TIMEOUT_S = 2.0  # a camera silent this long mid-call has gone (unplugged, taken)


def _device(spec: str) -> int | str:
    """An index ("0") or a device path ("/dev/video2")."""
    return int(spec) if spec.isdigit() else spec


class Camera:
    """Newest RGB pictures of a capture device. `next_frame` waits for a picture newer than
    the last it gave; None once the camera has stopped."""

    def __init__(self, spec: str = "0") -> None:
        self.path = None  # no sound of its own: a call sends --microphone's, or silence
        self.spec = spec
        cap = cv2.VideoCapture(_device(spec))
        if not cap.isOpened():
            cap.release()
            raise FacecodecError(f"camera {spec}: cannot be opened (no such device, or in use)")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, WANT_SIZE[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, WANT_SIZE[1])
        cap.set(cv2.CAP_PROP_FPS, WANT_FPS)
        rate = cap.get(cv2.CAP_PROP_FPS)
        # Drivers report 0, nonsense or the 1000 fps of a file read as fast as it decodes.
        self.fps = Fraction(rate).limit_denominator(1001) if 1 <= rate <= 60 else Fraction(30)
        self._cap = cap
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._time = 0.0  # when the newest picture came (time.time())
        self.arrived = 0.0  # when the picture next_frame last gave came
        self._count = 0  # pictures read so far
        self._given = 0  # the count of the picture next_frame last gave
        self._running = True
        self._ended = False
        self._thread = threading.Thread(target=self._read, name="facecodec-camera", daemon=True)
        self._thread.start()
        if self._wait_newer(OPEN_TIMEOUT_S) is None:
            self.close()
            raise FacecodecError(f"camera {spec}: opened but gave no picture in "
                                 f"{OPEN_TIMEOUT_S:g} s")

    def _read(self) -> None:
        try:
            while self._running:
                ok, bgr = self._cap.read()
                if not ok or bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
                    break
                came = time.time()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                with self._cond:
                    self._frame, self._time, self._count = rgb, came, self._count + 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _wait_newer(self, timeout: float) -> np.ndarray | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._count == self._given and not self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if self._count == self._given:
                return None  # ended with nothing new
            self._given, self.arrived = self._count, self._time
            return self._frame

    def first_frame(self) -> np.ndarray | None:
        """The newest picture, without taking it: `next_frame` may still give it."""
        with self._cond:
            return self._frame

    def next_frame(self) -> np.ndarray | None:
        """A picture newer than the last one given, waiting for the camera; None when it
        has stopped (ended, unplugged, or silent for STALL_TIMEOUT_S)."""
        return self._wait_newer(STALL_TIMEOUT_S)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self._cap.release()
