"""Motion coder: exact round trips, packet chains, hostile bytes, configs, real-clip rate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facecodec.errors import BitstreamError, FacecodecError, Terminated
from facecodec.motion.coder import (
    MAX_FRAMES,
    MUL_RANGE,
    CoderConfig,
    MotionDecoder,
    MotionEncoder,
    make_config,
    make_config_q,
    make_config_steps,
)
from facecodec.motion.entropy import QMAX
from facecodec.motion.motion import FIXED_SIZE, SURROUND_GRID, SURROUND_SIZE, Motion
from facecodec.motion.surround import surround_to_dct

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "clips" / "liveportrait_d19.mp4"
EXPR_STD = np.geomspace(0.05, 0.003, 32)
CONFIGS = {p: make_config(p, 16, EXPR_STD) for p in ("lowest", "low", "medium", "high")}
CONFIGS["medium+surround"] = make_config("medium", 16, EXPR_STD, surround=True)


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("motion_coder_bench", ROOT / "benchmarks" /
                                                  "motion_coder.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def clip() -> tuple[list[Motion], float]:
    if not CLIP.is_file():
        pytest.skip(f"shared data missing: {CLIP}")
    return _bench().clip_motion(CLIP, frames=100, k=16)


def _roundtrip(cfg: CoderConfig, packets: list[tuple[list[Motion], bool]]) -> None:
    enc, dec = MotionEncoder(cfg), MotionDecoder(cfg)
    for motions, intra in packets:
        out = dec.decode(enc.encode(motions, intra), len(motions), intra)
        assert out == [cfg.dequantize(cfg.quantize(m)) for m in motions]


# Mostly realistic values, sometimes anything a float can hold (clipped by the quantiser).
_value = st.one_of(
    st.floats(-0.3, 0.3),
    st.floats(allow_nan=False, allow_infinity=True),
    st.sampled_from([0.0, 1e-9, -1e300, 40.0, -33.0]),
)


@st.composite
def motions(draw: st.DrawFn, max_frames: int = 8) -> list[Motion]:
    n = draw(st.integers(1, max_frames))
    k = draw(st.integers(0, 40))
    # With a surround or without (a config with one codes zeros, one without drops it).
    m = FIXED_SIZE + k + (SURROUND_SIZE if draw(st.booleans()) else 0)
    base = np.array(draw(st.lists(_value, min_size=m, max_size=m)))
    walk = draw(st.booleans())  # a smooth random walk exercises prediction, not only escapes
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = []
    for _ in range(n):
        if walk:
            with np.errstate(invalid="ignore", over="ignore"):
                base = base + rng.normal(0, 0.003, base.shape)
            base = np.nan_to_num(base, nan=0.0, posinf=np.inf, neginf=-np.inf)
        else:
            base = np.array(draw(st.lists(_value, min_size=m, max_size=m)))
        face = FIXED_SIZE + k
        out.append(Motion.from_vector(base[:face], base[face:] if m > face else None))
    return out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(CONFIGS)), st.lists(st.tuples(motions(), st.booleans()),
                                                   min_size=1, max_size=4))
def test_roundtrip_packet_chain(preset: str, packets: list[tuple[list[Motion], bool]]) -> None:
    packets[0] = (packets[0][0], True)
    _roundtrip(CONFIGS[preset], packets)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(1, 64), motions(max_frames=5))
def test_roundtrip_quality_knob(q: float, k_max: int, ms: list[Motion]) -> None:
    cfg = make_config_q(q, k_max, np.geomspace(0.05, 0.002, 64))
    _roundtrip(cfg, [(ms[:1], True), (ms[1:], False), (ms, True)])


def test_quantiser_error_and_clipping() -> None:
    cfg = CONFIGS["medium"]
    rng = np.random.default_rng(1)
    for _ in range(50):
        v = cfg.means + rng.normal(0, 0.1, cfg.size)
        q = cfg.quantize(Motion.from_vector(v))
        assert q.dtype == np.int32
        err = np.abs(cfg.dequantize(q).to_vector() - v)
        assert np.all(err <= cfg.steps / 2 + 1e-12)
    q = cfg.quantize(Motion.from_vector(np.r_[np.full(FIXED_SIZE, np.inf), [-1e300] * 20]))
    assert q[:FIXED_SIZE].tolist() == [QMAX] * FIXED_SIZE
    assert q[FIXED_SIZE:].tolist() == [-QMAX] * 16
    with pytest.raises(FacecodecError):
        cfg.quantize(Motion.from_vector(np.full(FIXED_SIZE, np.nan)))
    with pytest.raises(FacecodecError):
        cfg.dequantize(np.zeros(3, dtype=np.int32))
    # Expression is cut to k or zero padded.
    short = Motion(expression=[0.04])
    assert cfg.dequantize(cfg.quantize(short)).expression.shape == (16,)


def test_inter_needs_state() -> None:
    cfg = CONFIGS["medium"]
    enc, dec = MotionEncoder(cfg), MotionDecoder(cfg)
    with pytest.raises(FacecodecError):
        enc.encode([Motion()], intra=False)
    with pytest.raises(BitstreamError, match="intra"):
        dec.decode(b"", 1, intra=False)
    a = enc.encode([Motion()] * 3, intra=True)
    b = enc.encode([Motion(log_scale=-1.7)] * 3, intra=False)
    dec.decode(a, 3, intra=True)
    dec.reset()  # a lost packet: inter packets are refused until the next intra one
    with pytest.raises(BitstreamError):
        dec.decode(b, 3, intra=False)
    c = enc.encode([Motion()], intra=True)
    assert dec.decode(c, 1, intra=True) == [cfg.dequantize(cfg.quantize(Motion()))]
    with pytest.raises(BitstreamError):
        dec.decode(b"", 0, intra=True)
    with pytest.raises(BitstreamError):
        dec.decode(b"", MAX_FRAMES + 1, intra=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 40), st.booleans(), st.sampled_from(sorted(CONFIGS)))
def test_garbage_never_crashes(data: bytes, n: int, intra: bool, preset: str) -> None:
    cfg = CONFIGS[preset]
    dec = MotionDecoder(cfg)
    if not intra:  # give it state so inter decoding is exercised too
        dec.decode(MotionEncoder(cfg).encode([Motion()], True), 1, True)
    try:
        out = dec.decode(data, n, intra)
    except BitstreamError:
        return
    assert len(out) == n and all(m.k == cfg.k for m in out)


def test_truncated_and_corrupted_packets(clip: tuple[list[Motion], float]) -> None:
    cfg = make_config("medium", 16, EXPR_STD)
    ms = clip[0][:8]
    data = MotionEncoder(cfg).encode(ms, intra=True)
    rng = np.random.default_rng(0)
    outcomes = set()
    for cut in range(len(data)):
        for variant in (data[:cut], data[:cut] + bytes(rng.integers(0, 256, 3, dtype=np.uint8))):
            try:
                MotionDecoder(cfg).decode(variant, len(ms), intra=True)
                outcomes.add("decoded")
            except BitstreamError:
                outcomes.add("error")
    assert "error" in outcomes  # some damage must be detected, none may escape as a crash
    dec = MotionDecoder(cfg)
    dec.decode(data, len(ms), True)
    with pytest.raises(BitstreamError):
        dec.decode(data + b"\x55" * 64, len(ms), False)
    with pytest.raises(BitstreamError):  # a failed packet leaves the decoder without state
        dec.decode(MotionEncoder(cfg).encode([Motion()], True)[:0], 1, False)


@pytest.mark.parametrize("raised", [Terminated, KeyboardInterrupt])
def test_a_signal_while_motion_decodes_is_not_damage(
    raised: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder turns whatever the entropy coder raises (its panics are BaseExceptions)
    into damage, but a SIGTERM landing there was turned into "corrupt motion packet": the
    file decoder then wrote its frames and exited 3, not 143."""
    cfg = make_config("medium", 16, EXPR_STD)
    data = MotionEncoder(cfg).encode([Motion()], intra=True)

    def interrupted(*args: object) -> None:
        raise raised

    monkeypatch.setattr(MotionDecoder, "_decode", interrupted)
    with pytest.raises(raised):
        MotionDecoder(cfg).decode(data, 1, intra=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64), st.floats(0, 1))
