"""Curve arithmetic and reports on synthetic curves whose answers are known."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from facecodec.bench.curves import bd_rate, envelope, frontier, meet, rate_at_quality
from facecodec.bench.report import headline, mean_curves, write_report

RATES = np.array([10.0, 20.0, 40.0, 80.0])
VMAF = np.array([30.0, 45.0, 60.0, 75.0])


def test_rate_at_quality_interpolates_in_log_rate() -> None:
    assert rate_at_quality(RATES, VMAF, 37.5) == pytest.approx(math.sqrt(200))
    assert rate_at_quality(RATES, VMAF, 30.0) == pytest.approx(10.0)
    assert rate_at_quality(RATES, VMAF, 29.0) is None
    assert rate_at_quality(RATES, VMAF, 76.0) is None
    # Lower-is-better metric (a distance): 2 px at 10 kbps, 1 px at 40 kbps.
    assert rate_at_quality(np.array([10, 40]), np.array([2.0, 1.0]), 1.5, False) == (
        pytest.approx(20.0)
    )


def test_envelope_drops_dominated_points() -> None:
    lr, g = envelope(np.array([10, 15, 20, 30]), np.array([30, 25, 40, 40]))
    np.testing.assert_allclose(np.exp(lr), [10, 20])
    np.testing.assert_allclose(g, [30, 40])


def test_bd_rate_known_ratios() -> None:
    assert bd_rate(RATES, VMAF, RATES * 0.5, VMAF) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATES, VMAF, RATES * 2, VMAF) == pytest.approx(100.0, abs=1e-6)
    # Partial overlap: only the shared quality range counts.
    assert bd_rate(RATES, VMAF, RATES[2:] * 0.25, VMAF[2:]) == pytest.approx(-75.0, abs=1e-6)
    # Distances: lower is better, the same ratio must come out.
    akd = np.array([4.0, 3.0, 2.0, 1.0])
    assert bd_rate(RATES, akd, RATES * 0.5, akd, False) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATES, VMAF, np.array([1.0, 2.0]), np.array([5.0, 10.0])) is None


def test_meet_overlapping_curves() -> None:
    m = meet(RATES, VMAF, RATES / 10, VMAF)
    assert m.status == "overlap"
    assert m.ratio == pytest.approx(0.1) and m.overlap == (30.0, 75.0)
    assert "0.1x" in m.describe("facecodec", "x264-rt", "vmaf")


def test_meet_curves_that_do_not_overlap() -> None:
    # The test system stays below the anchor's floor: 3..20 VMAF at 2..4 kbps.
    below = meet(RATES, VMAF, np.array([2.0, 4.0]), np.array([3.0, 20.0]))
    assert below.status == "below" and below.ratio is None
    assert below.quality_gap == pytest.approx(10.0)
    assert below.rate_ratio == pytest.approx(0.4)
    text = below.describe("facecodec", "x264-rt", "vmaf")
    assert "do not overlap" in text and "10" in text and "0.4x" in text
    above = meet(RATES, VMAF, np.array([100.0, 200.0]), np.array([80.0, 90.0]))
    assert above.status == "above" and above.quality_gap == pytest.approx(5.0)
    assert above.rate_ratio == pytest.approx(100 / 80)
    assert meet(RATES, VMAF, np.array([]), np.array([])).status == "insufficient"


def _points(system: str, scale: float, vmaf_shift: float) -> list[dict]:
    out = []
    for clip in ("a", "b"):
        for i, (r, q) in enumerate(zip(RATES, VMAF, strict=True)):
            out.append({
                "clip": clip, "system": system, "setting": f"q{i}", "frames": 10, "fps": 25.0,
                "bytes_all": 1, "bytes_net": 1, "bytes_steady": 1,
                "kbps_all": r * scale, "kbps_net": r * scale, "kbps_steady": r * scale * 0.8,
                "psnr_y": 30 + q / 10, "ms_ssim": 0.9 + q / 1000, "vmaf": q + vmaf_shift,
                "akd": 5 - q / 20, "aed": 0.5 - q / 200, "jitter": 1 - q / 100,
                "no_face_frames": [],
            })
    return out


def test_write_report_files_and_headline(tmp_path: Path) -> None:
    points = _points("x264-rt", 1.0, 0.0) + _points("facecodec", 0.1, -50.0)
    points.append({**points[0], "system": "svtav1-ld", "clip": "a"})  # only on one clip
    res = write_report(points, tmp_path, {"clips": ["a", "b"], "max_frames": 10,
                                          "quick": True, "sampling": {}}, "facecodec")
    for name in ("results.json", "results.csv", "report.md", "rd_vmaf.png", "rd_akd.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["points"]) == len(points)
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(points)
    head = saved["headline"]["metrics"]
    # VMAF: facecodec's best (25) is below x264's floor (30): no overlap, said plainly.
    assert head["vmaf"]["kbps_all"]["status"] == "below"
    assert head["vmaf"]["kbps_all"]["quality_gap"] == pytest.approx(5.0)
    # PSNR tracks the same settings without the shift: a 0.1x ratio.
    assert head["psnr_y"]["kbps_all"]["ratio"] == pytest.approx(0.1)
    assert res["bd_rate"]["x264-rt"]["psnr_y"] == pytest.approx(-90.0, abs=1e-6)
    assert res["bd_rate"]["x264-rt"]["vmaf"] is None
    assert "do not overlap" in (tmp_path / "report.md").read_text()


def test_write_report_without_system_under_test(tmp_path: Path) -> None:
    res = write_report(_points("x264-rt", 1.0, 0.0), tmp_path, {"clips": [], "max_frames": 1,
                                                                 "quick": True, "sampling": {}})
    assert res["headline"]["status"].startswith("no system under test")
    assert res["rates_at_targets"]["x264-rt"]["vmaf_40"] == pytest.approx(10 * 2 ** (10 / 15))
    assert res["rates_at_targets"]["x264-rt"]["vmaf_30"] == pytest.approx(10.0)


def test_per_clip_rates_at_targets() -> None:
    from facecodec.bench.report import per_clip_rates_at_targets

    points = _points("x264-rt", 1.0, 0.0)
    for p in points:
        if p["clip"] == "b":  # clip b is 10 VMAF better at every rate: 30 is below its floor
            p["vmaf"] += 10
    got = per_clip_rates_at_targets(points)["x264-rt"]
    # VMAF 40: clip a needs 10 * 2**(10/15), clip b 10 kbps (its floor reaches 40 exactly).
    assert got["vmaf_40"] == f"{(10 * 2 ** (10 / 15) + 10) / 2:.3g}"
    assert got["vmaf_30"] == "<= 10"
    assert got["vmaf_60"].startswith("n/a") is False
    hard = per_clip_rates_at_targets(_points("x264-rt", 1.0, -40.0))["x264-rt"]
    assert hard["vmaf_60"] == "n/a (0 of 2 clips reach it)"


def test_per_clip_floor_with_two_families() -> None:
    """A clip whose cheapest family already beats the target while a dearer family starts
    below it: the target is below the clip's floor (the frontier lists the dearer family's
    low qualities at the cheap point's rate), not out of reach."""
    from facecodec.bench.report import per_clip_rates_at_targets, rates_at_targets

    points = []
    for clip in ("a", "b"):
        for setting, family, rate, vmaf in (("m0", "motion", 1.0, 45.0),
                                            ("m1", "motion", 2.0, 55.0),
                                            ("l0", "layer", 4.0, 35.0),
                                            ("l1", "layer", 8.0, 70.0)):
            points.append({**_points("fc", 1.0, 0.0)[0], "clip": clip, "setting": setting,
                           "family": family, "kbps_all": rate, "kbps_steady": rate, "vmaf": vmaf})
    got = per_clip_rates_at_targets(points)["fc"]
    assert got["vmaf_40"] == "<= 1"
    assert got["vmaf_60"] == f"{4 * 2 ** (25 / 35):.3g}"  # on the layer family
    assert rates_at_targets(mean_curves(points))["fc"]["vmaf_40"] == "below floor"


