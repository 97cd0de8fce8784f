"""Silence suppression: the sender's speech gate on the shared clips' sound, and the
receiver's timeline that plays silence where no packet came."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from conftest import CLIPS, require

from facecodec.stream.speech import SoundTimeline, SpeechGate

RATE = 48000


def sound(path: Path, frame_ms: int) -> list[av.AudioFrame]:
    """A clip's sound as Opus codes it: packed s16 stereo 48 kHz frames of frame_ms."""
    require(path)
    resampler = av.AudioResampler("s16", "stereo", RATE, frame_size=RATE * frame_ms // 1000)
    with av.open(str(path)) as container:
        frames = [out for f in container.decode(container.streams.audio[0])
                  for out in resampler.resample(f)]
    return [f for f in frames if f.samples == RATE * frame_ms // 1000]


def silence(frame_ms: int, count: int) -> list[av.AudioFrame]:
    return [av.AudioFrame.from_ndarray(np.zeros((1, RATE * frame_ms // 1000 * 2), np.int16),
                                       format="s16", layout="stereo") for _ in range(count)]


def test_the_gate_sends_speech_and_holds_open_after_it_then_stops() -> None:
    for frame_ms, hangover in ((20, 10), (60, 5)):  # 200 ms, or 5 frames the receiver holds
        speech = sound(CLIPS / "grid_swiz3n.mpg", frame_ms)
        gate = SpeechGate(frame_ms)
        sent = [gate(f) for f in speech]
        assert sum(sent) >= 0.9 * len(sent), (frame_ms, sum(sent), len(sent))
        assert sent[-1]
        after = [gate(f) for f in silence(frame_ms, 50)]
        # The clip ends in speech or inside the hangover; the detector itself reports speech
        # for up to 200 ms after a long run of it, and then the gate's hangover.
        assert 1 <= sum(after) * frame_ms <= hangover * frame_ms + 200, (frame_ms, after)
        assert after == sorted(after, reverse=True)  # one run, then nothing
        assert gate(speech[len(speech) // 2])  # speech opens it again at once


def test_the_gate_sends_nothing_of_a_silent_sound_track_and_little_of_near_silence() -> None:
    gate = SpeechGate(20)
    frames = sound(CLIPS / "liveportrait_d19.mp4", 20)  # a sound track of digital silence
    assert len(frames) > 300 and not any(gate(f) for f in frames)
    # liveportrait_d9: a quiet room (median level -66 dBFS) with a few sounds in it.
    quiet = sound(CLIPS / "liveportrait_d9.mp4", 20)
    gate = SpeechGate(20)
    sent = sum(gate(f) for f in quiet)
    assert 0 < sent < 0.2 * len(quiet), (sent, len(quiet))


def frame(pts: int, value: int, samples: int = 960) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(np.full((1, samples * 2), value, np.int16), format="s16",
                                   layout="stereo")
    f.sample_rate, f.pts, f.time_base = RATE, pts, Fraction(1, RATE)
    return f


def test_the_timeline_plays_frames_as_they_come_and_silence_in_the_pauses() -> None:
    out: list[av.AudioFrame] = []
    timeline = SoundTimeline(out.append)
    timeline.tick(5.0)
    assert out == []  # nothing heard yet: nothing to continue
    t = 10.0
    for i in range(10):  # 200 ms of sound, every frame on time
        timeline.frame(frame(960 * i, 100), t + 0.02 * i)
        timeline.tick(t + 0.02 * i + 0.01)
    assert [f.pts for f in out] == [960 * i for i in range(10)] and timeline.filled == 0
    # The sender stops sending for 1 s: silence continues the stream at the frames' pace,
    # a frame behind the clock.
    last = t + 0.18
    for k in range(1, 101):
        timeline.tick(last + 0.01 * k)
    filled = out[10:]
    assert len(filled) == timeline.filled and 47 <= len(filled) <= 50
    assert all(not f.to_ndarray().any() for f in filled)
    assert [f.pts for f in filled] == [960 * (10 + i) for i in range(len(filled))]
    # Then the receiver's held packets of the pause come out late, and are left out; the
    # next speech plays where its timestamp puts it, the silence before it filled.
    for i in range(10, 14):
        timeline.frame(frame(960 * i, 0), last + 1.0)
    assert timeline.dropped == 4 and len(out) == 10 + len(filled)
    resume = 960 * 65
    timeline.frame(frame(resume, 100), last + 1.01)
    pts = [f.pts for f in out]
    assert pts == sorted(pts) and pts == list(range(0, resume + 1, 960))
    assert out[-1].to_ndarray().min() == 100


def test_the_timeline_fills_a_lost_frame_and_keeps_every_late_one_it_has_not_covered() -> None:
    out: list[av.AudioFrame] = []
    timeline = SoundTimeline(out.append)
    timeline.frame(frame(0, 100), 0.0)
    timeline.frame(frame(1920, 100), 0.04)  # the frame at 960 was lost
    assert [f.pts for f in out] == [0, 960, 1920] and timeline.filled == 1
    timeline.frame(frame(960, 100), 0.05)  # it comes after all: its time was played
    timeline.frame(frame(2880, 100), 0.06)
    assert [f.pts for f in out] == [0, 960, 1920, 2880]
    assert timeline.dropped == 1
