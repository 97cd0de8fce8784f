"""A time limit on encoder calls that may never return.

SVT-AV1 (the PyAV wheel's libSvtAv1Enc) has been seen to deadlock inside the call that
codes a picture: every one of its threads idle on a semaphore, the call never returning,
and the same picture coded fine by a fresh encoder. Public reports of SVT-AV1 3.1 and later
describe the same fault. PyAV releases the GIL inside that call, so it can be watched from
beside it: `watched` runs the call in a thread of its own and raises `EncoderStalled` when
it has not returned within `STALL_LIMIT_S`. Nothing can stop the stuck thread; it is left
behind (a daemon, so the process still exits), and the caller starts a fresh encoder.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from facecodec.errors import FacecodecError

T = TypeVar("T")

# Far above any call's normal time: SVT-AV1's slowest here (a file's keyframe at preset 1)
# takes about 0.2 s, a whole 1080p picture at preset 4 about 2 s, on 2 loaded cores.
STALL_LIMIT_S = 60.0

_stalls = 0  # encoders given up on and started again in this process (`encode` notes it)
_stalls_lock = threading.Lock()


class EncoderStalled(FacecodecError):
    """An encoder call that did not return within the limit (the encoder is abandoned)."""

    exit_code = 1


@contextlib.contextmanager
def stall_limit(seconds: float) -> Iterator[None]:
    """Calls made within the block, by any thread, are given up on after `seconds` (a live
    call gives up sooner than a file: its stalled sender freezes the picture the other side
    sees). Process-wide on purpose: a call's encoder runs in executor threads, which a
    context variable set here would not reach."""
    global STALL_LIMIT_S
    kept, STALL_LIMIT_S = STALL_LIMIT_S, seconds
    try:
        yield
    finally:
        STALL_LIMIT_S = kept


def stalls() -> int:
    """How many times this process has given up on an encoder and started a fresh one."""
    return _stalls


def watched(call: Callable[[], T], what: str, limit_s: float | None = None) -> T:
    """`call()`, run in a thread of its own; EncoderStalled if it has not returned within
    `limit_s` seconds (STALL_LIMIT_S by default). Its exceptions are raised here."""
    limit = STALL_LIMIT_S if limit_s is None else limit_s
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread as is
            failure.append(e)

    worker = threading.Thread(target=run, name=f"{what} call", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise EncoderStalled(f"the {what} encoder stopped answering for {limit:g} s")
    if failure:
        raise failure[0]
    return result[0]


def retried(start: Callable[[], T], what: str) -> T:
    """`start()`, which makes a fresh encoder and runs its calls through `watched`, once
    more if one of them stalls: the fault is a race, and a second encoder codes the same
    pictures. A second stall is raised."""
    global _stalls
    try:
        return start()
    except EncoderStalled:
        with _stalls_lock:
            _stalls += 1
    try:
        return start()
    except EncoderStalled as e:
        raise EncoderStalled(f"{e}, twice in a row: run the command again") from None
