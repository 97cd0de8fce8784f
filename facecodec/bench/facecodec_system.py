"""facecodec as a system under test in the bench.

The reference every codec gets is facecodec's own face crop of the source (the crop the
receiver reproduces), so facecodec's output is compared pixel for pixel without any
re-framing; conventional codecs code exactly those frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from facecodec.bench.reference import ReferenceClip
from facecodec.bench.runner import register_system
from facecodec.bench.system import Skipped, SystemFn, SystemPoint
from facecodec.bitstream.packets import (
    IMAGE_FROM_LAYER,
    LAYER_TYPES,
    KeyframePayload,
    Packet,
    PacketType,
    encode_packet,
    layer_pictures,
)
from facecodec.codec.decoder import decode_packets
from facecodec.codec.encoder import Analysis, EncoderSettings, analyze_file, code_analysis
from facecodec.codec.encoder import original_crops as _crops
from facecodec.errors import FacecodecError, RateTooLow


class Rung(NamedTuple):
    """One setting of the ladder: `facecodec encode --quality P --keyframe-quality Q`, with
    `--layer-kbps`/`--layer-crf` if set and `--no-surround` if `surround` is False."""

    label: str
    preset: str
    keyframe_quality: int | None
    layer_kbps: float = 0.0
    layer_crf: int | None = None
    surround: bool = True


# Motion only (layer 0) from ~1 kbps, then the low-resolution layer (docs/layer.md) up to
# ~40 kbps, with the motion preset and reference quality `--target-kbps` gives a layer. The
# cheapest rungs code the motion without its surround (~1 kbps); at the lowest preset the
# reference comes at three qualities (25, 32, 40), since with the reference counted (a short
# clip) it is most of the rate there. The layer rungs come twice: at a target rate (the same
# for every clip, as a call's bandwidth would be) and at a fixed crf, as every conventional
# codec here runs (rates then follow each clip's difficulty); those crfs are the median the
# rate search chose for each target on 6 train clips (4 / 8 / 15 / 30 kbps: 64 / 61 / 55.5 /
# 50), and one finer. Rate rises along each group.
LADDER: tuple[Rung, ...] = (
    Rung("lowest-nosur-k25", "lowest", 25, surround=False),
    Rung("lowest-nosur-k40", "lowest", 40, surround=False),
    Rung("lowest-k25", "lowest", 25),
    Rung("lowest-k32", "lowest", 32),
    Rung("lowest-k40", "lowest", 40),
    Rung("low-k40", "low", 40),
    Rung("medium-k60", "medium", 60),
    Rung("high-k80", "high", 80),
    Rung("high-k92", "high", 92),
    Rung("lowest-layer4", "lowest", None, 4.0),
    Rung("lowest-layer8", "lowest", None, 8.0),
    Rung("lowest-layer15", "lowest", None, 15.0),
    Rung("lowest-layer30", "lowest", None, 30.0),
    Rung("lowest-layer4-crf64", "lowest", None, 4.0, 64),
    Rung("lowest-layer8-crf61", "lowest", None, 8.0, 61),
    Rung("lowest-layer15-crf55", "lowest", None, 15.0, 55),
    Rung("lowest-layer30-crf50", "lowest", None, 30.0, 50),
    Rung("lowest-layer30-crf44", "lowest", None, 30.0, 44),
)
QUICK_LADDER = tuple(r for r in LADDER if r.label in ("low-k40", "medium-k60", "lowest-layer8"))

_analyses: dict[tuple[str, int, int], Analysis] = {}


def analysis_of(path: Path, size: int, max_frames: int) -> Analysis:
    """The sender's analysis of a clip (tracking, crops, Motion), once per process: also
    kept under the frames it read, which the system asks for (a clip shorter than
    `max_frames` was analysed twice)."""
    key = (str(Path(path).resolve()), size, max_frames)
    if key not in _analyses:
        a = analyze_file(path, EncoderSettings(size=size), max_frames=max_frames)
        _analyses[key] = _analyses[(key[0], size, a.report.frames)] = a
    return _analyses[key]


def facecodec_reference(path: Path, size: int = 256, max_frames: int = 150) -> ReferenceClip:
    """Source frames cut with the crops facecodec's sender chooses."""
    a = analysis_of(path, size, max_frames)
    frames = _crops(path, a.keyframes, size, max_frames)
    return ReferenceClip(frames, a.info.fps, Path(path).stem)


def first_reference_bytes(packets: Sequence[Packet]) -> int:
    """Bytes of the stream's first reference picture, which steady state leaves out as it
    leaves out a conventional codec's first keyframe: the first KEYFRAME packet, and when
    that keyframe takes its picture from the layer (IMAGE_FROM_LAYER), that layer picture."""
    key = next(p for p in packets if p.type == PacketType.KEYFRAME)
    payload = KeyframePayload.from_bytes(key.payload)
    n = len(encode_packet(key))
    if payload.codec_id != IMAGE_FROM_LAYER:
        return n
    for p in packets:
        for t, kid, _, picture, _ in layer_pictures(p) if p.type in LAYER_TYPES else []:
            if t == key.timestamp and kid == payload.keyframe_id:
                return n + len(picture)
    raise FacecodecError("the first keyframe takes a layer picture the stream does not carry")


def facecodec_system(renderers: tuple[str, ...] = ("warp",), quick: bool = False) -> SystemFn:
    """facecodec over its ladder, one point per (setting, renderer), named
    `facecodec-<renderer>`; the rate counts every byte of the .fcv stream."""
    ladder = QUICK_LADDER if quick else LADDER

    def run(ref: ReferenceClip, source: Path) -> list[SystemPoint | Skipped]:
        a = analysis_of(source, ref.size, len(ref.frames))
        points: list[SystemPoint | Skipped] = []
        for rung in ladder:
            try:
                r = code_analysis(a, EncoderSettings(
                    size=ref.size, preset=rung.preset, keyframe_quality=rung.keyframe_quality,
                    layer_kbps=rung.layer_kbps, layer_crf=rung.layer_crf,
                    surround=rung.surround))
            except RateTooLow as e:  # a short clip: the report leaves the rung out
                points += [Skipped(f"facecodec-{renderer}", rung.label, str(e))
                           for renderer in renderers]
                continue
            total = r.total_bytes
            steady = total - len(r.header.to_bytes()) - first_reference_bytes(r.packets)
            for renderer in renderers:
                frames = decode_packets(r.header, r.packets, len(ref.frames), renderer)
                points.append(
                    SystemPoint(f"facecodec-{renderer}", rung.label, frames, total, total,
                                steady, family="layer" if rung.layer_kbps > 0 else "motion")
                )
        return points

    run.__name__ = "facecodec"
    return run


def register_renderers() -> None:
    """Offer every renderer to `facecodec bench --renderers`, scored on facecodec's crop."""
    from facecodec.render.registry import RENDERERS

    for name in RENDERERS:
        def factory(quick: bool, n: str = name) -> SystemFn:
            return facecodec_system((n,), quick)

        register_system(name, factory, facecodec_reference)
