"""Capture: videos read as a player shows them (phone recordings store portrait video as
landscape pictures plus a display rotation, and the sender must see the face upright), and a
webcam read live, newest picture first."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import CLIPS, GRID_CLIP, break_video_packets, require

from facecodec.capture.camera import Camera
from facecodec.capture.feed import LiveFeed
from facecodec.capture.timing import MAX_DAMAGED_RUN
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
    _write_stored(path, [np.rot90(f, k) for f in frames], rotation=display_ccw)


def _write_stored(path: Path, stored: list[np.ndarray], matrix: list[int] | None = None,
                  rotation: int = 0, **stream: object) -> None:
    """A lossless H.264 file of `stored` pictures, with this display matrix (9 numbers,
    FFmpeg's layout) or rotation, and stream attributes."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264rgb", rate=25)
        s.width, s.height, s.pix_fmt, s.options = (stored[0].shape[1], stored[0].shape[0],
                                                   "rgb24", {"qp": "0"})
        for name, value in stream.items():
            setattr(s.codec_context if name.startswith("color") else s, name, value)
        if matrix is not None:
            s.set_display_matrix(matrix)
        if rotation:
            s.set_display_rotation(rotation)
        for f in stored:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f),
                                                         format="rgb24")):
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
    _write_stored(path, d9_frames[:3], [0] * 9)
    info = probe(path)
    assert (info.width, info.height, info.quarter_turns) == (512, 480, 0)
    assert np.array_equal(next(read_frames(path)), d9_frames[0])


ONE = 1 << 16  # 1.0 in the display matrix's 16.16 fixed point


# Display matrices as `ffmpeg -display_hflip`, `-display_vflip` and `-display_rotation 90
# -display_hflip` write them, and the stored picture that each shows as the clip (FFmpeg
# itself turns, then mirrors, a picture so).
@pytest.mark.parametrize("name, linear, stored", [
    ("mirrored", (-ONE, 0, 0, ONE), lambda f: f[:, ::-1]),
    ("upside down", (ONE, 0, 0, -ONE), lambda f: f[::-1]),
    ("turned and mirrored", (0, -ONE, -ONE, 0), lambda f: np.rot90(f[:, ::-1], -1)),
])
def test_a_mirrored_display_is_shown_as_a_player_shows_it(
    name: str, linear: tuple[int, int, int, int], stored: Callable[[np.ndarray], np.ndarray],
    d9_frames: list[np.ndarray], tmp_path: Path,
) -> None:
    """A mirror alone was read as a half turn (the face upside down), and a flip upside
    down not at all."""
    a, b, c, d = linear
    path = tmp_path / "display.mp4"
    _write_stored(path, [stored(f) for f in d9_frames[:3]], [a, b, 0, c, d, 0, 0, 0, 1 << 30])
    info = probe(path)
    assert (info.width, info.height) == (512, 480), name
    assert np.array_equal(next(read_frames(path)), d9_frames[0]), name


@pytest.mark.parametrize("orientation, shown", [
    (None, lambda f: f),  # EXIF with no turn at all (a camera's make)
    (6, lambda f: np.rot90(f, -1)),  # turn 90 degrees clockwise to show
    (2, lambda f: f[:, ::-1]),  # mirrored
], ids=["make-only", "turned", "mirrored"])
def test_a_photo_with_exif_is_read_as_a_viewer_shows_it(
    orientation: int | None, shown: Callable[[np.ndarray], np.ndarray], tmp_path: Path,
) -> None:
    """FFmpeg attaches a JPEG's EXIF as frame side data that PyAV does not know; reading
    the frame's side data then failed ("31 is not a valid Type"), so a camera's photo could
    be neither encoded nor upscaled, and its turn was lost with it."""
    from PIL import Image

    stored = np.zeros((96, 128, 3), np.uint8)
    stored[:48, :64] = (250, 20, 20)  # a red corner: where it lands tells the turn
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    if orientation is not None:
        exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, quality=98, exif=exif)
    frame = next(read_frames(path))
    expected = shown(stored)
    assert frame.shape == expected.shape
    assert np.abs(frame.astype(int) - expected).mean() < 4


