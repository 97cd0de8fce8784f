"""What a call does beside its frames: the restorer's pass over a new reference picture, on
the sender (its RESTORE share) and on the receiver (the picture it draws from). One thread a
process, below the frames' scheduling priority: such work can land a few frames late, while
on the sending or drawing thread it held them up (130-160 ms a keyframe on one core, 4-5
frames skipped or late at 30 fps)."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

NICE = 10  # how far below the frames' threads (Linux sets it per thread)


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


@functools.cache
def background() -> ThreadPoolExecutor:
    """The process's background thread (made on first use, idle until given work)."""
    return ThreadPoolExecutor(1, thread_name_prefix="facecodec-background",
                              initializer=_lower_priority)
