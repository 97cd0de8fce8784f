"""Which picture of each keyframe segment a file sends as its reference.

Every frame of a motion-only stream is drawn from one reference picture, so that picture
decides most of the stream's quality. The analysis takes the picture of the frame where the
segment starts (a call must: it cannot wait for later frames), which may catch the face at
one extreme of its motion: mid-blink, mouth shut before a sentence, head still turning.
A file encoder sees the whole segment, so it picks the picture by analysis-by-synthesis:
each candidate (up to `CANDIDATES` frames spread over the segment) is drawn by the mesh warp
into up to `PROBES` frames spread over the segment, and the candidate whose drawings come
closest to the original crops (mean PSNR-Y) becomes the reference; a candidate blurred
or with an eye shut, next to the others, is not tried (`_able`). On the 6 validation
clips (unquantised Motions, references coded at quality 40) this raised VMAF from 56.2 to
66.4 and PSNR-Y from 32.1 to 34.5 dB (benchmarks/reference_choice.py; docs/bitstream.md,
"KeyframePayload").

Nothing changes for the receiver: a KEYFRAME packet always carried its picture's own Motion,
and every frame is drawn from (picture, its Motion, the frame's Motion). The surround is
measured against the reference picture, so it is measured again, for every frame of a
segment whose picture moved, against the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import cv2
import numpy as np

from facecodec.codec.analysis import KeyframeEvent, MotionEvent
from facecodec.codec.scout import spread
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import SURROUND_SIZE
from facecodec.motion.surround import SurroundMeter
from facecodec.psnr import image_psnr_y
from facecodec.render.warp import WarpRenderer

CANDIDATES = 16  # pictures tried per segment
PROBES = 48  # frames each candidate is drawn into
# Pictures that cannot show what the segment's other frames show are not tried: a face
# blurred (autofocus hunting, a fast move) to under this share of the sharpest candidate's
# detail, whose blur every frame drawn from it would keep (PSNR-Y favours it over a sharp
# picture a little misaligned), and an eye shut to under this share of its median opening
# over the candidates, which the warp cannot open again.
MIN_SHARPNESS_SHARE = 0.4
MIN_EYE_SHARE = 0.6

Event = KeyframeEvent | MotionEvent


def _segments(events: list[Event]) -> list[tuple[KeyframeEvent, list[MotionEvent]]]:
    """Each keyframe with the Motion events drawn from it (the frames up to the next one)."""
    out: list[tuple[KeyframeEvent, list[MotionEvent]]] = []
    for e in events:
        if isinstance(e, KeyframeEvent):
            out.append((e, []))
        elif out:
            out[-1][1].append(e)
    return out


def choose_references(
    events: list[Event], crops: Callable[[], Iterator[np.ndarray]], basis: ExpressionBasis,
    size: int,
) -> list[Event]:
    """`events` with each keyframe's picture and Motion taken from the frame of its segment
    that draws the segment best, and (where Motions carry a surround) the surround of that
    segment's frames measured against the new picture.

    `crops()` yields every frame's crop from the first (as `encoder.iter_crops`); it is read
    once for the choice, holding one segment's candidates and probes at a time, and a second
    time only where a surround must be measured again (a long file's crops would not fit in
    memory).
    """
    segments = _segments(events)
    by_index = {m.index: m for _, ms in segments for m in ms}
    # Per segment: its candidates and probes; decided as soon as the last of them is read,
    # so that only one segment's frames are held at a time.
    plans: dict[int, tuple[int, list[int], list[int]]] = {}  # last frame needed -> plan
    for key, motions in segments:
        seen = [m.index for m in motions if m.face_seen]
        cands, probes = spread(seen, CANDIDATES), spread(seen, PROBES)
        if len(cands) >= 2:
            plans[max(cands + probes)] = (key.index, cands, probes)
    wanted = {i for _, c, p in plans.values() for i in (*c, *p)}
    held: dict[int, np.ndarray] = {}
    warp = WarpRenderer(basis, size)
    chosen: dict[int, int] = {}  # keyframe index -> frame whose picture it sends
    pictures: dict[int, np.ndarray] = {}
    for i, crop in enumerate(crops()):
        if i in wanted:
            held[i] = crop
        if i in plans:
            key_index, cands, probes = plans[i]
            meter = SurroundMeter(size) if len(by_index[key_index].motion.surround) else None
            points = {t: basis.landmarks(by_index[t].motion, size)[:, :2] for t in probes}
            cands = _able(cands, held, by_index, basis, size)
            scores = [_score(warp, meter, held, by_index, points, c, probes) for c in cands]
            best = cands[int(np.argmax(scores))]
            if best != key_index:
                chosen[key_index], pictures[best] = best, held[best]
            held.clear()
    if not chosen:
        return events

    out: list[Event] = []
    resurround = any(len(m.motion.surround) for m in by_index.values())
    frames = enumerate(crops()) if resurround else None
    meter = SurroundMeter(size)
    picture: int | None = None
    last = None  # the segment's last Motion, which frames without a face hold
    for e in events:
        if isinstance(e, KeyframeEvent):
            picture, last = chosen.get(e.index), None
            if picture is not None:
                m = by_index[picture].motion
                if resurround:
                    m = m.with_surround(np.zeros(SURROUND_SIZE))
                    meter.set_reference(pictures[picture])
                e = replace(e, image=pictures[picture], motion=m, picture_index=picture)
        elif picture is not None and resurround and len(e.motion.surround):
            if e.face_seen:
                assert frames is not None
                face = basis.landmarks(e.motion, size)[:, :2]
                surround = meter(_crop_at(frames, e.index), face)
                last = e.motion.with_surround(surround)
            if last is not None:
                e = replace(e, motion=last)
        out.append(e)
    return out


def _able(cands: list[int], crops: dict[int, np.ndarray], motions: dict[int, MotionEvent],
          basis: ExpressionBasis, size: int) -> list[int]:
    """The candidates sharp enough, with both eyes open enough (MIN_SHARPNESS_SHARE,
    MIN_EYE_SHARE); all of them where none is."""
    sharp = np.array([_sharpness(crops[c], basis.landmarks(motions[c].motion, size))
                      for c in cands])
    eyes = np.array([motions[c].motion.openness[:2] for c in cands])
    median = np.median(eyes, axis=0)
    able = [c for c, s, e in zip(cands, sharp, eyes, strict=True)
            if s >= MIN_SHARPNESS_SHARE * sharp.max() and np.all(e >= MIN_EYE_SHARE * median)]
    return able or cands


def _sharpness(crop: np.ndarray, landmarks: np.ndarray) -> float:
    """Detail of the face: the variance of the luma's Laplacian within its landmarks' box."""
    h, w = crop.shape[:2]
    x0, y0 = np.clip(np.floor(landmarks[:, :2].min(axis=0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(landmarks[:, :2].max(axis=0)).astype(int) + 1, 1, [w, h])
    if x1 - x0 < 3 or y1 - y0 < 3:  # a face out of the crop: no detail to judge
        return 0.0
    luma = cv2.cvtColor(np.ascontiguousarray(crop[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(luma, cv2.CV_32F).var())


def _crop_at(frames: Iterator[tuple[int, np.ndarray]], index: int) -> np.ndarray:
    for i, crop in frames:
        if i == index:
            return crop
    raise ValueError(f"no crop for frame {index}")


def _score(
    warp: WarpRenderer, meter: SurroundMeter | None, crops: dict[int, np.ndarray],
    motions: dict[int, MotionEvent], points: dict[int, np.ndarray], candidate: int,
    probes: list[int],
) -> float:
    """Mean PSNR-Y of the probe frames drawn by the mesh warp from the candidate's picture
    (`meter`: measure the probes' surround against it; `points`: the probes' landmarks)."""
    ref, ref_motion = crops[candidate], motions[candidate].motion
    if meter is not None:
        meter.set_reference(ref)
        ref_motion = ref_motion.with_surround(np.zeros(SURROUND_SIZE))
    warp.set_reference(ref, ref_motion)
    total = 0.0
    for t in probes:
        m = motions[t].motion
        if meter is not None:
            m = m.with_surround(meter(crops[t], points[t]))
        total += image_psnr_y(crops[t], warp.render(m))
    return total / len(probes)
