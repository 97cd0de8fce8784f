"""Capture: videos read as a player shows them (phone recordings store portrait video as
landscape pictures plus a display rotation, and the sender must see the face upright), and a
webcam read live, newest picture first."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import CLIPS, GRID_CLIP, require

from facecodec.capture.camera import Camera
from facecodec.capture.feed import LiveFeed
from facecodec.capture.video import probe, read_frames
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import EncoderSettings, encode_file
from facecodec.errors import FacecodecError
from facecodec.psnr import image_psnr_y

D9 = CLIPS / "liveportrait_d9.mp4"  # 512x480: a quarter turn swaps width and height
FRAMES = 24


def _write(path: Path, frames: list[np.ndarray], display_ccw: int) -> None:
    """A lossless H.264 file holding `frames` turned so that its display rotation of
    `display_ccw` degrees (counter-clockwise) shows them upright again."""
    k = -display_ccw // 90
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264rgb", rate=25)
        stored = np.rot90(frames[0], k)
        s.width, s.height = stored.shape[1], stored.shape[0]
        s.pix_fmt = "rgb24"
        s.options = {"qp": "0"}
        if display_ccw:
            s.set_display_rotation(display_ccw)
        for f in frames:
            pic = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(f, k)), format="rgb24")
            for p in s.encode(pic):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.fixture(scope="module")
def d9_frames() -> list[np.ndarray]:
    return list(read_frames(require(D9), FRAMES))


@pytest.fixture(scope="module")
def turned(
    d9_frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Path]:
    """The clip's first frames stored upright and under each display rotation."""
    root = tmp_path_factory.mktemp("turned")
    paths = {}
    for deg in (0, 90, -90, 180):
        paths[deg] = root / f"d9_{deg}.mp4"
        _write(paths[deg], d9_frames, deg)
    return paths