def test_config_bytes_roundtrip(k_max: int, q: float) -> None:
    std = np.geomspace(0.05, 0.002, 64)
    cfg = make_config_q(q, k_max, std)
    b = cfg.to_bytes()
    assert len(b) == 12  # built from the basis: the step multiplier alone
    back = CoderConfig.from_bytes(b, std)
    assert back == cfg and back.to_bytes() == b
    for name in ("steps", "intra_scales", "means"):
        assert np.array_equal(getattr(back, name), getattr(cfg, name))
    # Written out in full (version 1), the same config reads back without the basis.
    full = CoderConfig(cfg.k, cfg.steps, cfg.intra_scales)
    arrays = full.to_bytes()
    assert len(arrays) == 8 + 12 * cfg.size and CoderConfig.from_bytes(arrays) == full
    assert np.array_equal(full.steps, cfg.steps) and np.array_equal(full.quantize(Motion()),
                                                                    cfg.quantize(Motion()))


def test_config_bytes_rejected() -> None:
    med = CONFIGS["medium"]
    good = CoderConfig(med.k, med.steps, med.intra_scales).to_bytes()  # version 1
    n = FIXED_SIZE + 16
    bad = [
        b"", good[:5], good[:-1], good + b"\0",
        b"XMC" + good[3:],
        good[:3] + b"\x09" + good[4:],  # version
        good[:4] + b"\x00" + good[5:],  # k = 0
        good[:4] + b"\x41" + good[5:],  # k = 65
        good[:4] + b"\x11" + good[5:],  # k disagrees with the length
        good[:5] + b"\x09" + good[6:],  # adapt shift
        good[:8] + np.float32(-1).tobytes() + good[12:],  # negative step
        good[:8] + np.float32(np.nan).tobytes() + good[12:],
        good[:8 + 4 * n] + np.float32(np.inf).tobytes() + good[12 + 4 * n:],  # intra scale
        good[:8 + 8 * n] + np.float32(1e9).tobytes() + good[12 + 8 * n:],  # mean
    ]
    for b in bad:
        with pytest.raises(BitstreamError):
            CoderConfig.from_bytes(b)
    built = med.to_bytes()  # version 2: the multiplier, the rest from the basis
    assert CoderConfig.from_bytes(built, EXPR_STD) == med
    bad_built = [
        built[:-1], built + b"\0",
        built[:-4] + np.float32(np.nan).tobytes(),
        built[:-4] + np.float32(0.0).tobytes(),
        built[:-4] + np.float32(1e6).tobytes(),
    ]
    for b in bad_built:
        with pytest.raises(BitstreamError):
            CoderConfig.from_bytes(b, EXPR_STD)
    for mul in MUL_RANGE:  # the ends of the range, which f32 holds inexactly, are readable
        end = make_config_steps(16, mul, EXPR_STD)
        assert CoderConfig.from_bytes(end.to_bytes(), EXPR_STD) == end
    with pytest.raises(BitstreamError, match="needs the stream's basis"):
        CoderConfig.from_bytes(built)
    with pytest.raises(BitstreamError, match="expr_std needs"):  # basis too small for k
        CoderConfig.from_bytes(built, EXPR_STD[:4])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_config_garbage(b: bytes) -> None:
    for std in (None, EXPR_STD):
        try:
            CoderConfig.from_bytes(b, std)
        except BitstreamError:
            pass


