"""How close coded streams decode to the original: the file encoder's own judge.

`--target-kbps` codes a clip twice (motion alone, motion + layer) and keeps one. It scores
them as the bench does (FFmpeg's Y plane, vmaf_v0.6.1 through vmaf-torch), decoding the
streams side by side against the original crops with SCORE_CHUNK frames held at a time, so a
long clip needs no more memory than a short one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from facecodec.codec.encoder import Analysis, EncodeResult, iter_crops
from facecodec.errors import FacecodecError

# Frames of each stream held at once. VMAF scores every frame (50 ms a frame and stream on
# one core): sampling every n-th frame aliases with the layer's picture period, and scored
# a 1-in-2 layer 2.5 points above the bench on a validation clip.
SCORE_CHUNK = 100


@dataclass(frozen=True)
class StreamScore:
    psnr_y: float  # mean over the frames scored
    vmaf: float


def _decoded(result: EncodeResult) -> Iterator[tuple[int, np.ndarray]]:
    from facecodec.codec.decoder import PacketDecoder  # the decoder loads the renderers

    decoder = PacketDecoder(result.header)
    for packet in result.packets:
        yield from decoder.push(packet)


def score_streams(analysis: Analysis, results: Sequence[EncodeResult], size: int,
                  each_frame: Callable[[], object] | None = None) -> list[StreamScore]:
    """PSNR-Y and VMAF of each stream's decoded frames against the original crops cut at
    `size`. A frame a stream does not draw shows its last one, as a player holds it; frames
    before every stream has drawn one (before the first face) are left out. VMAF's motion
    feature restarts at each chunk, which moves every stream's score alike. `each_frame` is
    called as each source frame is taken (a progress bar's)."""
    from facecodec.bench.metrics import luma, psnr_y, vmaf, vmaf_motion2

    if analysis.source is None:
        raise FacecodecError("this analysis has no source to measure a stream against")
    streams = [_decoded(r) for r in results]
    pending = [next(s, None) for s in streams]
    shown: list[np.ndarray | None] = [None] * len(results)
    psnr_sum, vmaf_sum, n = np.zeros(len(results)), np.zeros(len(results)), 0
    ref: list[np.ndarray] = []
    recs: list[list[np.ndarray]] = [[] for _ in results]

    def score_chunk() -> None:
        nonlocal n
        ref_y = luma(np.stack(ref))
        motion2 = vmaf_motion2(ref_y)
        for s, frames in enumerate(recs):
            rec_y = luma(np.stack(frames))
            psnr_sum[s] += psnr_y(ref_y, rec_y).sum()
            vmaf_sum[s] += vmaf(ref_y, rec_y, 1, motion2).sum()
            frames.clear()
        n += len(ref_y)
        ref.clear()

    for i, crop in enumerate(iter_crops(analysis.source, analysis.keyframes, size,
                                        analysis.max_frames)):
        if each_frame is not None:
            each_frame()
        for s, stream in enumerate(streams):
            while (p := pending[s]) is not None and p[0] <= i:
                shown[s] = p[1]
                pending[s] = next(stream, None)
        if any(f is None for f in shown):
            continue
        ref.append(crop)
        for s, f in enumerate(shown):
            assert f is not None
            recs[s].append(f)
        if len(ref) == SCORE_CHUNK:
            score_chunk()
    if ref:
        score_chunk()
    if n == 0:
        raise FacecodecError("no stream drew a frame to score")
    return [StreamScore(float(p / n), float(v / n))
            for p, v in zip(psnr_sum, vmaf_sum, strict=True)]
