"""Motion coder: uniform quantisation, integer temporal prediction, adaptive range coding.

Per frame the flat motion vector (`Motion.to_vector()`, expression cut or zero padded to
`k`, then the Motion's surround if the config carries one) is quantised per dimension:
q = round((v - mean) / step), clipped to [-QMAX, QMAX] (QMAX = 32767; with the preset
steps that spans +-65 rad of rotation and +-49 crop fractions of translation, far beyond
any real face, so only garbage input is clipped).

A packet holds consecutive frames. An intra packet (RESYNC) codes its first frame against the
prior means with fixed per-dimension priors (`intra_scales`) and resets all state, so it
decodes on its own. Every other frame is predicted from earlier quantised frames, in
integers so both ends agree exactly; each dimension picks, by an integer running cost, the
better of "previous value" and "previous value plus half the last change" (damped linear
prediction: smooth head turns favour it, tracker jitter favours the former). Residuals are
range coded with models that adapt to each dimension's recent residual magnitude
(`facecodec.motion.entropy`).

Losses: an inter packet (MOTION) depends on every packet since the last intra packet. After
a lost or corrupt packet the receiver calls `MotionDecoder.reset()` and drops inter packets
until the next intra packet; decoding an inter packet without state raises `BitstreamError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from facecodec.errors import BitstreamError, FacecodecError, Terminated
from facecodec.motion import entropy
from facecodec.motion.entropy import QMAX
from facecodec.motion.motion import FIXED_SIZE, SURROUND_GRID, SURROUND_SIZE, Motion
from facecodec.motion.presets import PRESET_STEPS, PRESETS
from facecodec.motion.surround import surround_from_dct, surround_to_dct

K_MAX = 64
MAX_FRAMES = 4096  # per packet; bounds decoding work on any input
_MAGIC = b"FMC"
# 1: every array as float32 (12 bytes a dimension); 2: a config built from the stream's
# expression basis, as the step multiplier alone (the receiver rebuilds the rest); 3: as 2,
# then one byte, the side of the surround grid the frames carry (0: none); 4: as 3, the
# surround carried as its 2-D DCT (`surround_to_dct`), which this build writes.
_VERSION_ARRAYS, _VERSION_BUILT, _VERSION_SURROUND, _VERSION_SURROUND_DCT = 1, 2, 3, 4
_GRID = struct.Struct("<B")
_HEAD = struct.Struct("<3sBBBH")  # magic, version, k, adapt shift, initial inter state
_MUL = struct.Struct("<f")
MUL_RANGE = (0.01, 100.0)  # step multipliers a version-2 config may carry
_PREDICTORS = 2  # 0: previous value; 1: previous plus half the last change
_COST_SHIFT = 3  # rate of the predictor cost averages

# Base steps and priors of the fixed dimensions (medium preset): rotation (rad), translation
# (crop fraction), log scale, gaze and openness (canonical units; 1 unit ~ 60 px at 256 px).
_BASE_STEPS = np.array([0.002] * 3 + [0.0015] * 2 + [0.002] + [0.004] * 4 + [0.004] * 3)
_EXPR_STEP = 0.004
_MEANS = np.array([0.0] * 3 + [0.5] * 2 + [-1.8] + [0.0] * 4 + [0.15] * 2 + [0.1])
_INTRA = np.array([0.2] * 3 + [0.1] * 2 + [0.3] + [0.03] * 4 + [0.08] * 3)
# Surround (crop fractions): one pixel at 256 px (half a pixel cost 0.7-1.1 kbps more for
# at most 0.4 VMAF on the validation rungs, two pixels lost 1.9 VMAF at the low preset), a
# prior of 4 px. As DCT coefficients (version 4): the same step, and a prior g times wider
# for the two mean coefficients, which are g times the mean shift of the g x g cells.
_SURROUND_STEP, _SURROUND_INTRA = 1.0 / 256, 4.0 / 256
_SURROUND_LIMIT = 1e3  # crop fractions; only garbage reaches it, and it still quantises to QMAX


def _f32(a: np.ndarray | list[float], n: int, name: str) -> np.ndarray:
    # Stored as float32 in the header, so hold exactly those values on both ends.
    arr = np.asarray(a, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise FacecodecError(f"coder config: {name} has {arr.shape[0]} values, expected {n}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32).astype(np.float64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CoderConfig:
    """Everything both ends need to code motion; serialised into the stream header."""

    k: int
    steps: np.ndarray  # quantiser step per dimension (13 + k + surround)
    intra_scales: np.ndarray  # prior spread of each dimension around `means`, for intra frames
    means: np.ndarray = field(default_factory=lambda: np.array([]))  # prior mean; empty: default
    adapt_shift: int = 2  # adaptation rate 2^-shift of the residual scale states
    inter_init: int = 128  # scale state after an intra frame, 1/256 steps
    # Set when built from the basis (`_build`): then serialised as this number alone.
    step_mul: float | None = None
    surround: int = 0  # surround values a frame carries: 0 or SURROUND_SIZE (built configs)
    surround_dct: bool = False  # the surround coded as its DCT (version 4), not as cells
    _intra_index: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.k, int | np.integer) or not 1 <= int(self.k) <= K_MAX:
            raise FacecodecError(f"coder config: k must be 1..{K_MAX}, got {self.k}")
        if self.surround not in (0, SURROUND_SIZE) or (self.surround and self.step_mul is None):
            raise FacecodecError(f"coder config: surround must be 0 or {SURROUND_SIZE}, and "
                                 "only in a config built from the basis")
        if self.surround_dct and not self.surround:
            raise FacecodecError("coder config: a DCT surround needs a surround")
        n = FIXED_SIZE + int(self.k) + self.surround
        means = (self.means if len(self.means)
                 else np.concatenate([_MEANS, np.zeros(self.k + self.surround)]))
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "steps", _f32(self.steps, n, "steps"))
        object.__setattr__(self, "intra_scales", _f32(self.intra_scales, n, "intra_scales"))
        object.__setattr__(self, "means", _f32(means, n, "means"))
        for name in ("steps", "intra_scales"):
            a = getattr(self, name)
            if not (np.all(np.isfinite(a)) and np.all(a >= 1e-6) and np.all(a <= 1e3)):
                raise FacecodecError(f"coder config: {name} must lie in [1e-6, 1e3]")
        if not (np.all(np.isfinite(self.means)) and np.all(np.abs(self.means) <= 1e3)):
            raise FacecodecError("coder config: means must be finite and within +-1e3")
        if not 0 <= self.adapt_shift <= 8:
            raise FacecodecError("coder config: adapt_shift must be 0..8")
        if not 0 <= self.inter_init <= 0xFFFF:
            raise FacecodecError("coder config: inter_init must be 0..65535")
        # Float division once, here: both ends derive the same integers from the same floats.
        idx = tuple(entropy.index_for_scale(float(s / d))
                    for s, d in zip(self.intra_scales, self.steps, strict=True))
        object.__setattr__(self, "_intra_index", idx)

    @property
    def size(self) -> int:
        return FIXED_SIZE + self.k + self.surround

    def to_bytes(self) -> bytes:
        version = (_VERSION_ARRAYS if self.step_mul is None
                   else _VERSION_SURROUND_DCT if self.surround_dct
                   else _VERSION_SURROUND if self.surround else _VERSION_BUILT)
        head = _HEAD.pack(_MAGIC, version, self.k, self.adapt_shift, self.inter_init)
        if self.surround:
            return head + _MUL.pack(self.step_mul) + _GRID.pack(SURROUND_GRID)
        if self.step_mul is not None:
            return head + _MUL.pack(self.step_mul)
        body = np.concatenate([self.steps, self.intra_scales, self.means]).astype("<f4")
        return head + body.tobytes()

    @classmethod
    def from_bytes(cls, b: bytes, expr_std: np.ndarray | None = None) -> CoderConfig:
        """Parse a config; a built one (version 2) needs the stream basis's `expr_std`."""
        b = bytes(b)
        if len(b) < _HEAD.size:
            raise BitstreamError(f"motion coder config: {len(b)} bytes is too short")
        magic, version, k, shift, init = _HEAD.unpack_from(b)
        if magic != _MAGIC:
            raise BitstreamError("motion coder config: bad magic")
        if version not in (_VERSION_ARRAYS, _VERSION_BUILT, _VERSION_SURROUND,
                           _VERSION_SURROUND_DCT):
            raise BitstreamError(f"motion coder config: unsupported version {version}")
        if not 1 <= k <= K_MAX:
            raise BitstreamError(f"motion coder config: k={k} outside 1..{K_MAX}")
        if version in (_VERSION_SURROUND, _VERSION_SURROUND_DCT):
            if len(b) != _HEAD.size + _MUL.size + _GRID.size:
                want = _HEAD.size + _MUL.size + _GRID.size
                raise BitstreamError(f"motion coder config: {len(b)} bytes, expected {want}")
            (grid,) = _GRID.unpack_from(b, _HEAD.size + _MUL.size)
            if grid != SURROUND_GRID:
                raise BitstreamError(f"motion coder config: surround grid {grid}x{grid} is "
                                     f"not supported (only {SURROUND_GRID}x{SURROUND_GRID})")
            return cls._built(b[: _HEAD.size + _MUL.size], k, shift, init, expr_std, True,
                              version == _VERSION_SURROUND_DCT)
        if version == _VERSION_BUILT:
            return cls._built(b, k, shift, init, expr_std)
        n = FIXED_SIZE + k
        if len(b) != _HEAD.size + 12 * n:
            want = _HEAD.size + 12 * n
            raise BitstreamError(f"motion coder config: {len(b)} bytes, expected {want}")
        v = np.frombuffer(b, dtype="<f4", offset=_HEAD.size).astype(np.float64)
        try:
            return cls(k, v[:n], v[n : 2 * n], v[2 * n :], adapt_shift=shift, inter_init=init)
        except FacecodecError as e:
            raise BitstreamError(f"motion {e}") from None

    @classmethod
    def _built(cls, b: bytes, k: int, shift: int, init: int,
               expr_std: np.ndarray | None, surround: bool = False,
               dct: bool = False) -> CoderConfig:
        if len(b) != _HEAD.size + _MUL.size:
            want = _HEAD.size + _MUL.size
            raise BitstreamError(f"motion coder config: {len(b)} bytes, expected {want}")
        (mul,) = _MUL.unpack_from(b, _HEAD.size)
        # The bounds as f32 holds them: a writer's 0.01 is read back as 0.0099999998.
        if not np.float32(MUL_RANGE[0]) <= mul <= np.float32(MUL_RANGE[1]):  # NaN fails too
            raise BitstreamError(f"motion coder config: step multiplier {mul} outside "
                                 f"{MUL_RANGE[0]}..{MUL_RANGE[1]}")
        if expr_std is None:
            raise BitstreamError("motion coder config: version 2 needs the stream's basis")
        try:
            return _build(k, mul, expr_std, shift, init, surround, dct)
        except FacecodecError as e:
            raise BitstreamError(f"motion {e}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CoderConfig) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def quantize(self, m: Motion) -> np.ndarray:
        """int32 vector of `size` values in [-QMAX, QMAX]; extra expression dropped, missing
        0; the surround coded if the config has one (zeros for a Motion without)."""
        n = FIXED_SIZE + self.k
        v = m.to_vector()
        v = np.concatenate([v, np.zeros(max(0, n - v.shape[0]))])[:n]
        if self.surround:
            sur = m.surround if len(m.surround) else np.zeros(self.surround)
            if self.surround_dct:  # clip first: the transform would turn one inf into NaNs
                sur = surround_to_dct(np.clip(sur, -_SURROUND_LIMIT, _SURROUND_LIMIT))
            v = np.concatenate([v, sur])
        if np.isnan(v).any():
            raise FacecodecError("motion contains NaN; cannot quantise it")
        with np.errstate(over="ignore", invalid="ignore"):
            q = np.rint((v - self.means) / self.steps)
        return np.clip(q, -QMAX, QMAX).astype(np.int32)

    def dequantize(self, q: np.ndarray) -> Motion:
        q = np.asarray(q)
        if q.shape != (self.size,) or np.abs(q).max() > QMAX:
            raise FacecodecError(f"quantised motion must be {self.size} integers within +-{QMAX}")
        v = self.means + q.astype(np.float64) * self.steps
        n = FIXED_SIZE + self.k
        sur = v[n:] if self.surround else None
        if sur is not None and self.surround_dct:
            sur = surround_from_dct(sur)
        return Motion.from_vector(v[:n], sur)


def _build(k: int, step_mul: float, expr_std: np.ndarray, adapt_shift: int = 2,
           inter_init: int = 128, surround: bool = False, dct: bool = True) -> CoderConfig:
    """A config from a step multiplier and the basis's expression spread (and whether frames
    carry their surround, and as its DCT or, as version 3 streams, as cells); both ends
    build the same one from the float32 multiplier the stream carries."""
    expr_std = np.asarray(expr_std, dtype=np.float64).reshape(-1)
    if expr_std.shape[0] < k or not np.all(np.isfinite(expr_std[:k])):
        raise FacecodecError(f"expr_std needs {k} finite values, got {expr_std.shape[0]}")
    mul = float(np.float32(step_mul))
    ns = SURROUND_SIZE if surround else 0
    # A prior no sharper than one step: a degenerate basis must not make intra frames escape.
    steps = np.concatenate([_BASE_STEPS, np.full(k, _EXPR_STEP), np.full(ns, _SURROUND_STEP)])
    sur_intra = np.full(ns, _SURROUND_INTRA)
    if surround and dct:
        sur_intra[:2] *= SURROUND_GRID  # the mean coefficients of dx and dy
    intra = np.concatenate([_INTRA, np.maximum(expr_std[:k], _EXPR_STEP), sur_intra])
    return CoderConfig(k, steps * mul, intra, adapt_shift=adapt_shift, inter_init=inter_init,
                       step_mul=mul, surround=ns, surround_dct=surround and dct)


def make_config(preset: str, k: int, expr_std: np.ndarray, surround: bool = False) -> CoderConfig:
    """Preset config. `k` is the medium preset's coefficient count; "low" codes k//2
    coefficients with 1.6x coarser steps, "lowest" k//4 with 2.5x (the motion beside a
    layer), "high" up to 2k (as many as `expr_std` has) with 0.6x the steps."""
    if preset not in PRESET_STEPS:
        raise FacecodecError(f"unknown motion preset {preset!r} (use {', '.join(PRESETS)})")
    kf, mul = PRESET_STEPS[preset]
    n = len(np.asarray(expr_std).reshape(-1))
    if not 1 <= k <= min(n, K_MAX):
        raise FacecodecError(f"motion preset needs 1 <= k <= {min(n, K_MAX)} (expr_std), got {k}")
    kc = max(1, min(int(k * kf), n, K_MAX))
    return _build(kc, mul, expr_std, surround=surround)


def make_config_steps(k: int, step_mul: float, expr_std: np.ndarray) -> CoderConfig:
    """`k` expression coefficients at `step_mul` times the medium preset's steps, no
    surround: a quantiser off the preset ladder (encoder.coder_config beside a full layer)."""
    if not 1 <= k <= min(np.asarray(expr_std).size, K_MAX) or not step_mul > 0:
        raise FacecodecError(f"motion config needs 1 <= k <= {K_MAX} and a positive step, "
                             f"got k={k}, step x{step_mul:g}")
    return _build(k, step_mul, expr_std)


def make_config_q(quality: float, k_max: int, expr_std: np.ndarray,
                  surround: bool = False) -> CoderConfig:
    """Continuous quality in [0, 1], monotone in rate: k from k_max/8 to k_max, steps from
    2.5x to 0.6x the medium preset's. With k_max twice the medium k, quality 0 codes less
    than the "low" preset (k/2, 1.6x) and quality 1 matches "high" (2k, 0.6x), so a target
    rate between the presets' rates is always reachable."""
    if not 0.0 <= quality <= 1.0:
        raise FacecodecError(f"motion quality must be in [0, 1], got {quality}")
    kc = max(1, min(round(k_max * (0.125 + 0.875 * quality)), K_MAX))
    return _build(kc, 2.5 * (0.6 / 2.5) ** quality, expr_std, surround=surround)


@dataclass
class _State:
    """What inter frames are predicted from; identical on both ends after every packet."""

    prev: list[int]  # last quantised frame
    change: list[int]  # last frame-to-frame change
    scale: list[int]  # residual scale states (1/256 steps)
    cost: list[list[int]]  # running |error| per predictor per dimension

    @classmethod
    def after_intra(cls, q: list[int], init: int) -> _State:
        n = len(q)
        return cls(list(q), [0] * n, [init] * n, [[0] * n for _ in range(_PREDICTORS)])

    def copy(self) -> _State:
        return _State(list(self.prev), list(self.change), list(self.scale),
                      [list(c) for c in self.cost])

    def predict(self, d: int) -> int:
        c = self.cost
        if c[1][d] < c[0][d]:
            return max(-QMAX, min(QMAX, self.prev[d] + (self.change[d] >> 1)))
        return self.prev[d]

    def update(self, d: int, q: int, residual: int, shift: int) -> None:
        p, ch = self.prev[d], self.change[d]
        for i, pred in enumerate((p, max(-QMAX, min(QMAX, p + (ch >> 1))))):
            a = min(abs(q - pred) << 4, 1 << 20)
            self.cost[i][d] += (a - self.cost[i][d]) >> _COST_SHIFT
        self.scale[d] = entropy.update_state(self.scale[d], residual, shift)
        self.change[d] = q - p
        self.prev[d] = q


class MotionEncoder:
    """Codes packets of consecutive frames; keeps the prediction state between packets."""

    def __init__(self, config: CoderConfig) -> None:
        self.config = config
        self._state: _State | None = None

    def encode(self, motions: list[Motion], intra: bool) -> bytes:
        cfg = self.config
        if len(motions) > MAX_FRAMES:
            raise FacecodecError(f"at most {MAX_FRAMES} frames per motion packet")
        if intra and not motions:
            raise FacecodecError("an intra motion packet needs at least one frame")
        if not intra and self._state is None:
            raise FacecodecError("the first motion packet must be intra")
        frames = [cfg.quantize(m).tolist() for m in motions]
        enc = entropy.encoder()
        log: list[tuple[int, int]] = []
        state = self._state
        for i, q in enumerate(frames):
            if intra and i == 0:
                for d, v in enumerate(q):
                    entropy.encode_symbol(enc, cfg._intra_index[d], v, v, log)
                state = _State.after_intra(q, cfg.inter_init)
                continue
            assert state is not None
            for d, v in enumerate(q):
                r = v - state.predict(d)
                entropy.encode_symbol(enc, entropy.model_index(state.scale[d]), r, v, log)
                state.update(d, v, r, cfg.adapt_shift)
        self._state = state
        return entropy.finish(enc, log)


class MotionDecoder:
    """Exact inverse of `MotionEncoder`. Any malformed input raises `BitstreamError` and
    resets the state; the caller then waits for the next intra packet."""

    def __init__(self, config: CoderConfig) -> None:
        self.config = config
        self._state: _State | None = None

    def reset(self) -> None:
        """Forget the prediction state (a packet was lost): only intra packets decode now."""
        self._state = None

    def decode(self, data: bytes, n_frames: int, intra: bool) -> list[Motion]:
        cfg = self.config
        if not isinstance(n_frames, int) or not 0 <= n_frames <= MAX_FRAMES:
            raise BitstreamError(f"motion packet frame count {n_frames!r} outside 0..{MAX_FRAMES}")
        if intra and n_frames == 0:
            raise BitstreamError("intra motion packet with no frames")
        if not intra and self._state is None:
            raise BitstreamError("inter motion packet without state: wait for an intra packet")
        # No symbol takes more than ~41 bits, so a longer payload cannot be a real packet.
        if len(data) > 6 * n_frames * cfg.size + 8:
            self.reset()
            raise BitstreamError(f"motion packet too long: {len(data)} B for {n_frames} frames")
        try:
            frames, state = self._decode(bytes(data), n_frames, intra)
        except BitstreamError:
            self.reset()
            raise
        except BaseException as e:  # constriction's Rust panics derive from BaseException
            if isinstance(e, KeyboardInterrupt | SystemExit | MemoryError | Terminated):
                raise
            self.reset()
            raise BitstreamError("corrupt motion packet: its entropy code does not decode "
                                 f"({e.__class__.__name__})") from None
        self._state = state
        return [cfg.dequantize(np.array(q, dtype=np.int32)) for q in frames]

    def _decode(self, data: bytes, n: int, intra: bool) -> tuple[list[list[int]], _State | None]:
        cfg = self.config
        dec = entropy.decoder(data)
        state = None if self._state is None else self._state.copy()
        frames: list[list[int]] = []
        for i in range(n):
            if intra and i == 0:
                q = [entropy.decode_symbol(dec, cfg._intra_index[d], 0) for d in range(cfg.size)]
                state = _State.after_intra(q, cfg.inter_init)
            else:
                assert state is not None
                q = []
                for d in range(cfg.size):
                    pred = state.predict(d)
                    v = entropy.decode_symbol(dec, entropy.model_index(state.scale[d]), pred)
                    if not -QMAX <= v <= QMAX:
                        raise BitstreamError("corrupt motion packet (value out of range)")
                    state.update(d, v, v - pred, cfg.adapt_shift)
                    q.append(v)
            if intra and i == 0 and any(not -QMAX <= v <= QMAX for v in q):
                raise BitstreamError("corrupt motion packet (value out of range)")
            frames.append(q)
        if not dec.maybe_exhausted():
            raise BitstreamError("corrupt motion packet (trailing data)")
        return frames, state
