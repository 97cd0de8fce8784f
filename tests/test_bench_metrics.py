"""Bench metrics on known cases: identity, and degradations of known size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facecodec.bench import metrics as M
from facecodec.bench.reference import ReferenceClip, crop_square, cut_square, reference_clip
from facecodec.errors import FacecodecError

DATA = Path(__file__).parents[1].parent / "shared" / "data"
CLIP = DATA / "clips" / "liveportrait_d19.mp4"
# Every test here scores real footage (directly or through a fixture).
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared data missing: {CLIP}")


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ReferenceClip:
    return reference_clip(CLIP, 256, 16, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def feats(ref: ReferenceClip) -> M.ReferenceFeatures:
    return M.ReferenceFeatures.compute(ref.frames, aed_every=4)


def _blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def test_reference_clip_shape_fps_and_cache(ref: ReferenceClip, tmp_path: Path) -> None:
    assert ref.frames.shape == (16, 256, 256, 3) and ref.frames.dtype == np.uint8
    assert ref.fps == 30 and ref.name == "liveportrait_d19"
    first = reference_clip(CLIP, 128, 4, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = reference_clip(CLIP, 128, 4, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.frames, again.frames)
    assert again.fps == first.fps
    # Another crop (facecodec's follows its sender) is cut each time: a kept one would be
    # read back unchanged after the sender changed.
    calls: list[int] = []

    def own(path: Path, size: int, frames: int) -> ReferenceClip:
        calls.append(size)
        return first

    for _ in range(2):
        assert reference_clip(CLIP, 128, 4, cache_dir=tmp_path, crop=own) is first
    assert calls == [128, 128] and len(list(tmp_path.glob("*.npy"))) == 1


def test_crop_is_fixed_square_and_edge_replicated() -> None:
    lm = np.zeros((3, 4, 2), np.float32)
    lm[:, :, 0] = [[10, 20, 10, 20]] * 3
    lm[:, :, 1] = [[5, 5, 25, 25]] * 3
    lm[1] = np.nan  # a frame without a face does not move the crop
    cx, cy, side = crop_square(lm)
    assert (cx, cy) == (15, 15) and side == pytest.approx(32)
    frame = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    out = cut_square(frame, 0, 0, 10, 10)  # three quarters outside the frame
    assert out.shape == (10, 10, 3)
    np.testing.assert_array_equal(out[0, 0], frame[0, 0])  # replicated corner
    with pytest.raises(FacecodecError):
        crop_square(np.full((2, 4, 2), np.nan))


def test_reference_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(FacecodecError, match="no such video file"):
        reference_clip(tmp_path / "missing.mp4", cache_dir=None)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(FacecodecError, match="junk.mp4: not a video file"):
        reference_clip(junk, cache_dir=None)
    with pytest.raises(ValueError):
        ReferenceClip(np.zeros((2, 8, 9, 3), np.uint8), 25, "bad")


def test_luma_is_bt601_limited_range() -> None:
    colours = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0]], np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (4, 16, 16, 3)).copy()
    y = M.luma(frames)[:, 8, 8].astype(int)
    expected = 16 + np.array([0, 219, 65.481, 128.553])
    np.testing.assert_allclose(y, expected, atol=1)


def test_identical_clip_scores_perfect(ref: ReferenceClip, feats: M.ReferenceFeatures) -> None:
    s = M.evaluate(feats, ref.frames.copy())
    assert s.mean["psnr_y"] == M.PSNR_CAP
    assert s.mean["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert s.mean["vmaf"] > 90  # VMAF of a clip against itself is not 100
    assert s.mean["akd"] < 0.05 and s.mean["jitter"] < 0.05
    assert s.mean["aed"] < 1e-6
    assert s.no_face_frames == []


def test_noise_gives_expected_psnr(ref: ReferenceClip, feats: M.ReferenceFeatures) -> None:
    rng = np.random.default_rng(0)
    sigma = 5.0
    noise = rng.normal(0, sigma, ref.frames.shape[:3] + (1,))  # grey noise: Y gets 0.859 of it
    noisy = np.clip(ref.frames + noise, 0, 255).round().astype(np.uint8)
    s = M.evaluate(feats, noisy, metrics=("psnr_y", "ms_ssim"))
    expected = 20 * np.log10(255 / (sigma * 219 / 255))
    assert s.mean["psnr_y"] == pytest.approx(expected, abs=0.7)
    assert 0.9 < s.mean["ms_ssim"] < 0.999


def test_blur_moves_every_metric_the_right_way(
    ref: ReferenceClip, feats: M.ReferenceFeatures
) -> None:
    light = M.evaluate(feats, _blur(ref.frames, 1.0))
    heavy = M.evaluate(feats, _blur(ref.frames, 4.0))
    assert 30 < light.mean["psnr_y"] < 50 and heavy.mean["psnr_y"] < light.mean["psnr_y"] - 3
    assert heavy.mean["ms_ssim"] < light.mean["ms_ssim"] < 1
    assert heavy.mean["vmaf"] < light.mean["vmaf"] - 10 and light.mean["vmaf"] < 95
    assert heavy.mean["aed"] > light.mean["aed"] > 0
    assert heavy.mean["akd"] > 0


def test_shift_is_akd_not_jitter(ref: ReferenceClip, feats: M.ReferenceFeatures) -> None:
    shifted = np.roll(ref.frames, 4, axis=2)  # the face moves 4 px right in every frame
    s = M.evaluate(feats, shifted, metrics=("akd", "jitter"))
    assert s.mean["akd"] == pytest.approx(4.0, abs=1.0)
    assert s.mean["jitter"] < 0.5  # constant offset: velocities unchanged
    shaking = ref.frames.copy()
    shaking[1::2] = np.roll(ref.frames[1::2], 3, axis=2)  # 3 px back and forth
    j = M.evaluate(feats, shaking, metrics=("jitter",))
    assert j.mean["jitter"] == pytest.approx(3.0, abs=1.0)


def test_tilt_is_the_eye_lines_angle(ref: ReferenceClip) -> None:
    """A frame turned 12 degrees counter-clockwise (as shown) reads 12 degrees less tilt."""
    from facecodec.bench.landmarks import tilt, track_landmarks

    frame = ref.frames[0]
    h, w = frame.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 12.0, 1.0)
    turned = cv2.warpAffine(frame, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    upright, tilted = tilt(track_landmarks(np.stack([frame, turned]), static=True))
    assert tilted - upright == pytest.approx(-12.0, abs=1.5), (upright, tilted)


def test_vmaf_sampling_and_chunking_match_one_pass(
    ref: ReferenceClip, feats: M.ReferenceFeatures
) -> None:
    rec_y = M.luma(_blur(ref.frames, 2.0))
    whole = M.vmaf(feats.y, rec_y, chunk=1000)
    chunked = M.vmaf(feats.y, rec_y, chunk=5)
    np.testing.assert_allclose(chunked, whole, atol=1e-3)
    sampled = M.vmaf(feats.y, rec_y, every=3, motion2=feats.motion2)
    np.testing.assert_allclose(sampled[::3], whole[::3], atol=1e-3)
    assert np.isnan(sampled[1::3]).all()


def test_evaluate_rejects_bad_input(ref: ReferenceClip, feats: M.ReferenceFeatures) -> None:
    with pytest.raises(ValueError, match="does not match"):
        M.evaluate(feats, ref.frames[:-1])
    with pytest.raises(ValueError, match="unknown metrics"):
        M.evaluate(feats, ref.frames, metrics=("lpips",))


def test_no_face_frames_are_reported(ref: ReferenceClip, feats: M.ReferenceFeatures) -> None:
    grey = np.full_like(ref.frames, 128)
    s = M.evaluate(feats, grey, metrics=("akd",))
    assert s.no_face_frames == list(range(len(grey)))
    assert np.isnan(s.mean["akd"])


def test_vmaf_matches_ffmpeg_libvmaf(ref: ReferenceClip, feats: M.ReferenceFeatures) -> None:
    from facecodec.bench.libvmaf import libvmaf_mean

    for sigma in (1.0, 3.0):
        rec_y = M.luma(_blur(ref.frames, sigma))
        ours = float(np.mean(M.vmaf(feats.y, rec_y)))
        assert ours == pytest.approx(libvmaf_mean(feats.y, rec_y, ref.fps), abs=0.1)


def test_bench_sampling_counts_the_frames_a_held_layer_repeats(ref: ReferenceClip) -> None:
    # A 1-in-3 layer: a fresh picture every 3rd frame, held (here: blurred) in between.
    # The bench's sampling must score the held frames too, which every-3rd-frame scoring
    # never saw.
    held = _blur(ref.frames, 2.5)
    held[::3] = ref.frames[::3]
    bench = M.ReferenceFeatures.compute(ref.frames, **M.SAMPLING)
    every3 = M.ReferenceFeatures.compute(ref.frames, vmaf_every=3, ssim_every=3, aed_every=7)
    s = M.evaluate(bench, held, metrics=("vmaf", "ms_ssim"))
    fresh = M.evaluate(every3, held, metrics=("vmaf", "ms_ssim"))
    assert s.mean["vmaf"] < fresh.mean["vmaf"] - 10
    assert s.mean["ms_ssim"] < fresh.mean["ms_ssim"] - 0.01
    # aed_every shares no factor with the layer periods 2..5.
    assert all(M.SAMPLING["aed_every"] % d for d in (2, 3, 4, 5))
