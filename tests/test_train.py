"""Refiner training on a tiny real-data subset: the loss falls, runs resume, DDP runs."""

from __future__ import annotations

import csv
import faulthandler
import gc
import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import CliRun
from torch.nn.parallel import DistributedDataParallel

from facecodec.cli import run_guarded
from facecodec.errors import FacecodecError
from facecodec.render.neural import RefinerConfig, RefinerNet, load_net
from facecodec.train import dataset
from facecodec.train.adversarial import (
    PatchDiscriminator,
    discriminator_loss,
    generator_terms,
    mouth_crops,
)
from facecodec.train.dataset import PairSampler, build_cache, make_sample
from facecodec.train.losses import LossWeights, refiner_loss
from facecodec.train.trainer import TrainConfig, train

TINY = {"threads": 1, "batch": 1, "patch": 112, "log_every": 1, "val_every": 2, "val_per_clip": 1,
        "max_frames": 16, "stride": 2, "max_clips": 1, "ckpt_every_min": 100.0,
        "model": {"widths": [8, 8, 16, 16]}}


@pytest.fixture(scope="module")
def cache(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refiner_cache")
    for split in ("train", "validation"):
        assert build_cache(data_dir, split, root, 16, 2, 1, progress=False)
    return root


def _config(tmp: Path, **kw: object) -> TrainConfig:
    path = tmp / "cfg.json"
    path.write_text(json.dumps({**TINY, **kw}))
    return TrainConfig.load(path)


def test_config_rejects_unknown_keys_and_small_patches(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"stpes": 3}))
    with pytest.raises(FacecodecError, match="stpes"):
        TrainConfig.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"patch": 64}))
    with pytest.raises(FacecodecError, match="patch"):
        TrainConfig.load(tmp_path / "b.json")
    (tmp_path / "g.json").write_text(json.dumps({"patch": 192, "model": {
        "region": 6, "disocclusion": True, "opening": [10, 30]}}))
    with pytest.raises(FacecodecError, match="opening needs whole frames"):
        TrainConfig.load(tmp_path / "g.json")
    (tmp_path / "c.json").write_text("[1, 2")
    with pytest.raises(FacecodecError, match="bad training config"):
        TrainConfig.load(tmp_path / "c.json")
    for bad in (-1, 2.5):
        (tmp_path / "w.json").write_text(json.dumps({"workers": bad}))
        with pytest.raises(FacecodecError, match="workers"):
            TrainConfig.load(tmp_path / "w.json")


def test_train_command_bad_input_is_one_line(
    tmp_path: Path, run_cli: Callable[..., CliRun]
) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps(TINY))
    r = run_cli("train", "--config", tmp_path / "cfg.json", "--data", tmp_path,
                "--out", tmp_path / "run")
    assert r.returncode == 2 and "no splits.json" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
    r = run_cli("train", "--config", tmp_path / "missing.json", "--data", tmp_path,
                "--out", tmp_path / "run")
    assert r.returncode == 2 and "bad training config" in r.stderr
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize(("key", "value"), [
    ("batch", 0), ("batch", "1"), ("steps", 0), ("steps", 2.5), ("steps", 1e18), ("lr", -1.0),
    ("lr", 1e30), ("lr_final", float("nan")), ("log_every", 0), ("val_every", 0),
    ("threads", 0), ("seed", -1), ("stride", -1), ("max_frames", 0), ("max_clips", 0),
    ("ref_quality", [90, 10]), ("ref_quality", [90]), ("patch", 512), ("lr_by_time", 1),
    ("loss", {"scales": 9}), ("loss", {"l1": -1}), ("loss", {"bogus": 1}), ("loss", [1]),
    ("model", {"widths": [8, 8]}), ("model", {"widths": [0, 8, 8, 8]}),
    ("model", {"residual": "no"}), ("model", {"bogus": 3}), ("model", [1]),
])
def test_config_refuses_values_out_of_their_range(tmp_path: Path, key: str, value: object) -> None:
    """Each of these failed deep in torch, divided by zero, trained NaN weights, or was
    silently ignored; the config names the value instead."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**TINY, key: value}))
    with pytest.raises(FacecodecError, match=f"bad training config .*{key}") as e:
        TrainConfig.load(path)
    assert "\n" not in str(e.value)
    path.write_text(json.dumps(TINY))
    TrainConfig.load(path)  # the same config without the bad value is fine


def test_train_command_refuses_before_making_the_run_folder(
    tmp_path: Path, run_main: Callable[..., CliRun]
) -> None:
    """Malformed splits, a missing device, a run folder that is a file, a deeply nested
    config: one line each, and no run folder left behind. In this process: the test above
    runs the command as its own process, and each run here would load torch again."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    for splits, message in (("[1, 2]", "not a JSON object of splits"),
                            ('{"train": "a.mp4", "validation": []}', "'train' must be a list"),
                            ('{"train": [], "validation": [3]}', "'validation' must be a list"),
                            ('{"train": []}', "no split 'validation' (it has: train)"),
                            ('{"train": [', "cannot read")):
        (tmp_path / "splits.json").write_text(splits)
        r = run_main("train", "--config", cfg, "--data", tmp_path, "--out", run)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr_lines) == 1, r.stderr
        assert not run.exists()
    (tmp_path / "splits.json").write_text('{"train": [], "validation": []}')
    r = run_main("train", "--config", cfg, "--data", tmp_path, "--out", run, "--device", "tpu9")
    assert r.returncode == 2 and r.stderr_lines == [
        "facecodec: error: unknown device 'tpu9' (auto, cpu or cuda)"]
    if not torch.cuda.is_available():
        r = run_main("train", "--config", cfg, "--data", tmp_path, "--out", run, "--device", "cuda")
        assert r.returncode == 2 and "no CUDA GPU" in r.stderr and len(r.stderr_lines) == 1
    r = run_main("train", "--config", cfg, "--data", tmp_path, "--out", cfg)
    assert r.returncode == 2 and "it is a file" in r.stderr and len(r.stderr_lines) == 1
    r = run_main("train", "--config", cfg, "--data", tmp_path, "--out", run,
                "--cache", tmp_path / "cache")
    assert r.returncode == 2 and "no train clip gives a pair" in r.stderr
    assert len(r.stderr_lines) == 1 and not run.exists()
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    r = run_main("train", "--config", tmp_path / "deep.json", "--data", tmp_path, "--out", run)
    assert r.returncode == 2 and "nested too deeply" in r.stderr and len(r.stderr_lines) == 1
    assert not run.exists()


