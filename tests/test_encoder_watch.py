"""Encoder calls that never return (SVT-AV1 has been seen to deadlock inside one): the call
is given up on, a fresh encoder codes the same pictures, and a command whose encoder keeps
stalling fails in one line and writes nothing.

A real deadlock cannot be called up on demand; these tests hold a real encoder call inside
its watched thread (at the point where it would start coding) until the watch gives up."""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIPS, GRID_CLIP, CliRun, require

import facecodec.bench.conventional as conventional
import facecodec.codec.encoder_watch as watch
import facecodec.codec.keyframe as kf
import facecodec.codec.layer as layer
import facecodec.codec.layer_rate as layer_rate
import facecodec.stream.call as call
from facecodec.bench.reference import ReferenceClip, centre_square, reference_clip
from facecodec.codec.encoder import EncoderSettings, analyze_file
from facecodec.codec.encoder_watch import (
    EncoderStalled,
    retried,
    stall_limit,
    stalls,
    watched,
)
from facecodec.psnr import image_psnr_y

CLIP = CLIPS / "liveportrait_d19.mp4"
LIMIT_S = 0.5


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test, so that the calls it held finish and their threads end."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def short_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "STALL_LIMIT_S", LIMIT_S)


def _held(release: threading.Event, calls: set[int]) -> Callable[..., object]:
    """A stand-in for a function the watched call runs first: the calls numbered in `calls`
    (from 0) wait for `release` before they go on as the real one."""
    seen = [0]

    def wrap(real: Callable[..., object]) -> Callable[..., object]:
        def held(*args: object, **kwargs: object) -> object:
            n, seen[0] = seen[0], seen[0] + 1
            if n in calls:
                release.wait(60)
            return real(*args, **kwargs)

        return held

    return wrap


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return centre_square(require(CLIP), 256)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ReferenceClip:
    return reference_clip(require(CLIP), 256, 8, cache_dir=tmp_path_factory.mktemp("cache"))


