"""Adaptive entropy models for quantised motion residuals, on constriction's range coder.

Every integer residual is coded with one of a fixed family of discrete Laplace (two-sided
geometric) models, chosen per symbol by an integer state that tracks the recent mean absolute
residual of that dimension. Encoder and decoder must pick bit-identical models, so:

- the state and its update are integers only (`update_state`);
- the family is built once from an integer recursion and basic IEEE float operations (+, -,
  *, /; no exp or pow, whose last bit may differ between C libraries), and constriction turns
  the probabilities into fixed-point tables with plain arithmetic too.

Each model covers residuals in [-R, R] (R about 10 scales) plus an escape symbol; an escaped
residual is followed by the quantised value itself, coded uniformly over [-QMAX, QMAX].
"""

from __future__ import annotations

import bisect
import functools

import constriction
import numpy as np

QMAX = 32767  # quantised values are clipped to [-QMAX, QMAX]
STATE_FRAC_BITS = 8  # states and scales are in 1/256 of a quantiser step
STATE_CAP = 4096 << STATE_FRAC_BITS  # one wild residual must not blind the state for long
_MIN_RANGE = 8  # smallest R: escapes stay rare even for the sharpest model
_RANGE_PER_SCALE = 10  # R = 10 scales: the Laplace tail beyond holds e^-10 of the mass
_ESCAPE_FLOOR = 1.0 / 1024  # escape probability floor, for jumps the state did not expect
_UNIFORM = constriction.stream.model.Uniform(2 * QMAX + 1)


def _scales() -> tuple[int, ...]:
    # Geometric (x1.19, integer increments of at least 1) from 1/256 step, for dimensions that
    # stay still (a residual of 0 then costs ~0.01 bit), to 1024 steps, the widest intra
    # prior worth modelling.
    s = [1]
    while s[-1] < 1024 << STATE_FRAC_BITS:
        s.append(s[-1] + max(1, (s[-1] * 3) >> 4))
    return tuple(s)


SCALES = _scales()


def _ratio(i: int) -> float:
    b = SCALES[i] / (1 << STATE_FRAC_BITS)
    return b / (b + 1.0)  # close to exp(-1/b), the discrete Laplace ratio, without exp


def _radius(i: int) -> int:
    return min(QMAX, max(_MIN_RANGE, (SCALES[i] * _RANGE_PER_SCALE) >> STATE_FRAC_BITS))


def _mean_abs(i: int) -> float:
    r = _ratio(i)
    return 2.0 * r / ((1.0 - r) * (1.0 + r))  # E|e| of the two-sided geometric law


# A state selects the model whose expected |residual| is nearest (thresholds at midpoints).
_THRESHOLDS = tuple(
    int((_mean_abs(i) + _mean_abs(i + 1)) * (1 << (STATE_FRAC_BITS - 1)))
    for i in range(len(SCALES) - 1)
)


def model_index(state: int) -> int:
    """Model for a state (mean |residual| in 1/256 steps)."""
    return bisect.bisect_right(_THRESHOLDS, state)


def index_for_scale(scale_steps: float) -> int:
    """Model for a Laplace-like prior of the given spread (in quantiser steps), for intra."""
    state = int(min(max(scale_steps, 0.0), float(STATE_CAP)) * (1 << STATE_FRAC_BITS))
    return model_index(state)


def update_state(state: int, residual: int, shift: int) -> int:
    """Exponential moving average of |residual| with rate 2^-shift, integers only."""
    a = min(abs(residual) << STATE_FRAC_BITS, STATE_CAP)
    return state + ((a - state) >> shift)  # floor shift keeps the state >= 0


@functools.cache
def _model(i: int) -> tuple[constriction.stream.model.Categorical, int]:
    r, radius = _ratio(i), _radius(i)
    p = [1.0]
    for _ in range(radius):
        p.append(p[-1] * r)
    tail = 2.0 * p[-1] * r / (1.0 - r)
    half = np.array(p)
    probs = np.concatenate([half[:0:-1], half, [0.0]])
    total = float(probs.sum())
    probs[-1] = max(tail, total * _ESCAPE_FLOOR)
    return constriction.stream.model.Categorical(probs, perfect=False), radius


def encoder() -> constriction.stream.queue.RangeEncoder:
    return constriction.stream.queue.RangeEncoder()


def encode_symbol(enc: constriction.stream.queue.RangeEncoder, index: int, residual: int,
                  value: int, log: list[tuple[int, int]]) -> None:
    """Code `residual` with model `index`, or escape and code `value` (the quantised value).

    `log` records (model, symbol) pairs, model -1 for the uniform escape payload, so the
    encoder can check a shortened stream by replaying it.
    """
    model, radius = _model(index)
    if -radius <= residual <= radius:
        sym = residual + radius
        enc.encode(sym, model)
        log.append((index, sym))
    else:
        enc.encode(2 * radius + 1, model)
        enc.encode(value + QMAX, _UNIFORM)
        log += [(index, 2 * radius + 1), (-1, value + QMAX)]


def decode_symbol(dec: constriction.stream.queue.RangeDecoder, index: int, prediction: int
                  ) -> int:
    """Inverse of `encode_symbol`: the quantised value."""
    model, radius = _model(index)
    sym = int(dec.decode(model))
    if sym <= 2 * radius:
        return prediction + sym - radius
    return int(dec.decode(_UNIFORM)) - QMAX


def finish(enc: constriction.stream.queue.RangeEncoder, log: list[tuple[int, int]]) -> bytes:
    """The coded bytes, with trailing bytes dropped where the decoder still recovers the symbols.

    The range coder emits whole 32-bit words; the decoder pads a short stream with zero bytes,
    so the shortest prefix that decodes to the same symbols is kept (about 2 bytes per packet).
    """
    full = enc.get_compressed().astype(">u4").tobytes()
    best = full
    for n in range(len(full) - 1, max(-1, len(full) - 8), -1):
        if _replays(full[:n], log):
            best = full[:n]
    return best


def decoder(data: bytes) -> constriction.stream.queue.RangeDecoder:
    padded = bytes(data) + b"\0" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
    return constriction.stream.queue.RangeDecoder(words)


def _replays(data: bytes, log: list[tuple[int, int]]) -> bool:
    dec = decoder(data)
    try:
        for index, sym in log:
            model = _UNIFORM if index < 0 else _model(index)[0]
            if int(dec.decode(model)) != sym:
                return False
    except Exception:  # constriction rejects some truncations outright: not a valid prefix
        return False
    return True
