"""Portraits stood up: how often `stand_upright` turns a portrait as it should.

Each picture is tried as it is and turned by 1, 2 and 3 quarters (each must come back
upright), tilted by +-10, 20, 40 and 50 degrees (none may be turned: a tilted face is no
lying one), and with its mouth and chin covered (nor that). `portraits` takes the shared
portraits, which the thresholds were set on; `clips` the first frames of every 3rd train
clip, which they were not. Pictures in which the mesh finds no face upright are skipped.
Prints every wrong case, the count and the time a picture takes.

    .venv/bin/python benchmarks/portrait_turns.py [portraits|clips]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from facecodec.capture.picture import read_picture
from facecodec.capture.video import read_frames
from facecodec.cli import run_guarded
from facecodec.errors import OneLineParser
from facecodec.face.tracker import FaceMesh
from facecodec.render.edits import stand_upright

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TILTS = (-50, -40, -20, -10, 10, 20, 40, 50)


def pictures(source: str) -> Iterator[tuple[str, np.ndarray]]:
    if source == "portraits":
        for path in sorted((DATA / "portraits").iterdir()):
            yield path.name, read_picture(path, "portrait")
        return
    for name in json.loads((DATA / "splits.json").read_text())["train"][::3]:
        yield name, next(iter(read_frames(DATA / name, 1)))


def cases(rgb: np.ndarray) -> Iterator[tuple[str, np.ndarray, int]]:
    """(name, picture, the turn that stands it up)."""
    for k in range(4):
        yield f"turned {k}", np.ascontiguousarray(np.rot90(rgb, k)), (4 - k) % 4
    for deg in TILTS:
        tilted = Image.fromarray(rgb).rotate(deg, expand=True, resample=Image.Resampling.BICUBIC)
        yield f"tilted {deg}", np.asarray(tilted), 0
    h, w = rgb.shape[:2]
    covered = rgb.copy()
    covered[int(0.45 * h):int(0.85 * h), int(0.2 * w):int(0.8 * w)] = 128
    yield "covered", covered, 0


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", choices=("portraits", "clips"), default="portraits")
    args = ap.parse_args()
    mesh = FaceMesh(max_faces=2, static=True)
    wrong = tried = 0
    times: list[float] = []
    for name, rgb in pictures(args.source):
        if not mesh(rgb):
            continue
        for case, picture, want in cases(rgb):
            t = time.perf_counter()
            _, _, turn = stand_upright(picture, mesh)
            times.append(time.perf_counter() - t)
            tried += 1
            if turn != want:
                wrong += 1
                print(f"{name} {case}: turned {turn}, should be {want}", flush=True)
    mesh.close()
    print(f"{wrong} wrong of {tried}; a picture takes {1000 * np.median(times):.0f} ms "
          f"(median), {1000 * max(times):.0f} ms at most")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