def test_a_call_is_answered_or_given_up_on(short_limit: None, release: threading.Event) -> None:
    assert watched(lambda: 7, "test") == 7
    with pytest.raises(ZeroDivisionError):
        watched(lambda: 1 // 0, "test")
    before = stalls()
    with pytest.raises(EncoderStalled, match="the test encoder stopped answering for 0.5 s"):
        watched(lambda: release.wait(60), "test")
    # Counted when a fresh encoder is started, as `retried` does.
    assert stalls() == before
    tries: list[int] = []

    def start() -> int:
        tries.append(1)
        return watched(lambda: release.wait(60) if len(tries) == 1 else 7, "test")

    assert retried(start, "test") == 7 and len(tries) == 2
    assert stalls() == before + 1


# The stand-in never starts the call it is given (nor, so, the coroutine inside it).
@pytest.mark.filterwarnings("ignore:coroutine 'run_call' was never awaited")
def test_a_live_call_gives_up_sooner(release: threading.Event, monkeypatch: pytest.MonkeyPatch,
                                     run_main: Callable[..., CliRun]) -> None:
    with stall_limit(0.2), pytest.raises(EncoderStalled, match="for 0.2 s"):
        watched(lambda: release.wait(60), "test")
    assert watch.STALL_LIMIT_S == 60
    # A call runs under CALL_STALL_LIMIT_S (its run stood in for: no peer comes here).
    during: list[float] = []

    def run(work: Coroutine[object, object, bool]) -> bool:
        work.close()
        during.append(watch.STALL_LIMIT_S)
        return False

    monkeypatch.setattr(call.asyncio, "run", run)
    r = run_main("call", "room", "--signal", "ws://127.0.0.1:9/", "--source", require(GRID_CLIP))
    assert during == [call.CALL_STALL_LIMIT_S] and 1 <= call.CALL_STALL_LIMIT_S <= 10, r
    assert watch.STALL_LIMIT_S == 60


def test_a_keyframe_whose_encoder_stalls_is_coded_by_a_fresh_one(
    face: np.ndarray, short_limit: None, release: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = kf.encode_image(face, 60)
    monkeypatch.setattr(kf, "ordinary_scheduling", _held(release, {0})(kf.ordinary_scheduling))
    before = stalls()
    cid, data = kf.encode_image(face, 60)
    assert stalls() == before + 1
    assert (cid, data) == expected  # the same picture, coded whole by the second encoder
    assert image_psnr_y(face, kf.decode_image(cid, data, 256)) > 30


def test_a_keyframe_whose_encoder_stalls_twice_is_an_error(
    face: np.ndarray, short_limit: None, release: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kf, "ordinary_scheduling", _held(release, {0, 1})(kf.ordinary_scheduling))
    with pytest.raises(EncoderStalled, match="libsvtav1 encoder stopped answering for 0.5 s, "
                                             "twice in a row: run the command again"):
        kf.encode_image(face, 60)


def test_a_layer_picture_whose_encoder_stalls_is_coded_intra_by_a_fresh_one(
    ref: ReferenceClip, short_limit: None, release: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crops = ref.frames[:6]
    expected, _ = layer.code_sequence(crops, 128, 46)
    monkeypatch.setattr(layer, "_to_frame", _held(release, {2})(layer._to_frame))
    encoder = layer.LayerEncoder(128, 46)
    coded = [encoder.encode(c) for c in crops]
    # The third picture's encoder stalled: a fresh one coded it intra, and went on from it.
    assert [intra for _, intra in coded] == [True, False, True, False, False, False]
    assert [data for data, _ in coded[:2]] == expected[:2]
    decoder = layer.LayerDecoder(128)
    for (data, intra), crop in zip(coded, crops, strict=True):
        picture = decoder.decode(data, intra)
        assert picture is not None
        assert image_psnr_y(crop, layer.upsample(picture, 256)) > 28


def test_a_files_layer_whose_encoder_stalls_is_coded_again_whole(
    short_limit: None, release: threading.Event, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file's layer must not change when its encoder stalls: the picture a fresh encoder
    would code intra mid-run, and the rate it would measure, would change the file."""
    analysis = analyze_file(require(GRID_CLIP), EncoderSettings(), max_frames=30)
    pictures = analysis.layer_pictures(256, 256)
    expected = layer_rate.code_layer(analysis, pictures, 256, 2, 52)
    assert sum(intra for intra, _ in expected.values()) == 1
    monkeypatch.setattr(layer, "_to_frame", _held(release, {5})(layer._to_frame))
    before = stalls()
    assert layer_rate.code_layer(analysis, pictures, 256, 2, 52) == expected
    assert stalls() == before + 1


def test_a_conventional_codec_whose_encoder_stalls_codes_the_clip_again(
    ref: ReferenceClip, short_limit: None, release: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = conventional.CODECS["svtav1-ld"]
    expected = conventional.encode_decode(ref, cfg, 50)

    # Its first call (the first picture of the first try, where the encoder starts) is held.
    monkeypatch.setattr(conventional, "ordinary_scheduling",
                        _held(release, {0})(conventional.ordinary_scheduling))
    before = stalls()
    point = conventional.encode_decode(ref, cfg, 50)
    assert stalls() == before + 1
    assert (point.bytes_all, point.bytes_net) == (expected.bytes_all, expected.bytes_net)
    assert np.array_equal(point.frames, expected.frames)


def test_encode_whose_encoder_keeps_stalling_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, short_limit: None, release: threading.Event,
    monkeypatch: pytest.MonkeyPatch, run_main: Callable[..., CliRun],
) -> None:
    require(GRID_CLIP)
    monkeypatch.setattr(kf, "ordinary_scheduling",
                        _held(release, set(range(100)))(kf.ordinary_scheduling))
    out = tmp_path / "out.fcv"
    r = run_main("encode", GRID_CLIP, "-o", out)
    assert r.returncode == 1
    assert r.stderr_lines == ["facecodec: error: the libsvtav1 encoder stopped answering for "
                              "0.5 s, twice in a row: run the command again"]
    assert list(tmp_path.iterdir()) == []


def test_encode_notes_an_encoder_that_stalled_once(
    tmp_path: Path, short_limit: None, release: threading.Event,
    monkeypatch: pytest.MonkeyPatch, run_main: Callable[..., CliRun],
) -> None:
    require(GRID_CLIP)
    monkeypatch.setattr(kf, "ordinary_scheduling", _held(release, {0})(kf.ordinary_scheduling))
    out = tmp_path / "out.fcv"
    r = run_main("encode", GRID_CLIP, "-o", out)
    assert r.returncode == 0, r.stderr
    assert ("note: an encoder stopped answering (1 time); a fresh one coded its pictures "
            "again") in r.stderr_lines
    assert out.stat().st_size > 0
