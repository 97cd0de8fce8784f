"""The surround: the sender measures how the picture around the face moved, the coder carries
it with motion alone, and the warp draws the outside from it (real clip, grid_swiz3n)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import GRID_CLIP, require

from facecodec.codec.analysis import KeyframeEvent, MotionEvent
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import (
    Analysis,
    EncoderSettings,
    analyze_file,
    code_analysis,
    coder_config,
    original_crops,
)
from facecodec.motion.basis import load_basis
from facecodec.motion.motion import SURROUND_SIZE, Motion
from facecodec.motion.surround import face_mask
from facecodec.render.pose import PoseEdit
from facecodec.render.warp import WarpRenderer

SIZE = 256


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyze_file(require(GRID_CLIP), EncoderSettings(size=SIZE))


def _psnr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    return float(10 * np.log10(255.0**2 / ((d * w[..., None]).sum() / (3 * w.sum()))))


def test_sender_measures_the_surround(analysis: Analysis) -> None:
    key = next(e for e in analysis.events if isinstance(e, KeyframeEvent))
    assert np.array_equal(key.motion.surround, np.zeros(SURROUND_SIZE))
    later = [e.motion.surround for e in analysis.events
             if isinstance(e, MotionEvent) and e.index > key.index + 10]
    s = np.stack(later)
    assert s.shape[1] == SURROUND_SIZE and np.isfinite(s).all()
    # The speaker moves: the outside moves with him, by pixels, not by crop widths.
    assert np.abs(s).max() > 1.0 / SIZE
    assert np.abs(s).max() < 0.1


def test_surround_draws_the_outside_closer_than_the_rings(analysis: Analysis) -> None:
    """Same face, same reference: with the surround the outside is nearer the truth on average
    and the face, 12 px inside its oval, is exactly the mesh warp's."""
    basis = load_basis()
    crops = original_crops(GRID_CLIP, analysis.keyframes, SIZE, None)
    key = analysis.keyframes[0]
    r = WarpRenderer(basis, SIZE)
    r.set_reference(key.image, key.motion)
    gain, inside_same = [], True
    for e in analysis.events:
        if not isinstance(e, MotionEvent) or e.index < key.index + 10:
            continue
        with_s, rings = r.render(e.motion), r.render(e.motion.with_surround(None))
        face = face_mask(basis.landmarks(e.motion, SIZE), SIZE, SIZE)
        outside = 1.0 - cv2.dilate(face, np.ones((9, 9), np.uint8))
        # The seam blends over a few pixels (Gaussian at the warp's half-resolution map).
        inner = cv2.erode(face, np.ones((25, 25), np.uint8)) > 0.99
        gain.append(_psnr(with_s, crops[e.index], outside) - _psnr(rings, crops[e.index], outside))
        inside_same &= bool(np.array_equal(with_s[inner], rings[inner]))
    assert inside_same
    # Measured: 4.6 dB on average, 2.7 dB on the worst frame.
    assert np.mean(gain) > 2.0, f"mean PSNR gain outside the face {np.mean(gain):.2f} dB"
    assert min(gain) > 0.0


def test_a_later_picture_moves_by_the_surround_since_its_own_frame(analysis: Analysis) -> None:
    """A renderer whose picture is not the keyframe (the receiver moving a held layer
    picture) moves its outside by the surround between the two frames, not since the
    keyframe."""
    basis = load_basis()
    crops = original_crops(GRID_CLIP, analysis.keyframes, SIZE, None)
    key = analysis.keyframes[0]
    end = analysis.keyframes[1].index if len(analysis.keyframes) > 1 else 10**9
    motions = {e.index: e.motion for e in analysis.events
               if isinstance(e, MotionEvent) and key.index < e.index < end}
    assert np.array_equal(motions[key.index + 40].surround_towards(key.motion),
                          motions[key.index + 40].surround)
    r = WarpRenderer(basis, SIZE)
    relative, absolute = [], []
    for a in range(key.index + 20, key.index + 100, 10):
        if a not in motions or a + 3 not in motions:
            continue
        held, target = motions[a], motions[a + 3]
        r.set_reference(crops[a], held)
        face = face_mask(basis.landmarks(target, SIZE), SIZE, SIZE)
        outside = 1.0 - cv2.dilate(face, np.ones((9, 9), np.uint8))
        assert np.array_equal(held.surround_towards(held), np.zeros(SURROUND_SIZE))
        relative.append(_psnr(r.render(target), crops[a + 3], outside))
        # What moving it by the displacement since the keyframe would draw.
        r.set_reference(crops[a], held.with_surround(np.zeros(SURROUND_SIZE)))
        absolute.append(_psnr(r.render(target), crops[a + 3], outside))
    assert len(relative) >= 5
    # Measured: 40.4 dB against 30.0 outside the face (6 pairs 3 frames apart).
    assert np.mean(relative) > np.mean(absolute) + 5.0, (relative, absolute)


def test_motion_alone_carries_it_and_a_layer_does_not(analysis: Analysis) -> None:
    basis = load_basis()
    assert coder_config(basis, "medium", beside_layer=False).surround == SURROUND_SIZE
    assert coder_config(basis, "lowest", beside_layer=True).surround == 0
    assert coder_config(basis, "lowest", beside_layer=False).surround == SURROUND_SIZE
    r = code_analysis(analysis, EncoderSettings(size=SIZE, preset="medium"))
    assert r.header.coder_config[3] == 4  # the config version that carries a surround (DCT)
    frames = decode_packets(r.header, r.packets, analysis.report.frames, "warp")
    assert frames.shape == (analysis.report.frames, SIZE, SIZE, 3)
    coded = [m.surround for m in r.motions.values()]
    assert all(len(s) == SURROUND_SIZE for s in coded) and np.abs(np.stack(coded)).max() > 0
    # --no-surround: the rings instead, for fewer bits, at a preset or a target rate.
    for settings in (EncoderSettings(size=SIZE, preset="medium", surround=False),
                     EncoderSettings(size=SIZE, target_kbps=3.0, surround=False)):
        plain = code_analysis(analysis, settings)
        assert plain.header.coder_config[3] == 2
    assert plain.motion_kbps <= 3.0
    assert code_analysis(analysis, EncoderSettings(size=SIZE, preset="medium", surround=False)
                         ).motion_kbps < r.motion_kbps
    # Redirection does not apply the sender's measured outside to another pose.
    turned = PoseEdit(yaw=10.0)(Motion(surround=coded[-1]))
    assert len(turned.surround) == 0
