"""The sender's choice of how the receiver moves each layer picture on to the frames after
its own (packets.MOVE_*), for a file whose layer is as large as the crop.

Those frames are half to four fifths of a layer stream's frames, and how they are drawn
matters as much as the pictures' quality: on the 6 validation clips at a 15 kbps layer (one
picture in two frames), the frames between pictures scored VMAF 74.3 warped by the Motion,
75.5 shown as they are and 85.2 with an oracle's flow from the true frame. No one way wins
on every clip, and the sender knows which is right: it decodes the stream as the receiver
will and keeps, per picture, the way whose frames come closest to the source in luma. The
choice costs no bytes (two bits of each picture's flags). The fade into the next picture
(MOVE_BETWEEN), which a file's receiver holds ahead, is the way most often kept; the bench
gains are in docs/layer.md, "Frames between layer pictures".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np

from facecodec.bitstream.container import StreamHeader
from facecodec.bitstream.packets import (
    MOVE_BETWEEN,
    MOVE_FLOW,
    MOVE_MOTION,
    MOVE_NONE,
    LayerGroupPayload,
    Packet,
    PacketType,
)

# In order of preference on a tie: the motion keeps the landmarks where they are.
MOVE_CANDIDATES = (MOVE_MOTION, MOVE_NONE, MOVE_FLOW, MOVE_BETWEEN)


def set_moves(packets: list[Packet], move_of: Callable[[int], int]) -> list[Packet]:
    """`packets` with each LAYER_GROUP picture's move set to `move_of(its timestamp)`; the
    pictures' bytes, and so the stream's size, do not change."""
    out = []
    for p in packets:
        if p.type == PacketType.LAYER_GROUP:
            g = LayerGroupPayload.from_bytes(p.payload)
            moved = tuple((o, intra, data, move_of(p.timestamp + o))
                          for o, intra, data, _ in g.pictures)
            p = Packet(p.type, p.seq, p.timestamp,
                       LayerGroupPayload(g.keyframe_id, moved).to_bytes())
        out.append(p)
    return out


def _always(move: int) -> Callable[[int], int]:
    """`move` for every picture (a `move_of` for `set_moves`)."""
    return lambda _: move


def _y(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


class _Shown:
    """A receiver's frames in order, one at a time (a long file is never held whole), and
    for each frame drawn from an older layer picture, that picture's timestamp. A frame it
    does not draw shows the one before, as a player holds it."""

    def __init__(self, header: StreamHeader, packets: list[Packet]) -> None:
        from facecodec.codec.decoder import PacketDecoder  # the decoder loads the renderers

        # The training-free fusion draws a full-size picture as it is, with the same luma
        # as the colour network; the warp is the cheapest renderer for the frames between.
        decoder = PacketDecoder(header, "warp", layer="gate")
        assert decoder.layer is not None
        self.held_from = decoder.layer.held_from = {}
        self._drawn = (f for p in packets for f in decoder.push(p))
        self._next = next(self._drawn, None)
        self._shown: np.ndarray | None = None

    def at(self, index: int) -> np.ndarray:
        while self._next is not None and self._next[0] <= index:
            self._shown = self._next[1]
            self._next = next(self._drawn, None)
        if self._shown is None:  # before the first drawn frame: the first one, as decode_packets
            self._shown = self._next[1] if self._next is not None else None
        assert self._shown is not None, "the stream draws no frame"
        return self._shown


def choose_moves(header: StreamHeader, packets: list[Packet], crops: Iterable[np.ndarray],
                 n_frames: int) -> list[Packet]:
    """`packets` with each LAYER_GROUP picture's move set to the one whose frames come
    closest (luma squared error) to `crops`, the source crops of frames 0..n_frames-1.
    The stream is decoded once per move by the receiver itself, so each candidate is
    exactly what a player will draw. Streams without a full-size layer in LAYER_GROUP
    packets are returned as they are."""
    layer = header.layer
    if (layer is None or layer.size != header.size
            or not any(p.type == PacketType.LAYER_GROUP for p in packets)):
        return packets
    shown = [_Shown(header, set_moves(packets, _always(m))) for m in MOVE_CANDIDATES]
    errors: dict[int, np.ndarray] = {}
    for i, crop in zip(range(n_frames), crops, strict=False):  # crops may run on
        drawn = [s.at(i) for s in shown]
        # Which picture drew the frame does not depend on the moves: ask any receiver.
        t = shown[0].held_from.pop(i, None)
        for s in shown[1:]:
            s.held_from.pop(i, None)
        if t is None:
            continue  # a picture's own frame, or one drawn from the motion alone
        y = _y(crop)
        err = errors.setdefault(t, np.zeros(len(MOVE_CANDIDATES)))
        err += [np.square(_y(d) - y).mean() for d in drawn]
    chosen = {t: MOVE_CANDIDATES[int(np.argmin(e))] for t, e in errors.items()}
    return set_moves(packets, lambda t: chosen.get(t, MOVE_MOTION))
