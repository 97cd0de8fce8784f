"""The bench end to end on a short real clip, with a plug-in system, and its bad paths."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from facecodec.bench.reference import ReferenceClip, baselines_reference
from facecodec.bench.runner import add_bench_arguments, bench_main, run_bench
from facecodec.bench.still import still_system
from facecodec.bench.system import SystemPoint
from facecodec.errors import FacecodecError

DATA = Path(__file__).parents[1].parent / "shared" / "data"
CLIP = DATA / "clips" / "grid_swiz3n.mpg"
# Every test here scores real footage (directly or through a fixture).
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared data missing: {CLIP}")


def test_run_bench_with_plugin(tmp_path: Path) -> None:
    res = run_bench(
        [CLIP], tmp_path / "out", systems=["x264-rt"], quick=True,
        extra={"still": still_system((20, 80))}, max_frames=10,
        metrics=("psnr_y", "vmaf"), cache_dir=tmp_path / "cache",
    )
    systems = {p["system"] for p in res["points"]}
    assert systems == {"x264-rt", "still"}
    assert res["headline"]["status"] == "ok" and res["headline"]["test"] == "still"
    still = [p for p in res["points"] if p["system"] == "still"]
    assert all(p["kbps_steady"] == 0 and p["kbps_all"] > 0 for p in still)
    x264 = sorted((p for p in res["points"] if p["system"] == "x264-rt"),
                  key=lambda p: p["kbps_all"])
    assert x264[0]["vmaf"] < x264[-1]["vmaf"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["clips_done"] == ["grid_swiz3n"]
    assert "vmaf" in saved["headline"]["metrics"]


def test_rerun_reuses_conventional_points(tmp_path: Path) -> None:
    kw = {"systems": ["x264-rt"], "quick": True, "max_frames": 8, "metrics": ("psnr_y",),
          "cache_dir": tmp_path / "cache"}
    first = run_bench([CLIP], tmp_path / "a", **kw)
    calls: list[str] = []

    def still(ref: ReferenceClip, source: Path) -> list[SystemPoint]:
        calls.append(ref.name)
        return still_system((50,))(ref, source)

    again = run_bench([CLIP], tmp_path / "b", extra={"still": still}, reuse=first, **kw)
    x264 = [p for p in again["points"] if p["system"] == "x264-rt"]
    assert x264 == [p for p in first["points"] if p["system"] == "x264-rt"]
    assert calls == ["grid_swiz3n"]  # the plug-in still ran
    with pytest.raises(FacecodecError, match="scored with another max_frames 8, here 9"):
        run_bench([CLIP], tmp_path / "c", reuse=first, **{**kw, "max_frames": 9})
    with pytest.raises(FacecodecError, match="without clip"):
        run_bench([CLIP], tmp_path / "c", reuse={**first, "points": [1]}, **kw)
    high = {**first["points"][0], "psnr_y": "high"}
    with pytest.raises(FacecodecError, match="psnr_y"):
        run_bench([CLIP], tmp_path / "c", reuse={**first, "points": [high]}, **kw)
    # Numbers a run cannot have made: an infinite score or rate, a negative rate.
    for field, value in (("psnr_y", float("inf")), ("kbps_all", 1e400), ("kbps_steady", -5.0),
                         ("bytes_all", -1)):
        bad = {**first["points"][0], field: value}
        with pytest.raises(FacecodecError, match=f"without {field}"):
            run_bench([CLIP], tmp_path / "c", reuse={**first, "points": [bad]}, **kw)


def test_a_rerun_takes_earlier_points_only_for_the_same_video(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Points are told apart by clip name: another video of that name took the first one's
    # anchor points, and every ratio of the report compared two videos.
    kw = {"systems": ["x264-rt"], "quick": True, "max_frames": 8, "metrics": ("psnr_y",),
          "cache_dir": tmp_path / "cache"}
    first = run_bench([CLIP], tmp_path / "a", **kw)
    assert list(first["config"]["clip_ids"]) == ["grid_swiz3n"]
    other = tmp_path / "elsewhere" / CLIP.name
    other.parent.mkdir()
    other.symlink_to(DATA / "clips" / "grid_lbbc2a.mpg")
    capsys.readouterr()
    again = run_bench([other], tmp_path / "b", reuse=first, **kw)
    assert "is not the video the earlier results call grid_swiz3n" in capsys.readouterr().err
    assert {p["kbps_all"] for p in again["points"]}.isdisjoint(
        p["kbps_all"] for p in first["points"])
    # Results that did not record their videos are still taken by name, and said; what the
    # new results record is only what was checked.
    old = {**first, "config": {k: v for k, v in first["config"].items() if k != "clip_ids"}}
    again = run_bench([CLIP], tmp_path / "c", reuse=old, **kw)
    assert again["points"] == first["points"] and again["config"]["clip_ids"] == {}
    assert "do not record which video grid_swiz3n was" in capsys.readouterr().err


def test_a_rerun_codes_again_a_clip_cut_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # facecodec's crop follows its sender: after a change there, the earlier anchor points
    # were scored against other frames than the ones facecodec now draws.
    kw = {"systems": ["x264-rt"], "quick": True, "max_frames": 8, "metrics": ("psnr_y",),
          "cache_dir": tmp_path / "cache"}
    first = run_bench([CLIP], tmp_path / "a", **kw)
    crop = first["config"]["crop_ids"]["grid_swiz3n"]

    def moved(path: Path, size: int, frames: int) -> ReferenceClip:
        ref = baselines_reference(path, size, frames)
        return ReferenceClip(np.ascontiguousarray(ref.frames[:, ::-1]), ref.fps, ref.name)

    moved.__name__ = "baselines_reference"  # the same crop by name, cut otherwise
    capsys.readouterr()
    again = run_bench([CLIP], tmp_path / "b", reuse=first, reference_fn=moved, **kw)
    assert "grid_swiz3n is cut otherwise than in the earlier results" in capsys.readouterr().err
    assert again["config"]["crop_ids"]["grid_swiz3n"] != crop
    assert {p["psnr_y"] for p in again["points"]}.isdisjoint(
        p["psnr_y"] for p in first["points"])
    # The same crop: every point taken, nothing said. Results that recorded the video but
    # not its crop: taken, and said.
    same = run_bench([CLIP], tmp_path / "c", reuse=first, **kw)
    assert same["points"] == first["points"] and same["config"]["crop_ids"] == {
        "grid_swiz3n": crop}
    assert "note" not in capsys.readouterr().err
    old = {**first, "config": {k: v for k, v in first["config"].items() if k != "crop_ids"}}
    again = run_bench([CLIP], tmp_path / "d", reuse=old, **kw)
    assert again["points"] == first["points"] and again["config"]["crop_ids"] == {}
    assert "do not record how grid_swiz3n was cut" in capsys.readouterr().err


def test_plugin_with_wrong_frame_count_is_rejected(tmp_path: Path) -> None:
    def short(ref: ReferenceClip, source: Path) -> list[SystemPoint]:
        return [SystemPoint("short", "s", ref.frames[:-1], 10, 10, 5)]

    with pytest.raises(FacecodecError, match="gave frames"):
        run_bench([CLIP], tmp_path, systems=[], extra={"short": short}, max_frames=5,
                  metrics=("psnr_y",), cache_dir=tmp_path / "cache")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_main_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")  # bad input leaves no folder behind
    assert bench_main(_args(str(tmp_path / "missing.mp4"), "--out", out)) == 2
    assert "no such file" in capsys.readouterr().err
    assert bench_main(_args(str(CLIP), "--renderers", "nope", "--out", out)) == 2
    assert "facecodec: error: unknown renderer" in capsys.readouterr().err
    assert bench_main(_args(str(CLIP), "--codecs", "mpeg1", "--out", out)) == 2
    assert "unknown codec(s) mpeg1" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    argv = (str(CLIP), "--reuse", str(tmp_path / "bad.json"), "--out", out)
    assert bench_main(_args(*argv)) == 2
    assert "cannot read" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench_main(_args(str(empty), "--out", out)) == 2
    assert "no video files" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert bench_main(_args(str(CLIP), "--out", str(blocked / "bench"))) == 2
    # One line: the note on running without --renderers came first.
    assert capsys.readouterr().err.startswith("facecodec: error: cannot create folder")
    # A picture is read by FFmpeg as a one-frame video: it was benched, exit 0, a report of
    # rates over one frame. Text named .mp4 is refused before the run, in one line.
    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("not a video")
    for clip, why in ((DATA / "portraits" / "grid_bbaf2n_frame000.png",
                       "a still picture, not a video"),
                      (notvideo, "not a video file PyAV can read")):
        assert bench_main(_args(str(clip), "--out", out)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"facecodec: error: {clip}: ")
        assert why in err, err
    # Named codecs none and no renderer: nothing would run, and an empty report said "done".
    assert bench_main(_args(str(CLIP), "--codecs", "--out", out)) == 2
    assert "nothing to bench" in capsys.readouterr().err
    same_name = tmp_path / "elsewhere" / CLIP.name
    same_name.parent.mkdir()
    same_name.symlink_to(CLIP)
    assert bench_main(_args(str(CLIP), str(same_name), "--out", out)) == 2
    assert "two clips are named grid_swiz3n" in capsys.readouterr().err
    # Every file a run writes is checked before it: a folder at report.md failed after the
    # whole run and left a temporary file.
    (tmp_path / "busy" / "report.md").mkdir(parents=True)
    assert bench_main(_args(str(CLIP), "--out", str(tmp_path / "busy"))) == 2
    assert "cannot write" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["report.md"]
    for reuse, why in (('{"config": {"clip_ids": []}, "points": []}', "its clip_ids are not"),
                       ('{"config": {"crop_ids": {"a": 1}}, "points": []}',
                        "its crop_ids are not"),
                       ('{"config": {"clip_ids": {"a": null}}, "points": []}',
                        "its clip_ids are not"),
                       ("[1]", "not a bench's results.json"),
                       ('{"config": {}, "points": 5}', "not a bench's results.json")):
        (tmp_path / "bad.json").write_text(reuse)
        assert bench_main(_args(*argv)) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_clip_the_bench_cannot_use_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clip without a face among others: the error says which; and a reference cache that
    cannot be written (a file in its way) only costs the caching."""
    from fractions import Fraction

    from facecodec.capture.video import VideoWriter

    blank = tmp_path / "blank.mp4"
    writer = VideoWriter(blank, Fraction(25), 128, 128)
    for _ in range(12):
        writer.write(np.full((128, 128, 3), 90, np.uint8))
    writer.close()
    with pytest.raises(FacecodecError, match=f"{blank}: no face found"):
        run_bench([CLIP, blank], tmp_path / "o", systems=["x264-rt"], quick=True,
                  max_frames=6, metrics=("psnr_y",), cache_dir=None)
    # The report written after the first clip says it covers one of the two.
    assert "(scored so far: 1 of 2)" in (tmp_path / "o" / "report.md").read_text()
    (tmp_path / "cache").write_text("a file where the cache would go")
    res = run_bench([CLIP], tmp_path / "o2", systems=["x264-rt"], quick=True, max_frames=6,
                    metrics=("psnr_y",), cache_dir=tmp_path / "cache")
    assert res["config"]["clips_done"] == ["grid_swiz3n"]
    assert "warning: reference crops not cached" in capsys.readouterr().err


