"""How full the link is, as a call's receiver sees it, and what the sender makes of it.

- `QueueDelay` (receiver): how long motion packets waited in the network's queues.
- `LinkRate` (receiver): the rate the link carries, WebRTC's delay-based estimate.
- `SoundRate` (sender): whether the sound goes thin on a link that stays full.

Loss alone cannot tell a lossy link from a full one: a bottleneck whose queue overflows
drops packets too, and the sender's answer to loss (intra-only motion, about 4 kbps more)
is then more of what the link cannot carry. A full link shows first as delay: packets wait
in its queue. Each motion packet's delay from capture (t0 + index / fps on the sender's
clock) to arrival, less the least delay seen over the last WINDOW_S, is how long it
queued: the path's own delay and any offset between the two machines' clocks cancel out.
The receiver sends it with each loss report (wire.loss_report), with its estimate of the
link's rate; the sender, while the queue is long, puts more frames in each packet
(codec/stream.py, StreamEncoder.report_loss), keeps the layer within the estimate
(layer_rate.LiveLayer.limit), and may thin its sound.
"""

from __future__ import annotations

from collections import deque
from statistics import median

from aiortc.rate import RemoteBitrateEstimator

from facecodec.stream.wire import wire_bytes

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


class LinkRate:
    """The rate the link from the sender can carry, as the receiver estimates it: WebRTC's
    receive-side estimator (aiortc.rate, after webrtc.org's; what a REMB message reports).
    Packets are grouped by send time; a Kalman filter follows how their delay grows from
    group to group; growing faster than an adaptive threshold means the sender overuses the
    link, and the estimate drops to 0.85 of what arrived over the last second; otherwise it
    rises, by 8 % a second, or by about 4 kbps a second near the rate it last dropped at,
    and never past 1.5 times what arrives plus 10 kbps. It counts the data channels' bytes
    with their headers (wire_bytes), not the sound, which shares the link: what the data
    channels can have is what the estimate says.

    A motion packet's send time is its last frame's capture (t0 + index / fps on the
    sender's clock): a call's sender sends it as soon as that frame is coded, and the
    encoder's varying time per frame reaches the filter as jitter. The other packets go
    just before a motion packet (a layer picture with its frame's; a keyframe, its share
    and END before the next), so each is counted as sent with the next motion packet;
    one that waits for a motion packet longer than HOLD_S is counted as sent at its own
    frame's capture."""

    HOLD_S = 1.0

    def __init__(self) -> None:
        self._estimator = RemoteBitrateEstimator()
        self._last_ms = 0
        # (arrival, own frame's capture, size, shares the next packet)
        self._held: list[tuple[float, float, int, bool]] = []
        self.kbps: float | None = None  # None until the first estimate (3 s, or overuse)

    def other(self, arrival_s: float, frame_s: float, size: int, shared: bool = False) -> None:
        """A packet but a motion packet, of `size` bytes, for the frame captured at
        `frame_s`, that arrived at `arrival_s` (seconds); `shared`: it came in the SCTP
        packet of the motion packet after it (a layer picture, wire.wire_bytes)."""
        self._held.append((arrival_s, frame_s, size, shared))
        while self._held and self._held[0][0] < arrival_s - self.HOLD_S:
            first_arrival, first_frame, first_size, first_shared = self._held.pop(0)
            self._add(first_arrival, first_frame, wire_bytes(first_size, first_shared))

    def motion(self, arrival_s: float, sent_s: float, size: int) -> None:
        """A motion packet of `size` bytes whose last frame was captured at `sent_s`."""
        held, self._held = self._held, []
        for held_arrival, _, held_size, held_shared in held:
            self._add(held_arrival, sent_s, wire_bytes(held_size, held_shared))
        self._add(arrival_s, sent_s, wire_bytes(size))

    def _add(self, arrival_s: float, sent_s: float, wire: int) -> None:
        arrival_ms = max(self._last_ms, int(arrival_s * 1000))
        self._last_ms = arrival_ms
        abs_send_time = int(sent_s * (1 << 18)) & 0xFFFFFF  # 6.18 fixed point, as RTP's
        update = self._estimator.add(arrival_ms, abs_send_time, wire, 0)
        if update is not None:
            self.kbps = update[0] / 1000


class SoundRate:
    """Whether a call's sound goes thin (peer.THIN_SOUND: half its bytes on the wire) on a
    link that stays full once the picture has given way.

    The sound is the one thing a call sends that nothing else here shrinks: a speech
    call's 20 ms Opus frames at 24 kbps were 45 kbps on the wire (grid_swiz3n, 30 s), and
    through 60 kbps the motion's packets queued and dropped behind them. So when a report
    sees the link full, not only lossy (motion queueing, or loss with a fall of the link's
    estimate: StreamEncoder.link_congested; on a link that loses without being full,
    longer sound packets would only lose more speech at a time), while
    the layer is paused (or there is none) and this side is speaking, the sound goes thin;
    it goes back after `hold` reports in a row without loss or queueing, a hold that
    doubles (up to MAX_HOLD) each time the sound has to go thin again within that many
    reports of going back.
    """

    HOLD = 20  # reports, about a second each
    MAX_HOLD = 160

    def __init__(self) -> None:
        self.thin = False
        self.times = 0  # how often it went thin
        self._clean = 0  # clean reports in a row while thin
        self._since_back: int | None = None  # reports since it last went back
        self._hold = self.HOLD

    def report(self, congested: bool, clean: bool, picture_gave_way: bool,
               speaking: bool) -> bool:
        """One receiver report: the link full (not only lossy), the report without loss or
        queueing, the layer paused or absent, sound sent lately; whether the sound is to be
        thin now."""
        if self._since_back is not None:
            self._since_back += 1
        if not self.thin:
            if congested and picture_gave_way and speaking:
                self.thin, self._clean = True, 0
                self.times += 1
                again = self._since_back is not None and self._since_back <= self._hold
                self._hold = min(2 * self._hold, self.MAX_HOLD) if again else self.HOLD
            return self.thin
        self._clean = self._clean + 1 if clean else 0
        if self._clean >= self._hold:
            self.thin, self._since_back = False, 0
        return self.thin
