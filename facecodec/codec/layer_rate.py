"""Rate control of the low-resolution layer: picture size, frame rate and quantiser.

Size and frame rate come from a table measured on validation clips (benchmarks/layer_codecs.py,
docs/layer.md): a 25-30 fps layer costs ~20 bytes a picture plus 16 bytes of packet framing
whatever its quality, so at low rates the layer drops to a fraction of the frame rate, where
the warp carries the motion in between. The quantiser is then searched on the clip itself
(file encoding sees the whole clip): the integer SVT-AV1 crf whose layer rate is nearest the
target in log rate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from statistics import mean
from typing import TYPE_CHECKING

import numpy as np

from facecodec.bitstream.container import LAYER_SIZES
from facecodec.bitstream.packets import encode_varint
from facecodec.codec.analysis import KeyframeEvent
from facecodec.codec.layer import AV1, MAX_Q, MIN_Q, SPEC_AV1_LIVE, LayerEncoder
from facecodec.errors import FacecodecError, RateTooLow

if TYPE_CHECKING:
    from facecodec.codec.encoder import Analysis

MAX_LAYER_KBPS = 60.0
# (up to this layer kbps, size, divisor). Up to ~5.5 kbps: measured on validation
# (docs/layer.md), a 128 px layer beat 96 and 64 px ones by 10-30 VMAF points (bicubic alone)
# and fewer pictures at a finer quantiser beat more at a coarser one; the fusion network,
# trained at <= 128 px, carries the motion in between. Above: on 6 train clips (real streams,
# low motion, fusion as named) a 256 px layer beat the 128 px one at every rate, +2.7 VMAF /
# +0.12 dB PSNR-Y at 8 kbps (1 in 3), +3.6 / +0.37 at 15 (1 in 2), +4.4 / +1.14 at 30 (every
# frame); there 1 in 2 beat every frame at 15 kbps (58.1 vs 51.3 VMAF) and lost at 30.
# In files a layer as large as the crop also lends the keyframes their pictures (no coded
# reference): on 6 train clips at a 4 kbps layer, 256 px 1 in 5 made 6.23 kbps in all where
# 128 px 1 in 4 with its reference made 8.60, for -0.27 dB PSNR-Y, -0.019 MS-SSIM and -0.5
# VMAF: at equal rate the 256 px layer is ahead (interpolated toward its 8 kbps point, by
# ~0.9 dB). 256 px 1 in 4: 28.97 dB, 1 in 6: 28.99, 1 in 8: 28.55, 1 in 5: 29.23. A live call
# sends its own reference and keeps the 128 px layer and the fusion network there.
# Then (lowest motion, layer-drawn keyframes) 1 in 2 against 1 in 3 at 11 and 13 kbps:
# 12.52 kbps, 33.34 vs 32.89 dB, VMAF 52.7 vs 51.4; 14.5 kbps, 34.00 vs 33.40, 56.5 vs 54.1;
# at 8 kbps 1 in 3 had won (31.89 vs 31.79 dB): 1 in 2 from 10 kbps.
SCHEDULE: tuple[tuple[float, int, int], ...] = (
    (5.5, 256, 5),
    (10.0, 256, 3),
    (24.0, 256, 2),
    (math.inf, 256, 1),
)
LIVE_SCHEDULE: tuple[tuple[float, int, int], ...] = ((5.5, 128, 4), *SCHEDULE[1:])
# The fusion the sender names (docs/layer.md, validation): the trained network beat the
# training-free fusion on every metric at ~4 kbps layers (1 picture in 4, coarse pictures),
# but at 8-15 kbps the training-free fusion scored higher PSNR-Y and VMAF on most clips
# (the network smooths good layer pictures), so above this rate the sender names it.
NET_FUSION_MAX_KBPS = 6.0
MAX_DIVISOR_FALLBACK = 8  # below the scheduled size's floor, fewer pictures still
# Reference picture quality when a layer is sent and none is asked for. With the layer the
# reference only lends the warp's fine detail, and on 6 train clips (150 frames, warp, medium
# motion) lowering it from 60 to 30 cost 0.2 VMAF at 8-30 kbps layers and saved 3.7 kbps, and
# from 30 to 5 cost 0.4-0.5 VMAF for 1.5 kbps more; at a 4 kbps layer, 30 -> 15 cost 3 VMAF
# for 1 kbps. Motion-only streams keep EncoderSettings' default (the warp is the picture).
LAYER_KEYFRAME_QUALITY: tuple[tuple[float, int], ...] = ((NET_FUSION_MAX_KBPS, 30), (math.inf, 10))
# A file whose layer is as large as the crop: every frame is drawn from a layer picture (one
# comes with each keyframe) and the reference only from the layer's own pictures, so its
# quality changed nothing (6 train clips, 8 and 15 kbps layers: quality 10 and 0 gave
# identical PSNR-Y, MS-SSIM and VMAF; 0 saved 0.57 kbps). A live call keeps the table's:
# a layer picture lost in transit leaves the warp of the reference on screen.
FULL_LAYER_KEYFRAME_QUALITY = 0
# --target-kbps: up to this, motion only (the motion coder spans ~0.5-4 kbps); above it the encoder
# also codes motion at the lowest preset with the rest going to the layer, and keeps the layer when
# its frames score higher on VMAF (encoder._code_to_target). With the layer drawing the
# picture, coarse motion costs little and its bits buy more as layer rate: on 6 train clips the low
# preset saved 1.24 kbps against medium for 0.65 / 0.02 / 0.43 VMAF (4 / 8 / 15 kbps layers), and
# the lowest (4 expression coefficients, 2.5x steps) saved another 0.57 kbps against low; at equal
# --target-kbps 6.5 / 10 / 17 it scored +0.33 / +0.10 / +0.10 dB PSNR-Y and +2.2 / +0.9 / +0.7 VMAF
# over low (out of ~1.4 kbps of motion; benchmarks/motion_beside_layer.py).
MOTION_ONLY_MAX_KBPS = 5.0
LAYER_MOTION_PRESET = "lowest"
# Beside a file's layer as large as the crop every frame is drawn from a layer picture: the
# motion only moves the few held pictures the sender moves by it (packets.MOVE_MOTION),
# gives the colour network its warp of the reference and draws the frames a damaged layer
# leaves. There LAYER_MOTION_PRESET codes 1 expression coefficient at 10x the medium
# preset's steps (expression coefficients, step multiplier): on 4 validation clips at
# 4 / 8 / 15 kbps layers it cost 0.38-0.68 kbps of motion instead of 0.74-1.47, for PSNR-Y
# within 0.02 dB and VMAF within 0.06 of the lowest preset; decoded without the layer its
# frames lost 1.9-2.3 VMAF against the lowest preset's on 2 clips (20x lost 15-18, 5x saved
# less). At equal --target-kbps on the 6 train clips (benchmarks/motion_beside_layer.py
# --full-layer off on) the layer gets the difference: VMAF +2.0 / +0.7 at 10 / 17 kbps,
# -0.4 at 6.5 (where a larger layer budget crosses SCHEDULE's 5.5 kbps step).
FULL_LAYER_MOTION: tuple[int, float] = (1, 10.0)
# A live call keeps the low preset beside its layer: a layer picture lost in transit leaves
# the motion's warp of the reference on screen (the comparison above was of files only).
LIVE_LAYER_MOTION_PRESET = "low"


@dataclass
class LayerPlan:
    """What the sender codes: codec, size, one picture every `divisor` frames at crf `q`,
    and the coded pictures by frame index: (intra, bytes)."""

    codec: int
    size: int
    divisor: int
    q: int
    pictures: dict[int, tuple[bool, bytes]] = field(default_factory=dict)

    def packet_bytes(self, group_frames: int = 1) -> int:
        """Bytes on the wire: a LAYER packet a picture, or with `group_frames` > 1 (a file's
        frames per motion packet) a LAYER_GROUP packet per group of frames."""
        if group_frames <= 1:
            return sum(layer_packet_bytes(len(d)) for _, d in self.pictures.values())
        groups = len({i // group_frames for i in self.pictures})
        return groups * layer_packet_bytes(0) + sum(
            2 + len(encode_varint(len(d))) + len(d) for _, d in self.pictures.values())


def layer_packet_bytes(picture_bytes: int) -> int:
    """Bytes of the LAYER packet carrying a picture (docs/bitstream.md: 13 or 14 bytes of
    framing, 3 bytes of payload header)."""
    n = picture_bytes + 3
    return 8 + (1 if n < 128 else 2 if n < 16384 else 3) + n + 4


def uses_layer(target_kbps: float) -> bool:
    """Whether an overall --target-kbps (every byte of the file) is above the motion-only
    range: the encoder then also tries giving the layer what the motion leaves."""
    return target_kbps > MOTION_ONLY_MAX_KBPS


def _by_rate(table: tuple[tuple[float, int], ...], kbps: float) -> int:
    """The value of the first `(up to kbps, value)` row covering `kbps` (tables end at inf)."""
    return next(v for up_to, v in table if kbps <= up_to)


def keyframe_quality_with_layer(kbps: float, crop_size: int = 256, live: bool = False) -> int:
    """Reference quality beside a layer of this rate (see LAYER_KEYFRAME_QUALITY)."""
    if not live and schedule(kbps, crop_size)[0] >= crop_size:
        return FULL_LAYER_KEYFRAME_QUALITY
    return _by_rate(LAYER_KEYFRAME_QUALITY, kbps)


def schedule(kbps: float, crop_size: int = 256, live: bool = False) -> tuple[int, int]:
    """(size, divisor) for a layer rate; never larger than the crop it is cut from."""
    table = LIVE_SCHEDULE if live else SCHEDULE
    size, divisor = next((s, d) for up_to, s, d in table if kbps <= up_to)
    if size > crop_size:  # a small crop: the largest layer size it holds
        size = max((s for s in LAYER_SIZES if s <= crop_size), default=LAYER_SIZES[0])
    return size, divisor


def check_layer_kbps(kbps: float) -> None:
    """A layer rate as `--layer-kbps` asks it (0: no layer)."""
    if not 0 <= kbps <= MAX_LAYER_KBPS:  # also refuses NaN
        raise FacecodecError(f"--layer-kbps must be within 0..{MAX_LAYER_KBPS:g} (0: no layer), "
                             f"got {kbps:g}")


def full_size_layer(kbps: float, crop_size: int) -> bool:
    """Whether a file's layer at `kbps` is as large as the crop (0: no layer)."""
    return kbps > 0 and schedule(kbps, crop_size)[0] >= crop_size


