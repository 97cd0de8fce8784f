"""A call's sender appearing as an avatar (`facecodec call --avatar`): who the receiver sees,
whether the portrait follows the sender, and what it costs.

    .venv/bin/python benchmarks/avatar_call.py [--split validation] [--frames 150]
        [--portrait ../shared/data/portraits/liveportrait_s0.jpg] [--jobs 2]

Per clip: the live sender (`StreamEncoder(live=True)`, one frame a packet, no loss) codes
the first `frames` frames twice, as the sender's own face and as the portrait, and the
call's receiver (`StreamDecoder`, the call's renderer) draws each stream. Printed:

- identity: the dlib embedding distance (the bench's AED) of the drawn frames to the
  sender's own crops, frame by frame, and to the portrait's crop (under 0.6 is dlib's
  "same person"), every 5th frame;
- following: the correlation over frames of the mouth's opening, of the head's sideways
  turn (`bench.landmarks.mouth_and_turn`) and of its tilt (`bench.landmarks.tilt`) between
  the drawn frames and the sender's crops, landmarks tracked on both (MediaPipe, as the
  bench's AKD);
- cost: kbps of every byte sent, and the sender's ms a frame (after its warm-up, as in a
  call; tracking, coding and, with the sender's own face, its surround and scout).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

from facecodec.bench.landmarks import mouth_and_turn, tilt, track_landmarks
from facecodec.bench.metrics import face_embeddings, landmark_boxes
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.codec.stream import StreamDecoder, StreamEncoder
from facecodec.errors import OneLineParser
from facecodec.files import path_arg
from facecodec.motion.basis import load_basis
from facecodec.render.edits import Avatar
from facecodec.render.registry import CALL_RENDERER
from facecodec.train.splits import load_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PORTRAIT = DATA / "portraits" / "liveportrait_s0.jpg"
SIZE = 256
EVERY = 5  # frames between identity embeddings (dlib, ~70 ms a frame)


def _send(frames: list[np.ndarray], fps: float, avatar: Path | None) -> tuple[
        dict[int, np.ndarray], dict[int, np.ndarray], int, float]:
    """(frames drawn by the receiver, the sender's crops, bytes sent, sender ms a frame)."""
    h, w = frames[0].shape[:2]
    enc = StreamEncoder(SIZE, fps, live=True, source_size=(w, h), avatar=avatar)
    dec = StreamDecoder(enc.header_bytes(), CALL_RENDERER)
    enc.warm_up()  # as a call does before it connects: not counted in the sender's time
    drawn: dict[int, np.ndarray] = {}
    crops: dict[int, np.ndarray] = {}
    sent, spent = len(enc.header_bytes()), 0.0
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        packets = enc.push(frame, i)
        spent += time.perf_counter() - t
        crop = enc.analyzer.crop
        if crop is not None:
            crops[i] = crop.cut(frame, SIZE)
        for data in packets:
            sent += len(data)
            drawn.update(dec.push(data))
    enc.close()
    return drawn, crops, sent, 1000 * spent / len(frames)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else float("nan")


def eval_clip(job: tuple[Path, int, Path]) -> tuple[str, dict[str, dict[str, float]]]:
    clip, count, portrait = job
    frames = list(read_frames(clip, count))
    fps = float(probe(clip).fps)
    out: dict[str, dict[str, float]] = {}
    own_drawn, crops, own_bytes, own_ms = _send(frames, fps, None)
    avatar_drawn, _, avatar_bytes, avatar_ms = _send(frames, fps, portrait)
    avatar_image = Avatar(portrait, load_basis(), SIZE, 1).image
    idx = sorted(set(own_drawn) & set(avatar_drawn) & set(crops))
    sender = np.stack([crops[i] for i in idx])
    sender_lm = track_landmarks(sender)
    sender_emb = face_embeddings(sender[::EVERY], landmark_boxes(sender_lm[::EVERY]))
    portrait_emb = face_embeddings(avatar_image[None], landmark_boxes(
        track_landmarks(avatar_image[None], static=True)))[0]
    sender_motion = mouth_and_turn(sender_lm)
    seconds = len(frames) / fps
    for name, drawn, size, ms in (("own face", own_drawn, own_bytes, own_ms),
                                  ("avatar", avatar_drawn, avatar_bytes, avatar_ms)):
        rec = np.stack([drawn[i] for i in idx])
        lm = track_landmarks(rec)
        emb = face_embeddings(rec[::EVERY], landmark_boxes(lm[::EVERY]))
        opening, turn = mouth_and_turn(lm)
        out[name] = {
            "to_sender": float(np.nanmean(np.linalg.norm(emb - sender_emb, axis=1))),
            "to_portrait": float(np.nanmean(np.linalg.norm(emb - portrait_emb, axis=1))),
            "mouth_r": _correlation(opening, sender_motion[0]),
            "turn_r": _correlation(turn, sender_motion[1]),
            "tilt_r": _correlation(tilt(lm), tilt(sender_lm)),
            "kbps": size * 8 / 1000 / seconds,
            "sender_ms": ms,
        }
    return clip.stem, out


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--split", default="validation")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--portrait", type=path_arg, default=PORTRAIT)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    clips = load_split(DATA, a.split)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for stem, r in pool.imap_unordered(eval_clip, [(c, a.frames, a.portrait) for c in clips]):
            results[stem] = r
            for name, s in r.items():
                print(f"{stem:28s} {name:9s} " + "  ".join(f"{k} {v:.3f}" for k, v in s.items()),
                      flush=True)
    for name in ("own face", "avatar"):
        keys = next(iter(results.values()))[name]
        print(f"mean over {len(results)} clips, {name:9s} " + "  ".join(
            f"{k} {np.nanmean([r[name][k] for r in results.values()]):.3f}" for k in keys))


if __name__ == "__main__":
    sys.exit(run_guarded(main))