def test_a_rung_a_short_clip_cannot_be_coded_at_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over 2 frames the layer's intra picture alone is 19 kbps: the 8 kbps layer rung
    cannot be met. It ended the whole bench; it is left out, and said."""
    from facecodec.bench.facecodec_system import facecodec_reference, facecodec_system

    res = run_bench([CLIP], tmp_path / "out", systems=[], quick=True,
                    extra={"warp": facecodec_system(("warp",), quick=True)},
                    reference_fn=facecodec_reference, max_frames=2, metrics=("psnr_y",),
                    cache_dir=None)
    assert sorted(p["setting"] for p in res["points"]) == ["low-k40", "medium-k60"]
    assert ("note: facecodec-warp lowest-layer8 skipped on grid_swiz3n: layer rate 8 kbps is "
            "below the lowest this clip allows") in capsys.readouterr().err
    # Said in the report too, which a rung skipped on every clip left without a word.
    [skip] = res["config"]["skipped"]
    assert skip.startswith("facecodec-warp lowest-layer8 on grid_swiz3n (layer rate 8 kbps")
    assert f"Not scored (the system could not code the clip at the setting): {skip}." in (
        tmp_path / "out" / "report.md").read_text()


def test_bench_scores_the_frames_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = (str(CLIP), "--codecs", "x264-rt", "--frames", "6", "--out", str(out),
            "--cache", str(tmp_path / "cache"))
    assert bench_main(_args(*argv)) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["max_frames"] == 6 and res["config"]["quick"] is False
    assert res["points"] and {p["frames"] for p in res["points"]} == {6}
    # The BASELINES.md crop is kept where --cache says.
    kept = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert kept == [".json", ".npy"], kept


def test_a_training_clip_is_told_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bench notes a training clip (its scores flatter the networks), a copy of one
    too; a validation clip, or another video under a training clip's name, is not one."""
    from facecodec.bench.facecodec_system import register_renderers
    from facecodec.bench.runner import trained_on

    train = DATA / json.loads((DATA / "splits.json").read_text())["train"][0]
    copy = tmp_path / train.name
    copy.write_bytes(train.read_bytes())
    other = tmp_path / "other" / train.name
    other.parent.mkdir()
    other.write_bytes(CLIP.read_bytes())
    assert trained_on(train) and trained_on(copy)
    assert not trained_on(CLIP) and not trained_on(other)
    assert not trained_on(tmp_path / "missing" / train.name)
    register_renderers()
    renamed = tmp_path / "renamed.mp4"
    renamed.write_bytes(train.read_bytes())
    assert trained_on(renamed)  # by content, whatever its name
    argv = (str(copy), "--quick", "--frames", "2", "--renderers", "warp", "--codecs", "x264-rt",
            "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"))
    assert bench_main(_args(*argv)) == 0
    assert (f"note: {copy} is a training clip: facecodec's networks learnt from it, so its "
            "scores there flatter them") in capsys.readouterr().err
    assert f"Training clips (facecodec's networks learnt from them, so its scores there " \
           f"flatter them): {copy.stem}." in (tmp_path / "out" / "report.md").read_text()
    # A run refused for its --reuse is one line: no note comes before the error.
    earlier = json.loads((tmp_path / "out" / "results.json").read_text())
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    again = (*argv[:3], "3", *argv[4:-4], "--out", str(tmp_path / "again"),
             "--reuse", str(tmp_path / "earlier.json"))
    assert bench_main(_args(*again)) == 2
    err = capsys.readouterr().err
    assert err.startswith("facecodec: error: cannot reuse the earlier results: they were "
                          "scored with another max_frames 2, here 3") and err.count("\n") == 1


