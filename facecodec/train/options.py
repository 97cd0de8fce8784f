"""Command-line options, seeding and the training record shared by the trainers: the same
names mean the same thing in each."""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecodec.errors import OneLineParser
from facecodec.files import check_writable, count, make_folder, path_arg
from facecodec.train.splits import load_split


def training_parser(
    prog: str, doc: str | None, *, steps: int, minutes: float, batch: int, patch: int,
    weights: Path,
) -> argparse.ArgumentParser:
    """--data --out --steps --time-limit-min --batch --patch --lr --val-every --threads --seed
    --max-clips --export, with this trainer's defaults; add its own options to the result."""
    ap = OneLineParser(prog=prog, description=doc)
    ap.add_argument("--data", type=path_arg, required=True)
    ap.add_argument("--out", type=path_arg, required=True)
    ap.add_argument("--steps", type=count, default=steps)
    ap.add_argument("--time-limit-min", type=_amount, default=minutes)
    ap.add_argument("--batch", type=count, default=batch)
    ap.add_argument("--patch", type=count, default=patch)
    ap.add_argument("--lr", type=_amount, default=1e-3)
    ap.add_argument("--val-every", type=count, default=250)
    ap.add_argument("--threads", type=count, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-clips", type=count, default=None)
    ap.add_argument("--export", type=path_arg, default=None,
                    help=f"also write the best weights here (the shipped ones: {weights})")
    return ap


def _amount(text: str) -> float:
    """A finite number above 0."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return x


def prepare_run(a: argparse.Namespace, splits: bool = True) -> np.random.Generator:
    """Check what a run needs before its data is prepared (minutes): the splits read (unless
    not `splits`: data from elsewhere), the run folder made and --export writable, each or
    one line; then seed (`seeded`)."""
    for split in ("train", "validation") if splits else ():
        load_split(a.data, split)
    make_folder(a.out)
    if a.export is not None:
        check_writable(a.export)
    return seeded(a)


def seeded(a: argparse.Namespace) -> np.random.Generator:
    """Seed torch, set its thread count, and return the trainer's numpy generator."""
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    return np.random.default_rng(a.seed)


def hardware(device: torch.device | str = "cpu", world: int = 1) -> str:
    """What a run trained on, for the weights' training record (`world` processes)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    return (f"{world} x CPU ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} cores)")


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command a run was started with, for the weights' training record."""
    return f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv)


def save_best(
    save: Callable[[Any, Path, Mapping[str, object]], str], net: Any, out: Path,
    export: Path | None, meta: Mapping[str, object],
) -> str:
    """`out`/best.safetensors (and `export`, when asked) with the training record; the id."""
    mid = save(net, out / "best.safetensors", meta)
    if export is not None:
        save(net, export, meta)
    return mid
