"""Train the neural renderer's refiner: `facecodec train --config C --data D --out RUN/`.

One loop for CPU, one GPU, or several processes under `torchrun` (DistributedDataParallel,
gloo on CPU, nccl on GPUs). Each rank draws its own pairs from its own seeded generator;
rank 0 validates, logs (train.csv, val.csv) and checkpoints (last.safetensors + optim.pt +
state.json, and best.safetensors by validation PSNR; with an adversarial loss also
disc.safetensors + optim_disc.pt). Re-running with the same --out
resumes from the last checkpoint: weights, optimiser, step count and the pair sampler's
random state, so a stopped run continues where it was. With `workers` the pairs come from
worker processes, each seeded by (seed, worker, start step): a resumed run then draws new
pairs rather than the saved sampler's next ones. On a GPU machine without PyAV or MediaPipe's
tracker, train from a cache built elsewhere and carried by `facecodec.train.cache_pack`.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from facecodec.errors import FacecodecError
from facecodec.files import path_arg
from facecodec.render.neural import RefinerConfig, RefinerNet, model_id_of, save_weights
from facecodec.train.adversarial import PatchDiscriminator, discriminator_loss, generator_terms
from facecodec.train.dataset import (
    SIZE,
    PairSampler,
    PairStream,
    Sample,
    build_cache,
    stack,
    validation_pairs,
)
from facecodec.train.losses import MIN_PATCH, LossWeights, refiner_loss
from facecodec.train.options import hardware
from facecodec.train.splits import load_split

DEFAULT_CACHE = Path("cache/refiner")


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 20000
    time_limit_min: float = 0.0  # stop (and checkpoint) after this long; 0: no limit
    batch: int = 4
    patch: int = 192
    lr: float = 2e-4
    lr_final: float = 0.1  # cosine decay to this fraction of lr at `steps`
    # True: the cosine runs over time_limit_min too, whichever ends first, so a run
    # limited by time ends decayed on any hardware (a GPU reaches far more steps).
    lr_by_time: bool = False
    # Processes drawing training pairs (0: the training loop draws them itself). A GPU
    # needs many: one draws 45-100 a second (benchmarks/training_pairs.py).
    workers: int = 0
    log_every: int = 10
    val_every: int = 200
    val_per_clip: int = 6
    ckpt_every_min: float = 3.0
    max_frames: int = 150
    stride: int = 2
    max_clips: int | None = None
    threads: int = 2
    init: str | None = None  # weights to start a fresh run from (a previous stage)
    # Keyframe quality range the training references are coded at (None: uncoded crops).
    ref_quality: tuple[int, int] | None = None
    loss: LossWeights = field(default_factory=LossWeights)
    # The discriminator (with loss.adversarial or feature_matching): its learning rate (None:
    # lr's), the steps it trains alone before the refiner feels it, and the square around
    # the target's mouth it judges (0: the whole patch).
    disc_lr: float | None = None
    disc_warmup: int = 0
    disc_crop: int = 0
    # False: no loss moves the blend mask (only its shared features drift), so a fine-tune
    # changes what is drawn where the previous weights drew.
    train_mask: bool = True
    # Draw again pairs whose mouth uncovers fewer half-res px than this (the opening gate's
    # lower end: below it a gated refiner gets no gradient). 0: every pair.
    min_opening: float = 0.0
    model: RefinerConfig = field(default_factory=RefinerConfig)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """The config in `path`; FacecodecError (one line) for a missing or malformed file or a
        value out of its range."""
        try:
            d = _only_fields(json.loads(path.read_text()), "config", cls)
            raw_model = _only_fields(d.pop("model", {}), "model", RefinerConfig)
            problem = _model_problem(raw_model)  # before RefinerConfig converts the values
            if problem:
                raise ValueError(problem)
            loss = LossWeights(**_only_fields(d.pop("loss", {}), "loss", LossWeights))
            model = RefinerConfig.from_dict(raw_model)
            cfg = cls(**d, loss=loss, model=model)
            problem = cfg.problem()
        except OSError as e:
            raise FacecodecError(f"bad training config {path}: {e.strerror}") from None
        except RecursionError:
            raise FacecodecError(f"bad training config {path}: nested too deeply") from None
        except (UnicodeDecodeError, ValueError, TypeError) as e:
            raise FacecodecError(f"bad training config {path}: {e}") from None
        except FacecodecError as e:
            raise FacecodecError(f"bad training config {path}: {e}") from None
        if problem:
            raise FacecodecError(f"bad training config {path}: {problem}")
        return cfg

    def problem(self) -> str | None:
        """What makes this config unusable, in a phrase; None when nothing does."""
        for name, (lo, hi) in _WHOLE.items():
            v = getattr(self, name)
            if not _whole(v) or not lo <= v <= hi:
                return f"{name} must be a whole number in {lo}..{hi} (got {v!r})"
        for name, (low, high) in _REAL.items():
            v = getattr(self, name)
            if not _real(v) or not low <= v <= high:
                return f"{name} must be a number in {low:g}..{high:g} (got {v!r})"
        if self.disc_lr is not None and not (_real(self.disc_lr)
                                             and _REAL["lr"][0] <= self.disc_lr <= _REAL["lr"][1]):
            return f"disc_lr must be null or a number in {_REAL['lr'][0]:g}..{_REAL['lr'][1]:g}"
        if self.max_clips is not None and not (_whole(self.max_clips) and self.max_clips >= 1):
            return "max_clips must be null or a whole number >= 1"
        if self.init is not None and not (isinstance(self.init, str) and self.init):
            return "init must be null or a weights file's path"
        for name in ("lr_by_time", "train_mask"):
            if not isinstance(getattr(self, name), bool):
                return f"{name} must be true or false"
        rq = self.ref_quality
        if rq is not None and not (isinstance(rq, list | tuple) and len(rq) == 2
                                   and all(_whole(q) for q in rq) and 0 <= rq[0] <= rq[1] <= 100):
            return ("ref_quality must be null or [low, high] keyframe qualities, "
                    "0 <= low <= high <= 100")
        if self.patch % 16:
            return f"patch must be a multiple of 16 (got {self.patch})"
        if self.model.opening[1] > 0 and self.patch != SIZE:
            # The gate counts the opening relative to the cond it sees: on a patch it would
            # count more than the renderer does on the whole frame.
            return f"model.opening needs whole frames (patch {SIZE})"
        w = self.loss
        for name in ("l1", "ms_ssim", "region", "mask", "adversarial", "feature_matching"):
            v = getattr(w, name)
            if not _real(v) or not 0 <= v <= MAX_LOSS_WEIGHT:
                return f"loss.{name} must be a number in 0..{MAX_LOSS_WEIGHT:g} (got {v!r})"
        if not _whole(w.scales) or not 1 <= w.scales or self.patch >> (w.scales - 1) < 8:
            return f"loss.scales must be a whole number from 1 to what patch {self.patch} halves to"
        return _model_problem(asdict(self.model))


# Inclusive ranges of the config's whole numbers and of its other numbers: anything outside
# fails deep in torch, divides by zero, or trains to NaN weights.
_WHOLE: dict[str, tuple[int, int]] = {
    "seed": (0, 2**32 - 1), "steps": (1, 10**9), "batch": (1, 4096), "workers": (0, 256),
    "log_every": (1, 10**9), "val_every": (1, 10**9), "val_per_clip": (1, 10**4),
    "max_frames": (2, 10**6), "stride": (1, 10**3), "threads": (1, 1024),
    "disc_warmup": (0, 10**9), "disc_crop": (0, SIZE), "patch": (MIN_PATCH, SIZE)}
_REAL: dict[str, tuple[float, float]] = {
    "time_limit_min": (0.0, 1e7), "lr": (0.0, 1.0), "lr_final": (0.0, 1.0),
    "ckpt_every_min": (0.0, 1e7), "min_opening": (0.0, float(SIZE * SIZE))}
MAX_LOSS_WEIGHT = 1e4
MAX_WIDTH = 1024


def _only_fields(d: object, name: str, kind: type) -> dict[str, Any]:
    """`d`, which must be a JSON object of `kind`'s fields (`name`: the config's word for it)."""
    if not isinstance(d, dict):
        raise ValueError(f"{name} must be a JSON object")
    unknown = set(d) - {f.name for f in fields(kind)}
    if unknown:
        raise ValueError(f"unknown {name} keys {sorted(unknown)}")
    return d


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _model_problem(m: dict[str, object]) -> str | None:
    """The refiner's settings as written: of the kinds RefinerConfig expects."""
    widths = m.get("widths", RefinerConfig.widths)
    if not (isinstance(widths, list | tuple) and len(widths) == 4
            and all(_whole(x) and 1 <= x <= MAX_WIDTH for x in widths)):
        return f"model.widths must be 4 whole numbers in 1..{MAX_WIDTH}"
    for name in ("residual", "region_eyes", "full_res", "disocclusion"):
        if not isinstance(m.get(name, False), bool):
            return f"model.{name} must be true or false"
    region = m.get("region", 0)
    if not _whole(region) or not 0 <= region <= SIZE // 2:  # type: ignore[operator]
        return f"model.region must be a whole number in 0..{SIZE // 2}"
    if not _real(m.get("mask_floor", 0.0)):
        return "model.mask_floor must be a number"
    return None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=path_arg, required=True, help="JSON training config")
    p.add_argument("--data", type=path_arg, required=True, help="data dir with splits.json")
    p.add_argument("--out", type=path_arg, required=True, help="run dir (resumed if it exists)")
    p.add_argument("--cache", type=path_arg, default=DEFAULT_CACHE, help="pair cache dir")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def train_main(args: argparse.Namespace) -> int:
    cfg = TrainConfig.load(args.config)
    if not (args.data / "splits.json").is_file():
        raise FacecodecError(f"no splits.json in {args.data}")
    for split in ("train", "validation"):
        load_split(args.data, split)  # a malformed file is refused before anything is made
    world, rank = _launch_number("WORLD_SIZE", 1), _launch_number("RANK", 0)
    device = _device(args.device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", _launch_number("LOCAL_RANK", 0))
            torch.cuda.set_device(device)
    try:
        train(cfg, args.data, args.out, args.cache, device, rank, world, not args.quiet)
    finally:
        if world > 1:
            dist.destroy_process_group()
    return 0


def _launch_number(name: str, default: int) -> int:
    """A process number torchrun sets in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    value = os.environ.get(name, str(default))
    if not value.isdigit() or (name == "WORLD_SIZE" and int(value) < 1):
        raise FacecodecError(f"environment variable {name}={value!r} is not a process count "
                             "or number")
    return int(value)


def _device(name: str) -> torch.device:
    """The device `--device` names: auto (a GPU when there is one), cpu or cuda[:N]."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise FacecodecError(f"unknown device {name!r} (auto, cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FacecodecError(f"--device {name}: no CUDA GPU is available here")
    return device


def _evaluate(net: RefinerNet, samples: list[Sample], device: torch.device) -> dict[str, float]:
    """Mean RGB PSNR and MS-SSIM of the warp and of the refined frame against the target."""
    from pytorch_msssim import ms_ssim

    net.eval()
    res: dict[str, list[float]] = {"psnr_warp": [], "psnr_refined": [], "ssim_warp": [],
                                   "ssim_refined": []}
    with torch.inference_mode():
        for i in range(0, len(samples), 8):
            x, c, t = (v.to(device) for v in stack(samples[i:i + 8]))
            out = net(x, c)
            for name, y in (("warp", x[:, :3]), ("refined", out)):
                y = y.mul(255).round().div(255)  # score what is shown: 8-bit frames
                mse = (y - t).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
                res[f"psnr_{name}"] += (10 * torch.log10(1 / mse)).tolist()
                res[f"ssim_{name}"] += ms_ssim(y, t, data_range=1.0, size_average=False).tolist()
    net.train()
    return {k: float(np.mean(v)) for k, v in res.items()}


def _resume_state(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The run's state.json, checked; the run must have trained the model `cfg` describes."""
    try:
        state = json.loads((out / "state.json").read_text())
        if not (isinstance(state, dict) and isinstance(state.get("step"), int)
                and isinstance(state.get("elapsed_s"), int | float)
                and isinstance(state.get("best_psnr"), int | float)
                and isinstance(state.get("rng"), list)):
            raise ValueError("not a training state")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FacecodecError(f"cannot resume {out}: state.json is damaged ({e}); remove the "
                             "folder to start afresh") from None
    try:
        saved = json.loads((out / "config.json").read_text()).get("model")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        saved = None  # the weights' own shapes are checked when they load
    if not isinstance(saved, dict):
        saved = None
    try:  # read as the config reads it: a field added since has its default
        other = saved is not None and RefinerConfig.from_dict(saved) != cfg.model
    except (FacecodecError, TypeError, ValueError):
        other = True
    if other:
        raise FacecodecError(f"cannot resume {out}: it trains another model config (its "
                             "config.json); use a new --out for this one")
    return state


# A checkpoint's files, in the order they are renamed into place: state.json's rename, the
# last, commits the checkpoint.
CHECKPOINT_FILES = ("last.safetensors", "last.json", "optim.pt", "disc.safetensors",
                    "optim_disc.pt", "best.safetensors", "best.json", "state.json")


def _staged(out: Path, name: str) -> Path:
    """Where checkpoint file `name` is written before it is renamed into place (a weights
    file's .json sidecar lands beside it under the matching name)."""
    final = out / name
    return out / f".{final.stem}.tmp{final.suffix}"


def _commit_staged(out: Path) -> None:
    for name in CHECKPOINT_FILES:
        tmp = _staged(out, name)
        if tmp.exists():
            tmp.replace(out / name)


def _drop_staged(out: Path) -> None:
    for name in CHECKPOINT_FILES:
        tmp = _staged(out, name)
        for leftover in (tmp, tmp.with_suffix(".tmp")):  # and save_weights' own temporary
            leftover.unlink(missing_ok=True)


def _settle_checkpoint(out: Path) -> None:
    """Complete or discard a checkpoint a stopped run was writing: with its state.json
    written every file of it was, and the renames are finished; without, it is dropped and
    the checkpoint before stands."""
    if _staged(out, "state.json").exists():
        _commit_staged(out)
    else:
        _drop_staged(out)


def _init_weights(path: str) -> dict[str, torch.Tensor]:
    """The tensors of the config's `init` file (a previous stage's weights)."""
    try:
        return load_file(path)
    except (OSError, SafetensorError) as e:
        raise FacecodecError(f"init weights {path}: not readable safetensors "
                             f"({getattr(e, 'strerror', None) or e})") from None


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep the log rows up to `step`."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(kept) == len(rows) or not rows:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    tmp.replace(path)


def _append_csv(path: Path, row: dict[str, float | int]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def train(
    cfg: TrainConfig, data_dir: Path, out: Path, cache: Path, device: torch.device,
    rank: int = 0, world: int = 1, progress: bool = True,
) -> dict[str, float]:
    """Run (or resume) training; returns rank 0's last validation scores ({} elsewhere)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    main = rank == 0
    state_path = out / "state.json"
    # Everything that can be refused is, before the run folder is made or touched.
    if out.exists() and not out.is_dir():
        raise FacecodecError(f"cannot use {out} as the run folder: it is a file")
    if main and out.is_dir():
        _settle_checkpoint(out)
    state = _resume_state(out, cfg) if state_path.exists() else None
    init = _init_weights(cfg.init) if cfg.init and state is None else None
    if main:
        train_clips = build_cache(data_dir, "train", cache, cfg.max_frames, cfg.stride,
                                  cfg.max_clips, progress)
        val_clips = build_cache(data_dir, "validation", cache, cfg.max_frames, cfg.stride,
                                cfg.max_clips, progress)
    if world > 1:
        dist.barrier()  # rank 0 built the cache; the others only read it
    if not main:  # rank 0 built it (and named the clips it skipped)
        train_clips = build_cache(data_dir, "train", cache, cfg.max_frames, cfg.stride,
                                  cfg.max_clips, False, build=False)
    rq = (int(cfg.ref_quality[0]), int(cfg.ref_quality[1])) if cfg.ref_quality else None
    try:
        sampler = PairSampler(train_clips, cfg.seed * 1000 + rank, cfg.patch, rq,
                              cfg.min_opening)
    except ValueError:
        raise FacecodecError(f"no train clip gives a pair of frames of one face crop in "
                             f"{data_dir} (max_frames {cfg.max_frames}, stride {cfg.stride})"
                             ) from None
    val_samples = list(validation_pairs(val_clips, cfg.val_per_clip)) if main else []
    if main and not val_samples:  # best.safetensors is chosen by validation
        raise FacecodecError(f"no validation clip gives a pair of frames of one face crop in "
                             f"{data_dir} (max_frames {cfg.max_frames}, stride {cfg.stride})")
    net = RefinerNet(cfg.model).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    # The discriminator and its optimiser exist together or not at all.
    gan: tuple[PatchDiscriminator, torch.optim.Adam] | None = None
    if cfg.loss.adversarial > 0 or cfg.loss.feature_matching > 0:
        disc = PatchDiscriminator().to(device)
        gan = disc, torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    step, elapsed, best = 0, 0.0, -math.inf
    if init is not None:
        # A previous stage may lack layers this config adds (zero-initialised, so the
        # network starts from the previous stage's output); anything else must match.
        try:
            missing, unexpected = net.load_state_dict(init, strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise FacecodecError(f"init weights {cfg.init} do not fit the model config: "
                                 f"{str(e).splitlines()[-1].strip()}") from None
        added = [k for k in missing if not k.startswith("full.")]
        if added or unexpected:
            raise FacecodecError(f"init weights {cfg.init} do not fit the model config "
                                 f"(missing {added}, unexpected {unexpected})")
    if state is not None:
        try:
            net.load_state_dict(load_file(str(out / "last.safetensors")))
            opt.load_state_dict(torch.load(out / "optim.pt", weights_only=True))
            if gan is not None and (out / "disc.safetensors").exists():
                gan[0].load_state_dict(load_file(str(out / "disc.safetensors")))
                gan[1].load_state_dict(torch.load(out / "optim_disc.pt", weights_only=True))
            rngs = state["rng"]
            if rank < len(rngs):
                sampler.rng.bit_generator.state = rngs[rank]
        except (OSError, RuntimeError, ValueError, TypeError, KeyError, SafetensorError) as e:
            detail = (str(e).strip().splitlines() or [e.__class__.__name__])[-1]
            detail = detail.split(". ")[0][:160]
            raise FacecodecError(f"cannot resume {out}: its checkpoint is damaged ({detail}); "
                                 "remove the folder to start afresh") from None
        step, elapsed, best = state["step"], state["elapsed_s"], state["best_psnr"]
        if main:  # rows logged after the checkpoint are logged again from it
            for log in ("train.csv", "val.csv"):
                _drop_rows_after(out / log, step)
    if main:  # all checked: the run folder is made (or resumed) now
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FacecodecError(f"cannot create the run folder {out}: {e.strerror}") from None
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")

    model: torch.nn.Module = net
    judge: torch.nn.Module | None = gan[0] if gan is not None else None
    if world > 1:
        model = DistributedDataParallel(net)
        judge = DistributedDataParallel(judge) if judge is not None else None


    def decay(s: int, elapsed_s: float) -> float:
        """The share of its starting rate each optimiser takes at step `s` (cosine)."""
        t = min(1.0, s / max(1, cfg.steps))
        if cfg.lr_by_time and cfg.time_limit_min > 0:
            t = max(t, min(1.0, elapsed_s / (cfg.time_limit_min * 60)))
        return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t))

    def checkpoint(scores: dict[str, float] | None) -> None:
        nonlocal best
        meta = {"steps": step, "train_time_s": round(elapsed, 1),
                "hardware": hardware(device, world), "batch": cfg.batch * world,
                "patch": cfg.patch}
        rng = [sampler.rng.bit_generator.state]
        if world > 1:
            gathered: list[object] = [None] * world
            dist.all_gather_object(gathered, rng[0])  # every rank reaches checkpoint()
            rng = gathered  # type: ignore[assignment]
        if not main:  # the weights are the same on every rank: one writer
            return
        # Each file is written under a temporary name, state.json last; then the set is
        # renamed into place (_commit_staged), state.json last again. A run stopped while it
        # writes resumes from the checkpoint before; one stopped while it renames finishes
        # the renames when it resumes (_settle_checkpoint).
        try:
            save_weights(net, _staged(out, "last.safetensors"), meta)
            torch.save(opt.state_dict(), _staged(out, "optim.pt"))
            if gan is not None:
                save_file({k: v.cpu() for k, v in gan[0].state_dict().items()},
                          str(_staged(out, "disc.safetensors")))
                torch.save(gan[1].state_dict(), _staged(out, "optim_disc.pt"))
            score = scores["psnr_refined"] if scores is not None else -math.inf
            if score > best:
                save_weights(net, _staged(out, "best.safetensors"),
                             {**meta, "validation": scores})
            _staged(out, "state.json").write_text(json.dumps({
                "step": step, "elapsed_s": elapsed, "best_psnr": max(best, score),
                "model_id": model_id_of(net), "rng": rng}))
        except OSError as e:  # a full disk, a removed folder
            _drop_staged(out)
            raise FacecodecError(f"cannot write a checkpoint in {out}: {e.strerror or e}") from None
        best = max(best, score)
        _commit_staged(out)

    if cfg.workers > 0:
        batches = PairStream(train_clips, cfg.seed * 1000 + rank, step, cfg.batch, cfg.patch, rq,
                             cfg.min_opening).batches(cfg.workers, device.type == "cuda")
    else:
        batches = sampler.batches(cfg.batch)

    scores: dict[str, float] = {}
    net.train()
    last_ckpt = time.monotonic()
    t_start = time.monotonic() - elapsed
    while step < cfg.steps:
        t0 = time.monotonic()
        x, c, t = (v.to(device, non_blocking=True) for v in next(batches))
        share = decay(step, elapsed)
        lr = cfg.lr * share
        for g in opt.param_groups:
            g["lr"] = lr
        # While the discriminator warms up the refiner only draws (its losses still logged).
        warm = gan is not None and step < cfg.disc_warmup
        with torch.set_grad_enabled(not warm):
            out_t, mask, drawn = model(x, c, with_mask=True)
            if not cfg.train_mask:
                out_t = drawn
            loss, parts = refiner_loss(out_t, t, c, cfg.loss, mask if cfg.train_mask else None)
            if gan is not None and judge is not None:
                adv, fm = generator_terms(judge, drawn, t, c, cfg.disc_crop)
                loss = loss + cfg.loss.adversarial * adv + cfg.loss.feature_matching * fm
                parts.update(adv=float(adv.detach()), fm=float(fm.detach()),
                             loss=float(loss.detach()))
        finite = math.isfinite(parts["loss"])
        if world > 1:  # every rank stops together, or the others wait in the all-reduce
            flag = torch.tensor([float(finite)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item())
        if not finite:
            raise FacecodecError(f"training diverged at step {step + 1}: the loss is not "
                                 f"finite (a lower lr may help); {out} keeps the last checkpoint")
        if not warm:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if gan is not None and judge is not None:
            # The refiner's backward also filled the discriminator's gradients; under DDP it
            # must (every forward needs its backward), so they are dropped here.
            opt_disc = gan[1]
            for g in opt_disc.param_groups:
                g["lr"] = (cfg.disc_lr if cfg.disc_lr is not None else cfg.lr) * share
            d_loss = discriminator_loss(judge, out_t, t, c, cfg.disc_crop)
            opt_disc.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_disc.step()
            parts["disc"] = float(d_loss.detach())
        step += 1
        elapsed = time.monotonic() - t_start
        if world > 1:  # every rank takes rank 0's clock: the lr and the stop must agree
            clock = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.broadcast(clock, 0)
            elapsed = float(clock.item())
        if main and step % cfg.log_every == 0:
            _append_csv(out / "train.csv", {"step": step, "elapsed_s": round(elapsed, 1),
                                           "lr": lr, **parts,
                                           "step_s": round(time.monotonic() - t0, 3)})
            if progress:
                print(f"step {step} loss {parts['loss']:.4f} ({elapsed / 60:.1f} min)",
                      flush=True)
        val_now = step % cfg.val_every == 0 or step == cfg.steps
        out_of_time = cfg.time_limit_min > 0 and elapsed >= cfg.time_limit_min * 60
        if main and (val_now or out_of_time):
            scores = _evaluate(net, val_samples, device) if val_samples else {}
            if scores:
                _append_csv(out / "val.csv", {"step": step, **{k: round(v, 4)
                                                              for k, v in scores.items()}})
                if progress:
                    print(f"val {step}: " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()),
                          flush=True)
        ckpt_due = time.monotonic() - last_ckpt >= cfg.ckpt_every_min * 60
        if world > 1:
            flag = torch.tensor([float(ckpt_due or val_now)], device=device)
            dist.broadcast(flag, 0)
            ckpt_due = bool(flag.item())
        if ckpt_due or val_now or out_of_time or step == cfg.steps:
            checkpoint(scores if (val_now or out_of_time) and scores else None)
            last_ckpt = time.monotonic()
        if out_of_time:
            break
    if world > 1:
        # Every rank leaves together: none tears its process group down (and exits) while
        # rank 0 still writes the last checkpoint over it.
        dist.barrier()
        # Free the DDP wrappers now: they sit in a reference cycle, so they would outlive the
        # process group (their reducers hold it and gloo's pending work) until some later
        # collection, at worst at interpreter exit, where freeing gloo's work can abort.
        del model, judge
        gc.collect()
    return scores
