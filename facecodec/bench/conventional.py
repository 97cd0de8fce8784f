"""Conventional codecs through PyAV, each over a ladder of settings down to its floor.

These are the anchors of the bench. x264 real time (veryfast, zerolatency, no B-frames)
is the headline H.264 anchor because a video call cannot buffer frames; the buffering
configurations (x264 veryslow, x265, SVT-AV1 random access, VP9 good) show what the best
offline effort reaches, and low-delay AV1 / VP9 are the fair modern live-call anchors.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import cast

import av
import numpy as np

from facecodec.bench.curves import rate_at_quality
from facecodec.bench.reference import ReferenceClip
from facecodec.bench.system import SystemFn, SystemPoint
from facecodec.codec.encoder_watch import retried, watched
from facecodec.codec.scheduling import ordinary_scheduling

# SVT-AV1 prints its whole configuration at info level on every encoder it opens.
os.environ.setdefault("SVT_LOG", "1")


@dataclass(frozen=True)
class CodecConfig:
    """One conventional configuration and its rate ladder (quality parameter values)."""

    system: str
    encoder: str
    decoder: str
    bitstream: str  # "h264" | "hevc" | "av1" | "vp9": how to find dispensable bytes
    param: str  # name of the ladder's quality parameter, for labels
    ladder: tuple[int, ...]
    quick_ladder: tuple[int, ...]
    options: dict[str, str] = field(default_factory=dict)
    bit_rate: int | None = None

    def encoder_options(self, value: int) -> dict[str, str]:
        opts = dict(self.options)
        if self.encoder == "libsvtav1":
            # crf above 63 is only reachable through svtav1-params.
            extra = opts.pop("svtav1-params", "")
            opts["svtav1-params"] = f"crf={value}" + (f":{extra}" if extra else "")
        else:
            opts["crf"] = str(value)
        return opts


_X264_LADDER = (51, 47, 43, 39, 35, 31)
_AV1_LADDER = (70, 63, 56, 50, 44, 38)
# The low-delay anchors that facecodec's targets are read against, sampled finer, so that
# no ratio rests on interpolating across SVT-AV1's steep steps (crf 70 to 63: VMAF ~13 to
# ~57 on the validation clips). Adding 67, 65, 60 and 53 moved those ratios by at most 0.01.
_AV1_LD_LADDER = (70, 67, 65, 63, 60, 56, 53, 50, 44, 38)
_VP9_LADDER = (63, 58, 53, 48, 43, 38)

CODECS: dict[str, CodecConfig] = {
    c.system: c
    for c in (
        CodecConfig(
            "x264-rt", "libx264", "h264", "h264", "crf", _X264_LADDER, (51, 43, 35),
            {"preset": "veryfast", "tune": "zerolatency", "x264-params": "bframes=0"},
        ),
        CodecConfig(
            "x264-veryslow", "libx264", "h264", "h264", "crf", _X264_LADDER, (51, 39),
            {"preset": "veryslow"},
        ),
        CodecConfig(
            "x265-medium", "libx265", "hevc", "hevc", "crf", _X264_LADDER, (51, 39),
            {"preset": "medium", "x265-params": "log-level=error"},
        ),
        CodecConfig(
            "svtav1-p8", "libsvtav1", "libdav1d", "av1", "crf", _AV1_LADDER, (70, 50),
            {"preset": "8"},
        ),
        CodecConfig(
            "vp9-good", "libvpx-vp9", "vp9", "vp9", "crf", _VP9_LADDER, (63, 48),
            {"deadline": "good", "cpu-used": "2"}, bit_rate=0,
        ),
        CodecConfig(
            # lp=1: one thread, pred-struct=1: low delay (no frame reordering, no look-ahead).
            "svtav1-ld", "libsvtav1", "libdav1d", "av1", "crf", _AV1_LD_LADDER, (70, 56, 44),
            {"preset": "8", "svtav1-params": "lp=1:pred-struct=1"},
        ),
        CodecConfig(
            # The same at preset 4, the preset facecodec's layer uses in files: the anchor
            # that tells the layer's gain from the slower preset's.
            "svtav1-ld-p4", "libsvtav1", "libdav1d", "av1", "crf", _AV1_LD_LADDER, (70, 56, 44),
            {"preset": "4", "svtav1-params": "lp=1:pred-struct=1"},
        ),
        CodecConfig(
            "vp9-ld", "libvpx-vp9", "vp9", "vp9", "crf", _VP9_LADDER, (63, 48),
            {"deadline": "realtime", "cpu-used": "7", "lag-in-frames": "0"}, bit_rate=0,
        ),
    )
}
HEADLINE_ANCHOR = "x264-rt"


def _annexb_nals(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each NAL unit in an Annex-B buffer, start codes included."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return [(s, starts[k + 1] if k + 1 < len(starts) else len(data)) for k, s in enumerate(starts)]


def _sei_is_user_data(payload: bytes) -> bool:
    """True when the first SEI message is user_data_unregistered (type 5): x264 and x265
    write their settings string there; no decoder needs it."""
    ptype, i = 0, 0
    while i < len(payload) and payload[i] == 0xFF:
        ptype += 255
        i += 1
    return i < len(payload) and ptype + payload[i] == 5


def _leb128(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        b = data[i + k]
        value |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            return value, i + k + 1
    raise ValueError("bad leb128")


def dispensable_bytes(packet: bytes, bitstream: str) -> int:
    """Bytes of `packet` a decoder does not need (BASELINES.md's "net" definition)."""
    drop = 0
    if bitstream in ("h264", "hevc"):
        for s, e in _annexb_nals(packet):
            hdr = s + (3 if packet[s + 2] == 1 else 4)
            if hdr >= e:
                continue
            if bitstream == "h264" and packet[hdr] & 0x1F == 6:
                body = packet[hdr + 1 : e]
            elif bitstream == "hevc" and (packet[hdr] >> 1) & 0x3F in (39, 40):
                body = packet[hdr + 2 : e]
            else:
                continue
            if _sei_is_user_data(body):
                drop += e - s
    elif bitstream == "av1":
        i = 0
        while i < len(packet):
            start = i
            header = packet[i]
            obu_type, has_ext, has_size = (header >> 3) & 0xF, (header >> 2) & 1, (header >> 1) & 1
            i += 1 + has_ext
            if not has_size:
                break  # the last OBU runs to the end of the packet
            size, i = _leb128(packet, i)
            i += size
            if obu_type in (2, 15):  # temporal delimiter, padding
                drop += i - start
    return drop


def _encode(ref: ReferenceClip, cfg: CodecConfig, value: int) -> list[bytes]:
    """The packets of the reference coded with one setting, each call watched (a fresh
    encoder does it all again if one stalls: see encoder_watch)."""
    size = ref.size
    enc = cast(av.VideoCodecContext, av.CodecContext.create(cfg.encoder, "w"))
    enc.width = enc.height = size
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1) / ref.fps
    enc.framerate = ref.fps
    # One thread: x264's output depends on its thread count (auto = 1.5x cores; 3 threads
    # cost +60% bytes at crf 51 here), so a fixed count keeps rates comparable across
    # machines; single-threaded is also the most efficient setting and the JVET convention.
    enc.thread_count = 1
    if cfg.bit_rate is not None:
        enc.bit_rate = cfg.bit_rate
    enc.options = cfg.encoder_options(value)

    def code(frame: av.VideoFrame | None) -> list[bytes]:
        # The encoder starts its threads with its first picture (SVT-AV1's real-time):
        # only that call needs them put back (listing every thread costs, at each frame).
        first = frame is not None and frame.pts == 0
        with ordinary_scheduling() if first else contextlib.nullcontext():
            return [bytes(p) for p in enc.encode(frame)]

    packets: list[bytes] = []
    for i, rgb in enumerate(ref.frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += watched(partial(code, frame), cfg.encoder)
    return packets + watched(lambda: code(None), cfg.encoder)


def encode_decode(ref: ReferenceClip, cfg: CodecConfig, value: int) -> SystemPoint:
    """Encode the reference with one setting, decode it back, count the bytes."""
    t, size = len(ref.frames), ref.size
    packets = retried(lambda: _encode(ref, cfg, value), cfg.encoder)
    if not packets:
        raise RuntimeError(f"{cfg.system} {cfg.param}={value}: encoder produced nothing")

    dec = cast(av.VideoCodecContext, av.CodecContext.create(cfg.decoder, "r"))
    rgbs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for data in [*packets, None]:
        for f in dec.decode(av.Packet(data) if data is not None else None):
            rgbs.append(f.to_ndarray(format="rgb24"))
            ys.append(f.reformat(format="yuv420p").to_ndarray()[:size])
    if len(rgbs) != t:
        raise RuntimeError(f"{cfg.system} {cfg.param}={value}: decoded {len(rgbs)} of {t} frames")

    sizes = np.array([len(p) for p in packets])
    net = sizes - np.array([dispensable_bytes(p, cfg.bitstream) for p in packets])
    return SystemPoint(
        system=cfg.system,
        setting=f"{cfg.param}={value}",
        frames=np.stack(rgbs),
        bytes_all=int(sizes.sum()),
        bytes_net=int(net.sum()),
        bytes_steady=int(net[1:].sum()),  # packet 0 is the first keyframe in decode order
        y=np.stack(ys),
    )


def run_ladder(ref: ReferenceClip, system: str, quick: bool = False) -> list[SystemPoint]:
    """Every point of one configuration's ladder on one clip."""
    cfg = CODECS[system]
    return [encode_decode(ref, cfg, v) for v in (cfg.quick_ladder if quick else cfg.ladder)]


def conventional_system(system: str, quick: bool = False) -> SystemFn:
    """A `SystemFn` for one conventional configuration (the runner treats it like any plug-in)."""
    if system not in CODECS:
        raise KeyError(f"unknown codec {system!r}; known: {', '.join(CODECS)}")

    def run(ref: ReferenceClip, source: Path) -> list[SystemPoint]:
        del source  # conventional codecs code the reference crop itself
        return run_ladder(ref, system, quick)

    run.__name__ = system
    return run


# The rate ladders `anchor_rates_for_quality` reads an anchor's rate from: x264's reaches
# further up than the bench's, since a demo's quality may lie above crf 31's.
RATE_LADDERS = {"x264-rt": (51, 47, 43, 39, 35, 31, 27, 23), "svtav1-ld": _AV1_LD_LADDER}


def anchor_rates_for_quality(
    reference: ReferenceClip,
    targets: dict[str, float],
    system: str = HEADLINE_ANCHOR,
    rate: str = "kbps_all",
    ladder: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """kbit/s the conventional `system` needs on `reference` to reach each metric's target
    in `targets` (the ladder: RATE_LADDERS', or the codec's own; coded once for all).

    Interpolated linearly in log-rate between ladder points. When a target lies below what
    the codec's lowest rate already gives, that lowest rate (it cannot spend less); when it
    lies above the ladder's best quality, math.inf.
    """
    from facecodec.bench.metrics import HIGHER_IS_BETTER, ReferenceFeatures, evaluate

    for metric in targets:
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"unknown metric {metric!r}")
    cfg = CODECS[system]
    feats = ReferenceFeatures.compute(reference.frames, aed_every=5)
    rates, quality = [], []
    for v in ladder or RATE_LADDERS.get(system, cfg.ladder):
        p = encode_decode(reference, cfg, v)
        rates.append(p.kbps(float(reference.fps))[rate])
        quality.append(evaluate(feats, p.frames, p.y, metrics=tuple(targets)).mean)
    need = {}
    for metric, target in targets.items():
        hib = HIGHER_IS_BETTER[metric]
        got = np.array([q[metric] for q in quality])
        r = rate_at_quality(np.array(rates), got, target, hib)
        if r is None:
            worst = got.min() if hib else got.max()
            reached_floor = target <= worst if hib else target >= worst
            r = min(rates) if reached_floor else math.inf
        need[metric] = float(r)
    return need
