"""Reading and writing video files with PyAV (FFmpeg), with one-line errors for bad input."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facecodec.bitstream.container import MAX_FPS
from facecodec.errors import FacecodecError
from facecodec.files import check_readable, check_writable, publish, temp_beside

MIN_SIDE = 64  # below this no face can be tracked reliably
MAX_SIDE = 8192  # above this a frame is almost certainly not a camera picture
# Containers an output may take, by file suffix; no suffix writes mp4.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", "": "mp4",
              ".y4m": "yuv4mpegpipe"}
# Written uncompressed (4:2:0, no coding loss on top of the decoder's): what a user scoring
# the output with their own tools needs. The others hold H.264 at crf 18.
RAW_CONTAINERS = frozenset({"yuv4mpegpipe"})


@dataclass(frozen=True)
class VideoInfo:
    """A video as it is shown: width and height after the container's display rotation."""

    width: int
    height: int
    fps: Fraction
    frames: int | None  # as the container claims; may be absent or wrong
    quarter_turns: int = 0  # counter-clockwise turns that show a decoded picture upright


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    check_readable(p, "a video file")  # it is opened more than once: probed, then read
    try:
        c = av.open(str(p), "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise FacecodecError(f"{p}: not a video file PyAV can read ({e.__class__.__name__})") from e
    if not c.streams.video:
        c.close()
        raise FacecodecError(f"{p}: contains no video stream")
    return c


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns the container's display matrix asks for (0..3).

    Phones store portrait video as landscape pictures plus this matrix; a face lying on
    its side is neither tracked nor shown the way the sender filmed it.
    """
    degrees = frame.rotation
    if not (math.isfinite(degrees) and abs(degrees) <= 360):
        return 0  # a degenerate matrix (PyAV gives -2**31 for an all-zero one): as stored
    return round(degrees / 90) % 4


def upright(frame: av.VideoFrame) -> np.ndarray:
    """An RGB picture of `frame` as a player shows it (display rotation applied)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _first_turns(c: av.container.InputContainer) -> int:
    """Display rotation of the first picture; 0 when none decodes (read_frames says why)."""
    try:
        for frame in c.decode(c.streams.video[0]):
            return quarter_turns(frame)
    except av.error.FFmpegError:
        pass
    return 0


def probe(path: str | Path) -> VideoInfo:
    """Size as shown and frame rate, checked against the limits the codec supports."""
    with _open(path) as c:
        s = c.streams.video[0]
        w, h = s.codec_context.width, s.codec_context.height
        rate = s.average_rate or s.guessed_rate or Fraction(25)
        frames = s.frames or None
        turns = _first_turns(c)
    if turns % 2:
        w, h = h, w
    if min(w, h) <= 0:  # e.g. text named .png, which FFmpeg's picture reader opens
        raise FacecodecError(f"{path}: not a video file PyAV can read (no picture size)")
    if min(w, h) < MIN_SIDE:
        raise FacecodecError(f"{path}: frames of {w}x{h} are too small (minimum side {MIN_SIDE})")
    if max(w, h) > MAX_SIDE:
        raise FacecodecError(f"{path}: frames of {w}x{h} are too large (maximum side {MAX_SIDE})")
    fps = Fraction(rate).limit_denominator(1001)
    if not (1 <= fps <= MAX_FPS):
        raise FacecodecError(f"{path}: implausible frame rate {float(fps):.3f} (facecodec "
                             f"takes 1..{MAX_FPS} frames a second)")
    return VideoInfo(w, h, fps, frames, turns)


def frame_count(path: str | Path, info: VideoInfo | None = None) -> int:
    """The video's frames, as its container states them, or else its packets counted (one
    a frame): how long a looped file's picture lasts before it starts again. `info`: the
    file's probe, if the caller has it (probing decodes the first picture)."""
    stated = (info or probe(path)).frames
    if stated:
        return stated
    with _open(path) as c:
        try:
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
        except av.error.FFmpegError as e:
            raise FacecodecError(f"{path}: video data is damaged ({e.__class__.__name__})") from e


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames in display order, upright as a player shows them. A stream that
    breaks mid-way, or whose picture size changes (a raw H.264 stream may), ends with an
    error: every consumer sizes its work by the first frame."""
    probe(path)
    with _open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n, first = 0, None
        try:
            for frame in c.decode(s):
                rgb = upright(frame)
                first = first or rgb.shape
                if rgb.shape != first:
                    raise FacecodecError(
                        f"{path}: frame {n} is {rgb.shape[1]}x{rgb.shape[0]} but the first "
                        f"{first[1]}x{first[0]}: a video whose picture size changes is not "
                        "supported")
                yield rgb
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
        except av.error.FFmpegError as e:
            if n == 0:
                raise FacecodecError(f"{path}: cannot decode video ({e.__class__.__name__})") from e
            raise FacecodecError(f"{path}: video data is damaged after frame {n}") from e
    if n == 0:
        raise FacecodecError(f"{path}: video has no decodable frames")


class VideoWriter:
    """H.264 mp4 / mov / mkv (or uncompressed .y4m) writer that only makes the output appear
    when it is complete."""

    def __init__(self, path: str | Path, fps: Fraction, width: int, height: int, crf: int = 18):
        self.path = Path(path)
        fmt = CONTAINERS.get(self.path.suffix.lower())
        if fmt is None:
            raise FacecodecError(f"cannot write {self.path}: unknown video container "
                                 f"'{self.path.suffix}' (use .mp4, .m4v, .mov, .mkv, or .y4m for "
                                 "uncompressed frames)")
        check_writable(self.path)  # a folder in the way fails now, not after the work
        fd, self._tmp = temp_beside(self.path)
        os.close(fd)
        self._c: av.container.OutputContainer | None = None
        try:
            self._c = av.open(str(self._tmp), "w", format=fmt)
            raw = fmt in RAW_CONTAINERS
            self._s = self._c.add_stream("rawvideo" if raw else "libx264", rate=fps)
            self._s.width, self._s.height = width, height
            self._s.pix_fmt = "yuv420p"
            if not raw:
                self._s.options = {"crf": str(crf), "preset": "veryfast"}
        except (OSError, ValueError, OverflowError, av.error.FFmpegError) as e:
            self.abort()
            raise FacecodecError(f"cannot write {self.path}: {e}") from None
        except BaseException:
            self.abort()
            raise
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        try:
            for pkt in self._s.encode(f):
                self._container.mux(pkt)
        except OSError as e:  # a full disk: the caller aborts
            raise FacecodecError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.frames += 1

    def close(self) -> None:
        try:
            for pkt in self._s.encode():
                self._container.mux(pkt)
            self._container.close()
        except OSError as e:
            self.abort()
            raise FacecodecError(f"cannot write {self.path}: {e.strerror or e}") from None
        publish(self._tmp, self.path)

    @property
    def _container(self) -> av.container.OutputContainer:
        assert self._c is not None
        return self._c

    def abort(self) -> None:
        """Drop what was written (the output never appears); safe to call more than once."""
        try:
            if self._c is not None:
                with contextlib.suppress(OSError, av.error.FFmpegError):
                    self._c.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
