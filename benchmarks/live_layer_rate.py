"""A call's layer rate control alone: the rate it makes, its intra pictures, their quality.

Per clip, each frame resized to the 256 px crop (a fixed crop: no tracker), played forth
and back to `--seconds` (no cut where the clip ends), is given to a call's `LiveLayer` at
each target rate, every slot in turn; each picture is decoded as a receiver decodes it and
scored against the crop at the layer's size (PSNR-Y). Prints per clip and rate the kbps
made (the LAYER packets' bytes), the intra pictures and their share of it, the mean
PSNR-Y, and the rate over the first 6 s and over the worst 6 s (aligned to the start);
then, for the 256 px rates, how the rate and PSNR-Y compare across runs of this script
given with `--compare` (earlier JSON outputs, e.g. from another commit).

    .venv/bin/python benchmarks/live_layer_rate.py [--clips STEM ...] [--rates 5 8 12 15]
        [--seconds 45] [--json OUT] [--compare EARLIER.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from facecodec.bench.choice import check_outputs, chosen
from facecodec.bench.metrics import luma, psnr_y
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.codec.layer import LayerDecoder, downscale
from facecodec.codec.layer_rate import LiveLayer, layer_packet_bytes
from facecodec.errors import OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = ("liveportrait_d9", "liveportrait_d14", "grid_lbbc2a", "edtalk_expression_source",
         "iplap_129", "pcavs_Input_00098")
START_S = 6.0  # the stretch the start and the peak rate are measured over


def forth_and_back(clip: Path, seconds: float) -> tuple[list[np.ndarray], float]:
    """The clip's frames as 256 px crops, played forth and back to `seconds`; its fps."""
    fps = float(probe(clip).fps)
    take = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA)
            for f in read_frames(str(clip))]
    loop = take + take[::-1]
    want = round(seconds * fps)
    return [loop[i % len(loop)] for i in range(want)], fps


def measure(crops: list[np.ndarray], fps: float, kbps: float) -> dict[str, float]:
    layer = LiveLayer(kbps, fps)
    layer.restart(0)
    decoder = LayerDecoder(layer.size)
    made = intra_bytes = intras = 0
    window = round(START_S * fps)
    by_window = np.zeros(-(-len(crops) // window))  # bytes made in each START_S of the take
    scores: list[float] = []
    for i, crop in enumerate(crops):
        got = layer.picture(i, crop)
        if got is None:
            continue
        intra, data = got
        size = layer_packet_bytes(len(data))
        made += size
        by_window[i // window] += size
        if intra:
            intra_bytes += size
            intras += 1
        picture = decoder.decode(data, intra)
        assert picture is not None
        reference = downscale(crop, layer.size)
        scores.append(float(psnr_y(luma(reference[None]), luma(picture[None]))[0]))
    layer.encoder.restart()
    seconds = len(crops) / fps
    return {"size": layer.size, "kbps": made * 8 / 1000 / seconds, "intras": intras,
            "intra_kbps": intra_bytes * 8 / 1000 / seconds, "psnr_y": float(np.mean(scores)),
            "pictures": len(scores),
            # The start (before the crf has been set from what the layer made) and the worst
            # stretch: what a link must carry beyond the target.
            "start_kbps": float(by_window[0] * 8 / 1000 / START_S),
            "peak_kbps": float(by_window[:len(crops) // window].max() * 8 / 1000 / START_S)}


def rate_ratio(new: list[dict], old: list[dict]) -> float | None:
    """Mean over the PSNR-Y range both cover of new's rate / old's (log-rate interpolated)."""
    def curve(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        rows = sorted(rows, key=lambda r: r["psnr_y"])
        return (np.array([r["psnr_y"] for r in rows]),
                np.log(np.array([r["kbps"] for r in rows])))

    (pn, rn), (po, ro) = curve(new), curve(old)
    lo, hi = max(pn[0], po[0]), min(pn[-1], po[-1])
    if len(pn) < 2 or len(po) < 2 or hi <= lo:
        return None
    q = np.linspace(lo, hi, 50)
    return float(np.mean(np.exp(np.interp(q, pn, rn) - np.interp(q, po, ro))))


def main() -> None:
    ap = OneLineParser()
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), help="clip stems")
    ap.add_argument("--rates", type=float, nargs="+", default=[5.0, 8.0, 12.0, 15.0])
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--json", type=path_arg, default=None)
    ap.add_argument("--compare", type=path_arg, default=None, help="an earlier --json output")
    a = ap.parse_args()
    if not a.seconds >= START_S:
        ap.error(f"--seconds must be at least {START_S:g} (the start is measured over that)")
    clips = {c.stem: c for split in ("validation", "validation_unseen", "train")
             for c in load_split(DATA, split)}
    a.clips = chosen(a.clips, clips, f"clip in {DATA / 'splits.json'}")
    check_outputs(a.json)
    rows = []
    for stem in a.clips:
        crops, fps = forth_and_back(clips[stem], a.seconds)
        for kbps in a.rates:
            r = {"clip": stem, "target": kbps, **measure(crops, fps, kbps)}
            rows.append(r)
            print(f"{stem:26s} {kbps:4.1f} kbps: made {r['kbps']:6.2f}, {r['intras']:2d} intra "
                  f"pictures ({r['intra_kbps']:5.2f} kbps), PSNR-Y {r['psnr_y']:6.3f} "
                  f"({r['size']} px); first {START_S:g} s {r['start_kbps']:6.2f} kbps, "
                  f"peak {r['peak_kbps']:6.2f}", flush=True)
    if a.json:
        write_text(a.json, json.dumps(rows, indent=1))
    if a.compare:
        old = json.loads(a.compare.read_text())
        print(f"\nagainst {a.compare} (256 px rates): rate at equal PSNR-Y, and at equal "
              "target the change in kbps made and in PSNR-Y")
        for stem in a.clips:
            new_rows = [r for r in rows if r["clip"] == stem and r["size"] == 256]
            old_rows = [r for r in old if r["clip"] == stem and r["size"] == 256]
            ratio = rate_ratio(new_rows, old_rows)
            pairs = [(n, o) for n in new_rows for o in old_rows if n["target"] == o["target"]]
            dk = np.mean([n["kbps"] / o["kbps"] - 1 for n, o in pairs]) if pairs else np.nan
            dq = np.mean([n["psnr_y"] - o["psnr_y"] for n, o in pairs]) if pairs else np.nan
            shown = "-" if ratio is None else f"{ratio:.3f}x"
            print(f"{stem:26s} {shown:>7s}   kbps {100 * dk:+5.1f} %   PSNR-Y {dq:+.3f} dB")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
