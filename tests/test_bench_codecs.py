"""Conventional codecs through PyAV: real bytes, every frame back, rates that behave."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facecodec.bench.conventional import (
    CODECS,
    anchor_rates_for_quality,
    conventional_system,
    dispensable_bytes,
    encode_decode,
)
from facecodec.bench.reference import ReferenceClip, reference_clip
from facecodec.bench.system import SystemPoint

DATA = Path(__file__).parents[1].parent / "shared" / "data"
CLIP = DATA / "clips" / "grid_swiz3n.mpg"
# Every test here scores real footage (directly or through a fixture).
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared data missing: {CLIP}")


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ReferenceClip:
    return reference_clip(CLIP, 256, 12, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize(("system", "low", "high"), [("x264-rt", 31, 51), ("svtav1-ld", 38, 70)])
def test_ladder_points_are_real(ref: ReferenceClip, system: str, low: int, high: int) -> None:
    cfg = CODECS[system]
    fine, coarse = encode_decode(ref, cfg, low), encode_decode(ref, cfg, high)
    for p in (fine, coarse):
        assert p.frames.shape == ref.frames.shape and p.frames.dtype == np.uint8
        assert p.y is not None and p.y.shape == ref.frames.shape[:3]
        assert 0 < p.bytes_steady < p.bytes_net < p.bytes_all  # SEI / temporal delimiters
    assert coarse.bytes_all < fine.bytes_all
    r_fine, r_coarse = fine.kbps(float(ref.fps)), coarse.kbps(float(ref.fps))
    assert r_coarse["kbps_all"] < r_fine["kbps_all"]
    assert r_fine["kbps_all"] == pytest.approx(fine.bytes_all * 8 / (12 / 25) / 1000)
    # Finer quantisation must reconstruct better.
    err = [np.abs(p.frames.astype(int) - ref.frames).mean() for p in (fine, coarse)]
    assert err[0] < err[1]


def test_vp9_has_nothing_dispensable(ref: ReferenceClip) -> None:
    p = encode_decode(ref, CODECS["vp9-ld"], 63)
    assert p.bytes_net == p.bytes_all > 0 and len(p.frames) == len(ref.frames)


def test_dispensable_bytes_parsing() -> None:
    settings_sei = b"\x00\x00\x00\x01\x06\x05\x10" + bytes(16) + b"x264 options\x80"
    recovery_sei = b"\x00\x00\x01\x06\x06\x01\xc4\x80"
    slice_nal = b"\x00\x00\x01\x65" + bytes(range(1, 40))
    assert dispensable_bytes(settings_sei + slice_nal, "h264") == len(settings_sei)
    assert dispensable_bytes(recovery_sei + slice_nal, "h264") == 0
    hevc_sei = b"\x00\x00\x01\x4e\x01\x05\x08" + bytes(7) + b"\x80"
    assert dispensable_bytes(hevc_sei + slice_nal, "hevc") == len(hevc_sei)
    td = b"\x12\x00"
    frame_obu = b"\x32\x03abc"
    assert dispensable_bytes(td + frame_obu, "av1") == 2
    assert dispensable_bytes(frame_obu, "av1") == 0
    assert dispensable_bytes(b"\x82\x49\x83", "vp9") == 0


def test_system_point_rejects_inconsistent_counts(ref: ReferenceClip) -> None:
    with pytest.raises(ValueError, match="steady <= net <= all"):
        SystemPoint("x", "y", ref.frames, bytes_all=10, bytes_net=12, bytes_steady=5)
    with pytest.raises(KeyError, match="unknown codec"):
        conventional_system("mpeg1")


def test_anchor_rates_for_quality(ref: ReferenceClip) -> None:
    ladder = (51, 41, 31)
    rates = [encode_decode(ref, CODECS["x264-rt"], v).kbps(25.0)["kbps_all"] for v in ladder]
    need = anchor_rates_for_quality(ref, {"psnr_y": 34.0, "vmaf": 5.0}, ladder=ladder)
    assert min(rates) <= need["psnr_y"] <= max(rates)
    assert need["vmaf"] == pytest.approx(min(rates))  # below the lowest rate's quality
    assert math.isinf(anchor_rates_for_quality(ref, {"psnr_y": 99.0}, ladder=ladder)["psnr_y"])
    with pytest.raises(ValueError, match="unknown metric"):
        anchor_rates_for_quality(ref, {"bogus": 1.0}, ladder=ladder)
    # Low-delay AV1 reaches the same PSNR-Y for less than x264 real-time.
    av1 = anchor_rates_for_quality(ref, {"psnr_y": 34.0}, "svtav1-ld", ladder=(63, 53, 44))
    assert 0 < av1["psnr_y"] < need["psnr_y"]
