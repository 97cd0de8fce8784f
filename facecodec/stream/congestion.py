"""How full the link is, as a call's receiver sees it: the queueing delay of motion packets.

Loss alone cannot tell a lossy link from a full one: a bottleneck whose queue overflows
drops packets too, and the sender's answer to loss (intra-only motion, about 4 kbps more)
is then more of what the link cannot carry. A full link shows first as delay: packets wait
in its queue. Each motion packet's delay from capture (t0 + index / fps on the sender's
clock) to arrival, less the least delay seen over the last WINDOW_S, is how long it
queued: the path's own delay and any offset between the two machines' clocks cancel out.
The receiver sends it with each loss report (wire.loss_report), and the sender, while it
is high, puts more frames in each packet (codec/stream.py, StreamEncoder.report_loss).
"""

from __future__ import annotations

from collections import deque
from statistics import median

WINDOW_S = 10.0


class QueueDelay:
    """Motion packets' queueing delay, in ms, per report interval."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._floor: deque[tuple[float, float]] = deque()  # (arrival, delay), delays rising
        self._since_report: list[float] = []

    def add(self, delay_s: float, now: float) -> None:
        """A packet that arrived at `now` (s), `delay_s` after its first frame's capture."""
        while self._floor and self._floor[-1][1] >= delay_s:
            self._floor.pop()  # never the least again while this one is in the window
        self._floor.append((now, delay_s))
        while self._floor[0][0] < now - self.window_s:
            self._floor.popleft()
        self._since_report.append(delay_s - self._floor[0][1])

    def take(self) -> float:
        """The median queueing delay (ms) of the packets since the last call; 0 if none."""
        queued, self._since_report = self._since_report, []
        return 1000 * median(queued) if queued else 0.0