def test_frontier_takes_the_cheapest_family_at_each_quality() -> None:
    """Two families: B's one setting beats A's cheapest but costs more than A does at B's
    quality. One envelope over all points joins B to A's next point and costs more between
    them than A alone; the frontier takes the cheaper family at each quality."""
    rates = np.array([10.0, 40.0, 20.0])
    vmaf = np.array([40.0, 70.0, 50.0])
    fams = ["A", "A", "B"]
    r, q = frontier(rates, vmaf, fams)
    a_only = rate_at_quality(rates[:2], vmaf[:2], 55.0)
    both = rate_at_quality(r, q, 55.0)
    one_envelope = rate_at_quality(rates, vmaf, 55.0)
    assert a_only is not None and both is not None and one_envelope is not None
    assert a_only == pytest.approx(20.0)
    assert both == pytest.approx(a_only, rel=1e-3)
    assert one_envelope > 1.15 * a_only  # the artefact the frontier avoids
    # A family cheaper over part of the range wins there.
    r2, q2 = frontier(np.array([10.0, 40.0, 12.0]), np.array([40.0, 70.0, 45.0]), fams)
    assert rate_at_quality(r2, q2, 45.0) == pytest.approx(12.0, rel=1e-3)
    # Lower is better: the same curves as distances.
    rl, ql = frontier(rates, -vmaf, fams, higher_is_better=False)
    assert rate_at_quality(rl, ql, -55.0, False) == pytest.approx(a_only, rel=1e-3)