def test_presets_and_quality_knob() -> None:
    assert [CONFIGS[p].k for p in ("lowest", "low", "medium", "high")] == [4, 8, 16, 32]
    assert np.all(CONFIGS["lowest"].steps > CONFIGS["low"].steps[: CONFIGS["lowest"].size])
    assert np.all(CONFIGS["low"].steps > CONFIGS["medium"].steps[: CONFIGS["low"].size])
    assert np.all(CONFIGS["high"].steps[: CONFIGS["medium"].size] < CONFIGS["medium"].steps)
    knob = [make_config_q(q, 32, EXPR_STD) for q in np.linspace(0, 1, 11)]
    ks = [c.k for c in knob]
    assert ks == sorted(ks) and ks[0] == 4 and ks[-1] == 32
    # The knob's ends are the outer presets: as coarse as "lowest", as fine as "high".
    assert knob[0].k < CONFIGS["low"].k and np.all(knob[0].steps[:13] > CONFIGS["low"].steps[:13])
    assert knob[0] == CONFIGS["lowest"]
    assert np.allclose(knob[-1].steps, CONFIGS["high"].steps)
    for bad in (lambda: make_config("ultra", 16, EXPR_STD),
                lambda: make_config_q(1.5, 16, EXPR_STD),
                lambda: make_config("medium", 16, EXPR_STD[:4]),
                lambda: CoderConfig(0, np.ones(13), np.ones(13))):
        with pytest.raises(FacecodecError):
            bad()


