"""A file's pictures and sound on one clock, as a player plays them: the pictures on a
constant frame rate, the sound on a continuous line of samples, both from the time of the
first picture. Gaps in either are held (the picture) or silent (the sound), so that what
comes after a gap stays together; a jump far from what came before is a clock that
started again (two recordings joined) or broke, and each goes on from where it is (so
after a join the sound is off by the difference between the first part's sound and
pictures: the streams are read apart, and neither knows where the other's clock jumped)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TypeVar, cast

import av

from facecodec.capture.streams import shown_stream

_T = TypeVar("_T")

# A gap longer than this is a clock that broke, not a pause to hold the picture (or keep
# the silence) through: it would write that long of one picture.
MAX_HOLD_S = 600
# A picture stamped more than this many frames before the slot it would fill is on a clock
# that started again; nearer, it is out of order (AVI's guessed timestamps) or one of
# pictures coming faster than the frame rate.
MAX_BACK_FRAMES = 3
# Sound stamped this far from where the samples so far end is placed by its timestamp
# (silence before it, or as much of it dropped); nearer, it follows on (timestamps round,
# and coders pad). Stamped over SOUND_BACK_S before it: a clock that started again.
SOUND_SLACK_S = 0.04
SOUND_BACK_S = 0.2
# Undecodable packets in a row, after the first keyframe or picture, before the stream
# counts as broken rather than damaged: a player passes over a damaged packet (its picture
# held, and the pictures after it drawn from whatever the decoder has) and so does the
# reader, but a stream that stays undecodable is not a video going on.
MAX_DAMAGED_RUN = 50


class PictureClock:
    """Places pictures on a constant frame rate by their timestamps, as FFmpeg's constant
    frame rate output does: a picture within a frame of the next slot fills it (and the one
    after, if it is late), so a timestamp out of order by a frame (AVI's guessed ones) does
    not reorder the pictures; through a longer gap the previous picture is held, and the
    next shown at its time; one whose slot was filled over a frame ago is skipped."""

    def __init__(self, fps: Fraction) -> None:
        self.fps = float(fps)
        self.start: float | None = None  # the time of slot 0: the first picture's
        self.filled = 0  # slots given a picture so far

    def place(self, time: float | None) -> tuple[int, int]:
        """(times the previous picture is shown again, times this one is shown) for a
        picture at `time` seconds; no time: the next slot."""
        if time is None:
            self.filled += 1
            return 0, 1
        if self.start is None:  # slots filled by pictures with no time come before it
            self.start = time - self.filled / self.fps
        ahead = (time - self.start) * self.fps - self.filled  # of the next slot, in frames
        if ahead < -MAX_BACK_FRAMES or ahead > MAX_HOLD_S * self.fps:
            self.start, ahead = time - self.filled / self.fps, 0.0  # a new clock
        if ahead < -1.1:
            return 0, 0
        slots = max(1, round(ahead + 1))  # this one's and those of a gap before it
        held, shown = (slots - 1, 1) if ahead > 1.1 else (0, slots)
        self.filled += slots
        return held, shown


class SoundClock:
    """Places decoded sound by its timestamps on a line of samples whose sample 0 is at the
    first picture (`start`; with no picture, the sound's first timestamp): sound before
    the first picture is dropped, sound starting after it starts with silence, a gap in it
    is silent, and sound that has run ahead of its timestamps (a sound card faster than
    its stated rate) is dropped back to them."""

    def __init__(self, start: float | None, rate: int) -> None:
        self.start = start
        self.rate = rate
        self.at = 0  # samples placed so far
        self.placed = False  # whether any have been (before that, sound may be dropped)

    def place(self, time: float | None, samples: int) -> tuple[int, int]:
        """(samples of silence before, samples of it to drop) for `samples` at `time`
        seconds; the caller then places the rest of it."""
        silence = drop = 0
        if time is not None and self.start is None:
            self.start = time
        if time is not None and self.start is not None:
            off = round((time - self.start) * self.rate) - self.at
            if not self.placed:  # where it starts: not as far as a wrong timestamp puts it
                if abs(off) <= MAX_HOLD_S * self.rate:
                    silence, drop = max(off, 0), min(max(-off, 0), samples)
            elif off > MAX_HOLD_S * self.rate or off < -SOUND_BACK_S * self.rate:
                self.start = time - self.at / self.rate  # a new clock, from here
            elif off > SOUND_SLACK_S * self.rate:
                silence = off
            elif off < -SOUND_SLACK_S * self.rate:
                drop = min(-off, samples)
        self.at += silence + samples - drop
        self.placed = self.placed or self.at > 0
        return silence, drop


# A decoder gives pictures in display order; a container that stores decoding times for
# them (AVI, ASF) stamps them out of order where B-pictures are. Sorted among this many
# pictures, the stamps come right.
REORDER = 4


def in_time_order(items: Iterable[_T], time_of: Callable[[_T], float | None],
                  fps: Fraction) -> Iterator[tuple[_T, float | None]]:
    """Each picture, in the order given, with a time: the timestamps of a few at a time
    sorted among them (`REORDER`; one comes out that many later, so up to REORDER + 1
    decoded pictures are held), but not across a timestamp over a frame and a half before
    all of those held (a clock that started again: out of order, it would still be after
    the earliest), nor across one with no timestamp."""
    window: deque[_T] = deque()
    times: list[float] = []  # a heap of the window's timestamps
    for item in items:
        t = time_of(item)
        if times and (t is None or t < times[0] - 1.5 / float(fps)
                      or t > max(times) + MAX_HOLD_S):
            while window:
                yield window.popleft(), heapq.heappop(times)
        if t is None:
            yield item, None
            continue
        window.append(item)
        heapq.heappush(times, t)
        if len(window) > REORDER:
            yield window.popleft(), heapq.heappop(times)
    while window:
        yield window.popleft(), heapq.heappop(times)


class VideoDamaged(Exception):
    """The stream's pictures end in damage: its last packets do not decode, or the pictures
    end short of their times (with frame threading a decoder may drop the last pictures
    without a word)."""


def pictures(c: av.container.InputContainer, s: av.video.stream.VideoStream, fps: Fraction,
             packet_seen: Callable[[av.Packet], None] | None = None,
             damaged: Callable[[float | None], None] | None = None,
             ) -> Iterator[tuple[av.VideoFrame, float | None]]:
    """The pictures of stream `s` as decoded, each with its time (`in_time_order`), from the
    first one that decodes. Packets that do not decode are passed over, as a player does:
    before the first keyframe or picture (a stream cut inside a group of pictures, a damaged
    first packet) silently; after it, telling `damaged` the time of the last picture before
    each run of them once a packet after it decodes. A run longer than MAX_DAMAGED_RUN
    raises the decoder's error; one that lasts to the end, or pictures that end over a
    frame and a half short of the last packets' times, raise VideoDamaged. A picture far
    before the one before it that the next does not follow (a stale one a decoder gives
    after damage), or that ends the stream, is dropped: it is not a clock that started
    again. Empty packets with a time (a picture that stays, in Ogg) are not decoded: to a
    decoder they mean the end. `packet_seen` sees every stream's packets."""
    back = MAX_BACK_FRAMES / float(fps)

    def decoded() -> Iterator[av.VideoFrame]:
        started, run = False, 0
        shown: float | None = None  # the time of the last picture given
        latest: float | None = None  # the latest time given (AVI's last stamps reorder)
        stray: av.VideoFrame | None = None  # a picture far back, until the next says why
        tail: deque[float] = deque(maxlen=16)  # the last packets' times (B-pictures reorder)
        for packet in c.demux():
            if packet_seen is not None:
                packet_seen(packet)
            if packet.stream is not s or (not packet.size and packet.dts is not None):
                continue
            if packet.size and packet.pts is not None and packet.time_base is not None \
                    and not packet.is_discard:  # one an edit list cuts off is not shown
                tail.append(float(packet.pts * packet.time_base))
            try:
                frames = cast(list[av.VideoFrame], packet.decode())
            except av.error.FFmpegError:
                if started:
                    run += 1
                    if run > MAX_DAMAGED_RUN:
                        raise
                continue
            if run and packet.size:  # the flush at the end is not the stream going on
                if damaged is not None:
                    damaged(shown)
                run = 0
            # Frame threading gives a keyframe's picture some packets later.
            started = started or bool(frames) or bool(packet.is_keyframe and packet.size)
            for f in frames:
                t = f.time
                if stray is not None:
                    if t is not None and shown is not None and t < shown - back:
                        yield stray  # two pictures far back: a clock that started again
                        shown = stray.time
                    stray = None
                if t is not None and shown is not None and t < shown - back:
                    stray = f
                    continue
                if t is not None:
                    shown, latest = t, t if latest is None else max(latest, t)
                yield f
        # Damage that lasts to the end, or pictures missing at the end: where it broke.
        if run or (started and tail and latest is not None
                   and max(tail) - latest > 1.5 / float(fps)):
            raise VideoDamaged()

    return in_time_order(decoded(), lambda f: f.time, fps)


def first_picture_time(path: str | Path) -> float | None:
    """The time of the first picture `pictures` gives (where a file's clock starts), or
    None when none decodes or it has no time."""
    try:
        with av.open(str(path)) as c:
            s = shown_stream(c)
            if s is None:
                return None
            s.thread_type = "AUTO"
            rate = s.guessed_rate or s.average_rate or Fraction(25)
            return next(iter(pictures(c, s, Fraction(rate))), (None, None))[1]
    except (av.error.FFmpegError, OSError, VideoDamaged):
        return None
