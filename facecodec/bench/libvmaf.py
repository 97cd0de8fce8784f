"""FFmpeg's own libvmaf, to check the bench's vmaf-torch scores against the real thing.

imageio-ffmpeg ships a static FFmpeg built with libvmaf (Debian's ffmpeg has none). Clips
go through y4m files so both inputs have the same frames in the same order (mixed time
bases in a container can pair the wrong frames).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_y4m(path: Path, y: np.ndarray, fps: Fraction) -> None:
    """Y planes [T, H, W] uint8 as a 4:2:0 y4m file with neutral chroma (VMAF reads luma)."""
    t, h, w = y.shape
    chroma = np.full((h // 2) * (w // 2) * 2, 128, np.uint8).tobytes()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps.numerator}:{fps.denominator} Ip A1:1 C420jpeg\n"
                .encode())
        for plane in y:
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(plane).tobytes())
            f.write(chroma)


def libvmaf_mean(ref_y: np.ndarray, rec_y: np.ndarray, fps: Fraction = Fraction(25)) -> float:
    """Mean vmaf_v0.6.1 score FFmpeg's libvmaf gives `rec_y` against `ref_y` ([T, H, W])."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_y4m(d / "ref.y4m", ref_y, fps)
        write_y4m(d / "rec.y4m", rec_y, fps)
        log = d / "vmaf.json"
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin",
            "-i", str(d / "rec.y4m"), "-i", str(d / "ref.y4m"),
            "-lavfi", f"libvmaf=model=version=vmaf_v0.6.1:log_fmt=json:log_path={log}",
            "-f", "null", "-",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"libvmaf failed: {done.stderr.strip().splitlines()[-1:]}")
        return float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])
