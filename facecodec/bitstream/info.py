"""What an .fcv file holds and what it costs: the numbers behind `facecodec info`.

Rates are per second of video (frames / fps), counting whole packets (header, length, CRC),
because that is what a file or a data channel actually carries.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from facecodec.bitstream.container import (
    AVATAR_WORDS,
    LAYER_CODEC_NAMES,
    FcvReader,
    HoldBudget,
)
from facecodec.bitstream.packets import (
    LAYER_TYPES,
    MOTION_TYPES,
    EndPayload,
    KeyframePayload,
    MotionPayload,
    PacketType,
    type_name,
)
from facecodec.errors import BitstreamError
from facecodec.words import count


def _kbps(nbytes: int, duration_s: float) -> float:
    return nbytes * 8 / duration_s / 1000 if duration_s > 0 else 0.0


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of an .fcv file. Raises `BitstreamError` only if the header is unreadable;
    damage after the header is reported in `damaged` (the counts cover packets before it)."""
    reader = FcvReader(path)
    h = reader.header
    per_type: dict[str, dict[str, Any]] = {}
    end_frames: int | None = None
    counted = 0
    damaged: str | None = None

    def add(name: str, size: int, count: int = 1) -> None:
        entry = per_type.setdefault(name, {"count": 0, "bytes": 0})
        entry["count"] += count
        entry["bytes"] += size

    # The frames held over gaps in the motion, bounded as the decoder bounds them: counted
    # over the packets a decoder draws (not one overtaken by frames drawn, a MOTION after a
    # lost packet, or motion whose keyframe has not come).
    holds = HoldBudget(float(h.fps))
    keyframes: set[int] = set()
    next_seq: int | None = None
    try:
        for packet, _, size in reader.entries():
            add(type_name(packet.type), size)
            if packet.type == PacketType.KEYFRAME:
                with contextlib.suppress(BitstreamError):  # its picture's damage: decode's
                    keyframes.add(KeyframePayload.from_bytes(packet.payload).keyframe_id)
            elif packet.type in MOTION_TYPES:
                try:
                    m = MotionPayload.from_bytes(packet.payload)
                    if holds.started and packet.timestamp < holds.next:
                        pass  # overtaken by frames drawn: skipped
                    elif ((packet.type == PacketType.RESYNC or packet.seq == next_seq)
                          and m.keyframe_id in keyframes):
                        holds.hold_to(packet.timestamp, "frame")
                        holds.drawn(packet.timestamp + m.frame_count - 1)
                        next_seq = (packet.seq + 1) & 0xFFFF
                    else:
                        next_seq = None
                except BitstreamError as e:
                    damaged = damaged or f"{type_name(packet.type)} packet (seq {packet.seq}): {e}"
                    continue
                counted = max(counted, packet.timestamp + m.frame_count)
            elif packet.type == PacketType.END:
                try:
                    end_frames = _end_frames(packet.timestamp, packet.payload, counted, holds)
                except BitstreamError as e:
                    damaged = damaged or f"END packet (seq {packet.seq}): {e}"
    except BitstreamError as e:
        damaged = str(e)
    for kind, (n, size) in reader.skipped_types.items():
        add(type_name(kind), size, n)

    frames = end_frames if end_frames is not None else counted
    fps = float(h.fps)
    duration = frames / fps
    for entry in per_type.values():
        entry["kbps"] = _kbps(entry["bytes"], duration)
    motion_bytes = sum(per_type.get(t.name, {}).get("bytes", 0) for t in MOTION_TYPES)
    layer_bytes = sum(per_type.get(t.name, {}).get("bytes", 0) for t in LAYER_TYPES)
    lay = h.layer
    major, minor = reader.version
    return {
        "path": str(reader.path),
        "version": f"{major}.{minor}",
        "size": h.size,
        "fps_num": h.fps_num,
        "fps_den": h.fps_den,
        "source_width": h.source_width,
        "source_height": h.source_height,
        "basis_id": h.basis_id,
        "model_id": h.model_id,
        "restorer": h.restorer,
        "pixel_aspect": f"{h.pixel_aspect.numerator}:{h.pixel_aspect.denominator}",
        "avatar": h.avatar,
        "preset": h.preset,
        "resync_interval": h.resync_interval,
        "coder_config_bytes": len(h.coder_config),
        "frames": frames,
        "frames_from": "END" if end_frames is not None else "counted",
        "fps": fps,
        "duration_s": duration,
        "header_bytes": reader.header_size,
        "file_bytes": reader.file_size,
        "packets": per_type,
        "skipped_unknown": sum(count for count, _ in reader.skipped_types.values()),
        "motion_kbps": _kbps(motion_bytes, duration),
        "layer": None if lay is None else {
            "codec": lay.codec, "size": lay.size, "divisor": lay.divisor, "model": lay.model,
        },
        "layer_kbps": _kbps(layer_bytes, duration),
        "keyframe_bytes": per_type.get(PacketType.KEYFRAME.name, {}).get("bytes", 0),
        "total_kbps": _kbps(reader.file_size, duration),
        "damaged": damaged,
        "ended": end_frames is not None,
        "drawable": holds.started,
    }


