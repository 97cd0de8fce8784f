"""SIGTERM ends a long-running command (a call, the signaling server) the way Ctrl-C does:
by cancelling its task, so that its cleanup runs (the peer is told, sockets close) and it
reports as it would after Ctrl-C. `kill`, `timeout`, `docker stop` and service managers
send SIGTERM, and Python's default is to die on the spot."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable


async def until_sigterm(work: Awaitable[object]) -> bool:
    """Await `work`; SIGTERM cancels it. True when SIGTERM ended it. A second SIGTERM meets
    the handler from before (the command line's raises Terminated at once)."""
    if threading.current_thread() is not threading.main_thread():
        await work  # signal handlers belong to the main thread
        return False
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert task is not None
    terminated = False

    def stop(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True
        signal.signal(signal.SIGTERM, previous)
        loop.call_soon_threadsafe(task.cancel)

    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # installed outside Python: put back the default
        previous = signal.SIG_DFL
    signal.signal(signal.SIGTERM, stop)
    try:
        await work
    except asyncio.CancelledError:
        if not terminated:
            raise
    finally:
        if signal.getsignal(signal.SIGTERM) is stop:
            signal.signal(signal.SIGTERM, previous)
    return terminated