def test_compression_on_real_clip(clip: tuple[list[Motion], float]) -> None:
    ms, fps = clip
    std = np.stack([m.expression for m in ms]).std(0)
    rates = {}
    for preset in ("lowest", "low", "medium", "high"):
        cfg = make_config(preset, 16, std)
        sizes, decoded = _bench().code_stream(cfg, ms, fps)
        assert decoded == [cfg.dequantize(cfg.quantize(m)) for m in ms]
        rates[preset] = sum(sizes) / len(ms)
    # Measured medium: 6.6 B per frame; intra-only coding costs 16, and the best single fixed
    # residual scale (no adaptation) 7.4.
    assert rates["lowest"] < rates["low"] < rates["medium"] < rates["high"]
    assert rates["medium"] < 7.2, rates
    # Without motion the adaptive models must shrink to almost nothing per frame.
    cfg = make_config("medium", 16, std)
    enc = MotionEncoder(cfg)
    enc.encode(ms[:1], True)
    assert len(enc.encode([ms[0]] * 200, False)) < 32  # 20 measured; 140 with a 1/16 floor


def test_surround_roundtrip_and_config() -> None:
    cfg = CONFIGS["medium+surround"]
    assert cfg.surround == SURROUND_SIZE and cfg.size == FIXED_SIZE + 16 + SURROUND_SIZE
    rng = np.random.default_rng(2)
    ms = [Motion(expression=rng.normal(0, 0.02, 16),
                 surround=rng.normal(0, 0.01, SURROUND_SIZE)) for _ in range(6)]
    step = cfg.steps[-SURROUND_SIZE:]
    # Carried as its DCT (version 4): each coefficient within half a step, and the cells,
    # the same transform orthonormal, within the same distance in all.
    assert cfg.surround_dct
    enc, dec = MotionEncoder(cfg), MotionDecoder(cfg)
    out = dec.decode(enc.encode(ms, True), len(ms), True)
    for a, b in zip(ms, out, strict=True):
        err = surround_to_dct(a.surround) - surround_to_dct(b.surround)
        assert np.all(np.abs(err) <= step / 2 + 1e-12)
        assert np.linalg.norm(a.surround - b.surround) <= np.linalg.norm(step / 2) + 1e-12
    # A version 3 stream carries the cells themselves, and still decodes.
    v3 = bytearray(cfg.to_bytes())
    v3[3] = 3
    old = CoderConfig.from_bytes(bytes(v3), EXPR_STD)
    assert not old.surround_dct and old.to_bytes() == bytes(v3)
    enc, dec = MotionEncoder(old), MotionDecoder(old)
    out = dec.decode(enc.encode(ms, True), len(ms), True)
    for a, b in zip(ms, out, strict=True):
        assert np.all(np.abs(a.surround - b.surround) <= step / 2 + 1e-12)
    # A Motion without a surround is coded as a still surround; a config without one drops it.
    assert np.array_equal(cfg.dequantize(cfg.quantize(Motion())).surround,
                          np.zeros(SURROUND_SIZE))
    assert len(CONFIGS["medium"].dequantize(CONFIGS["medium"].quantize(ms[0])).surround) == 0
    # The header says so: version 4 adds the grid side, and only this grid is understood.
    b = cfg.to_bytes()
    assert b[3] == 4 and b[-1] == SURROUND_GRID and len(b) == 13
    assert CoderConfig.from_bytes(b, EXPR_STD) == cfg
    for bad in (b[:-1], b + b"\0", b[:-1] + bytes([SURROUND_GRID + 1]), b[:-1] + b"\0"):
        with pytest.raises(BitstreamError):
            CoderConfig.from_bytes(bad, EXPR_STD)
    with pytest.raises(FacecodecError):  # only configs built from the basis carry one
        CoderConfig(16, cfg.steps, cfg.intra_scales, surround=SURROUND_SIZE)
    with pytest.raises(ValueError):
        Motion(surround=np.zeros(5))