def _end_frames(timestamp: int, payload: bytes, counted: int, holds: HoldBudget) -> int:
    """The END packet's frame count, checked as the decoder checks it: its timestamp is the
    count, which covers every frame with motion, and the frames it holds after the last are
    within the file's bound (HoldBudget)."""
    total = EndPayload.from_bytes(payload).total_frames
    if timestamp != total:
        raise BitstreamError(f"its timestamp {timestamp} is not its count of {total} frames")
    if total < counted:
        raise BitstreamError(f"its count of {total} frames is short of the {counted} frames "
                             "with motion")
    if holds.started:
        holds.hold_to(total, "its count of")
    elif total - counted > holds.max_hold:  # no frame drawn: decode has nothing to hold
        raise BitstreamError(f"its count of {total} frames is {total - counted} past the last "
                             "frame with motion (damaged timing)")
    return total


def _layer_line(d: dict[str, Any]) -> str:
    lay = d.get("layer")
    if not lay:
        return "  layer      none (motion only)"
    name = LAYER_CODEC_NAMES.get(lay["codec"], f"codec {lay['codec']}")
    return (f"  layer      {d['layer_kbps']:.2f} kbps ({name} {lay['size']}x{lay['size']}, "
            f"1 picture every {lay['divisor']} frames, model {lay['model'] or '-'})")


def format_info(d: dict[str, Any]) -> str:
    """A readable multi-line report of `describe()`'s result."""
    lines = [
        f"{d['path']}: .fcv {d['version']}",
        f"  crop {d['size']}x{d['size']} from {d['source_width']}x{d['source_height']}"
        + ("" if d["pixel_aspect"] == "1:1" else f" (pixels {d['pixel_aspect']})")
        + f", {d['fps']:.3f} fps ({d['fps_num']}/{d['fps_den']})",
        f"  {count(d['frames'], 'frame')} ({d['frames_from']}), {d['duration_s']:.2f} s",
        *([f"  the sender {AVATAR_WORDS}"] if d.get("avatar") else []),
        f"  basis {d['basis_id'] or '-'}, model {d['model_id'] or '-'}, "
        f"restorer {d['restorer'] or '-'},",
        f"  preset {d['preset'] or '-'}, resync every {d['resync_interval'] or '-'} frames, "
        f"coder config {d['coder_config_bytes']} B",
        "",
        f"  {'packets':<11} {'count':>7} {'bytes':>10} {'kbps':>9}",
    ]
    for name, e in sorted(d["packets"].items()):
        lines.append(f"  {name:<11} {e['count']:>7} {e['bytes']:>10} {e['kbps']:>9.2f}")
    lines.append(f"  {'header':<11} {1:>7} {d['header_bytes']:>10}")
    lines += [
        "",
        f"  motion     {d['motion_kbps']:.2f} kbps (MOTION + RESYNC, with packet overhead)",
        _layer_line(d),
        f"  keyframes  {d['keyframe_bytes']} B",
        f"  total      {d['total_kbps']:.2f} kbps ({d['file_bytes']} B)",
    ]
    if d["skipped_unknown"]:
        lines.append(f"  skipped    {d['skipped_unknown']} packets of unknown type")
    lines.append(_state_line(d))
    return "\n".join(lines)


def _state_line(d: dict[str, Any]) -> str:
    """What the packets' whole state says. A packet's contents (motion, pictures) are
    checked by decoding them: `decode` does."""
    if d["damaged"]:
        return f"  damaged    {d['damaged']}"
    if not d["drawable"]:
        return ("  empty      no frame a decoder can draw (no motion whose keyframe came): "
                "decode refuses it")
    if not d["ended"]:
        return ("  unfinished every packet whole and its checksum right, but no END packet: "
                "cut short, or still being written")
    return "  intact     every packet whole, its checksum right, its END count in line"
