"""The .fcv bitstream: packets, payloads, header, container, damage and version handling."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecodec.bitstream.container import (
    MAGIC,
    MAX_FPS,
    MAX_FPS_DEN,
    MAX_HOLD_S,
    MAX_LEAD_S,
    VERSION_MINOR,
    FcvReader,
    FcvWriter,
    HoldBudget,
    LayerParams,
    StreamHeader,
    parse_header,
    read_fcv,
)
from facecodec.bitstream.info import describe, format_info
from facecodec.bitstream.packets import (
    IMAGE_FROM_LAYER,
    MAX_PAYLOAD,
    EndPayload,
    KeyframePayload,
    MotionPayload,
    Packet,
    PacketType,
    RestorePayload,
    decode_packet,
    encode_packet,
    encode_varint,
)
from facecodec.errors import BitstreamError, FacecodecError, NotAStream

HEADER = StreamHeader(
    size=256,
    fps_num=30000,
    fps_den=1001,
    source_width=1920,
    source_height=1080,
    basis_id="mpbasis-v1-abcd1234",
    model_id="warp",
    preset="default",
    resync_interval=50,
    coder_config=b"\x01\x02\x03",
)

ascii_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)
# Frame rates a header may carry: 1..MAX_FPS as fractions with denominators up to MAX_FPS_DEN.
fps_fractions = st.integers(1, MAX_FPS_DEN).flatmap(
    lambda den: st.tuples(st.integers(den, MAX_FPS * den), st.just(den)))
headers = st.builds(
    lambda fps, **fields: StreamHeader(fps_num=fps[0], fps_den=fps[1], **fields),
    size=st.integers(8, 32).map(lambda n: 16 * n),
    fps=fps_fractions,
    source_width=st.integers(1, 65535),
    source_height=st.integers(1, 65535),
    basis_id=ascii_text,
    model_id=ascii_text,
    preset=ascii_text,
    resync_interval=st.integers(0, 65535),
    coder_config=st.binary(max_size=300),
    restorer=ascii_text,
    pixel_aspect=st.one_of(
        st.just(Fraction(1)),
        st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda t: Fraction(*t))
        .filter(lambda a: Fraction(1, 10) <= a <= 10)),
    avatar=st.booleans(),
)
packets = st.builds(
    Packet,
    type=st.integers(0, 255),
    seq=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=400),
)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# No per-example deadline: the suite runs on shared, busy CPUs where timings are noise.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def small_stream() -> list[Packet]:
    kf = KeyframePayload(0, (10.0, 20.0, 300.0), 5, (0.1, -0.2, 0.5), b"\x00image").to_bytes()
    out = [Packet(PacketType.KEYFRAME, 0, 0, kf)]
    for i in range(3):
        kind = PacketType.RESYNC if i == 0 else PacketType.MOTION
        out.append(Packet(kind, i + 1, 2 * i, MotionPayload(0, 2, bytes([i]) * 5).to_bytes()))
    out.append(Packet(PacketType.END, 4, 6, EndPayload(6).to_bytes()))
    return out


def write_stream(path: Path, pkts: list[Packet], header: StreamHeader = HEADER) -> None:
    with FcvWriter(path) as w:
        w.write_header(header)
        for p in pkts:
            w.write_packet(p)


# --- packets ---------------------------------------------------------------------------------


@RELAXED
@given(packets)
def test_packet_round_trip(p: Packet) -> None:
    data = encode_packet(p)
    q, end = decode_packet(data)
    assert end == len(data)
    assert (int(q.type), q.seq, q.timestamp, q.payload) == (p.type, p.seq, p.timestamp, p.payload)
    # the same packet inside a larger buffer decodes at its offset
    q2, end2 = decode_packet(b"xyz" + data + b"tail", 3)
    assert q2 == q and end2 == 3 + len(data)


def test_small_packet_overhead_is_13_bytes() -> None:
    payload = MotionPayload(0, 1, b"\x00" * 20).to_bytes()
    assert len(encode_packet(Packet(PacketType.MOTION, 0, 0, payload))) == len(payload) + 13


def test_every_single_bit_flip_is_detected() -> None:
    data = encode_packet(Packet(PacketType.MOTION, 7, 1234, MotionPayload(3, 1, b"abc").to_bytes()))
    for i in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            decode_packet(bytes(damaged))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64), st.integers(0, 70))
def test_random_bytes_only_raise_bitstream_error(data: bytes, offset: int) -> None:
    try:
        p, end = decode_packet(data, offset)
    except BitstreamError:
        return
    assert offset < end <= len(data) and len(p.payload) < len(data)


@RELAXED
@given(st.binary(max_size=64))
def test_random_bytes_with_valid_prefix(data: bytes) -> None:
    # A valid sync byte and checksum make the fuzz reach the length and CRC paths.
    for buf in (b"\xfc" + data, b"\xfc\x02\x00\x00\x00\x00\x00\x00" + data):
        with pytest.raises(BitstreamError):
            decode_packet(buf)  # a random tail passes the CRC with probability 2**-32


@RELAXED
@given(st.binary(max_size=64))
def test_random_payloads_only_raise_bitstream_error(data: bytes) -> None:
    for cls in (KeyframePayload, MotionPayload, EndPayload, RestorePayload):
        try:
            p = cls.from_bytes(data)
        except BitstreamError:
            continue
        assert cls.from_bytes(p.to_bytes()) == p


def test_length_is_bounded_before_allocation() -> None:
    prefix = struct.pack("<BBHI", 0xFC, 2, 0, 0)
    with pytest.raises(BitstreamError, match="limit"):
        decode_packet(prefix + encode_varint(MAX_PAYLOAD)[:-1] + b"\x7f")  # 2**27-ish
    with pytest.raises(BitstreamError, match="over 4 bytes"):
        decode_packet(prefix + b"\xff\xff\xff\xff\x01")
    with pytest.raises(BitstreamError, match="non-minimal"):
        decode_packet(prefix + b"\x80\x00" + b"\x00" * 4)
    with pytest.raises(BitstreamError, match="truncated"):
        decode_packet(prefix + encode_varint(1000) + b"\x00" * 10)
    with pytest.raises(BitstreamError):
        encode_packet(Packet(PacketType.MOTION, 0, 0, b"\x00" * (MAX_PAYLOAD + 1)))


def test_bad_packet_fields_are_rejected_on_encode() -> None:
    for p in (
        Packet(256, 0, 0, b""),
        Packet(PacketType.MOTION, 65536, 0, b""),
        Packet(PacketType.MOTION, 0, 2**32, b""),
        Packet(PacketType.MOTION, -1, 0, b""),
    ):
        with pytest.raises(BitstreamError):
            encode_packet(p)


def test_unknown_type_decodes_as_plain_int() -> None:
    p, _ = decode_packet(encode_packet(Packet(200, 1, 2, b"future")))
    assert p.type == 200 and not p.known
    assert decode_packet(encode_packet(Packet(5, 1, 2, b"")))[0].type is PacketType.LAYER


# --- payloads --------------------------------------------------------------------------------


@RELAXED
@given(
    st.integers(0, 65535),
    st.tuples(f32, f32, f32.filter(lambda v: v > 0)),
    st.integers(0, 255),
    st.lists(f32, max_size=255),
    st.binary(min_size=1, max_size=300),
)
def test_keyframe_payload_round_trip(kid, crop, codec, motion, image) -> None:
    if codec == IMAGE_FROM_LAYER:  # its picture is the layer's: no image bytes of its own
        with pytest.raises(BitstreamError, match="carries image data"):
            KeyframePayload(kid, crop, codec, tuple(motion), image).to_bytes()
        image = b""
    p = KeyframePayload(kid, crop, codec, tuple(motion), image)
    assert KeyframePayload.from_bytes(p.to_bytes()) == p


@RELAXED
@given(st.integers(0, 65535), st.integers(1, 255), st.binary(max_size=300))
def test_motion_payload_round_trip(kid: int, n: int, data: bytes) -> None:
    p = MotionPayload(kid, n, data)
    assert MotionPayload.from_bytes(p.to_bytes()) == p


def test_payload_validation() -> None:
    good = KeyframePayload(1, (0.0, 0.0, 100.0), 5, (1.0,), b"img")
    for bad in (
        KeyframePayload(1, (0.0, 0.0, 0.0), 5, (), b"img"),  # zero side
        KeyframePayload(1, (float("nan"), 0.0, 1.0), 5, (), b"img"),
        KeyframePayload(1, (0.0, 0.0, 1.0), 5, (float("inf"),), b"img"),
        KeyframePayload(1, (0.0, 0.0, 1.0), 5, (0.0,) * 256, b"img"),
        KeyframePayload(1, (0.0, 0.0, 1.0), 5, (), b""),
        KeyframePayload(70000, (0.0, 0.0, 1.0), 5, (), b"img"),
        KeyframePayload(1, (0.0, 0.0), 5, (), b"img"),
        KeyframePayload(1, (0.0, 0.0, 1.0), 5, (1e39,), b"img"),  # beyond float32
    ):
        with pytest.raises(BitstreamError):
            bad.to_bytes()
    with pytest.raises(BitstreamError, match="numbers"):
        KeyframePayload(1, (0.0, 0.0, 1.0), 5, ("a",), b"img")
    # values are float32 from the start, so the sender holds what the receiver will read
    rounded = KeyframePayload(1, (0.1, 0.2, 0.3), 5, (0.1,), b"img")
    assert rounded.motion == (float(np.float32(0.1)),)
    assert KeyframePayload.from_bytes(rounded.to_bytes()) == rounded
    raw = good.to_bytes()
    with pytest.raises(BitstreamError, match="truncated"):
        KeyframePayload.from_bytes(raw[:16])  # motion count says 1, value missing
    for frames in (0, 256):
        with pytest.raises(BitstreamError, match="frame count"):
            MotionPayload(0, frames, b"").to_bytes()
    with pytest.raises(BitstreamError, match="frame count"):
        MotionPayload.from_bytes(b"\x00\x00\x00")
    with pytest.raises(BitstreamError, match="trailing"):
        EndPayload.from_bytes(b"\x01\x00\x00\x00\x00")
    assert EndPayload.from_bytes(EndPayload(99).to_bytes()).total_frames == 99


@given(st.integers(0, 65535), st.integers(0, 255))
def test_restore_payload_round_trip(kid: int, share: int) -> None:
    p = RestorePayload(kid, share)
    assert p.to_bytes() == struct.pack("<HB", kid, share)
    assert RestorePayload.from_bytes(p.to_bytes()) == p
    assert p.fraction == share / 255


def test_restore_payload_validation() -> None:
    for bad in (RestorePayload(0, 256), RestorePayload(0, -1), RestorePayload(65536, 0)):
        with pytest.raises(BitstreamError, match="out of range"):
            bad.to_bytes()
    with pytest.raises(BitstreamError, match="truncated"):
        RestorePayload.from_bytes(b"\x01\x00")
    with pytest.raises(BitstreamError, match="trailing"):
        RestorePayload.from_bytes(b"\x01\x00\x80\x00")


# --- header ----------------------------------------------------------------------------------


@RELAXED
@given(headers)
def test_header_round_trip(h: StreamHeader) -> None:
    data = h.to_bytes()
    assert data[:4] == MAGIC and data[4] == 1
    assert struct.unpack_from("<H", data, 6)[0] == len(data)
    assert StreamHeader.from_bytes(data + b"packets follow") == h


@RELAXED
@given(st.binary(max_size=120))
def test_random_header_bytes_only_raise_bitstream_error(data: bytes) -> None:
    for buf in (data, MAGIC + b"\x01" + data):
        try:
            parse_header(buf)
        except BitstreamError:
            pass


def test_header_validation() -> None:
    for kwargs in (
        {"size": 64},
        {"size": 1024},
        {"size": 255},
        {"size": 130},  # even, but no renderer draws it (the layer fusion crashed on it)
        {"fps_num": 0},
        {"fps_num": 121, "fps_den": 1},
        {"fps_num": 1, "fps_den": 2},
        {"fps_num": 4294967295, "fps_den": 4294967294},
        {"source_width": 70000},
        {"basis_id": "x" * 65},
        {"basis_id": "naïve"},
        {"preset": "a\nb"},
        {"resync_interval": -1},
        {"coder_config": b"\x00" * 70000},
    ):
        h = StreamHeader(**_with(HEADER, **kwargs))
        with pytest.raises(BitstreamError):
            h.to_bytes()


@pytest.mark.parametrize("layer", [None, LayerParams(1, 128, 3, "layerfuse-v1-0123abcd")])
def test_the_largest_coder_config_that_fits_round_trips(layer: LayerParams | None) -> None:
    """A header at its u16 length limit is written and read back; one byte more is a
    BitstreamError, not a struct overflow."""
    base = StreamHeader(**_with(HEADER, layer=layer))
    fill = 0xFFFF - len(base.to_bytes()) + len(base.coder_config)
    big = StreamHeader(**_with(base, coder_config=b"\x01" * fill))
    raw = big.to_bytes()
    assert len(raw) == 0xFFFF and StreamHeader.from_bytes(raw) == big
    with pytest.raises(BitstreamError, match="too large"):
        StreamHeader(**_with(base, coder_config=b"\x01" * (fill + 1))).to_bytes()


def _with(h: StreamHeader, **changes: object) -> dict:
    fields = {f: getattr(h, f) for f in StreamHeader.__dataclass_fields__}
    return {**fields, **changes}


def _sealed(body: bytearray) -> bytes:
    struct.pack_into("<H", body, 6, len(body) + 4)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def test_headers_before_the_restorer_field_still_parse() -> None:
    named = StreamHeader(**_with(HEADER, restorer="restore-v1-0123abcd"))
    assert StreamHeader.from_bytes(named.to_bytes()).restorer == "restore-v1-0123abcd"
    body = bytearray(HEADER.to_bytes()[:-5])  # without the empty restorer id and the CRC
    body[5] = 8
    h, _, version = parse_header(_sealed(body))
    assert version == (1, 8) and h == HEADER and h.restorer == ""
    # a 1.8 header ends at the layer fields: the restorer id there is an unknown trailer
    body = bytearray(named.to_bytes()[:-4])
    body[5] = 8
    with pytest.raises(BitstreamError, match="trailing"):
        parse_header(_sealed(body))
    with pytest.raises(BitstreamError, match="restorer id"):
        StreamHeader(**_with(HEADER, restorer="r" * 65)).to_bytes()


def test_the_pixel_aspect_is_carried_only_where_pixels_are_not_square() -> None:
    """An anamorphic source's pixel shape rides in a 1.10 header, so a decoder shows the
    crop as wide as the source showed it; a square-pixel stream is the 1.9 header, byte for
    byte, which readers before the field read."""
    wide = StreamHeader(**_with(HEADER, pixel_aspect=Fraction(128, 117)))
    raw = wide.to_bytes()
    h, size, version = parse_header(raw)
    assert version == (1, 10) and h == wide and size == len(HEADER.to_bytes()) + 4
    assert raw[-8:-4] == struct.pack("<HH", 128, 117)
    assert parse_header(HEADER.to_bytes())[2] == (1, 9)
    # a 1.9 reader stops after the restorer and skips the rest of a later header: the same
    # fields up to there (minor version, length and CRC aside) as the square header's
    square = HEADER.to_bytes()
    assert raw[:5] + raw[8:-8] == square[:5] + square[8:-4]
    for num, den in ((0, 1), (1, 0), (11, 1), (1, 11)):
        body = bytearray(raw[:-8] + struct.pack("<HH", num, den))
        with pytest.raises(BitstreamError, match=rf"pixel aspect {num}:{den} out of range"):
            parse_header(_sealed(body))
        if num and den:
            with pytest.raises(BitstreamError, match="pixel aspect"):
                StreamHeader(**_with(HEADER, pixel_aspect=Fraction(num, den))).to_bytes()
    with pytest.raises(BitstreamError, match="truncated .fcv header in pixel aspect"):
        parse_header(_sealed(bytearray(raw[:-6])))


def test_an_avatar_is_marked_so_a_receiver_can_say_whom_it_shows() -> None:
    """An avatar's stream says so in a 1.11 header (after a square pixel aspect); every
    other stream keeps its 1.9 or 1.10 header, byte for byte, which earlier readers read
    (and they read the 1.11 header as far as they know it)."""
    avatar = StreamHeader(**_with(HEADER, avatar=True))
    raw = avatar.to_bytes()
    h, size, version = parse_header(raw)
    assert version == (1, 11) and h == avatar and h.avatar
    assert size == len(HEADER.to_bytes()) + 5 and raw[-9:-4] == struct.pack("<HHB", 1, 1, 1)
    square = HEADER.to_bytes()
    assert raw[:5] + raw[8:-9] == square[:5] + square[8:-4]
    assert not parse_header(square)[0].avatar and parse_header(square)[2] == (1, 9)
    wide = StreamHeader(**_with(HEADER, pixel_aspect=Fraction(128, 117)))
    assert parse_header(wide.to_bytes())[2] == (1, 10)
    assert not parse_header(wide.to_bytes())[0].avatar
    # 0 marks the sender's own face (no writer here writes it: their streams stay 1.9/1.10)
    own = bytearray(raw[:-5] + b"\x00")
    assert parse_header(_sealed(own))[0] == HEADER
    with pytest.raises(BitstreamError, match=r"avatar mark 2 out of range \(0: the sender's "):
        parse_header(_sealed(bytearray(raw[:-5] + b"\x02")))
    with pytest.raises(BitstreamError, match="truncated .fcv header in avatar mark"):
        parse_header(_sealed(bytearray(raw[:-5])))


def test_header_crc_and_length_checks() -> None:
    data = bytearray(HEADER.to_bytes())
    data[12] ^= 0x10
    with pytest.raises(BitstreamError, match="CRC"):
        parse_header(bytes(data))
    with pytest.raises(BitstreamError, match="truncated"):
        parse_header(HEADER.to_bytes()[:-1])


def test_newer_minor_version_fields_are_skipped() -> None:
    data = HEADER.to_bytes()[:-4]
    square = struct.pack("<HHB", 1, 1, 0)  # the minor-10 pixel aspect, minor-11 avatar mark
    body = bytearray(data + square + b"new field")
    body[5] = VERSION_MINOR + 1  # a later minor version appended a field this build does not know
    struct.pack_into("<H", body, 6, len(body) + 4)
    h, size, version = parse_header(bytes(body) + struct.pack("<I", zlib.crc32(body)))
    assert h == HEADER and size == len(body) + 4 and version == (1, VERSION_MINOR + 1)
    # ... but the same bytes at this build's minor version are an error
    body[5] = 1
    with pytest.raises(BitstreamError, match="trailing"):
        parse_header(bytes(body) + struct.pack("<I", zlib.crc32(body)))


def test_unknown_major_version(tmp_path: Path) -> None:
    data = bytearray(HEADER.to_bytes())
    data[4] = 7
    path = tmp_path / "future.fcv"
    path.write_bytes(bytes(data))
    with pytest.raises(BitstreamError, match=r"unsupported \.fcv version 7 \(this build reads 1\)"):
        FcvReader(path)


def test_not_an_fcv_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    for content in (b"", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 50):
        path.write_bytes(content)
        with pytest.raises(NotAStream, match="not an .fcv file"):  # the wrong input
            read_fcv(path)
    path.write_bytes(b"FCD")  # the start of a stream: damage
    with pytest.raises(BitstreamError, match="truncated .fcv header in its FCDC") as e:
        read_fcv(path)
    assert not isinstance(e.value, NotAStream)
    with pytest.raises(FacecodecError, match="cannot read"):
        read_fcv(tmp_path / "missing.fcv")


# --- container -------------------------------------------------------------------------------


def test_file_round_trip_and_info(tmp_path: Path) -> None:
    path = tmp_path / "a.fcv"
    pkts = small_stream()
    write_stream(path, pkts)
    header, it = read_fcv(path)
    assert header == HEADER and list(it) == pkts
    assert not [p for p in tmp_path.iterdir() if p.name != "a.fcv"]  # no temp file left

    d = describe(path)
    assert d["version"] == f"1.{HEADER.minor}" and d["frames"] == 6 and d["frames_from"] == "END"
    assert d["damaged"] is None and d["basis_id"] == HEADER.basis_id
    assert d["duration_s"] == pytest.approx(6 * 1001 / 30000)
    sizes = [len(encode_packet(p)) for p in pkts]
    assert d["keyframe_bytes"] == sizes[0]
    assert d["packets"]["MOTION"] == {
        "count": 2,
        "bytes": sum(sizes[2:4]),
        "kbps": pytest.approx(sum(sizes[2:4]) * 8 / d["duration_s"] / 1000),
    }
    assert d["motion_kbps"] == pytest.approx(sum(sizes[1:4]) * 8 / d["duration_s"] / 1000)
    assert d["total_kbps"] == pytest.approx(path.stat().st_size * 8 / d["duration_s"] / 1000)
    text = format_info(d)
    assert "KEYFRAME" in text and "intact" in text
    assert d["ended"] and d["drawable"]


def test_frames_counted_without_end_and_unknown_types_skipped(tmp_path: Path) -> None:
    path = tmp_path / "b.fcv"
    pkts = small_stream()[:-1]
    pkts.insert(2, Packet(99, 50, 1, b"from the future"))
    write_stream(path, pkts)
    reader = FcvReader(path)
    assert list(reader) == [p for p in pkts if p.known]
    assert [(s.index, s.type, s.seq) for s in reader.skipped] == [(2, 99, 50)]
    d = describe(path)
    assert d["frames"] == 6 and d["frames_from"] == "counted"
    assert d["packets"]["type 99"]["count"] == 1 and d["skipped_unknown"] == 1
    assert not d["ended"] and d["drawable"] and d["damaged"] is None
    assert format_info(d).splitlines()[-1].startswith("  unfinished ")


@pytest.mark.parametrize("kept", [0, 1], ids=["header-only", "keyframe-only"])
def test_info_calls_a_stream_with_no_frame_to_draw_empty(kept: int, tmp_path: Path) -> None:
    """A header, or a header and a keyframe, is whole but has nothing to draw: decode
    refuses it, so info does not call it intact."""
    path = tmp_path / "e.fcv"
    write_stream(path, small_stream()[:kept])
    d = describe(path)
    assert d["frames"] == 0 and not d["drawable"] and d["damaged"] is None
    assert format_info(d).splitlines()[-1].startswith("  empty "), format_info(d)


def test_many_unknown_packets_are_counted_not_each_kept(tmp_path: Path) -> None:
    """A record for each unknown packet made a file of 13-byte packets take 15 times its
    size in memory; they are counted by type, the first MAX_SKIPPED_LISTED listed."""
    from facecodec.bitstream.container import MAX_SKIPPED_LISTED

    path = tmp_path / "c.fcv"
    pkts = small_stream()[:-1]
    n = MAX_SKIPPED_LISTED + 500
    write_stream(path, [*pkts[:2], *(Packet(99, i, 1, b"x") for i in range(n)), *pkts[2:]])
    reader = FcvReader(path)
    assert list(reader) == [p for p in pkts if p.known]
    assert len(reader.skipped) == MAX_SKIPPED_LISTED and reader.skipped[0].index == 2
    size = reader.skipped[0].size
    assert reader.skipped_types == {99: [n, n * size]}
    d = describe(path)
    assert d["skipped_unknown"] == n and d["packets"]["type 99"] == {
        "count": n, "bytes": n * size, "kbps": pytest.approx(n * size * 8 / d["duration_s"] / 1000)}


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    full = tmp_path / "full.fcv"
    pkts = small_stream()
    write_stream(full, pkts)
    data = full.read_bytes()
    header_len = len(HEADER.to_bytes())
    ends = [header_len]
    for p in pkts:
        ends.append(ends[-1] + len(encode_packet(p)))
    cut = tmp_path / "cut.fcv"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        if n < header_len:
            with pytest.raises(BitstreamError):
                FcvReader(cut)
            continue
        got: list[Packet] = []
        complete = sum(1 for e in ends[1:] if e <= n)
        if n in ends:  # cut on a packet boundary: a clean, shorter stream
            got = list(FcvReader(cut))
        else:
            with pytest.raises(BitstreamError, match=rf"packet {complete} .*truncated"):
                for p in FcvReader(cut):
                    got.append(p)
        assert got == pkts[:complete]


def test_damage_is_named_after_the_good_packets(tmp_path: Path) -> None:
    path = tmp_path / "d.fcv"
    pkts = small_stream()
    write_stream(path, pkts)
    data = bytearray(path.read_bytes())
    start = len(HEADER.to_bytes()) + sum(len(encode_packet(p)) for p in pkts[:2])
    data[start + 10] ^= 0x01  # a payload byte of packet 2 (MOTION, seq 2)
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(BitstreamError) as err:
        for p in FcvReader(path):
            got.append(p)
    assert got == pkts[:2]
    assert str(err.value) == f"packet 2 (MOTION, seq 2, at byte {start}): CRC mismatch"
    d = describe(path)
    assert d["damaged"] == str(err.value) and d["packets"]["KEYFRAME"]["count"] == 1
    assert "damaged" in format_info(d)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_reader_on_random_packet_bytes(
    tmp_path_factory: pytest.TempPathFactory, tail: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.fcv"
    good = b"".join(encode_packet(p) for p in small_stream()[:2])
    for body in (tail, good + tail, good[:-3] + tail):
        path.write_bytes(HEADER.to_bytes() + body)
        got = []
        try:
            for p in FcvReader(path):
                got.append(p)
        except BitstreamError:
            pass
        if body.startswith(good):
            assert got[:2] == small_stream()[:2]


def test_data_after_end_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "e.fcv"
    write_stream(path, small_stream())
    with path.open("ab") as f:
        f.write(b"junk")
    with pytest.raises(BitstreamError, match="after the END packet"):
        list(FcvReader(path))


def test_writer_leaves_no_file_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "out.fcv"
    with pytest.raises(RuntimeError):
        with FcvWriter(path) as w:
            w.write_header(HEADER)
            w.write_packet(small_stream()[0])
            raise RuntimeError("encoder failed")
    assert list(tmp_path.iterdir()) == []
    # an existing file survives an aborted rewrite untouched
    write_stream(path, small_stream())
    before = path.read_bytes()
    w = FcvWriter(path)
    w.write_header(HEADER)
    w.abort()
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_outputs_get_the_umask_mode_not_the_temporary_files(tmp_path: Path) -> None:
    import os
    import stat

    import numpy as np

    from facecodec.capture.video import VideoWriter

    old = os.umask(0o027)
    try:
        write_stream(tmp_path / "a.fcv", small_stream())
        with VideoWriter(tmp_path / "a.mp4", HEADER.fps, 64, 64) as v:
            v.write(np.zeros((64, 64, 3), np.uint8))
    finally:
        os.umask(old)
    for name in ("a.fcv", "a.mp4"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def test_writer_misuse(tmp_path: Path) -> None:
    path = tmp_path / "m.fcv"
    w = FcvWriter(path)
    with pytest.raises(FacecodecError, match="header before packets"):
        w.write_packet(small_stream()[0])
    with pytest.raises(FacecodecError, match="no stream header"):
        w.close()
    assert list(tmp_path.iterdir()) == []
    with FcvWriter(path) as w:
        w.write_header(HEADER)
        with pytest.raises(FacecodecError, match="twice"):
            w.write_header(HEADER)
        with pytest.raises(BitstreamError):
            w.write_packet(Packet(PacketType.MOTION, 70000, 0, b""))
    assert list(FcvReader(path)) == []
    with pytest.raises(FacecodecError, match="cannot write"):
        FcvWriter(tmp_path / "no" / "such" / "dir.fcv")


def test_the_hold_budget_bounds_the_lead_and_the_frames_held_after_it() -> None:
    """The rule `decode` and `info` share: up to MAX_LEAD_S of frames before the first one
    drawn, then MAX_HOLD_S of held frames in all, however they are split into gaps."""
    fps = 25.0
    lead, hold = round(MAX_LEAD_S * fps), round(MAX_HOLD_S * fps)
    b = HoldBudget(fps)
    assert b.hold_to(lead, "frame") == lead  # an hour before the face: kept
    b.drawn(lead)
    assert b.next == lead + 1 and b.hold_to(lead, "frame") == 0  # not later: nothing held
    for _ in range(3):  # gaps of a third each add up to the bound
        start = b.next
        assert b.hold_to(start + hold // 3, "frame") == hold // 3
        b.drawn(start + hold // 3)
    with pytest.raises(BitstreamError, match=r"after frame \d+: \d+ frames with no motion "
                       r"\(damaged timing\), counted since the face appeared"):
        b.hold_to(b.next + hold - 3 * (hold // 3) + 1, "the END packet's count of")
    before = b.next
    assert b.hold_to(before + hold - 3 * (hold // 3), "frame") == hold - 3 * (hold // 3)
    with pytest.raises(BitstreamError):  # nothing is left
        b.hold_to(b.next + 1, "frame")
    fresh = HoldBudget(fps)
    with pytest.raises(BitstreamError, match=f"frame {lead + 1} with no frame drawn before it: "
                       f"{lead + 1} frames with no motion"):
        fresh.hold_to(lead + 1, "frame")
    assert fresh.next == 0 and not fresh.started  # a refusal changes nothing


@pytest.mark.parametrize(("total", "damaged"), [(0, None), (100, None), (2**32 - 1, "past")])
def test_info_on_a_stream_of_an_end_packet_alone(tmp_path: Path, total: int,
                                                 damaged: str | None) -> None:
    """With no motion there is nothing to hold: an END count within MAX_HOLD_S of nothing
    is taken, a larger one is damage (as before the decoder's hold count was shared)."""
    path = tmp_path / "end.fcv"
    path.write_bytes(HEADER.to_bytes() + encode_packet(
        Packet(PacketType.END, 0, total, EndPayload(total).to_bytes())))
    d = describe(path)
    if damaged is None:
        assert d["damaged"] is None and d["frames"] == total
    else:
        assert d["damaged"] is not None and damaged in d["damaged"]