@pytest.mark.parametrize("deg", [90, -90, 180])
def test_frames_come_upright(
    deg: int, turned: dict[int, Path], d9_frames: list[np.ndarray]
) -> None:
    info = probe(turned[deg])
    assert (info.width, info.height) == (512, 480)
    assert info.quarter_turns == (deg // 90) % 4
    got = list(read_frames(turned[deg]))
    assert len(got) == FRAMES
    for a, b in zip(got, d9_frames, strict=True):
        assert a.shape == b.shape == (480, 512, 3)
        assert np.array_equal(a, b)  # stored losslessly: the turn is undone exactly
    # The pictures in the file really lie turned: decoded as stored, they are not the clip.
    with av.open(str(turned[deg])) as c:
        raw = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert raw.shape != d9_frames[0].shape or not np.array_equal(raw, d9_frames[0])


def test_unturned_file_reads_as_stored(
    turned: dict[int, Path], d9_frames: list[np.ndarray]
) -> None:
    info = probe(turned[0])
    assert (info.width, info.height, info.quarter_turns) == (512, 480, 0)
    assert np.array_equal(next(read_frames(turned[0])), d9_frames[0])


def test_a_degenerate_display_matrix_reads_as_stored(
    tmp_path: Path, d9_frames: list[np.ndarray]
) -> None:
    path = tmp_path / "zero_matrix.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264rgb", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 512, 480, "rgb24", {"qp": "0"}
        s.set_display_matrix([0] * 9)
        for f in d9_frames[:3]:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    info = probe(path)
    assert (info.width, info.height, info.quarter_turns) == (512, 480, 0)
    assert np.array_equal(next(read_frames(path)), d9_frames[0])


def test_turned_phone_video_encodes_as_the_upright_one(turned: dict[int, Path]) -> None:
    """A quarter-turned file gives the upright file's stream: same source size in the
    header, the same crop, and frames drawn alike."""
    settings = EncoderSettings(preset="low")
    upright = encode_file(turned[0], None, settings)
    sideways = encode_file(turned[-90], None, settings)
    assert (sideways.header.source_width, sideways.header.source_height) == (512, 480)
    a, b = upright.keyframes[0].crop, sideways.keyframes[0].crop
    assert abs(a.x - b.x) < 2 and abs(a.y - b.y) < 2 and abs(a.side - b.side) < 2
    fa = decode_packets(upright.header, upright.packets, FRAMES, renderer="warp")
    fb = decode_packets(sideways.header, sideways.packets, FRAMES, renderer="warp")
    assert min(image_psnr_y(x, y) for x, y in zip(fa, fb, strict=True)) > 40


# --- webcam ---------------------------------------------------------------------------------


def _index_of(frame: np.ndarray, clip: list[np.ndarray]) -> int:
    """The clip frame `frame` is (after 4:2:0 round trips), by least difference."""
    d = [np.abs(frame.astype(np.int16) - f).mean() for f in clip]
    i = int(np.argmin(d))
    assert d[i] < 3, d[i]
    return i


def test_camera_gives_the_newest_picture_live(tmp_path: Path) -> None:
    clip = list(read_frames(require(GRID_CLIP)))  # 75 frames at 25 fps: 3 s
    feed = LiveFeed(tmp_path / "cam.y4m", clip, 25.0)
    cam = Camera(str(feed.path))
    try:
        assert cam.fps == 25
        got, at = [], []
        while (f := cam.next_frame()) is not None:
            got.append(_index_of(f, clip))
            at.append(time.monotonic())
            if len(got) == 10:
                time.sleep(0.4)  # a busy sender: the camera moves on meanwhile
    finally:
        cam.close()
    feed.join()
    assert got == sorted(got) and len(set(got)) == len(got)  # never a picture twice or back
    # After the pause it gives the picture of now, not the next one queued: ~10 skipped.
    assert got[10] - got[9] >= 6
    assert at[-1] - at[0] > 2.0  # live: pictures came over the clip's 3 s, not at once
    assert len(got) >= 40


def test_camera_that_stops_ends_the_source(tmp_path: Path) -> None:
    clip = list(read_frames(require(GRID_CLIP), 10))
    feed = LiveFeed(tmp_path / "cam.y4m", clip, 25.0)
    cam = Camera(str(feed.path))
    try:
        n = 0
        t = time.monotonic()
        while cam.next_frame() is not None:
            n += 1
        assert n <= 9 and time.monotonic() - t < 3  # the first is taken at opening
    finally:
        cam.close()


def test_missing_camera_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FacecodecError, match="camera .*cannot be opened"):
        Camera(str(tmp_path / "video9"))


def test_a_files_sound_reads_from_any_sample_and_ends_quietly_where_it_is_damaged(
    tmp_path: Path,
) -> None:
    """FileSound gives the same samples however it is read (forward, skipping, going
    back), silence past the end; a file cut short mid-way gives what it holds, then
    silence, without an error: a call's sound ends there, the call goes on."""
    from facecodec.capture.sound import FileSound

    clip = require(GRID_CLIP)
    sound = FileSound(str(clip))
    whole = sound.read(0, 150_000)
    assert sound.at_end(150_000) and not sound.at_end(0)
    assert not whole[142_943:].any() and np.abs(whole[:142_943]).max() > 1000
    for start, n in ((960, 960), (100_000, 5), (50, 7_000), (142_900, 960), (200_000, 10)):
        assert np.array_equal(sound.read(start, n), np.pad(whole, ((0, 60_000), (0, 0)))[
            start:start + n])
    cut = tmp_path / "cut.mpg"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    damaged = FileSound(str(cut))
    got = damaged.read(0, 150_000)
    held = int(np.flatnonzero(np.abs(got).max(axis=1))[-1]) + 1
    assert 20_000 < held < 142_943 and damaged.at_end(150_000)
    # The same samples up to the cut (the resampler's last few differ: its flush comes early).
    assert np.array_equal(got[:held - 4800], whole[:held - 4800])
