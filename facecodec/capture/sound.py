"""A media file's sound as 48 kHz 16-bit samples (stereo, or mono where the file's is), read
forward from any sample, sample 0 at the file's first picture: what a call sends when its
picture comes from that file (paced so that the sound of each moment goes with its frame,
stream/peer.py FileAudioTrack), and what an upscaled video keeps (capture/video.py
VideoWriter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from facecodec.capture.microphone import RATE
from facecodec.capture.streams import heard_stream
from facecodec.capture.timing import SoundClock, first_picture_time
from facecodec.errors import FacecodecError


class FileSound:
    """Samples of the sound stream a player plays, 48 kHz s16, as (n, channels) arrays
    (stereo by default, as a call sends; 1: mono, as a mono file's copy keeps it),
    placed against the pictures as the file's timestamps place them (capture/timing.py
    SoundClock: a sound that starts after the first picture starts with silence, a gap in
    it is silent). Reading goes forward; a read before the last one
    starts the file again. Memory holds a frame or two of decoded sound, whatever the file's
    length. A damaged packet is skipped, its time kept silent, as a player does; `damaged`
    says whether one was."""

    def __init__(self, path: str, channels: int = 2) -> None:
        if channels not in (1, 2):
            raise ValueError(f"sound is read as 1 or 2 channels, not {channels}")
        self.path = path
        self.channels = channels
        self.layout = "mono" if channels == 1 else "stereo"
        self._start = first_picture_time(path)  # the file's clock: sample 0 (None: no picture)
        self._frames: Iterator[np.ndarray] | None = None
        self._restart()

    def _restart(self) -> None:
        if self._frames is not None:
            self._frames.close()  # type: ignore[attr-defined]  # closes the file
        self._frames = self._decoded()
        self._buf = np.zeros((0, self.channels), np.int16)
        self._pos = 0  # file sample at _buf[0]
        self.ended = False  # the file's last sample has been decoded
        self.damaged = False

    def _decoded(self) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler("s16", self.layout, RATE)
        try:
            with av.open(self.path) as container:
                sound = heard_stream(container)
                if sound is None:
                    return
                clock = SoundClock(self._start, RATE)
                for packet in container.demux(sound):
                    try:
                        frames = packet.decode()
                    except av.FFmpegError:
                        self.damaged = True  # its time is silent, placed as sound would be
                        if packet.duration and packet.time_base:
                            n = round(packet.duration * packet.time_base * RATE)
                            start = (None if packet.pts is None
                                     else float(packet.pts * packet.time_base))
                            silence, drop = clock.place(start, n)
                            yield from self._silence(silence + n - drop)
                        continue
                    for frame in frames:
                        try:
                            outs = resampler.resample(frame)
                        except ValueError:  # its rate or layout changed (joined recordings)
                            outs = resampler.resample(None)
                            resampler = av.AudioResampler("s16", self.layout, RATE)
                            outs += resampler.resample(frame)
                        samples = np.concatenate(
                            [o.to_ndarray().reshape(-1, self.channels) for o in outs]
                            or [np.zeros((0, self.channels), np.int16)])
                        silence, drop = clock.place(frame.time, len(samples))
                        yield from self._silence(silence)
                        if drop < len(samples):
                            yield samples[drop:]
            for out in resampler.resample(None):  # what the resampler still holds
                yield out.to_ndarray().reshape(-1, self.channels)
        except (av.FFmpegError, OSError):
            self.damaged = True  # unreadable (or gone) from here on: the sound ends there

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
        out = np.zeros((n, self.channels), np.int16)
        lo, hi = max(start, self._pos), min(start + n, self._pos + len(self._buf))
        if hi > lo:
            out[lo - start:hi - start] = self._buf[lo - self._pos:hi - self._pos]
        return out

    def at_end(self, sample: int) -> bool:
        """Whether the file has no sound from `sample` on (known once it was read there)."""
        return self.ended and sample >= self._pos + len(self._buf)


    def _silence(self, n: int) -> Iterator[np.ndarray]:
        """`n` samples of silence, a second at a time (a gap may be minutes)."""
        while n > 0:
            yield np.zeros((min(n, RATE), self.channels), np.int16)
            n -= RATE


def sound_channels(path: str | Path) -> int | None:
    """The channels a copy of the file's sound keeps: 1 for mono, 2 for anything more (down-
    mixed), None where it has no sound to play. One that cannot be opened is a one-line
    error."""
    try:
        with av.open(str(path)) as container:
            sound = heard_stream(container)
            if sound is None:
                return None
            return 1 if sound.codec_context.channels == 1 else 2
    except (av.FFmpegError, OSError) as exc:
        raise FacecodecError(f"cannot open audio source {path}: {exc}") from None


def has_sound(path: str | Path) -> bool:
    """Whether the file has a sound stream to play (see sound_channels)."""
    return sound_channels(path) is not None
