"""How the renderers draw the eyes: what the face tracker reports of an iris's move, and how
close the drawn eye openings come to the source's for ways of moving the iris.

`--calibrate`: on train crops (every 3rd train clip, frames 5 and 40), what lies inside both
eye openings is moved by 3 px sideways or 2 px up and down (the iris under lids that stay),
the tracker is run again, and the change of the Motion's gaze is fitted against the move:
the share of an iris's move the tracker reports, per axis.

Otherwise, per clip (every 5th train clip with `--split train`, or the 6 validation clips;
first 150 frames, motion only at the medium preset, the mesh warp): the stream is decoded
with each way of drawing the irises (`fan`: each eye opening a fan from the iris centre;
`core`: the iris's middle moves as one piece, mesh_warp.IRIS_CORE; then the gain on the
change of gaze, Renderer.iris_gain, sideways and up-down). Printed per way, means over
clips: PSNR-Y inside the source's eye openings (dilated 2 px), whole-frame PSNR-Y, the
iris landmarks' distance (px) and AKD over all 478 landmarks, found again by the bench's
tracker.

    .venv/bin/python benchmarks/eyes.py --calibrate
    .venv/bin/python benchmarks/eyes.py --split train
    .venv/bin/python benchmarks/eyes.py --split validation
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facecodec.bench.landmarks import track_landmarks
from facecodec.bench.metrics import luma, psnr_y
from facecodec.capture.video import read_frames
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import EncoderSettings, analyze_file, code_analysis, original_crops
from facecodec.errors import FacecodecError, OneLineParser
from facecodec.face.crop import CropBox
from facecodec.face.tracker import FaceMesh
from facecodec.motion.basis import ExpressionBasis, load_basis
from facecodec.render import topology as topo
from facecodec.render.mesh_warp import MeshWarper
from facecodec.render.warp import WarpRenderer
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FRAMES = 150
WAYS = (("fan", 1.0, 1.0), ("core", 1.0, 1.0), ("core", 1.5, 1.0), ("core", 2.2, 1.0),
        ("core", 3.0, 1.0), ("core", 1.5, 1.5))
IRIS = list(range(topo.N_MESH, topo.N_LANDMARKS))


def eye_mask(points: np.ndarray, size: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    for loop in (topo.RIGHT_EYE, topo.LEFT_EYE):
        cv2.fillPoly(m, [np.round(points[list(loop), :2]).astype(np.int32)], 1)
    return m


def calibrate(basis: ExpressionBasis) -> None:
    mesh = FaceMesh(max_faces=1, static=True)
    got: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for clip in load_split(DATA, "train")[::3]:
        for i, frame in enumerate(read_frames(clip, 41)):
            if i not in (5, 40) or not (faces := mesh(frame)):
                continue
            crop = CropBox.around(faces[0].centre, faces[0].size).cut(frame, 256)
            if not (found := mesh(crop)):
                continue
            m0 = basis.fit(found[0].points, 256, 1)
            inside = eye_mask(found[0].points, 256)[..., None] > 0
            for dx, dy in ((3, 0), (-3, 0), (0, 2), (0, -2)):
                shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
                moved = cv2.warpAffine(crop, shift, (256, 256), borderMode=cv2.BORDER_REPLICATE)
                if not (again := mesh(np.where(inside, moved, crop))):
                    continue
                axis = 0 if dx else 1
                change = basis.fit(again[0].points, 256, 1).gaze - m0.gaze
                got[axis].append(((dx or dy) / (np.exp(m0.log_scale) * 256),
                                  float(change[axis::2].mean())))
    mesh.close()
    for axis, name in ((0, "sideways"), (1, "up-down")):
        s, c = np.array(got[axis]).T
        print(f"{name}: the tracker reports {s @ c / (s @ s):.3f} of the move "
              f"({len(s)} moves)")


def clip_scores(clip: Path) -> list[tuple[float, float, float, float]]:
    settings = EncoderSettings(preset="medium")
    r = code_analysis(analyze_file(clip, settings, max_frames=FRAMES), settings)
    src = original_crops(clip, r.keyframes, r.header.size, FRAMES)
    n, size = len(src), r.header.size
    lm = track_landmarks(src)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        if not np.isnan(lm[i]).any():
            masks[i] = cv2.dilate(eye_mask(lm[i], size), np.ones((5, 5), np.uint8)) > 0
    y = luma(src).astype(np.float64)
    out = []
    for core, gx, gy in WAYS:
        renderer = WarpRenderer(load_basis(), size)
        renderer.warper = MeshWarper(size, iris_core=core == "core")
        renderer.iris_gain = (gx, gy)
        rec = decode_packets(r.header, r.packets, n, renderer)
        yr = luma(rec).astype(np.float64)
        eye = 10 * np.log10(255.0 ** 2 / ((y - yr) ** 2)[masks].mean())
        rl = track_landmarks(rec)
        out.append((eye, float(psnr_y(luma(src), luma(rec)).mean()),
                    float(np.nanmean(np.linalg.norm(rl[:, IRIS] - lm[:, IRIS], axis=2))),
                    float(np.nanmean(np.linalg.norm(rl - lm, axis=2)))))
    return out


def main() -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--split", choices=("train", "validation"), default="validation")
    a = ap.parse_args()
    if a.calibrate:
        calibrate(load_basis())
        return 0
    clips = load_split(DATA, a.split)
    if a.split == "train":
        clips = clips[::5]
    scores = []
    for clip in clips:
        try:
            s = clip_scores(clip)
        except FacecodecError as e:
            print(f"{clip.stem}: skipped ({e})")
            continue
        scores.append(s)
        print(f"{clip.stem}: " + "; ".join(f"{w[0]} {w[1]:g}/{w[2]:g} eyes {v[0]:.3f} dB"
                                           for w, v in zip(WAYS, s, strict=True)), flush=True)
    print(f"mean over {len(scores)} clips: eye-opening PSNR-Y, PSNR-Y, iris distance, AKD")
    for w, v in zip(WAYS, np.mean(np.array(scores), axis=0), strict=True):
        print(f"  {w[0]:>4} gain {w[1]:g} / {w[2]:g}: {v[0]:.3f} dB, {v[1]:.3f} dB, "
              f"{v[2]:.4f} px, {v[3]:.4f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_guarded(main))
