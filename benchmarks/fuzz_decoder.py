"""A long fuzzing run of the file decoder on mutated real streams (the tests run short ones).

    .venv/bin/facecodec encode CLIP -o A.fcv --target-kbps 8      # streams to mutate
    .venv/bin/python benchmarks/fuzz_decoder.py A.fcv [B.fcv ...] [--minutes 10] [--seed 1]
        [--findings out/fuzz]

Each case takes one of the streams and flips bytes, truncates it, inserts random bytes,
deletes a run or repeats one, then decodes it in this process with the warp or the neural
renderer. A decoder may refuse a stream only with the project's one-line errors; any other
exception, or a decode running past --hang-s, is a finding: its bytes are saved under
--findings and the exit status is 1.
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

from facecodec.codec.decoder import decode_file
from facecodec.errors import FacecodecError


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("streams", type=Path, nargs="+")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hang-s", type=int, default=120, help="a decode longer than this hangs")
    p.add_argument("--findings", type=Path, default=Path("out/fuzz"))
    a = p.parse_args()
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(a.seed)
    sources = [s.read_bytes() for s in a.streams]
    a.findings.mkdir(parents=True, exist_ok=True)
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


if __name__ == "__main__":
    sys.exit(main())
