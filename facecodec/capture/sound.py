"""A media file's sound as 48 kHz stereo 16-bit samples, read forward from any sample: what a
call sends when its picture comes from that file (paced so that the sound of each moment goes
with its frame, stream/peer.py FileAudioTrack)."""

from __future__ import annotations

from collections.abc import Iterator

import av
import numpy as np

from facecodec.capture.microphone import RATE


class FileSound:
    """Samples of a file's first sound stream, 48 kHz stereo s16, as (n, 2) arrays. Reading
    goes forward; a read before the last one starts the file again. Memory holds a frame or
    two of decoded sound, whatever the file's length."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._frames: Iterator[np.ndarray] | None = None
        self._restart()

    def _restart(self) -> None:
        if self._frames is not None:
            self._frames.close()  # type: ignore[attr-defined]  # closes the file
        self._frames = self._decoded()
        self._buf = np.zeros((0, 2), np.int16)
        self._pos = 0  # file sample at _buf[0]
        self.ended = False  # the file's last sample has been decoded

    def _decoded(self) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler("s16", "stereo", RATE)
        try:
            with av.open(self.path) as container:
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().reshape(-1, 2)
            for out in resampler.resample(None):  # what the resampler still holds
                yield out.to_ndarray().reshape(-1, 2)
        except (av.FFmpegError, OSError):
            return  # damaged (or gone) from here on: the sound ends, the call goes on

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples start .. start + n - 1; silence past the file's end."""
        if start < self._pos:
            self._restart()
        assert self._frames is not None
        while self._pos + len(self._buf) < start + n and not self.ended:
            more = next(self._frames, None)
            if more is None:
                self.ended = True
                break
            drop = min(max(0, start - self._pos), len(self._buf))  # samples before `start`
            self._buf = np.concatenate([self._buf[drop:], more])
            self._pos += drop
        out = np.zeros((n, 2), np.int16)
        lo, hi = max(start, self._pos), min(start + n, self._pos + len(self._buf))
        if hi > lo:
            out[lo - start:hi - start] = self._buf[lo - self._pos:hi - self._pos]
        return out

    def at_end(self, sample: int) -> bool:
        """Whether the file has no sound from `sample` on (known once it was read there)."""
        return self.ended and sample >= self._pos + len(self._buf)
