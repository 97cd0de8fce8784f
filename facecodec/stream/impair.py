"""An in-app network impairment for when network namespaces (tc netem) are not available.

It sits on the receiving side of a peer, between the data channel and the application, so
the sender's byte counts stay what really went out and the receiver sees what a lossy,
jittery path would have delivered.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from facecodec.errors import FacecodecError

MAX_JITTER_MS = 10_000.0  # a path's extra delay; more is a broken path, not a slow one


@dataclass
class Impairment:
    """Drop, delay and damage packets on the loss-tolerant path.

    loss: probability a packet is dropped; jitter_ms: extra delay drawn uniformly from
    [0, jitter_ms] (so packets reorder, as on a real path); corrupt: probability one byte of a
    packet is flipped (exercises the receiver's checksum and keyframe-request path);
    reliable_too: also apply corruption and jitter (never loss) to the reliable channel.
    """

    loss: float = 0.0
    jitter_ms: float = 0.0
    corrupt: float = 0.0
    reliable_too: bool = False
    seed: int | None = None
    dropped: int = 0
    corrupted: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("loss", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FacecodecError(f"{name} must be a probability in [0, 1], got {value}")
        if not 0 <= self.jitter_ms <= MAX_JITTER_MS:  # also refuses NaN
            raise FacecodecError(f"jitter must be within 0..{MAX_JITTER_MS:g} ms, got "
                                 f"{self.jitter_ms:g}")
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        return self.loss > 0 or self.jitter_ms > 0 or self.corrupt > 0

    def deliver(self, data: bytes, sink: Callable[[bytes], None], *, reliable: bool) -> None:
        """Hand `data` to `sink` now, later, damaged, or never."""
        if reliable and not self.reliable_too:
            sink(data)
            return
        if not reliable and self._rng.random() < self.loss:
            self.dropped += 1
            return
        if data and self._rng.random() < self.corrupt:
            damaged = bytearray(data)
            damaged[self._rng.randrange(len(damaged))] ^= 1 << self._rng.randrange(8)
            data = bytes(damaged)
            self.corrupted += 1
        # Reliable data keeps its order: it may be late, never overtaken.
        delay = 0.0 if reliable else self._rng.uniform(0.0, self.jitter_ms) / 1000.0
        if delay <= 0.0:
            sink(data)
        else:
            asyncio.get_running_loop().call_later(delay, sink, data)
