"""Reading and writing video files with PyAV (FFmpeg), with one-line errors for bad input."""

from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from facecodec.bitstream.container import MAGIC, MAX_FPS
from facecodec.capture.microphone import RATE
from facecodec.capture.sound import FileSound, sound_channels
from facecodec.capture.streams import shown_stream
from facecodec.capture.timing import PictureClock, VideoDamaged, pictures
from facecodec.errors import FacecodecError
from facecodec.files import (
    STDOUT_TERMINAL,
    check_readable,
    check_writable,
    publish,
    temp_beside,
    to_stdout,
)

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
    # A pixel's width over its height as shown (anamorphic video); the frames are read as
    # stored, one pixel each.
    pixel_aspect: Fraction = Fraction(1)


def _is_fcv(path: Path) -> bool:
    """Whether `path` starts with an .fcv stream's signature (regular files only: a pipe
    the reader has drained would wait for a writer)."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _open(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The file opened, and the video stream a player shows (`shown_stream`)."""
    p = Path(path)
    check_readable(p, "a video file")  # it is opened more than once: probed, then read
    try:
        c = av.open(str(p), "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        if _is_fcv(p):
            raise FacecodecError(f"{p}: an .fcv stream, not a video (`facecodec decode` makes "
                                 "a video of it)") from None
        raise FacecodecError(f"{p}: not a video file PyAV can read, or an incomplete one "
                             f"({e.__class__.__name__})") from e
    s = shown_stream(c)
    if s is None:
        cover = bool(c.streams.video)
        c.close()
        raise FacecodecError(f"{p}: contains no video, only a cover picture" if cover
                             else f"{p}: contains no video stream")
    return c, s


def is_still_picture(path: str | Path) -> bool:
    """Whether `path` is a picture file FFmpeg reads as a one-frame video (its image
    readers), not a video. A file named like a picture that holds none (no picture size) is
    not one: what reads it says what it is."""
    c, s = _open(path)
    with c:
        image = c.format.name == "image2" or c.format.name.endswith("_pipe")
        return image and s.codec_context.width > 0


def refuse_still_picture(path: Path, why: str) -> None:
    """Refuse in one line a picture given where a video is wanted: FFmpeg reads it as a
    one-frame video. A missing file is left to what reads it."""
    if path.is_file() and is_still_picture(path):
        raise FacecodecError(f"{path}: a still picture, not a video: {why}")


def _unknown_side_data(cls: type[SideDataType], value: object) -> SideDataType | None:
    """A kind of frame side data that FFmpeg gives and PyAV's list lacks (FFmpeg 8 attaches
    a picture's EXIF, number 31): PyAV refuses the frame's whole side data for it, the
    display matrix beside it included, so every photo from a camera failed to read. It is
    named by its number instead, once (one member per number, as Flag's pseudo-members)."""
    if not isinstance(value, int):
        return None
    member = object.__new__(cls)
    member._name_ = f"UNKNOWN_{value}"
    member._value_ = value  # type: ignore[assignment]
    return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]


SideDataType._missing_ = classmethod(_unknown_side_data)  # type: ignore[assignment]


def _display(frame: av.VideoFrame) -> tuple[float, bool]:
    """(degrees counter-clockwise, mirrored) the container's display matrix asks for: a
    player turns the decoded picture by the angle, then mirrors it left to right.

    Phones store portrait video as landscape pictures plus this matrix (a front camera's
    may mirror too); a face lying on its side or upside down is neither tracked nor shown
    the way the sender filmed it. No matrix, or a degenerate one: as stored."""
    side = frame.side_data.get("DISPLAYMATRIX")  # a SideData (a buffer), typed as object
    raw = b"" if side is None else memoryview(side).tobytes()  # type: ignore[arg-type]
    if len(raw) != 36:
        return 0.0, False
    a, b, _, c, d, *_ = struct.unpack("=9i", raw)  # 16.16 fixed point, row-major
    det = a * d - b * c
    if det == 0:
        return 0.0, False
    if det < 0:  # a mirror: the same turn as its first column negated, then mirrored
        a, c = -a, -c
    return math.degrees(math.atan2(c, a)), det < 0


def quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns nearest `degrees` (0..3)."""
    return round(degrees / 90) % 4


def upright(frame: av.VideoFrame) -> np.ndarray:
    """An RGB picture of `frame` as a player shows it (display turn and mirror applied)."""
    rgb = frame.to_ndarray(format="rgb24")
    degrees, mirrored = _display(frame)
    turns = quarter_turns(degrees)
    if not turns and not mirrored:
        return rgb
    rgb = np.rot90(rgb, turns)
    return np.ascontiguousarray(rgb[:, ::-1] if mirrored else rgb)


# Rates a camera or an encoder uses: a spacing measured near one is taken as it.
COMMON_RATES = sorted({Fraction(n) for n in range(1, 121)}
                      | {Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120)}
                      | {Fraction(25, 2)})


# Packets whose timestamps `_rate` measures: 8 s at 30 fps, read when probing anyway.
RATE_PACKETS = 240


def _look(c: av.container.InputContainer,
          s: av.video.stream.VideoStream) -> tuple[float, list[float]]:
    """In one pass over the stream's first packets: the display turn of the first picture
    that decodes, in degrees (0 when none does: read_frames says why), and the packets'
    times, in order, for `_rate`."""
    degrees: float | None = None
    times: list[float] = []
    try:
        for packet in c.demux(s):
            if packet.pts is not None and packet.time_base:
                times.append(float(packet.pts * packet.time_base))
            if degrees is None and (packet.size or packet.dts is None):  # as `pictures`
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    frames = []
                if frames:
                    degrees = _display(cast(av.VideoFrame, frames[0]))[0]
            if degrees is not None and len(times) >= RATE_PACKETS:
                break
    except av.error.FFmpegError:  # damage: reading the pictures will say where
        pass
    return degrees or 0.0, sorted(times)


def _rate(s: av.video.stream.VideoStream, times: list[float]) -> Fraction:
    """The frame rate to read a video at, from its first pictures' `times`: FFmpeg's guess
    (what its constant-rate output takes), unless the pictures' spacing contradicts it by
    half or more: pictures that come far faster (a header rate that is wrong), or none as
    fast (FFmpeg's guess for a phone's video on a fine time grid with jitter can be a
    multiple of its rate). Then the rate of their mean spacing, pauses left out (a
    variable-rate video's average counts them)."""
    guessed = Fraction(s.guessed_rate or s.average_rate or 25)
    steps = sorted(b - a for a, b in zip(times, times[1:], strict=False) if b > a)
    if len(steps) < 2:
        return guessed
    fastest = 1 / steps[len(steps) // 10]  # the rate the fastest tenth of pictures come at
    if 2 / 3 < guessed / Fraction(fastest) < 3 / 2:
        return guessed
    median = steps[len(steps) // 2]
    mean = 1 / statistics.mean(x for x in steps if x < 3 * median)  # pauses left out
    if abs(float(guessed) / mean - 1) < 0.01:  # jitter made some steps short, not the rate
        return guessed
    near = min(COMMON_RATES, key=lambda r: abs(float(r) / mean - 1))
    return near if abs(float(near) / mean - 1) < 0.005 else Fraction(mean).limit_denominator(1001)


# Transfer characteristics (FFmpeg's AVColorTransferCharacteristic) of HDR video.
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
_said: set[tuple[Path, str]] = set()  # (file, what): once a file, though a command reads it again


def _say_once(path: Path, what: str, line: str) -> None:
    if (path, what) not in _said:
        _said.add((path, what))
        print(line, file=sys.stderr)


def _note_hdr(path: Path, transfer: int | None) -> None:
    """HDR video (a phone's HLG recording) is read as standard video: FFmpeg's converters here
    cannot map its light levels and wider colours, so say so instead of showing it wrong
    silently."""
    kind = HDR_TRANSFERS.get(transfer or 0)
    if kind is not None:
        _say_once(path, "hdr", f"note: {path} is HDR video ({kind}); it is read as standard "
                  "video, so its colours come out darker and paler (convert it to SDR first "
                  "for true colours)")


def probe(path: str | Path, max_fps: int = MAX_FPS) -> VideoInfo:
    """Size as shown and frame rate, checked against the limits the codec supports (a
    stream's rate for `encode`; `upscale` takes more)."""
    c, s = _open(path)
    with c:
        w, h = s.codec_context.width, s.codec_context.height
        frames = s.frames or None
        aspect = Fraction(s.sample_aspect_ratio or 1)
        degrees, times = _look(c, s)
        rate = _rate(s, times)
        _note_hdr(Path(path), s.codec_context.color_trc)
    turns = quarter_turns(degrees)
    if abs(degrees - 90 * round(degrees / 90)) > 1:
        raise FacecodecError(f"{path}: shown turned by {degrees:g} degrees; facecodec reads "
                             "videos turned by quarter turns only")
    if turns % 2:
        w, h, aspect = h, w, 1 / aspect
    if not 0.1 <= aspect <= 10:  # an unset or nonsense ratio: square pixels
        aspect = Fraction(1)
    # The nearest ratio whose terms fit 16 bits (H.264's and the .fcv header's; an mp4 may
    # state 32-bit ones).
    aspect = aspect.limit_denominator(6553)
    if min(w, h) <= 0:  # e.g. text named .png, which FFmpeg's picture reader opens
        raise FacecodecError(f"{path}: not a video file PyAV can read (no picture size)")
    if min(w, h) < MIN_SIDE:
        raise FacecodecError(f"{path}: frames of {w}x{h} are too small (minimum side {MIN_SIDE})")
    if max(w, h) > MAX_SIDE:
        raise FacecodecError(f"{path}: frames of {w}x{h} are too large (maximum side {MAX_SIDE})")
    fps = Fraction(rate).limit_denominator(1001)
    if not (1 <= fps <= max_fps):
        raise FacecodecError(f"{path}: frame rate {float(fps):.3f} out of range (1..{max_fps} "
                             "frames a second)")
    return VideoInfo(w, h, fps, frames, turns, aspect)


# A file whose packets, of every stream, end this far before the length it states is cut
# short where no packet says so (a Matroska file cut anywhere: its length is written at its
# start), or its index promises more than it holds; nearer, coders' padding and rounding.
SHORT_OF_STATED_S = 0.5


def read_frames(path: str | Path, max_frames: int | None = None,
                info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames in display order, upright as a player shows them, at the probed
    frame rate (capture/timing.py PictureClock; a picture held over several frames is the
    same array each time, so change a copy). A stream that breaks mid-way, is cut short
    (a file copied or downloaded in part), or whose picture size changes (a raw H.264 stream
    may), ends with an error: every consumer sizes its work by the first frame, and would
    otherwise make a shorter output without a word. A damaged packet mid-way is passed over
    as a player does, with a warning (`pictures`). `info`: the file's probe, if the caller
    has it (probing decodes a picture)."""
    fps = (info or probe(path)).fps
    clock = PictureClock(fps)
    c, s = _open(path)
    with c:
        s.thread_type = "AUTO"
        origin, stated = _start(c, s), _stated_end(c)
        n, first, last = 0, None, None
        # Per stream, whether its last packet was flagged corrupt: the demuxer read less than
        # the file promised (a file that ends inside it). Corrupt packets mid-way (where two
        # recordings were joined) are damage a decoder gets over, not an end.
        ends_cut: dict[int, bool] = {}

        packets_end = 0.0  # the latest end of any stream's packets, in seconds

        def seen(packet: av.Packet) -> None:
            nonlocal packets_end
            if packet.size:
                ends_cut[packet.stream.index] = packet.is_corrupt
                if packet.pts is not None and packet.time_base is not None:
                    end = float(packet.pts * packet.time_base)
                    if packet.duration:
                        end += float(packet.duration * packet.time_base)
                    elif packet.stream is s:  # FLV's pictures state no length: a frame's
                        end += 1 / fps
                    packets_end = max(packets_end, end)

        def damaged(after: float | None) -> None:
            at = "" if after is None else f" after {after - origin:.2f} s"
            _say_once(Path(path), "damaged", f"warning: {path}: damaged video data{at}; passed "
                      "over as a player does (the picture before it is held, and what follows "
                      "may show the damage until the next keyframe)")

        try:
            for frame, time in pictures(c, s, fps, seen, damaged):  # every stream's packets
                rgb = upright(frame)
                first = first or rgb.shape
                if rgb.shape != first:
                    raise FacecodecError(
                        f"{path}: frame {n} is {rgb.shape[1]}x{rgb.shape[0]} but the first "
                        f"{first[1]}x{first[0]}: a video whose picture size changes is not "
                        "supported")
                held, shown = clock.place(time)
                for out in ([last] * held if last is not None else []) + [rgb] * shown:
                    yield out
                    n += 1
                    if max_frames is not None and n >= max_frames:
                        return
                last = rgb
        except (av.error.FFmpegError, VideoDamaged) as e:
            if n == 0:
                why = "video data is damaged in its first frames" if isinstance(
                    e, VideoDamaged) else f"cannot decode video ({e.__class__.__name__})"
                raise FacecodecError(f"{path}: {why}") from e
            if isinstance(e, VideoDamaged) and any(ends_cut.values()):  # damage at the end
                raise FacecodecError(f"{path}: the file is cut short after frame {n} "
                                     "(incomplete)") from e
            raise FacecodecError(f"{path}: video data is damaged after frame {n}") from e
    if n == 0:
        raise FacecodecError(f"{path}: video has no decodable frames")
    if any(ends_cut.values()):
        raise FacecodecError(f"{path}: the file is cut short after frame {n} (incomplete)")
    if stated is not None and stated - packets_end > SHORT_OF_STATED_S:
        _say_once(Path(path), "short", f"warning: {path}: the file ends at "
                  f"{packets_end - origin:.2f} s, though it says it lasts {stated - origin:.2f} "
                  "s (cut short?); read as far as it goes")


def _start(c: av.container.InputContainer, s: av.video.stream.VideoStream) -> float:
    """Where the file's clock starts, in seconds: its video stream's first time."""
    if s.start_time is not None and s.time_base is not None:
        return float(s.start_time * s.time_base)
    return c.start_time / av.time_base if c.start_time is not None else 0.0


def _stated_end(c: av.container.InputContainer) -> float | None:
    """Where the file says it ends, in seconds on its clock (the end of its longest stream:
    an mp4's index, Matroska's stated length)."""
    if not c.duration:
        return None
    # Some demuxers count the length from the clock's start, others (Matroska, FLV, NUT)
    # from 0: a file is short only where both readings say so.
    length = c.duration / av.time_base
    return min(length, (c.start_time or 0) / av.time_base + length)


class _Y4mShape(io.RawIOBase):
    """The file a y4m muxer writes, its header's pixel shape set on the way: FFmpeg writes
    the stream's, which PyAV cannot set (only the codec's), so "A0:0" (unknown) becomes
    "A1:1" or "A128:117". The header is the first line; the frames pass through."""

    def __init__(self, file: io.BufferedWriter, aspect: Fraction) -> None:
        self._file = file
        self._shape = f"A{aspect.numerator}:{aspect.denominator}".encode()
        self._head: bytearray | None = bytearray()  # until the header's line is whole
        # What a write raised. PyAV calls write from FFmpeg's muxer; it passes an error on,
        # but prints and drops a KeyboardInterrupt or a SIGTERM's Terminated: a Ctrl-C landing
        # there was lost and the command wrote on. VideoWriter raises it after the mux.
        self.failed: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.failed is not None:
            return len(data)  # the output is dropped: VideoWriter is raising
        try:
            return self._write(data)
        except BaseException as e:  # noqa: BLE001 - kept for VideoWriter to raise
            self.failed = e
            return len(data)

    def raise_failure(self) -> None:
        """Raise what a write raised inside the muxer (once)."""
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed

    def _write(self, data: bytes) -> int:
        if self._head is None:
            return self._file.write(data)
        self._head += data
        if b"\n" in self._head:
            line, rest = self._head.split(b"\n", 1)
            fields = [self._shape if f.startswith(b"A") else f for f in line.split(b" ")]
            self._file.write(b" ".join(fields) + b"\n" + rest)
            self._head = None
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class _TakenStdout:
    """Standard output, for the frames alone: while they are written, what else is printed
    there (by this program or a library) goes to standard error; `give_back` ends that."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self.fd = sys.stdout.fileno()
        self.frames = os.fdopen(os.dup(self.fd), "wb")
        self._kept = os.dup(self.fd)
        os.dup2(sys.stderr.fileno(), self.fd)

    def give_back(self) -> None:
        if self._kept >= 0:
            sys.stdout.flush()
            os.dup2(self._kept, self.fd)
            os.close(self._kept)
            self._kept = -1


class VideoWriter:
    """H.264 mp4 / mov / mkv (or uncompressed .y4m) writer that only makes the output appear
    when it is complete; or y4m frames on standard output (`path` files.STDOUT) as they
    come."""

    def __init__(self, path: str | Path, fps: Fraction, width: int, height: int, crf: int = 18,
                 pixel_aspect: Fraction = Fraction(1), sound_from: Path | None = None):
        """`pixel_aspect`: a pixel's width over its height as the output is to be shown.
        `sound_from`: a video whose sound the output keeps beside its frames (capture/sound.py
        FileSound: as the file places it against its pictures, as long as the frames written,
        coded again as AAC, mono if it was), where it has sound and the container holds it
        (not .y4m)."""
        self.path = Path(path)
        self.fps = fps
        self._tmp: Path | None = None
        self._stdout: _TakenStdout | None = None
        if to_stdout(path):
            self.name = "standard output"
            if sys.stdout.isatty():
                raise FacecodecError(STDOUT_TERMINAL)
            fmt = "yuv4mpegpipe"
        else:
            self.name = str(self.path)
            known = CONTAINERS.get(self.path.suffix.lower())
            if known is None:
                raise FacecodecError(f"cannot write {self.path}: unknown video container "
                                     f"'{self.path.suffix}' (use .mp4, .m4v, .mov, .mkv, or .y4m "
                                     "for uncompressed frames, or - for y4m on standard output)")
            fmt = known
            check_writable(self.path)  # a folder in the way fails now, not after the work
            fd, self._tmp = temp_beside(self.path)
            os.close(fd)
        self._c: av.container.OutputContainer | None = None
        self._shaped: _Y4mShape | None = None
        try:
            if self._tmp is None:
                self._stdout = _TakenStdout()
                self._shaped = _Y4mShape(self._stdout.frames, pixel_aspect)
            elif fmt == "yuv4mpegpipe":  # square pixels too: "A1:1", not "unknown"
                self._shaped = _Y4mShape(self._tmp.open("wb"), pixel_aspect)
            self._c = av.open(self._shaped or str(self._tmp), "w", format=fmt)
            raw = fmt in RAW_CONTAINERS
            self._s = self._c.add_stream("rawvideo" if raw else "libx264", rate=fps)
            self._s.width, self._s.height = width, height
            self._s.pix_fmt = "yuv420p"
            if pixel_aspect != 1:
                self._s.codec_context.sample_aspect_ratio = pixel_aspect
            if not raw:
                self._s.options = {"crf": str(crf), "preset": "veryfast"}
            self._sound: FileSound | None = None
            channels = None if raw or sound_from is None else sound_channels(sound_from)
            if channels is not None:  # a mono source stays mono
                self._sound = FileSound(str(sound_from), channels)
                self._a = self._c.add_stream("aac", rate=RATE, layout=self._sound.layout)
                # FFmpeg's AAC defaults to 128 kbps stereo but 69 kbps mono, which smears
                # speech (waveform correlation 0.92 against 0.99); 96 kbps mono keeps it.
                self._a.bit_rate = 96_000 if channels == 1 else 128_000
        except (OSError, ValueError, OverflowError, av.error.FFmpegError) as e:
            self.abort()
            raise FacecodecError(f"cannot write {self.name}: {e}") from None
        except BaseException:
            self.abort()
            raise
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        try:
            for pkt in self._s.encode(f):
                self._container.mux(pkt)
            if self._sound is not None:
                self._write_sound()
            if self._shaped is not None:
                self._shaped.raise_failure()
        except BrokenPipeError:  # the reader of standard output went: the command ends
            raise
        except OSError as e:  # a full disk: the caller aborts
            raise FacecodecError(f"cannot write {self.name}: {e.strerror or e}") from None
        self.frames += 1

    def _write_sound(self) -> None:
        """The sound of this frame's time, written beside it (interleaved, as a player reads)."""
        assert self._sound is not None
        start = round(self.frames * RATE / self.fps)
        end = round((self.frames + 1) * RATE / self.fps)
        samples = self._sound.read(start, end - start)
        piece = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                           layout=self._sound.layout)
        piece.sample_rate, piece.pts = RATE, start
        for pkt in self._a.encode(piece):
            self._container.mux(pkt)

    def close(self) -> None:
        try:
            for pkt in self._s.encode():
                self._container.mux(pkt)
            if self._sound is not None:
                for pkt in self._a.encode():
                    self._container.mux(pkt)
                if self._sound.damaged:
                    print(f"warning: {self._sound.path}: damaged sound; its damaged parts are "
                          "silent in the output", file=sys.stderr)
            self._container.close()
            if self._shaped is not None:
                self._shaped.raise_failure()
                self._shaped.close()
        except BrokenPipeError:
            self.abort()
            raise
        except OSError as e:
            self.abort()
            raise FacecodecError(f"cannot write {self.name}: {e.strerror or e}") from None
        except BaseException:
            self.abort()
            raise
        if self._tmp is not None:
            publish(self._tmp, self.path)
        if self._stdout is not None:
            self._stdout.give_back()

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
            if self._shaped is not None:
                with contextlib.suppress(OSError):
                    self._shaped.close()
        finally:
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            if self._stdout is not None:
                self._stdout.give_back()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