@pytest.mark.parametrize("trainer", ["layer", "restore", "upscale"])
def test_the_module_trainers_report_bad_input_in_one_line(
    trainer: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # They printed tracebacks, found a file in the way of --out only after the data was
    # prepared (no pair cache is made here first), and ran 0 steps into "best" weights that
    # were never trained.
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    cases = [(["--data", data_dir, "--out", blocked], "a file is in the way"),
             (["--data", data_dir, "--out", tmp_path / "run", "--export", tmp_path],
              "it is a folder")]
    if trainer == "layer":  # the options and splits are checked by code the three share
        cases += [(["--data", tmp_path, "--out", tmp_path / "run"], "cannot read"),
                  (["--data", data_dir, "--out", tmp_path / "run", "--steps", "0"],
                   "--steps: must be 1 or more"),
                  (["--data", data_dir, "--out", tmp_path / "run", "--variants", "0"],
                   "--variants: must be 1 or more"),
                  (["--data", data_dir, "--out", tmp_path / "run", "--time-limit-min", "inf"],
                   "--time-limit-min: must be a finite number above 0")]
    module = importlib.import_module(f"facecodec.train.{trainer}")
    for n, (args, message) in enumerate(cases):
        argv = [*([] if trainer == "upscale" else ["--cache", str(tmp_path / "cache")]),
                *map(str, args)]
        if n == 0:  # as its own process, as it is run
            r = subprocess.run([sys.executable, "-m", f"facecodec.train.{trainer}", *argv],
                               capture_output=True, text=True, timeout=120)
            code, err = r.returncode, r.stderr
        else:  # the rest in this process: each run would load torch again
            capsys.readouterr()
            try:
                code = run_guarded(lambda argv=argv: module.main(argv))
            except SystemExit as e:  # an option's refusal (argparse exits)
                code = e.code if isinstance(e.code, int) else 1
            err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
        assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_the_torchrun_form_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    """`python -m facecodec.train` (what torchrun launches) is the command line's train."""
    (tmp_path / "list.json").write_text("[1]")
    r = subprocess.run([sys.executable, "-m", "facecodec.train", "--config",
                        str(tmp_path / "list.json"), "--data", str(tmp_path), "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"facecodec: error: bad training config {tmp_path / 'list.json'}: "
                                "config must be a JSON object")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # On a shared 2-core machine two spinning OpenMP threads per process are many times
    # slower than one; the trainer's config sets its own count.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_steps_on_real_pairs_decrease_the_loss(data_dir: Path, cache: Path) -> None:
    torch.manual_seed(0)
    clips = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)
    x, c, t = PairSampler(clips, seed=0, patch=112).batch(2)
    net = RefinerNet(RefinerConfig((8, 8, 16, 16)))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = refiner_loss(net(x, c), t, c, LossWeights())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # Adam's first steps overshoot; by 25 the refiner has learnt part of the warp's error.
    assert min(losses[-5:]) < 0.95 * losses[0]


def test_checkpoint_and_resume(data_dir: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_config(tmp_path, steps=2), data_dir, out, cache, torch.device("cpu"), progress=False)
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 2
    first = load_net(out / "last.safetensors")
    assert (out / "best.safetensors").exists()

    scores = train(_config(tmp_path, steps=4), data_dir, out, cache, torch.device("cpu"),
                   progress=False)
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 4
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # continued, not restarted
    assert {"psnr_warp", "psnr_refined", "ssim_warp", "ssim_refined"} <= set(scores)
    second = load_net(out / "last.safetensors")
    assert any(not torch.equal(a, b) for a, b in
               zip(first.state_dict().values(), second.state_dict().values(), strict=True))


def test_resume_refuses_a_damaged_checkpoint_or_another_model(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cpu = torch.device("cpu")
    train(_config(tmp_path, steps=2), data_dir, out, cache, cpu, progress=False)
    good = {f.name: f.read_bytes() for f in out.iterdir()}

    def damaged(name: str, data: bytes, match: str, **kw: object) -> None:
        (out / name).write_bytes(data)
        with pytest.raises(FacecodecError, match=match):
            train(_config(tmp_path, steps=4, **kw), data_dir, out, cache, cpu, progress=False)
        assert (out / "config.json").read_bytes() == good["config.json"]  # left as it was
        for f in out.iterdir():
            f.write_bytes(good[f.name])

    damaged("state.json", b"{", "state.json is damaged")
    damaged("state.json", b'{"step": "x"}', "state.json is damaged")
    damaged("last.safetensors", good["last.safetensors"][:100], "checkpoint is damaged")
    damaged("optim.pt", good["optim.pt"][:300], "checkpoint is damaged")
    damaged("state.json", good["state.json"], "another model config",
            model={"widths": [8, 8, 16, 32]})
    assert sorted(f.name for f in out.iterdir()) == sorted(good)  # no temporary left


def test_a_checkpoint_stopped_while_renamed_is_finished_and_one_stopped_while_written_dropped(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    from facecodec.render.neural import model_id_of
    from facecodec.train.trainer import _staged

    cpu = torch.device("cpu")
    out, ahead = tmp_path / "run", tmp_path / "ahead"
    train(_config(tmp_path, steps=2), data_dir, out, cache, cpu, progress=False)
    shutil.copytree(out, ahead)
    train(_config(tmp_path, steps=3), data_dir, ahead, cache, cpu, progress=False)
    # Stopped while renaming step 3's checkpoint: its weights are in place, the rest staged.
    (out / "last.safetensors").write_bytes((ahead / "last.safetensors").read_bytes())
    (out / "last.json").write_bytes((ahead / "last.json").read_bytes())
    for name in ("optim.pt", "state.json"):
        _staged(out, name).write_bytes((ahead / name).read_bytes())
    train(_config(tmp_path, steps=4), data_dir, out, cache, cpu, progress=False)
    assert [int(r["step"]) for r in csv.DictReader((out / "train.csv").open())] == [1, 2, 4]
    assert not list(out.glob(".*"))
    # Stopped while writing: the staged files are dropped and the checkpoint before stands.
    _staged(out, "last.safetensors").write_bytes(b"half written")
    state = json.loads((out / "state.json").read_text())
    train(_config(tmp_path, steps=5), data_dir, out, cache, cpu, progress=False)
    assert state["step"] == 4 and not list(out.glob(".*"))
    assert json.loads((out / "state.json").read_text())["step"] == 5
    assert json.loads((out / "state.json").read_text())["model_id"] == model_id_of(
        load_net(out / "last.safetensors"))


def test_a_run_needs_a_validation_clip_and_trains_a_discriminator_at_lr_0(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    """best.safetensors is chosen by validation: a run without it is refused. And lr 0 (a
    refiner held still while only its discriminator learns) divided by zero."""
    real = json.loads((data_dir / "splits.json").read_text())["train"][0]
    data = tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text(json.dumps({"train": [str(data_dir / real)],
                                                  "validation": ["nope.mp4"]}))
    cpu = torch.device("cpu")
    with pytest.raises(FacecodecError, match="no validation clip gives a pair"):
        train(_config(tmp_path, steps=1), data, tmp_path / "run", cache, cpu, progress=False)
    assert not (tmp_path / "run").exists()
    cfg = _config(tmp_path, steps=2, lr=0.0, disc_lr=1e-3,
                  loss={"adversarial": 0.1, "feature_matching": 0.1})
    train(cfg, data_dir, tmp_path / "gan", cache, cpu, progress=False)
    rows = list(csv.DictReader((tmp_path / "gan" / "train.csv").open()))
    assert [float(r["lr"]) for r in rows] == [0.0, 0.0] and all(r["disc"] for r in rows)


def test_resume_logs_each_step_once(data_dir: Path, cache: Path, tmp_path: Path) -> None:
    """A run stopped after logging a step but before its checkpoint logs that step again on
    resuming: the rows after the checkpoint go, so each step has one row."""
    out = tmp_path / "run"
    cpu = torch.device("cpu")
    train(_config(tmp_path, steps=2), data_dir, out, cache, cpu, progress=False)
    log = out / "train.csv"
    rows = list(csv.DictReader(log.open()))
    with log.open("a", newline="") as f:  # what a run stopped at step 3 had logged
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow({**rows[-1], "step": 3})
    train(_config(tmp_path, steps=4), data_dir, out, cache, cpu, progress=False)
    assert [int(r["step"]) for r in csv.DictReader(log.open())] == [1, 2, 3, 4]


def test_a_diverging_run_stops_and_keeps_its_last_checkpoint(
    data_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facecodec.train.trainer as trainer

    out = tmp_path / "run"
    cpu = torch.device("cpu")
    train(_config(tmp_path, steps=2), data_dir, out, cache, cpu, progress=False)
    kept = (out / "last.safetensors").read_bytes()

    def diverged(*a: object, **kw: object) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = refiner_loss(*a, **kw)  # type: ignore[arg-type]
        return loss * float("nan"), {**parts, "loss": float("nan")}

    monkeypatch.setattr(trainer, "refiner_loss", diverged)
    with pytest.raises(FacecodecError, match="diverged at step 3"):
        train(_config(tmp_path, steps=4), data_dir, out, cache, cpu, progress=False)
    assert (out / "last.safetensors").read_bytes() == kept
    assert json.loads((out / "state.json").read_text())["step"] == 2


def test_the_cache_names_every_skipped_clip_and_refuses_a_damaged_one(
    data_dir: Path, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from facecodec.train.dataset import load_cache

    real = json.loads((data_dir / "splits.json").read_text())["train"][0]
    data = tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text(json.dumps({"train": ["nope.mp4", "gone.mp4"]}))
    assert build_cache(data, "train", tmp_path / "c", 16, 2, progress=False) == []
    root = tmp_path / "c" / "train_f16_s2_v1"
    assert sorted(json.loads((root / "skipped.json").read_text())) == ["gone", "nope"]
    err = capsys.readouterr().err
    assert "train clip" in err and "nope.mp4 skipped" in err and "gone.mp4 skipped" in err

    built = cache / "train_f16_s2_v1" / Path(real).stem
    copy = tmp_path / "copy" / built.name
    copy.mkdir(parents=True)
    for f in built.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert len(load_cache(copy.parent, [built.name])) == 1
    (copy / "meta.npz").write_bytes((built / "meta.npz").read_bytes()[:50])
    with pytest.raises(FacecodecError, match="damaged pair cache"):
        load_cache(copy.parent, [built.name])


def test_the_cache_follows_a_clips_bytes_not_its_name(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Built from one data set, the cache was taken for another whose clips bear the same
    # names: a run trained on faces its --data did not hold, without a word.
    real = data_dir / json.loads((data_dir / "splits.json").read_text())["train"][0]
    other = data_dir / json.loads((data_dir / "splits.json").read_text())["train"][1]
    cache_dir = tmp_path / "pairs"

    def data_with(name: str, clip: Path | None) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "splits.json").write_text(json.dumps({"train": ["clip.mp4"]}))
        if clip is not None:
            (d / "clip.mp4").symlink_to(clip)
        return d

    first = build_cache(data_with("a", real), "train", cache_dir, 16, 2, progress=False)
    assert len(first) == 1
    was = np.array(first[0].crops[0])
    meta = first[0].path / "meta.npz"
    stamp = meta.stat().st_mtime_ns
    assert len(build_cache(tmp_path / "a", "train", cache_dir, 16, 2, progress=False)) == 1
    assert meta.stat().st_mtime_ns == stamp  # the same bytes: not built again
    second = build_cache(data_with("b", other), "train", cache_dir, 16, 2, progress=False)
    assert len(second) == 1
    assert not np.array_equal(was, second[0].crops[0])  # built again
    # A clip without a face under that name: skipped, not the earlier clip's pairs.
    faceless = tmp_path / "faceless.mp4"
    with av.open(str(faceless), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 128, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 90, np.uint8), "rgb24")
            out.mux(s.encode(frame))
        out.mux(s.encode())
    assert build_cache(data_with("c", faceless), "train", cache_dir, 16, 2,
                       progress=False) == []
    # No clip at all (a cache carried to a machine without the videos): taken as built, and
    # said. The faceless build left nothing, so build the real one again first.
    build_cache(data_with("d", real), "train", cache_dir, 16, 2, progress=False)
    capsys.readouterr()
    kept = build_cache(data_with("e", None), "train", cache_dir, 16, 2, progress=False)
    assert len(kept) == 1 and np.array_equal(kept[0].crops[0], was)
    assert "train clips not in" in capsys.readouterr().err
    # Two clips of one name in a split would share a folder, each built over the other.
    both = data_with("f", real)
    (both / "again").mkdir()
    (both / "again" / "clip.mp4").symlink_to(other)
    (both / "splits.json").write_text(json.dumps({"train": ["clip.mp4", "again/clip.mp4"]}))
    with pytest.raises(FacecodecError, match="two train clips are named clip"):
        build_cache(both, "train", cache_dir, 16, 2, progress=False)
    # Another video of that name that cannot be built (no tracker on this machine): the
    # first one's pairs are dropped, not used for it.
    def no_tracker(*_: object, **__: object) -> None:
        raise ImportError("No module named 'mediapipe'")

    monkeypatch.setattr(dataset, "build_clip", no_tracker)
    assert build_cache(tmp_path / "b", "train", cache_dir, 16, 2, progress=False) == []
    assert not any(kept[0].path.iterdir())
    # An entry built before clips were recorded is built again; where that fails, it is
    # kept, as it was used before, with a warning.
    monkeypatch.undo()
    build_cache(tmp_path / "a", "train", cache_dir, 16, 2, progress=False)
    with np.load(meta) as m:
        old = {k: m[k] for k in m.files if k != "source"}
    with meta.open("wb") as f:
        np.savez(f, **old)
    monkeypatch.setattr(dataset, "build_clip", no_tracker)
    capsys.readouterr()
    kept = build_cache(tmp_path / "a", "train", cache_dir, 16, 2, progress=False)
    assert len(kept) == 1 and np.array_equal(kept[0].crops[0], was)
    assert "could not be built again" in capsys.readouterr().err


def test_discriminator_learns_to_tell_blurred_faces(data_dir: Path, cache: Path) -> None:
    """What the adversarial loss is for: the discriminator must learn to tell a smoothed
    face from the real one within a few steps, and its terms must vanish/stay finite where
    the refiner's output is the target."""
    torch.manual_seed(0)
    clips = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)
    _, c, real = PairSampler(clips, seed=1, patch=112).batch(4)
    small = torch.nn.functional.avg_pool2d(real, 4)  # a quarter of the detail, as a mean would
    blurred = torch.nn.functional.interpolate(small, scale_factor=4, mode="bilinear")
    disc = PatchDiscriminator((16, 32, 32, 32))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(60):
        loss = discriminator_loss(disc, blurred, real, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # Hinge loss starts at 2 (logits ~0); measured ~1.5-1.7 after 50-60 steps.
    assert losses[0] > 1.9 and min(losses[-10:]) < 1.8, (losses[0], losses[-10:])
    adv_blur, fm_blur = generator_terms(disc, blurred, real, c)
    adv_real, fm_real = generator_terms(disc, real, real, c)
    assert float(fm_real) == 0.0 and float(fm_blur) > 0.0
    assert float(adv_blur) > float(adv_real)  # the blurred face is judged less real


def test_adversarial_training_checkpoints_and_resumes(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    loss = {"adversarial": 0.05, "feature_matching": 1.0}
    out = tmp_path / "gan"
    train(_config(tmp_path, steps=2, loss=loss), data_dir, out, cache, torch.device("cpu"),
          progress=False)
    first = (out / "disc.safetensors").read_bytes()
    assert (out / "optim_disc.pt").exists()
    train(_config(tmp_path, steps=4, loss=loss), data_dir, out, cache, torch.device("cpu"),
          progress=False)
    assert json.loads((out / "state.json").read_text())["step"] == 4
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["disc"]) > 0 and r["adv"] and r["fm"] for r in rows)
    assert (out / "disc.safetensors").read_bytes() != first  # the discriminator kept training


def test_mouth_crops_hold_the_target_mouth(data_dir: Path, cache: Path) -> None:
    clips = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)
    _, c, t = PairSampler(clips, seed=1, patch=112).batch(4)
    frames, conds = mouth_crops(t, c, 64)
    assert frames.shape == (4, 3, 64, 64) and conds.shape == (4, 5, 32, 32)
    whole = c[:, 3].sum((1, 2))
    assert float(whole.min()) > 0  # these patches show a mouth
    assert torch.all(conds[:, 3].sum((1, 2)) >= 0.95 * whole)
    # Crops are the frame's own pixels, aligned with the half-resolution cond.
    i = 0
    hits = [(y, x) for y in range(0, 49, 2) for x in range(0, 49, 2)
            if torch.equal(t[i, :, y:y + 64, x:x + 64], frames[i])]
    assert len(hits) == 1
    y, x = hits[0]
    assert torch.equal(c[i, :, y // 2:y // 2 + 32, x // 2:x // 2 + 32], conds[i])
    # No mouth in the patch: the centre.
    c0 = c.clone()
    c0[:, 3] = 0
    assert torch.equal(mouth_crops(t, c0, 64)[0][1], t[1, :, 24:88, 24:88])


def test_sampler_can_draw_only_pairs_whose_mouth_opens(data_dir: Path, cache: Path) -> None:
    clips = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)
    plain = PairSampler(clips, seed=2, patch=256)

    def opened(sampler: PairSampler) -> list[float]:
        _, c, _ = sampler.batch(12)
        return (c[:, 3] - c[:, 2]).clamp_min(0).sum((1, 2)).tolist()

    # The landmark-only count is what the conditioning (and so the gate) sees.
    clip = clips[0]
    n = len(clip.points)
    for src, drv in zip(range(n - 1), range(n - 1, 0, -1), strict=True):
        fast = plain.cond.opening(clip.points[src], clip.points[drv])
        c = make_sample(clip, src, drv, plain.cond, None).cond
        assert fast == pytest.approx(float((c[3] - c[2]).clamp_min(0).sum()), abs=1e-3)
    free = opened(plain)
    threshold = float(np.median(free))
    assert min(free) < threshold  # some pairs open less ...
    picky = PairSampler(clips, seed=2, patch=256, min_opening=threshold)
    assert min(opened(picky)) >= threshold - 1e-3  # ... and those are drawn again


def test_discriminator_warms_up_alone_then_the_refiner_trains(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    kw = {"loss": {"adversarial": 0.05, "feature_matching": 1.0}, "disc_warmup": 2,
          "disc_crop": 64, "disc_lr": 1e-3}
    out = tmp_path / "warm"
    cfg = _config(tmp_path, steps=2, **kw)
    train(cfg, data_dir, out, cache, torch.device("cpu"), progress=False)
    torch.manual_seed(cfg.seed)
    init = RefinerNet(cfg.model).state_dict()
    warmed = load_net(out / "last.safetensors").state_dict()
    assert all(torch.equal(init[k], warmed[k]) for k in init)  # the refiner only drew
    disc_warm = (out / "disc.safetensors").read_bytes()
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert all(float(r["disc"]) > 0 for r in rows)
    train(_config(tmp_path, steps=3, **kw), data_dir, out, cache, torch.device("cpu"),
          progress=False)
    trained = load_net(out / "last.safetensors").state_dict()
    assert any(not torch.equal(init[k], trained[k]) for k in init)
    assert (out / "disc.safetensors").read_bytes() != disc_warm


def _ddp_worker(rank: int, world: int, store: Path, cfg: TrainConfig, data: Path, out: Path,
                cache: Path) -> None:
    faulthandler.enable()  # a worker killed by a signal shows where it was
    # A file store: no free-port search that another process could race.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    gc.disable()  # what train() leaves alive must not wait for a collection
    try:
        train(cfg, data, out, cache, torch.device("cpu"), rank, world, progress=False)
        # No DDP wrapper (holding the process group and gloo's work) outlives the run into
        # the process group's teardown or the interpreter's exit.
        assert not [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]
    finally:
        gc.enable()
        dist.destroy_process_group()


@pytest.mark.parametrize("adversarial", [False, True])
def test_ddp_two_cpu_processes(
    data_dir: Path, cache: Path, tmp_path: Path, adversarial: bool
) -> None:
    loss = {"adversarial": 0.05, "feature_matching": 1.0} if adversarial else {}
    cfg = _config(tmp_path, steps=2, threads=1, loss=loss)
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, tmp_path / "store", cfg, data_dir, out, cache), nprocs=2,
             join=True)
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 2
    assert len(state["rng"]) == 2  # both ranks' sampler states were gathered
    assert state["rng"][0] != state["rng"][1]  # ranks draw different pairs


def test_coded_references_are_what_the_receiver_sees(data_dir: Path, cache: Path) -> None:
    clips = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)
    raw = PairSampler(clips, seed=3, patch=112).batch(2)
    low = PairSampler(clips, seed=3, patch=112, ref_quality=(20, 20)).batch(2)
    # Same pairs and patches; only the reference (and so the warp of it) went through the
    # keyframe codec, and the target did not.
    assert torch.equal(raw[2], low[2])
    err = (raw[0][:, 3:] - low[0][:, 3:]).abs().mean().item()
    assert 0.002 < err < 0.05


def test_a_stage_adding_the_full_resolution_head_starts_from_the_previous_output(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    train(_config(tmp_path, steps=2), data_dir, first, cache, torch.device("cpu"),
          progress=False)
    prev = load_net(first / "last.safetensors")
    model = {**TINY["model"], "full_res": True}  # type: ignore[dict-item]
    cfg = _config(tmp_path, steps=1, lr=0.0, model=model, init=str(first / "last.safetensors"))
    train(cfg, data_dir, tmp_path / "second", cache, torch.device("cpu"), progress=False)
    grown = load_net(tmp_path / "second" / "last.safetensors")
    assert grown.config.full_res and hasattr(grown, "full")
    x, c, _ = PairSampler(build_cache(data_dir, "train", cache, 16, 2, 1, progress=False),
                          seed=1, patch=112).batch(1)
    with torch.no_grad():
        assert torch.equal(prev(x, c), grown(x, c))
    # Weights of another shape are refused in one line.
    bad = _config(tmp_path, steps=1, model={"widths": [8, 8, 16, 32]},
                  init=str(first / "last.safetensors"))
    with pytest.raises(FacecodecError, match="do not fit"):
        train(bad, data_dir, tmp_path / "third", cache, torch.device("cpu"), progress=False)


def test_layer_training_codes_references_in_the_asked_quality_range(
    data_dir: Path, cache: Path
) -> None:
    import numpy as np

    from facecodec.train.layer import prepare_clip

    clip = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)[0]
    errors = {}
    for rq in ((10, 10), (60, 60)):
        cl = prepare_clip(clip, np.random.default_rng(0), 1, rq)
        assert len(cl.layers) == 1 and cl.layers[0][1].shape[0] == len(clip.crops)
        errors[rq] = np.mean([np.abs(ref.astype(float) - clip.crops[row]).mean()
                              for row, ref in cl.references.items()])
    assert errors[(10, 10)] > errors[(60, 60)] > 0


def test_full_size_layer_training_takes_references_from_the_layer(
    data_dir: Path, cache: Path
) -> None:
    import numpy as np

    from facecodec.train.layer import Warps, prepare_clip, sample

    clip = build_cache(data_dir, "train", cache, 16, 2, 1, progress=False)[0]
    cl = prepare_clip(clip, np.random.default_rng(0), 1, None, ((256, 1.0),), (50, 50))
    assert cl.ref_from_layer and not cl.references and cl.layers[0][0] == 256
    rows = cl.segments[0]
    pics = cl.layers[0][1]
    # The reference is the layer's own (intra) picture: warped to its own frame, it is that
    # picture, not the original crop.
    warp = Warps(256)(cl, int(rows[0]), int(rows[0]), 0).astype(float)
    assert np.abs(warp - pics[rows[0]]).mean() < 0.5 * np.abs(warp - clip.crops[rows[0]]).mean()
    # A held picture is moved to the frame's motion before it reaches the net (age kept).
    held, age = sample(cl, 0, rows, 2, 2, Warps(256), move=False)
    moved, age_m = sample(cl, 0, rows, 2, 2, Warps(256), move=True)
    assert age == age_m == 4.0
    assert np.array_equal(held[..., 9:], moved[..., 9:])  # same target
    assert not np.array_equal(held[..., 3:6], moved[..., 3:6])
    now, _ = sample(cl, 0, rows, 2, 0, Warps(256), move=True)
    assert np.allclose(now[..., 3:6] * 255, pics[rows[2]], atol=1e-3)


def test_workers_draw_the_pairs_and_the_lr_follows_the_time_limit(
    data_dir: Path, cache: Path, tmp_path: Path
) -> None:
    # Spawned pair workers feed the loop; with lr_by_time the cosine runs over the time
    # limit, so a run stopped by time ends decayed although it did few of its steps.
    cfg = _config(tmp_path, steps=100000, workers=1, lr_by_time=True, time_limit_min=0.2,
                  val_every=100000)
    out = tmp_path / "run"
    train(cfg, data_dir, out, cache, torch.device("cpu"), progress=False)
    rows = list(csv.DictReader((out / "train.csv").open()))
    state = json.loads((out / "state.json").read_text())
    assert 2 <= state["step"] < 100000 and len(rows) == state["step"]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[-1] < 0.35 * cfg.lr  # most of the way down the cosine (12 s of 12 s)
    assert (out / "last.safetensors").exists() and (out / "best.safetensors").exists()


def test_a_packed_cache_unpacks_to_the_crops_and_rejects_a_short_video(
    cache: Path, tmp_path: Path
) -> None:
    from facecodec.train.cache_pack import main as pack_main
    from facecodec.train.cache_pack import pack, unpack

    packed, back = tmp_path / "packed", tmp_path / "back"
    assert pack(cache, packed) == 2  # one train and one validation clip
    assert not list(packed.rglob("crops.npy"))  # only the videos and meta travel
    assert unpack(packed, back) == 2
    for meta in cache.glob("*/*/meta.npz"):
        rel = meta.parent.relative_to(cache)
        a = np.load(meta.parent / "crops.npy").astype(np.float64)
        b = np.load(back / rel / "crops.npy").astype(np.float64)
        assert a.shape == b.shape
        assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 40.0
        assert np.array_equal(np.load(meta)["points"], np.load(back / rel / "meta.npz")["points"])

    video = next(packed.rglob("crops.mp4"))
    video.write_bytes(video.read_bytes()[: len(video.read_bytes()) // 3])
    with pytest.raises(FacecodecError, match="frames decoded"):
        unpack(packed, tmp_path / "again")
    assert pack_main(["unpack", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert pack_main(["pack", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    (video.parent / "meta.npz").write_bytes(b"not a zip")
    with pytest.raises(FacecodecError, match="not a cache's meta"):
        unpack(packed, tmp_path / "again")


def test_restorer_pool_round_trips_and_trains_from_it(cache: Path, tmp_path: Path) -> None:
    # Real crops coded by the real keyframe codec; the pool saved as the GPU run reads it,
    # then a few training steps from that pool alone.
    from facecodec.render.restore import load_net as load_restorer
    from facecodec.train.dataset import load_cache
    from facecodec.train.restore import load_pool, main, make_pool, save_pool

    root = next(cache.glob("train_*"))
    clips = load_cache(root, [p.name for p in root.iterdir() if p.is_dir()])
    pool = make_pool(clips, np.random.default_rng(0), frames=2, codes=2, quality=(10, 30),
                     jobs=1)
    assert pool["decoded"].shape == (4, 256, 256, 3) and pool["crops"].shape[0] == 2
    assert list(pool["owner"]) == [0, 0, 1, 1]
    assert ((pool["quality"] >= 10) & (pool["quality"] <= 30)).all()
    # Coded at quality 10..30: close to the crop, not equal to it.
    err = np.abs(pool["decoded"].astype(int) - pool["crops"][pool["owner"]].astype(int))
    assert 0.3 < err.mean() < 8.0
    for split in ("train", "validation"):
        save_pool(pool, tmp_path / "pool", split)
    back = load_pool(tmp_path / "pool", "train")
    assert np.abs(back["decoded"].astype(int) - pool["decoded"].astype(int)).max() <= 2
    assert np.array_equal(back["owner"], pool["owner"])

    out = tmp_path / "run"
    assert main(["--data", str(tmp_path / "unused"), "--out", str(out), "--pool",
                 str(tmp_path / "pool"), "--steps", "3", "--val-every", "2", "--batch", "2",
                 "--widths", "8", "16", "--blocks", "1", "1", "--threads", "1"]) == 0
    meta = json.loads((out / "best.json").read_text())
    assert meta["training"]["steps"] == 3 and meta["model_id"].startswith("restore-v1-")
    # The record says what it ran on, as measured, not as assumed.
    assert meta["training"]["hardware"].startswith("1 x CPU (")
    assert "1 threads" in meta["training"]["hardware"]
    assert [row["step"] for row in meta["validation_log"]] == [2, 3]
    assert load_restorer(out / "last.safetensors").config.widths == (8, 16)
    # A missing or damaged pool: one line, exit 2, nothing written.
    (tmp_path / "pool" / "validation.npz").write_bytes(b"not a zip")
    for pool_dir in (tmp_path / "nothing", tmp_path / "pool"):
        assert main(["--data", str(tmp_path), "--out", str(tmp_path / "bad"), "--pool",
                     str(pool_dir)]) == 2
    assert not (tmp_path / "bad").exists()
