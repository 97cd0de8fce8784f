"""A long fuzzing run of the file decoder on mutated real streams (the tests run short ones).

    .venv/bin/facecodec encode CLIP -o A.fcv --target-kbps 8      # streams to mutate
    .venv/bin/python benchmarks/fuzz_decoder.py A.fcv [B.fcv ...] [--minutes 10] [--seed 1]
        [--findings out/fuzz] [--call]

Each case takes one of the streams and flips bytes, truncates it, inserts random bytes,
deletes a run or repeats one, then decodes it in this process with the warp or the neural
renderer. A decoder may refuse a stream only with the project's one-line errors; any other
exception, or a decode running past --hang-s, is a finding: its bytes are saved under
--findings and the exit status is 1.

With --call each case is a call's receiver instead (codec.stream.StreamDecoder, which
draws while the restorer works in the background): the stream's header and packets go in
one by one as a peer would send them, about 10 % of packets mutated, 5 % lost, 5 % sent
twice and 1 header in 10 mutated, half the packets drawn and 3 in 10 in a hurry (as a
late packet is); the receiver may refuse a packet (or a header) only with
BitstreamError, as the call does, and goes on. A finding's traceback is saved with the
case's seed, from which `call_case` replays it.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from facecodec.bitstream.container import read_fcv
from facecodec.bitstream.packets import encode_packet
from facecodec.cli import run_guarded
from facecodec.codec.decoder import decode_file
from facecodec.codec.stream import StreamDecoder
from facecodec.errors import BitstreamError, FacecodecError, OneLineParser
from facecodec.files import make_folder, path_arg


class Hang(Exception):
    pass


def _alarm(*_: object) -> None:
    raise Hang()


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.randrange(5)
    i = rng.randrange(len(b))
    j = min(len(b), i + rng.randint(1, 200))
    if op == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:
        del b[i:]
    elif op == 2:
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    elif op == 3:
        del b[i:j]
    else:
        k = rng.randrange(len(b))
        b[k:k] = b[i:j]
    return bytes(b)


def call_case(header: bytes, packets: list[bytes], rng: random.Random,
              renderer: str) -> int:
    """One call's receiver fed a damaged packet sequence, some packets drawn, some in a
    hurry: how many it refused."""
    if rng.random() < 0.1:
        header = mutate(header, rng)
    sent: list[bytes] = []
    for data in packets:
        r = rng.random()
        if r < 0.05:
            continue
        sent += [mutate(data, rng)] if r < 0.15 else [data, data] if r < 0.2 else [data]
    try:
        decoder = StreamDecoder(header, renderer)
    except BitstreamError:
        return 1
    refused = 0
    for data in sent:
        try:
            decoder.push(data, draw=rng.random() < 0.5, hurry=rng.random() < 0.3)
        except BitstreamError:
            refused += 1
    return refused


def main() -> int:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("streams", type=path_arg, nargs="+")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hang-s", type=int, default=120, help="a decode longer than this hangs")
    p.add_argument("--findings", type=path_arg, default=Path("out/fuzz"))
    p.add_argument("--call", action="store_true", help="fuzz a call's receiver")
    a = p.parse_args()
    if a.call:
        return fuzz_calls(a)
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(a.seed)
    sources = [s.read_bytes() for s in a.streams]
    make_folder(a.findings)
    case, out = a.findings / f"case_{a.seed}.fcv", a.findings / f"case_{a.seed}.mp4"
    end, n, found, refused, damaged = time.monotonic() + a.minutes * 60, 0, 0, 0, 0
    while time.monotonic() < end:
        data = mutate(rng.choice(sources), rng)
        case.write_bytes(data)
        n += 1
        signal.alarm(a.hang_s)
        try:
            r = decode_file(case, out, renderer=rng.choice(["warp", "neural"]))
            damaged += r.error is not None
        except FacecodecError:
            refused += 1
        except Hang:
            found += 1
            (a.findings / f"hang_{a.seed}_{n}.fcv").write_bytes(data)
            print(f"case {n}: decode ran past {a.hang_s} s", flush=True)
        except Exception:  # noqa: BLE001 - anything else is what this run looks for
            found += 1
            (a.findings / f"crash_{a.seed}_{n}.fcv").write_bytes(data)
            print(f"case {n}: {traceback.format_exc()}", flush=True)
        finally:
            signal.alarm(0)
            out.unlink(missing_ok=True)
    case.unlink(missing_ok=True)
    print(f"{n} mutated streams in {a.minutes:g} min: {refused} refused with a one-line "
          f"error, {damaged} decoded up to their damage, {n - refused - damaged - found} "
          f"decoded whole, {found} findings")
    return 1 if found else 0


def fuzz_calls(a: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(a.seed)
    streams = []
    for path in a.streams:
        fcv_header, fcv_packets = read_fcv(path)
        streams.append((fcv_header.to_bytes(), [encode_packet(p) for p in fcv_packets]))
    make_folder(a.findings)
    end, n, found, refused_cases, packets_refused = time.monotonic() + a.minutes * 60, 0, 0, 0, 0
    while time.monotonic() < end:
        header, packets = rng.choice(streams)
        n += 1
        signal.alarm(a.hang_s)
        seed, renderer = rng.getrandbits(64), rng.choice(["warp", "neural"])
        try:
            refused = call_case(header, packets, random.Random(seed), renderer)
            refused_cases += refused > 0
            packets_refused += refused
        except Exception as exc:  # noqa: BLE001 - anything else is what this run looks for
            found += 1
            kind = "hang" if isinstance(exc, Hang) else "crash"
            print(f"case {n}: {traceback.format_exc()}", flush=True)
            (a.findings / f"call_{kind}_{a.seed}_{n}.txt").write_text(
                f"stream {streams.index((header, packets))}, seed {seed}, {renderer}\n"
                + traceback.format_exc())
        finally:
            signal.alarm(0)
    print(f"{n} damaged calls in {a.minutes:g} min: {refused_cases} had packets (or a header) "
          f"refused with BitstreamError ({packets_refused} in all), {found} findings")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
