"""Benchmark scripts refuse what they cannot run or write before their work starts: a name
that matches nothing once gave a table of nan, and an unwritable output failed only after
the measuring."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facecodec.bench.choice import check_outputs, chosen, clips_named, containing
from facecodec.errors import FacecodecError

ROOT = Path(__file__).resolve().parents[1]


def test_names_are_chosen_in_the_order_asked_and_unknown_ones_refused() -> None:
    assert chosen(None, ["a", "b"], "mode") == ["a", "b"]
    assert chosen(["b", "a", "b"], ["a", "b"], "mode") == ["b", "a"]
    with pytest.raises(FacecodecError, match=r"^no mode named c, d \(there are: a, b\)$"):
        chosen(["a", "c", "d"], ["a", "b"], "mode")
    clips = [Path("x/one.mp4"), Path("x/two.mpg"), Path("x/three.mp4")]
    assert clips_named(clips, ["three", "one"], "split 'v'") == [clips[0], clips[2]]
    with pytest.raises(FacecodecError, match="no clip in split 'v' named one.mp4"):
        clips_named(clips, ["one.mp4"], "split 'v'")  # a stem, not a file name
    assert containing("av1", ["av1", "jpeg", "av1 p8"], "coder") == ["av1", "av1 p8"]
    with pytest.raises(FacecodecError, match="no coder name contains 'x'"):
        containing("x", ["av1"], "coder")


def test_an_output_is_checked_and_its_folder_made_before_the_work(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "rows.json"
    check_outputs(None, out)
    assert out.parent.is_dir() and not out.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FacecodecError, match="cannot create folder .*file"):
        check_outputs(tmp_path / "file" / "rows.json")
    with pytest.raises(FacecodecError, match="it is a folder"):
        check_outputs(tmp_path / "deep")


@pytest.mark.parametrize(("args", "message"), [
    (["layer_validation.py", "--modes", "nosuch"], "no layer mode named nosuch (there are: net"),
    (["live_layer_quality.py", "--clips", "grid_swiz3n", "nosuch"],
     "no clip in split 'validation' named nosuch (there are: grid_lbbc2a"),
    (["validation_presets.py", "--side-by-side", "nosuch"], "no clip in split 'validation' "
     "named nosuch"),
    (["keyframe_codecs.py", "--clips", "clips/grid_swiz3n.mpg", "--only", "nosuch"],
     "no coder name contains 'nosuch' (there are: jpeg"),
    (["layer_schedule.py", "4,64,1", "--json", "{file}/rows.json"], "cannot create folder"),
    (["neural_validation.py", "--out", "{file}/out"], "cannot create folder"),
    (["side_by_side.py", "--out", "{file}/out"], "cannot create folder"),
    (["bench_crosscheck.py", "--clips", "1", "--out", "{file}/out"], "cannot create folder"),
    (["motion_coder.py", "--clip", "{file}"], "not a video file PyAV can read"),
    # A mistyped argument is one line too (argparse printed its usage block first), and
    # bench_crosscheck refuses what it would have run as nothing or quietly cut.
    (["bench_crosscheck.py", "--clips", "0"], "argument --clips: must be 1 or more"),
    (["bench_crosscheck.py", "--clips", "9"], "--clips 9: the validation split has 6"),
    (["bench_crosscheck.py", "--codecs"], "--codecs names no codec"),
    (["neural_renderer.py", "--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_a_benchmark_refuses_its_arguments_in_one_line_before_it_works(
        data_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    script, *rest = args
    cmd = [sys.executable, str(ROOT / "benchmarks" / script),
           *(a.replace("{file}", str(blocker)) for a in rest)]
    # This checkout's code, whatever is installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert p.stdout == ""  # refused before any work was printed
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a_file"]