def test_still_system_points(tmp_path: Path) -> None:
    frames = np.full((4, 64, 64, 3), 100, np.uint8)
    pts = still_system((10, 90))(ReferenceClip(frames, 25, "flat"), tmp_path)
    assert [p.setting for p in pts] == ["jpeg_q=10", "jpeg_q=90"]
    assert all(p.frames.shape == frames.shape and p.bytes_steady == 0 for p in pts)


def test_bench_facecodec_renderer_on_its_own_crop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from facecodec.bench.facecodec_system import facecodec_reference, register_renderers

    register_renderers()
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    argv = (str(CLIP), "--quick", "--renderers", "warp", "--codecs", "x264-rt", "--out", str(out),
            "--cache", str(cache))
    assert bench_main(_args(*argv)) == 0
    assert "training clip" not in capsys.readouterr().err  # a validation clip
    # facecodec's crop follows its sender: it is cut from the analysis each run, not kept,
    # where a kept one would be read back unchanged after the sender changed.
    assert not cache.exists()
    res = json.loads((out / "results.json").read_text())
    assert res["headline"]["test"] == "facecodec-warp"
    assert res["headline"]["status"] == "ok"
    fc = [p for p in res["points"] if p["system"] == "facecodec-warp"]
    assert sorted(p["setting"] for p in fc) == ["low-k40", "lowest-layer8", "medium-k60"]
    by = {p["setting"]: p for p in fc}
    assert by["low-k40"]["bytes_all"] < by["medium-k60"]["bytes_all"]
    # More motion rate, better picture (measured: PSNR-Y 37.1 -> 38.6, VMAF 64.5 -> 71.5).
    assert by["medium-k60"]["psnr_y"] > by["low-k40"]["psnr_y"] + 0.5
    assert by["medium-k60"]["vmaf"] > by["low-k40"]["vmaf"] + 3
    # Steady state leaves out the first reference picture: for the layer, the intra picture
    # its keyframe borrows (measured 4.55 of 10.0 kbps steady on this 40-frame clip); motion
    # alone spends most of the clip on its reference picture too.
    assert 0.2 < by["lowest-layer8"]["kbps_steady"] / by["lowest-layer8"]["kbps_all"] < 0.8
    assert by["low-k40"]["kbps_steady"] < 0.5 * by["low-k40"]["kbps_all"]
    # Rates count the whole stream; the steady rate drops the reference picture.
    assert all(0 < p["kbps_steady"] < p["kbps_all"] for p in fc)
    assert all(p["psnr_y"] > 25 and p["ms_ssim"] > 0.85 for p in fc)
    # Every codec was scored against facecodec's crop, not the BASELINES one.
    assert res["config"]["reference"] == facecodec_reference.__name__
    assert {p["frames"] for p in res["points"]} == {40}
