"""A microphone as a call's sound, through FFmpeg's capture input for the platform (ALSA on
Linux, AVFoundation on macOS, DirectShow on Windows) as PyAV's build carries it.

A thread reads the device and keeps a short queue of 20 ms frames (48 kHz stereo s16, what
the call's Opus track takes); when the call falls behind it drops the oldest, so the sound
stays live rather than ever later.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path

import av

from facecodec.errors import FacecodecError

RATE = 48000
FRAME = 960  # 20 ms, Opus's packet duration
QUEUE_FRAMES = 10  # 200 ms: more waiting than that is dropped, oldest first
# PyAV's Linux wheels carry their own ALSA library, which looks for its configuration
# where it was built; the system's is where distributions put it.
SYSTEM_ALSA_CONFIG = Path("/usr/share/alsa/alsa.conf")


def _input_format() -> tuple[str, str]:
    """FFmpeg's capture input on this platform and its default device."""
    if sys.platform == "darwin":
        return "avfoundation", ":0"
    if sys.platform == "win32":
        return "dshow", "audio=default"
    return "alsa", "default"


def open_microphone(device: str | None = None) -> av.container.InputContainer:
    """The capture device (None: the platform's default) opened for 48 kHz sound."""
    fmt, default = _input_format()
    if fmt not in av.formats_available:
        raise FacecodecError(f"this build of PyAV cannot capture sound (no {fmt} input)")
    if fmt == "alsa" and "ALSA_CONFIG_PATH" not in os.environ and SYSTEM_ALSA_CONFIG.is_file():
        os.environ["ALSA_CONFIG_PATH"] = str(SYSTEM_ALSA_CONFIG)
    name = device or default
    try:
        container = av.open(name, format=fmt, options={"sample_rate": str(RATE)})
    except (av.FFmpegError, OSError) as exc:
        raise FacecodecError(f"microphone {name}: cannot be opened ({exc})") from None
    if not container.streams.audio:
        container.close()
        raise FacecodecError(f"microphone {name}: gives no sound")
    return container


class Microphone:
    """20 ms frames of a capture device, read on a thread. `next_frame` waits for one;
    None once the device has stopped."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._container = open_microphone(device)
        self._frames: queue.Queue[av.AudioFrame | None] = queue.Queue(QUEUE_FRAMES)
        self._running = True
        self.dropped = 0  # frames the call did not take in time
        self._thread = threading.Thread(target=self._read, name="facecodec-mic", daemon=True)
        self._thread.start()

    def _put(self, frame: av.AudioFrame | None) -> None:
        while True:
            try:
                self._frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _read(self) -> None:
        resampler = av.AudioResampler("s16", "stereo", RATE, frame_size=FRAME)
        start, samples = time.monotonic(), 0
        try:
            for frame in self._container.decode(self._container.streams.audio[0]):
                if not self._running:
                    break
                for out in resampler.resample(frame):
                    self._put(out)
                    samples += out.samples
                # A device never runs ahead of the clock; a source that does (a virtual
                # one) is held to real time, not read at the CPU's speed.
                ahead = start + samples / RATE - time.monotonic()
                if ahead > 0.1:
                    time.sleep(ahead)
        except (av.FFmpegError, OSError):
            pass
        finally:
            self._container.close()  # here: closing it under a read in progress is unsafe
            self._put(None)

    def next_frame(self, timeout: float = 2.0) -> av.AudioFrame | None:
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop reading; the device closes when its read in progress returns (20 ms or so)."""
        self._running = False
        self._thread.join(timeout=2.0)
