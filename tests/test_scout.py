"""A call's choice of reference picture as it goes (facecodec/codec/scout.py), on a real
clip whose first frame is a poor reference: the sender sends an earlier frame of the same
crop as a refresh keyframe, with that frame's own Motion; the frames after it are measured
against the new picture and decode closer to the original than with the first picture;
an avatar keeps being driven from where it was; beside a layer or with `reference="first"`
nothing changes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from conftest import CLIPS, PORTRAITS, require

from facecodec.bitstream.packets import KeyframePayload, PacketType, decode_packet
from facecodec.capture.video import read_frames
from facecodec.codec.analysis import FaceAnalyzer, KeyframeEvent, MotionEvent
from facecodec.codec.decoder import PacketDecoder
from facecodec.codec.encoder import iter_crops
from facecodec.codec.stream import StreamDecoder, StreamEncoder
from facecodec.motion.basis import load_basis

CLIP = CLIPS / "liveportrait_d19.mp4"  # validation split, 30 fps
FRAMES, SIZE = 165, 256


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(read_frames(require(CLIP), FRAMES))


@pytest.fixture(scope="module")
def events(frames: list[np.ndarray]) -> list[KeyframeEvent | MotionEvent]:
    analyzer = FaceAnalyzer(load_basis(), SIZE, 30.0, scout=True)
    out: list[KeyframeEvent | MotionEvent] = []
    for i, f in enumerate(frames):
        out += analyzer.push(f, i)
    analyzer.close()
    return out


@dataclass
class Call:
    frames: dict[int, np.ndarray]  # rendered
    keyframes: list[bytes]  # KEYFRAME packets as sent
    drives: list[np.ndarray]  # with an avatar: what it was driven from, after each packet


def _call(frames: list[np.ndarray], reference: str, avatar: bool = False) -> Call:
    h, w = frames[0].shape[:2]
    enc = StreamEncoder(SIZE, 30, "medium", source_size=(w, h), reference=reference)
    dec = PacketDecoder(StreamDecoder(enc.header_bytes()).decoder.header,
                        avatar=require(PORTRAITS / "liveportrait_s0.jpg") if avatar else None)
    call = Call({}, [], [])
    for i, f in enumerate(frames):
        for data in enc.push(f, i):
            p, _ = decode_packet(data)
            if p.type == PacketType.KEYFRAME:
                call.keyframes.append(data)
            call.frames.update(dec.push(p))
            if dec.avatar is not None and dec.avatar.origin is not None:
                call.drives.append(dec.avatar.origin.to_vector())
    enc.close()
    return call


@pytest.fixture(scope="module")
def best(frames: list[np.ndarray]) -> Call:
    return _call(frames, "best")


def test_an_earlier_frame_is_sent_with_its_own_motion(
    frames: list[np.ndarray], events: list[KeyframeEvent | MotionEvent]
) -> None:
    keys = [e for e in events if isinstance(e, KeyframeEvent)]
    assert [k.reason for k in keys] == ["start", "refresh"]
    start, refresh = keys
    p = refresh.picture_index
    assert p is not None and start.index < p < refresh.index
    assert refresh.crop == start.crop
    assert np.array_equal(refresh.image, list(iter_crops(CLIP, keys, SIZE, p + 1))[p])
    own = next(e for e in events if isinstance(e, MotionEvent) and e.index == p)
    assert np.array_equal(refresh.motion.to_vector(), own.motion.to_vector())
    assert not refresh.motion.surround.any()  # the picture is its surround's origin
    # The refresh frame is not the picture: its surround is measured against it, not zero.
    at = next(e for e in events if isinstance(e, MotionEvent) and e.index == refresh.index)
    assert np.abs(at.motion.surround).max() > 0.0


def test_frames_after_the_refresh_decode_closer_to_the_original(
    frames: list[np.ndarray], events: list[KeyframeEvent | MotionEvent], best: Call
) -> None:
    keys = [e for e in events if isinstance(e, KeyframeEvent)]
    crops = list(iter_crops(CLIP, keys, SIZE, FRAMES))
    psnr = {}
    for ref, call in (("first", _call(frames, "first")), ("best", best)):
        assert len(call.keyframes) == (1 if ref == "first" else 2)
        d = np.stack([call.frames[i].astype(np.float64) - crops[i]
                      for i in range(keys[1].index, FRAMES)])
        psnr[ref] = float(10 * np.log10(255.0**2 / np.mean(d * d)))
    assert psnr["best"] > psnr["first"] + 0.5, psnr


def test_the_refresh_keyframe_is_a_new_picture_of_the_same_crop(best: Call) -> None:
    payloads = [KeyframePayload.from_bytes(decode_packet(k)[0].payload) for k in best.keyframes]
    assert len(payloads) == 2 and payloads[0].crop == payloads[1].crop
    assert payloads[1].image != payloads[0].image and len(payloads[1].image) > 500


def test_an_avatar_is_not_reset_by_a_refresh(frames: list[np.ndarray]) -> None:
    """The avatar's own face stands for the sender's first frame for the whole crop; with
    a reset at the refresh it would stand for the refresh frame from then on."""
    call = _call(frames, "best", avatar=True)
    assert len(call.keyframes) == 2 and len(call.drives) > 100
    assert all(np.array_equal(d, call.drives[0]) for d in call.drives)


def test_no_scout_beside_a_layer_or_when_asked_for_the_first_frame() -> None:
    assert StreamEncoder(SIZE, 30, "low", layer_kbps=8).analyzer.scout is None
    assert StreamEncoder(SIZE, 30, "medium", reference="first").analyzer.scout is None
    assert StreamEncoder(SIZE, 30, "medium", live=False).analyzer.scout is None
    assert StreamEncoder(SIZE, 30, "medium").analyzer.scout is not None