def code_layer(
    analysis: Analysis, pictures: Callable[[], Iterator[np.ndarray]], size: int, divisor: int,
    q: int,
) -> dict[int, tuple[bool, bytes]]:
    """Code the layer of an analysed clip from its frames' `pictures()` (in frame order): an
    intra picture at every keyframe (a fresh encoder: the crop may have moved), then one
    picture every `divisor` frames. A stalled encoder's picture is coded intra by a fresh
    one (LayerEncoder); a file would then hold a picture it would not have held, and the
    rate measured would move the plan, so the whole layer is coded again instead."""
    for _ in range(2):
        out, stalled = _code_layer(analysis, pictures(), size, divisor, q)
        if not stalled:
            break
    return out


def _code_layer(
    analysis: Analysis, pictures: Iterator[np.ndarray], size: int, divisor: int, q: int
) -> tuple[dict[int, tuple[bool, bytes]], int]:
    enc = LayerEncoder(size, q)
    out: dict[int, tuple[bool, bytes]] = {}
    phase: int | None = None
    at, picture = -1, None  # the frame `picture` is of
    for e in analysis.events:
        if isinstance(e, KeyframeEvent):
            enc.restart()
            phase = e.index
            continue
        if phase is None or (e.index - phase) % divisor or e.index in out:
            continue
        while at < e.index:
            picture = next(pictures, None)
            if picture is None:
                break
            at += 1
        if picture is None:
            break
        data, intra = enc.encode(picture)
        out[e.index] = (intra, data)
    enc.restart()
    return out, enc.stalled


