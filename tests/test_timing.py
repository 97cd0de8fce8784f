"""The clock that places a file's pictures and sound (capture/timing.py), on made-up
timestamps: what each rule does at its edges."""

from __future__ import annotations

from fractions import Fraction

from facecodec.capture.timing import MAX_HOLD_S, PictureClock, SoundClock, in_time_order

RATE = 48000


def _slots(times: list[float | None], fps: int = 10) -> list[int]:
    """Which picture (by its number) each constant-rate frame shows."""
    clock, shown, last = PictureClock(Fraction(fps)), [], -1
    for i, t in enumerate(times):
        held, n = clock.place(t)
        shown += [last] * held + [i] * n
        last = i if n else last
    return shown


def test_pictures_on_time_fill_one_frame_each() -> None:
    assert _slots([0.0, 0.1, 0.2, 0.3]) == [0, 1, 2, 3]
    assert _slots([5.0, 5.1, 5.2]) == [0, 1, 2]  # the first picture's time is frame 0


def test_a_pause_holds_the_last_picture_and_the_next_comes_at_its_time() -> None:
    assert _slots([0.0, 0.1, 0.5, 0.6]) == [0, 1, 1, 1, 1, 2, 3]


def test_a_picture_within_a_frame_of_its_slot_fills_it() -> None:
    assert _slots([0.0, 0.1, 0.15, 0.3]) == [0, 1, 2, 3]  # half a frame early
    assert _slots([0.0, 0.1, 0.3, 0.4]) == [0, 1, 2, 2, 3]  # one missing: the next fills it
    # Pictures twice as fast as the rate: every other one is skipped.
    assert _slots([i * 0.05 for i in range(8)]) == [0, 1, 2, 4, 6]


def test_a_new_clock_goes_on_from_where_the_pictures_are() -> None:
    # Two recordings joined: the second's stamps start again at 0.
    assert _slots([0.0, 0.1, 0.2, 0.3, 0.4, 0.0, 0.1]) == [0, 1, 2, 3, 4, 5, 6]
    # A jump longer than a pause is held for: closed up.
    assert _slots([0.0, 0.1, 0.2 + MAX_HOLD_S + 1]) == [0, 1, 2]


def test_pictures_without_a_time_take_the_next_frame() -> None:
    # The first has none: the clock starts behind it, not on it.
    assert _slots([None, 0.0, 0.1, 0.2]) == [0, 1, 2, 3]


def test_in_time_order_sorts_a_few_but_not_across_a_new_clock() -> None:
    stamps = [0.1, 0.4, 0.3, 0.5, 0.2, 0.8, 0.7, 0.9, 0.6]  # AVI's B-pictures
    got = [t for _, t in in_time_order(stamps, lambda t: t, Fraction(10))]
    assert got == sorted(stamps)
    joined = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0, 0.1]
    got = [t for _, t in in_time_order(joined, lambda t: t, Fraction(10))]
    assert got == joined


def _place(clock: SoundClock, at: float | None, n: int = 960) -> tuple[int, int]:
    return clock.place(at, n)


def test_sound_is_placed_from_the_first_picture() -> None:
    late = SoundClock(1.0, RATE)  # the first picture at 1 s; the sound from 1.5 s
    assert _place(late, 1.5) == (RATE // 2, 0)
    early = SoundClock(1.0, RATE)  # the sound from 0.5 s: half a second of it dropped
    assert [_place(early, 0.5 + i * 0.02) for i in range(26)] == [(0, 960)] * 25 + [(0, 0)]
    assert early.at == 960


def test_a_gap_in_the_sound_is_silent_and_a_sound_ahead_of_its_time_drops_back() -> None:
    clock = SoundClock(0.0, RATE)
    assert _place(clock, 0.0) == (0, 0) and _place(clock, 0.02) == (0, 0)
    assert _place(clock, 0.04 + 0.03) == (0, 0)  # within 40 ms: follows on
    assert _place(clock, 1.0) == (RATE - 3 * 960, 0)  # a gap: silence up to its time
    assert _place(clock, 1.02 - 0.1, 9600) == (0, round(0.1 * RATE))  # 100 ms ahead: dropped
    assert _place(clock, 0.0) == (0, 0)  # a second back: a clock that started again,
    assert _place(clock, 0.02) == (0, 0)  # going on from where the sound is,
    assert _place(clock, 0.5) == (round(0.46 * RATE), 0)  # its gaps silent as before


def test_sound_damaged_before_the_first_picture_is_dropped_too() -> None:
    clock = SoundClock(2.0, RATE)
    assert _place(clock, 0.0, 1920) == (0, 1920)  # a damaged packet's silence, dropped
    assert _place(clock, 2.0 - 0.01) == (0, 480) and clock.at == 480


def test_sound_without_a_picture_starts_its_own_clock() -> None:
    clock = SoundClock(None, RATE)
    assert _place(clock, 3.0) == (0, 0) and _place(clock, 3.02) == (0, 0)
    assert _place(clock, 5.0) == (round(1.96 * RATE), 0)
