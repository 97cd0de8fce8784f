"""How a file's pictures and sound come out together (capture/timing.py): made-up clips
with a white flash and a 1 kHz beep at the same moments, read as `upscale`, `encode` and a
call's `--source` read them (`read_frames` at the probed rate, `FileSound`), and where each
flash and beep lands. Prints, per case, the frames read against what a player shows, and
the beep minus the flash in ms (0: in sync).

    .venv/bin/python benchmarks/av_sync.py
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facecodec.capture.microphone import RATE
from facecodec.capture.sound import FileSound
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.errors import OneLineParser

SIDE = 64


def _write(path: Path, stamps_ms: list[int], flashes_ms: list[int], rate: int = 30,
           sound: Callable[[int], list[tuple[int, np.ndarray]]] | None = None,
           options: dict[str, str] | None = None, fmt: str | None = None) -> None:
    """Pictures at `stamps_ms` (white at `flashes_ms`, grey else) and a sound (pieces of
    (start ms, 48 kHz mono samples); by default one from 0 to the last picture, with a 100
    ms beep at each flash)."""
    end = stamps_ms[-1] + 1000 // rate
    with av.open(str(path), "w", format=fmt) as box:
        video = box.add_stream("libx264", rate=rate)
        video.width = video.height = SIDE
        video.pix_fmt = "yuv420p"
        video.options = {"bf": "0", **(options or {})}
        if path.suffix != ".avi":
            video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        audio = box.add_stream("mp2" if path.suffix in (".ts", ".avi") else "pcm_s16le",
                               rate=RATE, layout="mono")
        for i, ms in enumerate(stamps_ms):
            level = 255 if ms in flashes_ms else 96
            pic = av.VideoFrame.from_ndarray(np.full((SIDE, SIDE, 3), level, np.uint8), "rgb24")
            if path.suffix != ".avi":
                pic.pts, pic.time_base = ms, Fraction(1, 1000)
            else:
                pic.pts = i
            for p in video.encode(pic):
                box.mux(p)
        for p in video.encode():
            box.mux(p)
        beep = (8000 * np.sin(np.arange(RATE // 10) * 2 * np.pi / 48)).astype(np.int16)
        pcm = np.zeros(RATE * end // 1000, np.int16)
        for ms in flashes_ms:
            pcm[RATE * ms // 1000:RATE * ms // 1000 + len(beep)] = beep
        pieces = sound(end) if sound else [(0, pcm)]
        for start, part in pieces:
            if not len(part):
                part = pcm[RATE * start // 1000:]
            piece = av.AudioFrame.from_ndarray(part.reshape(1, -1), format="s16", layout="mono")
            piece.sample_rate, piece.pts = RATE, RATE * start // 1000
            piece.time_base = Fraction(1, RATE)
            for p in audio.encode(piece):
                box.mux(p)
        for p in audio.encode():
            box.mux(p)


def _measure(path: Path) -> tuple[float, int, list[int | None]]:
    """(rate read at, frames read, beep minus flash in ms for each flash)."""
    fps = float(probe(path).fps)
    light = np.array([float(f.mean()) for f in read_frames(path)])
    flashes = np.flatnonzero((light > 200) & (np.r_[0.0, light[:-1]] <= 200)) / fps
    sound = np.abs(FileSound(str(path)).read(0, round(RATE * (len(light) / fps + 1)))[:, 0])
    loud = np.flatnonzero(sound > 4000)
    beeps = loud[np.r_[True, np.diff(loud) > RATE // 5]] / RATE if len(loud) else np.zeros(0)
    offsets = [round(1000 * (min(beeps, key=lambda b: abs(b - f)) - f)) if len(beeps) else None
               for f in flashes]
    return fps, len(light), offsets


def main() -> None:
    OneLineParser(description=__doc__.split("\n\n")[0]).parse_args()
    every = [round(i * 1000 / 30) for i in range(90)]
    cases: list[tuple[str, str, Callable[[Path], None], int]] = [
        ("constant 30 fps", ".mp4", lambda p: _write(p, every, [500, 1500, 2500]), 90),
        ("1 s pause in the pictures", ".mkv",
         lambda p: _write(p, every[:30] + [t + 1000 for t in every[30:60]], [2000]), 90),
        ("1 s pause in pictures and sound", ".mkv",
         lambda p: _write(p, every[:30] + [t + 1000 for t in every[30:60]], [2000],
                          sound=lambda end: [(0, np.zeros(RATE, np.int16)), (2000, np.zeros(0))]),
         90),
        ("B-pictures in AVI (10 s)", ".avi",
         lambda p: _write(p, [round(i * 1000 / 30) for i in range(300)],
                          [round(i * 1000 / 30) for i in range(15, 300, 30)],
                          options={"bf": "3", "g": "30"}), 300),
        ("header rate 10, pictures 30 a second", ".mkv",
         lambda p: _write(p, every, [500, 1500, 2500], rate=10), 90),
    ]
    print(f"{'case':40s} {'rate':>7s} {'frames':>6s} {'player':>6s}  beep - flash (ms)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, suffix, make, player in cases:
            path = Path(tmp) / f"case{suffix}"
            make(path)
            fps, frames, offsets = _measure(path)
            print(f"{name:40s} {fps:7.3f} {frames:6d} {player:6d}  {offsets}")
        # A recording cut inside a group of pictures (joined mid-way): the first pictures
        # cannot decode, and the sound is placed from the first that does.
        whole, cut = Path(tmp) / "whole.ts", Path(tmp) / "cut.ts"
        _write(whole, every, [1500, 2500], options={"g": "20", "sc_threshold": "0"},
               fmt="mpegts")
        data = whole.read_bytes()
        cut.write_bytes(data[188 * (len(data) // 188 // 4):])
        fps, frames, offsets = _measure(cut)
        print(f"{'MPEG-TS cut inside a group of pictures':40s} {fps:7.3f} {frames:6d} "
              f"{'-':>6s}  {offsets}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