def plan_layer(
    analysis: Analysis, kbps: float, crop_size: int, fps: float, group_frames: int = 1,
    crf: int | None = None, at_most: bool = False,
) -> LayerPlan:
    """The layer for a target rate: size and divisor from SCHEDULE, the crf nearest the rate
    (bisection over integers; the rate falls monotonically with crf), or with `at_most` the
    finest crf not above it; or `crf` as given."""
    size, divisor = schedule(kbps, crop_size)
    pictures = analysis.layer_pictures(size, crop_size)

    def plan(q: int) -> LayerPlan:
        key = (size, crop_size, divisor, q)
        if key not in analysis.layer_codes:
            analysis.layer_codes[key] = code_layer(analysis, pictures, size, divisor, q)
        return LayerPlan(AV1, size, divisor, q, analysis.layer_codes[key])

    if crf is not None:
        return plan(crf)
    duration = analysis.report.frames / fps

    def rate(q: int) -> float:
        return plan(q).packet_bytes(group_frames) * 8 / 1000 / duration

    while rate(MAX_Q) > kbps * (1.0 if at_most else 1.1):
        if divisor >= MAX_DIVISOR_FALLBACK:
            raise RateTooLow(
                f"layer rate {kbps:g} kbps is below the lowest this clip allows "
                f"({rate(MAX_Q):.2f} kbps at {size} px, 1 picture in {divisor} frames)"
            )
        divisor += 1
    lo, hi = MIN_Q, MAX_Q  # rate(lo) >= rate(hi); find the adjacent pair around kbps
    if rate(lo) <= kbps:
        return plan(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rate(mid) > kbps:
            lo = mid
        else:
            hi = mid
    if at_most:
        return plan(hi)
    best = min((lo, hi), key=lambda q: abs(math.log(rate(q) / kbps)))
    return plan(best)


# Live calls see no clip ahead, so the crf cannot be searched: every LIVE_RUN_S (a run) the
# crf is set from the rate the layer made. SVT-AV1 roughly halves its rate for +6 crf at these
# sizes, so the step is 6 * log2(made / target), at most MAX_CRF_STEP (one short run is a
# noisy guide to the next). A new crf needs a fresh encoder, whose first picture is intra; a
# run whose crf stays goes on with the encoder it has, for at most MAX_ENCODER_S. With a fresh
# encoder every run, intra pictures were 14-48 % of the layer's bytes (benchmarks/
# live_layer_rate.py, 6 clips, 15 kbps) and each a burst a thin link's queue had to hold.
# The rate made counts inter pictures, and the intra picture spread over an encoder's life:
# as long as the last ENCODER_LIVES encoders lived or the current one has (LIVE_RUN_S to
# MAX_ENCODER_S). Spread over the current encoder's age alone, a young encoder's rate would
# be taken high and an old one's low: the crf would step down as an encoder ages and back up
# with the fresh one that step starts. Over the last lives alone, encoders that began to
# live longer were still charged for short lives (45 s runs on 4 clips: 2-9 % under this
# rule's rate, 0.1-0.7 dB lower PSNR-Y at 8 and 15 kbps). One run's content swings the rate
# by a step either way: the step is the last run's when that is off by two or more, else
# the encoder's whole life's, once it is two runs old.
LIVE_RUN_S = 3.0
MAX_ENCODER_S = 12.0
ENCODER_LIVES = 4
CRF_PER_DOUBLING = 6.0
MAX_CRF_STEP = 6
# Starting crf by layer rate, so the first run is near its target. 4 kbps (128 px): the median
# crf the file encoder's search chose on the 6 validation clips (150 frames; per clip 48-66).
# 8 / 15 / 30 kbps (256 px, 1 in 3 / 2 / 1): where the mean rate over those clips crosses the
# target (benchmarks/layer_codecs.py's measurement: crf 59 made 7.2 kbps, 50 made 14.0, 44
# made 28.1).
LIVE_START_Q: tuple[tuple[float, int], ...] = ((5.5, 55), (10.0, 58), (24.0, 49), (math.inf, 43))


# A link thinner than the layer asks for: the receiver's estimate of the link's rate
# (stream/congestion.py, LinkRate) less what the rest of the call sends sets the layer's
# rate (StreamEncoder.report_loss). Under PAUSE_SHARE of the asked rate the layer pauses
# (its frames are drawn from the motion alone): its pictures would be coarse (8 crf above
# where a run at the asked rate starts) while each still costs its framing, and a layer
# whose pictures a full link delays is late for its frames anyway. It resumes, with an
# intra picture at the crf it left at, once the estimate leaves it PAUSE_SHARE again and it
# has waited RESUME_WAIT_S, a wait that doubles (up to MAX_RESUME_WAIT_S) each time it has
# to pause again within STABLE_S of resuming: the estimate rises while the layer is paused,
# and a link that cannot carry the layer would otherwise be filled again every few seconds.
# A call over a network starts the layer at PAUSE_SHARE (start_low): its first estimate
# comes some 3 s in, and until then the layer's whole rate could be what the link lacks.
PAUSE_SHARE = 0.4
RESUME_WAIT_S = 2.0
MAX_RESUME_WAIT_S = 32.0
STABLE_S = 10.0


class LiveLayer:
    """The sender's layer in a live call: which frames get a picture, coded at what crf.

    `restart(index)` at every keyframe (the crop may have moved); `picture(index, crop)` for
    every frame with a face, returning (intra, coded picture) on the frames that carry one:
    the first a run is given, then the first at least `divisor` frames after the last
    picture. Not every index comes: a camera slower than its stated rate, or a sender
    behind real time, leaves slots empty, and a schedule by index modulo the divisor could
    then miss every picture (a camera giving every other slot, a divisor of 2 or 4).
    `limit(kbps, now_s)` keeps the layer within what the link leaves it.
    """

    def __init__(self, kbps: float, fps: float, crop_size: int = 256,
                 start_low: bool = False) -> None:
        if not 0 < kbps <= MAX_LAYER_KBPS:
            raise FacecodecError(f"layer rate {kbps:g} kbps out of range (0..{MAX_LAYER_KBPS:g})")
        self.ceiling = kbps  # as asked; the header's size and divisor are chosen for it
        self.kbps, self.fps = kbps, fps  # the rate the runs aim at now
        self.size, self.divisor = schedule(kbps, crop_size, live=True)
        self.q = _by_rate(LIVE_START_Q, kbps)
        if start_low:
            self.kbps = PAUSE_SHARE * kbps
            self.q = min(MAX_Q, self.q + round(CRF_PER_DOUBLING * math.log2(1 / PAUSE_SHARE)))
        self.encoder = LayerEncoder(self.size, self.q, SPEC_AV1_LIVE)
        self.phase: int | None = None  # frame of the current run's first picture
        self.last: int | None = None  # frame of the run's latest picture
        self.run_bytes = 0  # the run's pictures, its encoder's intra picture not counted
        self.life_bytes = 0  # the encoder's pictures, its intra picture not counted
        self.started = 0  # frame of the encoder's intra picture
        self.intra_bytes = 0  # and its size
        self.max_frames = round(MAX_ENCODER_S * fps)
        self.lives: deque[int] = deque(maxlen=ENCODER_LIVES)  # frames the last encoders ran
        self.run_frames = max(self.divisor, round(LIVE_RUN_S * fps / self.divisor) * self.divisor)
        self.paused = False
        self.pauses = 0
        # A fresh encoder every run (the caller's call is paced: its link is full). An intra
        # picture after a long life is at a finer crf, and larger: through 40 kbps the motion
        # paced behind it held the picture for up to 0.79-0.91 s, against 0.59-0.66 s with a
        # fresh encoder every run (docs/live_calls.md, "The layer's encoders").
        self.short_runs = False
        self._resume = False  # the next picture starts a run
        self._paused_at = self._resumed_at = -math.inf
        self._wait = RESUME_WAIT_S

    def restart(self, index: int) -> None:
        self._adapt(index)
        self._run(index)

    def limit(self, kbps: float, now_s: float) -> None:
        """Aim at `kbps` (the layer packets' own bytes), at most the rate asked for; `now_s`:
        the call's time (s), for the pauses."""
        target = min(self.ceiling, kbps)
        floor = PAUSE_SHARE * self.ceiling
        if self.paused:
            if target < floor or now_s - self._paused_at < self._wait:
                return
            self.paused, self._resume, self._resumed_at = False, True, now_s
        elif target < floor:
            self.paused, self._paused_at = True, now_s
            self.run_bytes = self.life_bytes = self.intra_bytes = 0
            self.pauses += 1
            again = now_s - self._resumed_at < STABLE_S
            self._wait = min(2 * self._wait, MAX_RESUME_WAIT_S) if again else RESUME_WAIT_S
        self.kbps = max(target, floor)

    def _adapt(self, index: int) -> None:
        """Set the crf for the run starting at `index` from what the layer made: the run
        before it, when that was off by two steps or more, else the encoder's whole life
        (one run's content swings the rate by a step either way)."""
        if self.phase is None or index <= self.phase or not self.run_bytes + self.intra_bytes:
            return
        age = index - self.started
        step = self._step(self.run_bytes, index - self.phase, age)
        if abs(step) < 2:
            step = self._step(self.life_bytes, age, age) if age >= 2 * self.run_frames else 0
        self.q = min(MAX_Q, max(MIN_Q, self.q + step))

    def _step(self, inter_bytes: int, frames: int, age: int) -> int:
        """The crf step for `inter_bytes` of inter pictures over `frames`, with the intra
        picture spread over an encoder's life: as long as the last encoders lived, or as
        the current one (`age` frames) has."""
        life = max(age, mean(self.lives)) if self.lives else age
        life_s = min(MAX_ENCODER_S, max(LIVE_RUN_S, life / self.fps))
        made = (inter_bytes * self.fps / frames + self.intra_bytes / life_s) * 8 / 1000
        step = round(CRF_PER_DOUBLING * math.log2(made / self.kbps))
        return max(-MAX_CRF_STEP, min(MAX_CRF_STEP, step))

    def _next_run(self, index: int) -> None:
        """A run ends at `index`: a new crf, or an encoder MAX_ENCODER_S old, starts a fresh
        encoder; otherwise the one there is goes on."""
        q = self.q
        self._adapt(index)
        if self.q != q or self.short_runs or index - self.started >= self.max_frames:
            self._run(index)
        else:
            self.phase, self.run_bytes = index, 0

    def _run(self, index: int) -> None:
        """Start a run at `index`: a fresh encoder, whose first picture is intra."""
        if self.intra_bytes:  # an encoder that coded pictures ends
            self.lives.append(index - self.started)
        self.encoder.restart()
        self.encoder = LayerEncoder(self.size, self.q, SPEC_AV1_LIVE)
        self.run_bytes = self.life_bytes = self.intra_bytes = 0
        self.phase, self.started, self.last, self._resume = index, index, None, False

    def picture(self, index: int, crop: np.ndarray) -> tuple[bool, bytes] | None:
        if self.paused or self.phase is None or index < self.phase:
            return None
        if self._resume:
            self._run(index)
        elif self.last is not None and index - self.last < self.divisor:
            return None
        elif index - self.phase >= self.run_frames:
            self._next_run(index)
        self.last = index
        data, intra = self.encoder.encode(crop)
        if intra:
            self.started, self.intra_bytes = index, layer_packet_bytes(len(data))
        else:
            self.run_bytes += layer_packet_bytes(len(data))
            self.life_bytes += layer_packet_bytes(len(data))
        return intra, data