def test_a_turn_between_quarter_turns_is_refused(
    tmp_path: Path, d9_frames: list[np.ndarray]
) -> None:
    path = tmp_path / "turned45.mp4"
    cos = round(ONE * np.cos(np.pi / 4))
    _write_stored(path, d9_frames[:2], [cos, -cos, 0, cos, cos, 0, 0, 0, 1 << 30])
    with pytest.raises(FacecodecError, match="turned by 45 degrees; facecodec reads videos "
                       "turned by quarter turns only"):
        probe(path)


def test_the_video_a_player_shows_is_read(tmp_path: Path, d9_frames: list[np.ndarray]) -> None:
    """Of two video streams the one marked default (a cover picture first was coded
    instead, without a word); a file whose only picture is a cover is named as such."""
    path = tmp_path / "two.mkv"
    grey = np.full_like(d9_frames[0], 128)
    with av.open(str(path), "w") as out:
        streams = []
        for default in (False, True):
            s = out.add_stream("libx264rgb", rate=25)
            s.width, s.height, s.pix_fmt, s.options = 512, 480, "rgb24", {"qp": "0"}
            s.disposition = av.stream.Disposition.default if default else 0
            streams.append(s)
        for f in d9_frames[:4]:
            for s, pic in zip(streams, (grey, f), strict=True):
                for p in s.encode(av.VideoFrame.from_ndarray(pic, format="rgb24")):
                    out.mux(p)
        for s in streams:
            for p in s.encode():
                out.mux(p)
    got = list(read_frames(path))
    assert len(got) == 4 and np.array_equal(got[0], d9_frames[0])
    song = tmp_path / "song.m4a"  # a song with its album's cover
    with av.open(str(song), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=44100)
        s = out.add_stream("mjpeg", rate=1)
        s.width, s.height, s.pix_fmt = 512, 480, "yuvj420p"
        s.disposition = av.stream.Disposition.attached_pic
        for p in s.encode(av.VideoFrame.from_ndarray(d9_frames[0], format="rgb24")):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
        quiet = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        quiet.sample_rate = 44100
        for p in [*sound.encode(quiet), *sound.encode()]:
            out.mux(p)
    with pytest.raises(FacecodecError, match="contains no video, only a cover picture"):
        probe(song)