def test_headline_uses_the_frontier_of_a_system_with_families() -> None:
    pts = []
    for setting, fam, kbps, vmaf in (("a1", "A", 10.0, 40.0), ("a2", "A", 40.0, 70.0),
                                     ("b1", "B", 12.0, 45.0)):
        pts.append({"clip": "c", "system": "test", "setting": setting, "family": fam,
                    "kbps_all": kbps, "kbps_net": kbps, "kbps_steady": kbps, "vmaf": vmaf})
    for setting, kbps, vmaf in (("x1", 20.0, 40.0), ("x2", 80.0, 70.0)):
        pts.append({"clip": "c", "system": "anchor", "setting": setting, "kbps_all": kbps,
                    "kbps_net": kbps, "kbps_steady": kbps, "vmaf": vmaf})
    h = headline(mean_curves(pts), "test", "anchor")["metrics"]["vmaf"]["kbps_all"]
    # A alone is exactly half the anchor's rate everywhere; B only makes it cheaper.
    assert h["ratio_max"] == pytest.approx(0.5, rel=1e-2)
    assert h["ratio_min"] < 0.5


def test_report_reads_the_target_against_both_low_delay_anchors(tmp_path: Path) -> None:
    """The test system needs 0.2x x264-rt's rate up to VMAF 60, then its ratio climbs to
    0.4x at 75; low-delay AV1 needs half x264-rt's rate, so the target (a third of x264's
    rate and half of AV1's) holds from the bottom to a VMAF between 60 and 75, and AV1's
    half is the limit that binds."""
    from facecodec.bench.curves import ratio_at
    from facecodec.bench.report import against_anchors, anchor_summary

    def _curve_of(curves: dict, system: str) -> tuple[np.ndarray, np.ndarray]:
        rows = curves[system]
        return (np.array([r["kbps_all"] for r in rows]), np.array([r["vmaf"] for r in rows]))

    test = _points("facecodec", 1.0, 0.0)
    for p in test:
        step = int(p["setting"][1:])
        p["kbps_all"] = p["kbps_steady"] = RATES[step] * (0.4 if step == 3 else 0.2)
    points = _points("x264-rt", 1.0, 0.0) + _points("svtav1-ld", 0.5, 0.0) + test
    res = write_report(points, tmp_path, {"clips": ["a", "b"], "max_frames": 10,
                                          "quick": True, "sampling": {}}, "facecodec")
    ours = res["against_anchors"]
    assert ours == against_anchors(mean_curves(points), "facecodec")
    assert ours["anchors"] == ["x264-rt", "svtav1-ld"]
    assert ours["ratios"]["svtav1-ld"]["psnr_y"]["kbps_all"] == pytest.approx(
        2 * ours["ratios"]["x264-rt"]["psnr_y"]["kbps_all"])
    vmaf = ours["target"]["kbps_all/vmaf"]
    assert vmaf["overlap"] == pytest.approx((30.0, 75.0))
    [(lo, hi)] = vmaf["met"]
    assert lo == pytest.approx(30.0) and 60.0 < hi < 75.0
    # It ends where AV1's limit binds (x264-rt ratio 0.25), not x264's (a third).
    curves = mean_curves(points)
    x264 = [*_curve_of(curves, "x264-rt"), *_curve_of(curves, "facecodec")]
    assert ratio_at(*x264, np.array([hi]))[0] == pytest.approx(0.25, abs=0.005)
    levels = ours["vmaf_levels"]
    at45 = next(r for r in levels if r["vmaf"] == 45)
    assert at45["kbps_all"] == pytest.approx(4.0)
    assert at45["x264-rt/kbps_all"] == pytest.approx(0.2)
    assert at45["svtav1-ld/kbps_all"] == pytest.approx(0.4)
    assert next(r for r in levels if r["vmaf"] == 90)["kbps_all"] is None
    text = (tmp_path / "report.md").read_text()
    assert "## Against the low-delay anchors" in text and "| 45 | 4.00 / 4.00 |" in text
    console = anchor_summary(ours)
    vmaf_x264 = ours["ratios"]["x264-rt"]["vmaf"]["kbps_all"]
    assert console[0].startswith(f"against x264-rt: vmaf {vmaf_x264:.2f}x / ")
    assert console[1].startswith("against svtav1-ld: vmaf ")
    assert console[2] == "target (at most 0.33 of x264-rt's and 0.5 of svtav1-ld's rate):"
    assert f"  (kbps_all) vmaf: met over 30..{hi:.4g}; the curves overlap over 30..75" in console
    # Three times the rate everywhere: the target is met nowhere, and the report says so.
    for p in test:
        p["kbps_all"] = p["kbps_steady"] = p["kbps_all"] * 3
    res = write_report(points, tmp_path, {"clips": ["a", "b"], "max_frames": 10,
                                          "quick": True, "sampling": {}}, "facecodec")
    assert res["against_anchors"]["target"]["kbps_all/vmaf"]["met"] == []
    assert "vmaf: not met; the curves overlap over 30..75" in (tmp_path / "report.md").read_text()
    # Where an anchor has no rate at a VMAF facecodec reaches, the table says why: x264's
    # curve stops below it (facecodec reaches what x264 does not), or AV1's cheapest point
    # is above it already (there is nothing to compare). Both were "-", as is a VMAF
    # facecodec does not reach.
    points = _points("x264-rt", 1.0, -10.0) + _points("svtav1-ld", 0.5, 12.0) + test
    res = write_report(points, tmp_path, {"clips": ["a", "b"], "max_frames": 10,
                                          "quick": True, "sampling": {}}, "facecodec")
    rows = {r["vmaf"]: r for r in res["against_anchors"]["vmaf_levels"]}
    assert rows[40]["svtav1-ld/kbps_all/none"] == "below range"
    assert rows[40]["x264-rt/kbps_all"] is not None and "x264-rt/kbps_all/none" not in rows[40]
    assert rows[75]["x264-rt/kbps_steady/none"] == "not reached"
    text = (tmp_path / "report.md").read_text()
    assert re.search(r"\| 40 \| [0-9.]+ / [0-9.]+ \| [0-9.]+x / [0-9.]+x \| below range / "
                     r"below range \|", text)
    assert re.search(r"\| 75 \| [0-9.]+ / [0-9.]+ \| not reached / not reached \| [0-9.]+x",
                     text)
    assert "not reached: the anchor's curve stops below this VMAF" in text
    # Better than every anchor point (its worst VMAF above their best): no quality both
    # reach, so the target is neither met nor missed (it said "not met").
    for p in test:
        p["vmaf"] += 100
    write_report(points, tmp_path, {"clips": ["a", "b"], "max_frames": 10, "quick": True,
                                    "sampling": {}}, "facecodec")
    assert "vmaf: cannot be judged: the curves do not overlap" in (
        tmp_path / "report.md").read_text()


def test_a_setting_not_scored_on_every_clip_is_said_to_be_left_out(tmp_path: Path) -> None:
    """A rung a short clip cannot be coded at is missing on that clip: the mean curves
    leave it out (a mean over other clips would mix clip sets), and the report says so."""
    points = [p for p in _points("facecodec", 1.0, 0.0)
              if not (p["clip"] == "b" and p["setting"] == "q3")] + _points("x264-rt", 1.0, 0.0)
    res = write_report(points, tmp_path, {"clips": ["a", "b"], "max_frames": 10,
                                          "quick": True, "sampling": {}}, "facecodec")
    assert res["left_out"] == ["facecodec q3 (1 of 2 clips)"]
    assert [r["setting"] for r in res["curves"]["facecodec"]] == ["q0", "q1", "q2"]
    assert ("Left out of the mean curves, as not scored on every clip: facecodec q3 (1 of 2 "
            "clips).") in (tmp_path / "report.md").read_text()
    full = write_report(_points("facecodec", 1.0, 0.0), tmp_path, {
        "clips": ["a", "b"], "max_frames": 10, "quick": True, "sampling": {}}, "facecodec")
    assert full["left_out"] == [] and "Left out" not in (tmp_path / "report.md").read_text()
