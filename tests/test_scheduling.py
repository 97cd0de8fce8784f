"""SVT-AV1 leaves no thread of the process real-time (facecodec/codec/scheduling.py).

Each case runs in a fresh interpreter, so that a failure cannot leave this test process
with real-time threads (which can starve everything else on a small machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import GRID_CLIP, require

# A 256 px crop of a real frame, coded the way a call codes it: a keyframe picture at the
# live preset, then a run of layer pictures from one encoder.
_CODERS = """
import json, os, sys
import numpy as np
from facecodec.capture.video import read_frames
from facecodec.codec.keyframe import encode_image
from facecodec.codec.layer import SPEC_AV1, LayerEncoder
from facecodec.codec.scheduling import realtime_threads
if sys.argv[2] == "fifo":
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
frame = next(read_frames(sys.argv[1]))
crop = np.ascontiguousarray(frame[16:272, 52:308])
encode_image(crop, 40, fast=True)
layer = LayerEncoder(96, 50, SPEC_AV1)
for _ in range(5):
    layer.encode(crop)
print(json.dumps({"policy": os.sched_getscheduler(0), "realtime": realtime_threads(),
                  "threads": len(os.listdir("/proc/self/task"))}))
layer.restart()
"""

# The same keyframe picture through PyAV alone: does SVT-AV1 raise priority on this machine?
_RAW = """
import os, sys
from fractions import Fraction
import av
from facecodec.capture.video import read_frames
frame = next(read_frames(sys.argv[1]))
ctx = av.CodecContext.create("libsvtav1", "w")
ctx.width = ctx.height = 256
ctx.pix_fmt = "yuv420p"
ctx.time_base = Fraction(1, 25)
ctx.options = {"preset": "8"}
picture = av.VideoFrame.from_ndarray(frame[16:272, 52:308].copy(), format="rgb24")
list(ctx.encode(picture.reformat(format="yuv420p"))) + list(ctx.encode(None))
print(os.sched_getscheduler(0))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SVT_LOG": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


@pytest.fixture(scope="module")
def svt_raises_priority() -> bool:
    run = _python(_RAW, str(require(GRID_CLIP)))
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1]) == os.SCHED_FIFO


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling only")
@pytest.mark.parametrize("started", ["other", "fifo"])
def test_coders_leave_no_thread_real_time(svt_raises_priority: bool, started: str) -> None:
    """A process started with ordinary scheduling keeps it on every thread; one started
    real-time on purpose stays so."""
    if not svt_raises_priority:
        pytest.skip("SVT-AV1 cannot raise thread priority here (needs root with CAP_SYS_NICE)")
    run = _python(_CODERS, str(GRID_CLIP), started)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    if started == "fifo":
        assert got["policy"] == os.SCHED_FIFO
        return
    assert got["policy"] == os.SCHED_OTHER
    assert got["realtime"] == []
    assert got["threads"] > 3  # the layer encoder's threads were running when counted
