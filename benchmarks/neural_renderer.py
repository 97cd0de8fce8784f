"""Neural renderer cost at 256x256: parameters, conv GMACs, fps of the net alone and of a
whole render (mesh warp + conditioning + net), eager PyTorch, channels_last, 2 threads; and
the reference restorer's, which runs once per keyframe.

    .venv/bin/python benchmarks/neural_renderer.py [--weights PATH] [--frames N]

Uses the shipped weights when present (speed does not depend on the values), a real
validation clip for the landmarks, and reports the best of several batches of frames, so
other processes on a shared machine inflate the numbers less.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from facecodec.cli import run_guarded
from facecodec.codec.analysis import MotionEvent
from facecodec.codec.encoder import EncoderSettings, analyze_file
from facecodec.errors import OneLineParser
from facecodec.files import path_arg
from facecodec.motion.basis import load_basis
from facecodec.render.neural import (
    COND_CHANNELS,
    DEFAULT_WEIGHTS,
    NeuralRenderer,
    OnnxRefiner,
    RefinerNet,
    export_onnx,
    load_net,
)
from facecodec.render.restore import load_net as load_restorer
from facecodec.render.restore import restore
from facecodec.render.warp import WarpRenderer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIP = DATA / "clips" / "grid_lbbc2a.mpg"  # validation split


def conv_macs(net: torch.nn.Module, size: int) -> int:
    """Multiply-accumulates of all convolutions for one size x size frame (forward hooks)."""
    total = 0

    def hook(m: torch.nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, torch.nn.Conv2d)
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total += out.numel() * k

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        net(torch.zeros(1, 6, size, size), torch.zeros(1, COND_CHANNELS, size // 2, size // 2))
    for h in hs:
        h.remove()
    return total


def timed_ms(fn: object, n: int, repeats: int = 3) -> tuple[float, float]:
    """(min, median) ms per call over `repeats` passes of n calls."""
    assert callable(fn)
    ts = []
    for _ in range(repeats):
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            ts.append((time.perf_counter() - t) * 1000)
    return float(np.min(ts)), float(np.median(ts))


def main() -> None:
    p = OneLineParser(description=__doc__)
    p.add_argument("--weights", type=path_arg, default=DEFAULT_WEIGHTS)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.weights != DEFAULT_WEIGHTS and not a.weights.is_file():
        p.error(f"no weights at {a.weights}")
    net = load_net(a.weights) if a.weights.exists() else RefinerNet()
    size = 256
    params = sum(t.numel() for t in net.parameters())
    print(f"params {params / 1e6:.3f} M, conv {conv_macs(net, size) / 1e9:.3f} GMAC "
          f"({2 * conv_macs(net, size) / 1e9:.3f} GFLOP) per {size}x{size} frame")

    analysis = analyze_file(CLIP, EncoderSettings(size=size), max_frames=a.frames + 1)
    key = analysis.keyframes[0]
    motions = [e.motion for e in analysis.events if isinstance(e, MotionEvent)][1:]
    basis = load_basis()
    restorer = load_restorer()
    r_params = sum(t.numel() for t in restorer.parameters())
    with FlopCounterMode(display=False) as flops:
        restorer(torch.zeros(1, 3, size, size))
    print(f"restorer: params {r_params / 1e6:.3f} M, {flops.get_total_flops() / 1e9:.3f} GFLOP "
          f"per {size}x{size} reference")
    neural = NeuralRenderer(basis, size, net=net, threads=a.threads, restorer=restorer)
    # The same weights without the opening gate: every frame through the net (the cost of a
    # frame whose mouth opens wide).
    ungated = RefinerNet(dataclasses.replace(net.config, opening=(0.0, 0.0)))
    ungated.load_state_dict(net.state_dict())
    always = NeuralRenderer(basis, size, net=ungated, threads=a.threads, restorer=restorer)
    warp = WarpRenderer(basis, size)
    for r in (neural, always):
        r.set_reference(key.image, key.motion)
    restore_ms = timed_ms(lambda _i: restore(restorer, key.image), 5)
    warp.set_reference(restore(restorer, key.image), key.motion)  # what the neural one warps

    x = torch.rand(1, 6, size, size).contiguous(memory_format=torch.channels_last)
    c = torch.rand(1, COND_CHANNELS, size // 2, size // 2).contiguous(
        memory_format=torch.channels_last)
    n = len(motions)
    ort_ms: tuple[float, float] | None = None
    with torch.inference_mode():
        for _ in range(3):
            neural.net(x, c)
        net_ms = timed_ms(lambda _i: neural.net(x, c), n)
    neural.render(motions[0])
    full_ms = timed_ms(lambda i: neural.render(motions[i]), n)
    always_ms = timed_ms(lambda i: always.render(motions[i]), n)
    skipped = sum(np.array_equal(neural.render(m), warp.render(m)) for m in motions)
    warp_ms = timed_ms(lambda i: warp.render(motions[i]), n)
    if importlib.util.find_spec("onnxruntime") is not None:
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(net, Path(tmp) / "refiner.onnx", size)
            ort = OnnxRefiner(Path(tmp) / "refiner.onnx", a.threads)
            xn, cn = x.contiguous().numpy(), c.contiguous().numpy()
            ort(xn, cn)
            ort_ms = timed_ms(lambda _i: ort(xn, cn), n)
    print(f"{a.threads} thread(s); ms per frame: min / median (fps at the min / median)")
    rows = (("net alone", net_ms), ("full render", full_ms), ("every frame", always_ms),
            ("warp only", warp_ms), *([("net, ort", ort_ms)] if ort_ms else []),
            ("restore ref", restore_ms))
    for name, (lo, med) in rows:
        print(f"{name:12s} {lo:6.1f} / {med:6.1f} ms  ({1000 / lo:5.1f} / {1000 / med:5.1f} fps)")
    print("full render = mesh warp + conditioning + net + tensor conversions, the net skipped "
          f"where the mouth opens too little to use it ({skipped} of {n} frames here are the "
          "warp's); every frame = the same with the net run on all frames; restore ref = the "
          "reference restorer, once per keyframe")


if __name__ == "__main__":
    sys.exit(run_guarded(main))
