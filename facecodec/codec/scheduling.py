"""Keeps SVT-AV1 from making the process real-time.

Run with the right to (root with CAP_SYS_NICE), SVT-AV1 puts the thread that starts an
encoder, and every thread the encoder starts, under SCHED_FIFO at priority 99 (measured with
PyAV 18.1's build). Such a thread is never preempted by an ordinary one, and threads it
starts later (torch's workers) inherit the policy: on 2 cores a call's sender then held its
receiver off the CPU, and real-time workers spinning at a barrier starved the very threads
they waited for, so a process running calls hung. Each SVT-AV1 encoder start is wrapped in
`ordinary_scheduling`, which puts those threads back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_REALTIME = frozenset(getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR")
                      if hasattr(os, name))


def realtime_threads() -> list[int]:
    """Ids of this process's threads under a real-time policy (empty off Linux)."""
    if not _REALTIME:
        return []
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []
    out = []
    for tid in tids:
        with contextlib.suppress(OSError):  # the thread may have ended since the listing
            if os.sched_getscheduler(tid) in _REALTIME:
                out.append(tid)
    return out


@contextlib.contextmanager
def ordinary_scheduling() -> Iterator[None]:
    """Run the block, then give every thread it made real-time the policy the calling
    thread had before (a process started real-time on purpose is left as it is)."""
    if not _REALTIME:
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if policy not in _REALTIME:
            for tid in realtime_threads():
                with contextlib.suppress(OSError):
                    os.sched_setscheduler(tid, policy, param)
