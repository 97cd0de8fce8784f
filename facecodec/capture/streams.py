"""Which of a file's streams a player picks: the picture it shows and the sound it plays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import av

_S = TypeVar("_S", bound=av.stream.Stream)


def _picked(streams: Sequence[_S]) -> _S | None:
    """Of several, the one marked default, else the first."""
    marked = [s for s in streams if s.disposition & av.stream.Disposition.default]
    return next(iter(marked or streams), None)


def shown_stream(c: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream a player shows: not a cover picture (an attached picture of a song
    or a film)."""
    cover = av.stream.Disposition.attached_pic
    return _picked([s for s in c.streams.video if not s.disposition & cover])


def heard_stream(c: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The sound stream a player plays."""
    return _picked(list(c.streams.audio))
