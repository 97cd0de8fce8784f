"""Reference restorer: identity at initialisation, odd sizes, the shipped weights on real
validation crops coded by the keyframe codec, the sender's share of its change, bad weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facecodec.bench.metrics import luma, psnr_y
from facecodec.codec.encoder import original_crops
from facecodec.codec.keyframe import round_trip
from facecodec.errors import FacecodecError
from facecodec.render.restore import (
    SHARE_STEPS,
    RestoreConfig,
    RestoreNet,
    best_share,
    blend,
    load_net,
    restore,
)
from tests.conftest import EncodedClip


def test_untrained_net_returns_the_picture_and_odd_sizes_keep_their_shape() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (98, 131, 3), dtype=np.uint8)
    assert np.array_equal(restore(RestoreNet(RestoreConfig((8, 16), (1, 1))), img), img)
    torch.manual_seed(0)
    net = RestoreNet(RestoreConfig((8, 16), (1, 1)))
    with torch.no_grad():
        net.head.weight.normal_(0, 0.05)
    out = restore(net.eval(), img)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_shipped_restorer_brings_coded_validation_crops_closer(
    encoded_grid: EncodedClip,
) -> None:
    # grid_swiz3n is a validation clip: faces the restorer never saw.
    crops = original_crops(encoded_grid.source, encoded_grid.result.keyframes, 256, 40)[::8]
    net = load_net()
    gains = []
    for quality in (20, 35):
        for crop in crops:
            coded = round_trip(crop, quality)
            fixed = restore(net, coded)
            ref = luma(crop[None])
            gains.append(float(psnr_y(ref, luma(fixed[None]))[0]
                               - psnr_y(ref, luma(coded[None]))[0]))
    assert np.mean(gains) > 0.05, gains  # measured +0.1 to +0.3 dB
    assert min(gains) > -0.2


def test_sender_share_follows_the_reference_quality_and_brings_it_closest(
    encoded_grid: EncodedClip,
) -> None:
    crops = original_crops(encoded_grid.source, encoded_grid.result.keyframes, 256, 40)[::8]
    net = load_net()
    weights = np.array([0.299, 0.587, 0.114])

    def error(x: np.ndarray, original: np.ndarray) -> float:
        return float(np.mean(((x.astype(np.float64) - original) @ weights) ** 2))

    means = []
    for quality in (15, 40, 70, 92):
        shares = []
        for crop in crops:
            coded = round_trip(crop, quality)
            fixed = restore(net, coded)
            share = best_share(crop, coded, fixed)
            mixed = blend(coded, fixed, share / SHARE_STEPS)
            # least squares before rounding to uint8: within rounding of the best of both
            assert error(mixed, crop) <= min(error(coded, crop), error(fixed, crop)) + 0.02
            shares.append(share)
        means.append(np.mean(shares))
    # measured 252, 146, 73, 32: a coarse picture takes all, a fine one little
    assert means[0] > 200 and means[3] < 64 and list(means) == sorted(means, reverse=True)


def test_blend_ends_are_the_pictures() -> None:
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(2))
    assert blend(a, b, 0.0) is a and blend(a, b, 1.0) is b
    half = blend(a, b, 0.5).astype(int)
    assert np.abs(half - (a.astype(int) + b) / 2).max() <= 0.5


def test_missing_or_foreign_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FacecodecError, match="restoration weights not found"):
        load_net(tmp_path / "none.safetensors")