def _encoded(path: Path, frames: list[np.ndarray], rate: int = 25, codec: str = "libx264",
             first_pts: int | None = None, options: dict[str, str] | None = None) -> Path:
    """`frames` coded to `path` (container options `options`), stamped from `first_pts`
    frames if given."""
    with av.open(str(path), "w", options=options or {}) as out:
        s = out.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, f in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(f, format="rgb24")
            if first_pts is not None:
                picture.pts, picture.time_base = first_pts + i, Fraction(1, rate)
            for p in s.encode(picture):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_a_file_cut_short_is_an_error_not_a_shorter_video(tmp_path: Path) -> None:
    """The first half of an mp4 whose index comes first (as made for the web) opens and
    decodes; it read as a shorter video before, without a word."""
    half = tmp_path / "half.mp4"
    whole = _encoded(tmp_path / "whole.mp4", list(read_frames(require(D9), 50)),
                     options={"movflags": "faststart"})
    assert len(list(read_frames(whole))) == 50
    data = whole.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    assert probe(half).frames == 50  # the index still states every frame
    with pytest.raises(FacecodecError, match=r"half.mp4: the file is cut short after frame "
                       r"\d+ \(incomplete\)"):
        list(read_frames(half))

    # A clip with sound, cut inside a packet of its sound: the pictures before the cut are
    # whole, and the file reads as shorter unless every stream's packets are looked at.
    clip, web = require(CLIPS / "liveportrait_d19.mp4"), tmp_path / "web.mp4"
    with av.open(str(clip)) as c, av.open(str(web), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in c.streams}
        for p in c.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                out.mux(p)
    with av.open(str(web)) as c:
        sound = [p for p in c.demux(c.streams.audio[0]) if p.size]
    middle = sound[len(sound) // 2]
    cut = tmp_path / "cut_in_sound.mp4"
    cut.write_bytes(web.read_bytes()[: middle.pos + middle.size // 2])
    with pytest.raises(FacecodecError, match="cut_in_sound.mp4: the file is cut short"):
        list(read_frames(cut))


def test_a_damaged_packet_mid_way_is_passed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A player goes on over a damaged packet; so does the reader, with a warning (it ended
    the whole read with an error before). A stream that stays undecodable, or is damaged to
    its end, still ends with one: it is not a video going on."""
    clip = require(CLIPS / "liveportrait_d19.mp4")
    whole = list(read_frames(clip))
    damaged = tmp_path / "damaged.mp4"
    at = break_video_packets(clip, damaged, 60)
    got = list(read_frames(damaged))
    assert len(got) == len(whole) == 250
    # The frames before the damage are as they were; the B-pictures shown just before the
    # damaged one are drawn from it.
    first_changed = next(i for i in range(len(whole)) if not np.array_equal(got[i], whole[i]))
    assert round(at * 30) - 3 <= first_changed <= round(at * 30)
    err = capsys.readouterr().err.splitlines()
    said = re.fullmatch(rf"warning: {re.escape(str(damaged))}: damaged video data after "
                        r"([\d.]+) s; passed over as a player does \(the picture before it is "
                        r"held, and what follows may show the damage until the next keyframe\)",
                        err[0] if len(err) == 1 else "")
    # the last picture given before the decoder told of it (with frame threading, later)
    assert said and at - 0.3 < float(said[1]) < at, err
    assert len(list(read_frames(damaged, 80))) == 80 and capsys.readouterr().err == ""

    # The longest run passed over; a stale picture the decoder gave after it (at 0.63 s,
    # after 3.37 s) restarted the clock, which then held a picture for 31 frames.
    long_run = tmp_path / "long_run.mp4"
    break_video_packets(clip, long_run, 20, MAX_DAMAGED_RUN)
    assert len(list(read_frames(long_run))) == 250

    for name, first, count in (("broken", 60, MAX_DAMAGED_RUN + 1), ("broken_end", 249, 1)):
        broken = tmp_path / f"{name}.mp4"
        break_video_packets(clip, broken, first, count)
        with pytest.raises(FacecodecError, match=rf"{name}.mp4: video data is damaged after "
                           r"frame \d+$"):
            list(read_frames(broken))


def test_a_file_shorter_than_it_says_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Matroska writes its length at its start, so a file cut short says how long it was
    (no packet of it is flagged, and it read as a shorter video without a word before).
    Sound that outlasts the pictures is no cut (tests/test_upscale.py)."""
    frames = list(read_frames(require(D9), 50))
    whole, cut = _encoded(tmp_path / "whole.mkv", frames), tmp_path / "cut.mkv"
    assert len(list(read_frames(whole))) == 50 and capsys.readouterr().err == ""
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    n = len(list(read_frames(cut)))
    assert 10 < n < 40
    err = capsys.readouterr().err.splitlines()
    said = re.fullmatch(rf"warning: {re.escape(str(cut))}: the file ends at ([\d.]+) s, though "
                        r"it says it lasts 2.00 s \(cut short\?\); read as far as it goes",
                        err[0] if len(err) == 1 else "")
    assert said and abs(float(said[1]) - n / 25) < 0.05, err

    # Matroska counts its length from 0, not from where its clock starts.
    late = _encoded(tmp_path / "starts_at_5s.mkv", frames, first_pts=125)
    assert len(list(read_frames(late))) == 50 and capsys.readouterr().err == ""

    # FLV's own coding states no picture's length: the last one lasts a frame (at 1 fps, a
    # second).
    slow = _encoded(tmp_path / "slow.flv", frames[:8], rate=1, codec="flv")
    assert len(list(read_frames(slow))) == 8 and capsys.readouterr().err == ""


def test_hdr_video_is_noted_once(
    tmp_path: Path, d9_frames: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    """A phone's HLG recording is read as standard video (darker and paler than shown): said
    once, though a command probes a file more than once."""
    path = tmp_path / "phone_hlg.mp4"
    _write_stored(path, d9_frames[:2], color_trc=18, color_primaries=9, colorspace=9)
    probe(path)
    assert len(list(read_frames(path))) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: {path} is HDR video (HLG)"), err
    _write_stored(tmp_path / "sdr.mp4", d9_frames[:2], color_trc=1)
    probe(tmp_path / "sdr.mp4")
    assert capsys.readouterr().err == ""


def test_anamorphic_pixels_are_stated(tmp_path: Path, d9_frames: list[np.ndarray]) -> None:
    """The shared liveportrait_d9 is stored 512x480 with pixels 15/16 as wide as tall."""
    assert probe(require(D9)).pixel_aspect == Fraction(15, 16)
    path = tmp_path / "sideways_anamorphic.mp4"
    _write_stored(path, [np.rot90(f, -1) for f in d9_frames[:2]],
                  [0, -ONE, 0, ONE, 0, 0, 0, 0, 1 << 30], sample_aspect_ratio=Fraction(2))
    info = probe(path)  # a quarter turn turns the pixels too
    assert (info.width, info.height, info.pixel_aspect) == (512, 480, Fraction(1, 2))
    # An mp4 may state its pixel shape in 32-bit terms; outputs store 16-bit ones (it was
    # refused, after the whole analysis, when written into a stream).
    odd = tmp_path / "odd_terms.mp4"
    _write_stored(odd, d9_frames[:2], sample_aspect_ratio=Fraction(76800, 64507))
    aspect = probe(odd).pixel_aspect
    assert max(aspect.numerator, aspect.denominator) <= 0xFFFF
    assert abs(aspect - Fraction(76800, 64507)) < 1e-6


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


def _with_sound(path: Path, clip: Path, sound_codec: str, sound_starts_s: float = 0.0) -> None:
    """A 3 s file of grey pictures with `clip`'s sound, starting `sound_starts_s` after the
    first picture."""
    grey = np.full((64, 64, 3), 128, np.uint8)
    with av.open(str(clip)) as c, av.open(str(path), "w") as box:
        video = box.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = box.add_stream(sound_codec, rate=48000, layout="stereo")
        for i in range(75):
            pic = av.VideoFrame.from_ndarray(grey, format="rgb24")
            pic.pts = i
            for p in video.encode(pic):
                box.mux(p)
        for p in video.encode():
            box.mux(p)
        to = av.AudioResampler(format=sound.format.name, layout="stereo", rate=48000)
        done = round(sound_starts_s * 48000)
        for frame in c.decode(c.streams.audio[0]):
            for piece in to.resample(frame):
                piece.pts, done = done, done + piece.samples
                piece.time_base = Fraction(1, 48000)
                for p in sound.encode(piece):
                    box.mux(p)
        for p in sound.encode():
            box.mux(p)


def test_a_files_sound_keeps_its_place_and_outlives_a_damaged_packet(tmp_path: Path) -> None:
    """A sound that starts 1.5 s after the first picture is heard 1.5 s in (it was heard at
    once); damaged packets are a short silence, not the end of the sound."""
    from facecodec.capture.sound import FileSound

    clip = require(GRID_CLIP)
    first, late = tmp_path / "first.mkv", tmp_path / "late.mkv"
    _with_sound(first, clip, "pcm_s16le")
    _with_sound(late, clip, "pcm_s16le", sound_starts_s=1.5)
    at_once, later = FileSound(str(first)).read(0, 4 * 48000), FileSound(str(late))
    got = later.read(0, 4 * 48000)
    assert not got[:72000].any() and np.abs(got[72000:]).max() > 1000
    assert np.array_equal(got[72000:], at_once[:4 * 48000 - 72000]) and not later.damaged

    coded = tmp_path / "coded.mp4"  # its index says where each packet lies
    _with_sound(coded, clip, "aac")
    whole = FileSound(str(coded)).read(0, 3 * 48000)
    with av.open(str(coded)) as c:
        spots = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size][30:34]
    data = bytearray(coded.read_bytes())
    for i, (at, size) in enumerate(spots):  # four packets' data noise, their heads kept
        data[at + 2:at + size] = (b"\xff" if i % 2 else b"\0") * (size - 2)
    damaged_file = tmp_path / "damaged.mp4"
    damaged_file.write_bytes(bytes(data))
    damaged = FileSound(str(damaged_file))
    got = damaged.read(0, 3 * 48000)
    assert damaged.damaged
    tail = slice(2 * 48000, 2 * 48000 + 24000)  # a second after the damage, still speech
    assert np.abs(whole[tail]).max() > 1000
    # The same speech in the same place (the decoder's state after the damage differs a
    # little; a shift of the sound by the damaged packets' time would not correlate).
    assert np.corrcoef(got[tail, 0], whole[tail, 0])[0, 1] > 0.99


def _segment(path: Path, frames: list[np.ndarray], rate: int, layout: str) -> None:
    """An MPEG-TS recording of `frames` with a second of a 440 Hz tone at this rate."""
    with av.open(str(path), "w", format="mpegts") as box:
        video = box.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = box.add_stream("aac", rate=rate, layout=layout)
        for f in frames:
            for p in video.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                box.mux(p)
        for p in video.encode():
            box.mux(p)
        channels = 1 if layout == "mono" else 2
        t = np.arange(rate) / rate
        tone = np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))
        piece = av.AudioFrame.from_ndarray(tone, format="fltp", layout=layout)
        piece.sample_rate, piece.pts = rate, 0
        for p in [*sound.encode(piece), *sound.encode()]:
            box.mux(p)


def test_joined_recordings_read_whole(tmp_path: Path, d9_frames: list[np.ndarray]) -> None:
    """Two MPEG-TS recordings joined end to end (as HLS segments are), the second's sound
    at another rate and layout: every frame is read (the join's corrupt packet was taken for
    a cut), and the sound goes on past the change (it ended in an internal error)."""
    from facecodec.capture.sound import FileSound

    small = [cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in d9_frames]
    one, two, joined = tmp_path / "one.ts", tmp_path / "two.ts", tmp_path / "joined.ts"
    _segment(one, small[:12], 44100, "mono")
    _segment(two, small[12:24], 48000, "stereo")
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    assert len(list(read_frames(joined))) == 24
    sound = FileSound(str(joined))
    got = sound.read(0, 3 * 48000)
    heard = np.flatnonzero(np.abs(got[:, 0]) > 1000)
    assert heard[-1] > 48000 + 24000, heard[-1]  # the second recording's tone is heard too


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


@pytest.mark.parametrize("suffix", [".avi", ".mkv"])
def test_b_pictures_are_read_in_order_once_each(tmp_path: Path, suffix: str) -> None:
    """B-pictures, whose timestamps come out of order: in AVI (which stamps pictures with
    decoding times) each picture is still read once, in order (a stamp out of order was read
    as a new clock, and a 10 s AVI as 24 s of repeated pictures); in Matroska, across a 1 s
    pause, the last picture before it is held."""
    path = tmp_path / f"b{suffix}"
    pause = suffix == ".mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt, s.options = 64, 64, "yuv420p", {"bf": "3", "crf": "10"}
        if pause:
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        for i in range(60):  # each picture's level is its number; a blinking corner
            pic = np.full((64, 64, 3), 40 + 3 * i, np.uint8)
            pic[:8, :8] = 255 * (i % 2)
            frame = av.VideoFrame.from_ndarray(pic, format="rgb24")
            if pause:  # 30 a second, none for a second after the first
                frame.pts, frame.time_base = round(i * 1000 / 30) + 1000 * (i >= 30), s.time_base
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    with av.open(str(path)) as c:
        stamps = [f.pts for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        packets = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    # The file is what the test is about: AVI's pictures out of order, Matroska's packets.
    assert (packets if pause else stamps) != sorted(packets if pause else stamps)
    levels = [round((float(f[16:, 16:].mean()) - 40) / 3) for f in read_frames(path)]
    held = [29] * 30 if pause else []  # the last picture before the pause, for its second
    assert levels == list(range(30)) + held + list(range(30, 60))


def _levels(path: Path, count: int, start: int = 0, options: dict[str, str] | None = None,
            fmt: str | None = None) -> list[int]:
    """Write `count` flat grey pictures, each one's level its number from `start`, to
    `path` (x264 with these options), and read back each picture's number."""
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt, s.options = 64, 64, "yuv420p", options or {}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 + 3 * (start + i),
                                                       np.uint8), format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return [round((float(f.mean()) - 40) / 3) for f in read_frames(path)]


def test_pictures_whose_last_stamps_come_out_of_order_read_whole(tmp_path: Path) -> None:
    """An AVI stamps pictures in decoding order, so its last picture out may be stamped
    frames before its last packet: that is no damage at the end (it was an error)."""
    levels = _levels(tmp_path / "b_last.avi", 45, options={
        "bf": "3", "g": "45", "crf": "10", "x264-params": "b-adapt=0"})
    assert levels == list(range(45))


def test_a_joined_recording_that_runs_past_the_first_ones_end_reads_in_order(
    tmp_path: Path
) -> None:
    """The second of two joined MPEG-TS recordings starts its clock again and runs past
    where the first ended: each picture is read once, in order (a picture where the clocks
    cross was lost, and the next one shown twice)."""
    one, two, joined = tmp_path / "one.ts", tmp_path / "two.ts", tmp_path / "joined.ts"
    options = {"bf": "0", "g": "12", "crf": "10"}
    assert _levels(one, 12, 0, options, "mpegts") == list(range(12))
    assert _levels(two, 36, 12, options, "mpegts") == list(range(12, 48))
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    assert [round((float(f.mean()) - 40) / 3) for f in read_frames(joined)] == list(range(48))


def test_a_stated_rate_the_timestamps_contradict_gives_way_to_them(tmp_path: Path) -> None:
    """A Matroska file whose header says 10 frames a second but whose pictures are stamped
    30 a second is read at 30 (it was read at 10, three times too slow, or with two
    pictures in three dropped); one 30 a second with a pause keeps 30 (its average, 20,
    would drop a third of them)."""
    stated, paused = tmp_path / "stated.mkv", tmp_path / "paused.mkv"
    for path, rate, stamps in ((stated, 10, [round(i * 1000 / 30) for i in range(60)]),
                               (paused, 30, [round(i * 1000 / 30) + 1000 * (i >= 30)
                                             for i in range(60)])):
        with av.open(str(path), "w") as out:
            s = out.add_stream("libx264", rate=rate)
            s.width, s.height, s.pix_fmt, s.options = 64, 64, "yuv420p", {"bf": "0"}
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
            for i, ms in enumerate(stamps):
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8),
                                                   format="rgb24")
                frame.pts, frame.time_base = ms, s.time_base
                for p in s.encode(frame):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
    with av.open(str(stated)) as c:
        assert c.streams.video[0].guessed_rate == 10  # the file is what the test is about
    assert probe(stated).fps == 30 and sum(1 for _ in read_frames(stated)) == 60
    assert probe(paused).fps == 30 and sum(1 for _ in read_frames(paused)) == 90
