"""Bench results: results.json, results.csv, rate-quality plots, BD-rates, report.md.

Curves are validation means: for each system and setting, rates and metrics averaged over
the clips (as BASELINES.md does), then compared in log-rate at equal quality.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from facecodec.bench.curves import (
    bd_rate,
    beats_floor,
    frontier,
    meet,
    rate_at_quality,
    ratio_at,
)
from facecodec.bench.metrics import ALL_METRICS, HIGHER_IS_BETTER
from facecodec.files import write_text

RATE_KINDS = ("kbps_all", "kbps_net", "kbps_steady")
ANCHOR = "x264-rt"
# Quality targets of BASELINES.md's table, to cross-check and to read rates off the curves.
TARGETS: tuple[tuple[str, float], ...] = (
    ("vmaf", 30.0), ("vmaf", 40.0), ("vmaf", 50.0), ("vmaf", 60.0), ("ms_ssim", 0.95),
)

# The anchors a call could use instead (no look-ahead, no reordering), and the project's
# target against them: at equal quality, at most this fraction of their rate.
LOW_DELAY_ANCHORS = ("x264-rt", "svtav1-ld", "svtav1-ld-p4")
TARGET_RATIOS = {"x264-rt": 1 / 3, "svtav1-ld": 1 / 2}
TARGET_METRICS = ("vmaf", "ms_ssim")
VMAF_LEVELS = tuple(range(40, 95, 5))
# Why the VMAF-levels table has no ratio where facecodec has a rate.
NOT_REACHED, BELOW_RANGE = "not reached", "below range"


def mean_curves(points: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per system: one row per setting with rates and metrics averaged over clips,
    rate ascending. Settings not run on every clip of the system are left out, so a mean
    never mixes different clip sets."""
    clips_of: dict[str, set[str]] = defaultdict(set)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        clips_of[p["system"]].add(p["clip"])
        groups[(p["system"], p["setting"])].append(p)
    curves: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (system, setting), rows in groups.items():
        if {r["clip"] for r in rows} != clips_of[system]:
            continue
        row: dict[str, Any] = {"system": system, "setting": setting, "clips": len(rows),
                               "family": rows[0].get("family", "")}
        for k in (*RATE_KINDS, *ALL_METRICS):
            vals = [r[k] for r in rows if k in r and r[k] is not None and not math.isnan(r[k])]
            if vals:
                row[k] = float(np.mean(vals))
        curves[system].append(row)
    for rows in curves.values():
        rows.sort(key=lambda r: r["kbps_all"])
    return dict(curves)


def partial_settings(points: list[dict[str, Any]]) -> list[str]:
    """The settings mean_curves leaves out, each as "system setting (n of m clips)": run on
    some of the system's clips only (a rung a short clip cannot be coded at)."""
    clips_of: dict[str, set[str]] = defaultdict(set)
    on: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in points:
        clips_of[p["system"]].add(p["clip"])
        on[(p["system"], p["setting"])].add(p["clip"])
    return [f"{system} {setting} ({len(clips)} of {len(clips_of[system])} clips)"
            for (system, setting), clips in on.items() if clips != clips_of[system]]


def _points(rows: list[dict[str, Any]], rate: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    ok = [r for r in rows if rate in r and metric in r]
    return np.array([r[rate] for r in ok]), np.array([r[metric] for r in ok])


def _curve(rows: list[dict[str, Any]], rate: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The points comparisons use: the settings themselves, or for a system with several
    families of settings the best of them at each quality (`curves.frontier`)."""
    r, q = _points(rows, rate, metric)
    families = [row.get("family", "") for row in rows if rate in row and metric in row]
    if len(set(families)) > 1:
        return frontier(r, q, families, HIGHER_IS_BETTER[metric])
    return r, q


def headline(
    curves: dict[str, list[dict[str, Any]]], test: str | None, anchor: str = ANCHOR
) -> dict[str, Any]:
    """Bitrate ratio test / anchor at equal quality per metric and rate kind, read where
    the curves meet, or how far apart they are when they do not."""
    if test is None or test not in curves:
        return {"status": "no system under test in this run", "test": test, "anchor": anchor}
    if anchor not in curves:
        return {"status": f"anchor {anchor} not in this run", "test": test, "anchor": anchor}
    out: dict[str, Any] = {"status": "ok", "test": test, "anchor": anchor, "metrics": {}}
    for metric in ALL_METRICS:
        per_rate = {}
        for rate in ("kbps_all", "kbps_steady"):
            ra, qa = _curve(curves[anchor], rate, metric)
            rt, qt = _curve(curves[test], rate, metric)
            if not len(ra) or not len(rt):
                continue
            m = meet(ra, qa, rt, qt, HIGHER_IS_BETTER[metric])
            per_rate[rate] = {**m.__dict__, "text": m.describe(test, anchor, metric)}
        if per_rate:
            out["metrics"][metric] = per_rate
    return out


def bd_rates(
    curves: dict[str, list[dict[str, Any]]], chosen: str, rate: str = "kbps_all"
) -> dict[str, dict[str, float | None]]:
    """BD-rate (%) of `chosen` against every other system, per metric (None: no overlap)."""
    out: dict[str, dict[str, float | None]] = {}
    if chosen not in curves:
        return out
    for other, rows in curves.items():
        if other == chosen:
            continue
        out[other] = {}
        for metric in ALL_METRICS:
            ra, qa = _curve(rows, rate, metric)
            rt, qt = _curve(curves[chosen], rate, metric)
            out[other][metric] = (
                bd_rate(ra, qa, rt, qt, HIGHER_IS_BETTER[metric]) if len(ra) and len(rt) else None
            )
    return out


def _ranges(quality: np.ndarray, ok: np.ndarray) -> list[tuple[float, float]]:
    """The runs of consecutive `quality` samples where `ok` holds, as (first, last)."""
    out, start = [], None
    for i, good in enumerate(ok):
        if good and start is None:
            start = i
        if start is not None and (not good or i == len(ok) - 1):
            end = i if good else i - 1
            out.append((float(quality[start]), float(quality[end])))
            start = None
    return out


def against_anchors(
    curves: dict[str, list[dict[str, Any]]], test: str | None, samples: int = 400
) -> dict[str, Any]:
    """`test` against each low-delay anchor in the run: the rate ratio at equal quality per
    metric (all bytes and steady state), where along VMAF and MS-SSIM it meets the
    project's target against all of TARGET_RATIOS' anchors at once, and its rate and the
    ratios at VMAF_LEVELS."""
    anchors = [a for a in LOW_DELAY_ANCHORS if a in curves]
    if test is None or test not in curves or not anchors:
        return {}
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for a in anchors:
        head = headline(curves, test, a)["metrics"]
        ratios[a] = {m: {rate: head.get(m, {}).get(rate, {}).get("ratio")
                         for rate in ("kbps_all", "kbps_steady")} for m in ALL_METRICS}
    target: dict[str, dict[str, Any]] = {}
    judged = [a for a in TARGET_RATIOS if a in curves]
    for rate in ("kbps_all", "kbps_steady"):
        for metric in TARGET_METRICS:
            hib = HIGHER_IS_BETTER[metric]
            rt, qt = _curve(curves[test], rate, metric)
            if not judged or not len(qt):
                continue
            grid = np.linspace(float(qt.min()), float(qt.max()), samples)
            each = [ratio_at(*_curve(curves[a], rate, metric), rt, qt, grid, hib)
                    for a in judged]
            covered = np.all([np.isfinite(r) for r in each], axis=0)
            ok = covered & np.all([r <= TARGET_RATIOS[a] + 1e-9
                                   for a, r in zip(judged, each, strict=True)], axis=0)
            cover = _ranges(grid, covered)
            target[f"{rate}/{metric}"] = {
                "overlap": (cover[0][0], cover[-1][1]) if cover else None,
                "met": _ranges(grid, ok),
            }
    levels = []
    for v in VMAF_LEVELS:
        row: dict[str, Any] = {"vmaf": v}
        for rate in ("kbps_all", "kbps_steady"):
            rt, qt = _curve(curves[test], rate, "vmaf")
            row[rate] = rate_at_quality(rt, qt, v) if len(rt) else None
            for a in anchors:
                ra, qa = _curve(curves[a], rate, "vmaf")
                got = ratio_at(ra, qa, rt, qt, np.array([v]))
                row[f"{a}/{rate}"] = float(got[0]) if np.isfinite(got[0]) else None
                if row[rate] is not None and row[f"{a}/{rate}"] is None and len(ra):
                    # Where facecodec reaches v but the anchor has no rate there: either
                    # its curve stops below v (facecodec reaches what it does not) or its
                    # cheapest point is above v already (no rate of its to compare with).
                    row[f"{a}/{rate}/none"] = (BELOW_RANGE if beats_floor(ra, qa, v)
                                               else NOT_REACHED)
        levels.append(row)
    return {"test": test, "anchors": anchors, "ratios": ratios,
            "target_ratios": {a: TARGET_RATIOS[a] for a in judged}, "target": target,
            "vmaf_levels": levels}


def rates_at_targets(
    curves: dict[str, list[dict[str, Any]]], rate: str = "kbps_all"
) -> dict[str, dict[str, Any]]:
    """Per system: lowest rate reached (and VMAF there) and the rate for each TARGETS
    quality, or "below floor" / "above top" where the curve does not reach it."""
    out: dict[str, dict[str, Any]] = {}
    for system, rows in curves.items():
        floor = min(rows, key=lambda r: r[rate])
        entry: dict[str, Any] = {"lowest_rate": floor[rate], "vmaf_at_lowest": floor.get("vmaf")}
        for metric, target in TARGETS:
            r, q = _curve(rows, rate, metric)
            key = f"{metric}_{target:g}"
            got = rate_at_quality(r, q, target, HIGHER_IS_BETTER[metric]) if len(r) else None
            if got is not None:
                entry[key] = got
            elif len(q) and beats_floor(r, q, target, HIGHER_IS_BETTER[metric]):
                entry[key] = "below floor"  # even the lowest rate does better than this
            else:
                entry[key] = "above top"
        out[system] = entry
    return out


def per_clip_rates_at_targets(
    points: list[dict[str, Any]], rate: str = "kbps_all"
) -> dict[str, dict[str, str]]:
    """Per system: the mean over clips of each clip's own rate for each TARGETS quality
    (the BASELINES.md convention), as display strings.

    A clip whose lowest rate already beats the target counts with that lowest rate and
    the mean is marked "<=" (an upper bound); a clip whose curve never reaches the target
    makes the entry "n/a (k of n clips reach it)".
    """
    by: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        by[p["system"]][p["clip"]].append(p)
    out: dict[str, dict[str, str]] = {}
    for system, clips in by.items():
        entry: dict[str, str] = {}
        for metric, target in TARGETS:
            hib = HIGHER_IS_BETTER[metric]
            vals, bound, missing = [], False, 0
            for rows in clips.values():
                r, q = _curve(rows, rate, metric)
                if not len(r):
                    missing += 1
                    continue
                got = rate_at_quality(r, q, target, hib)
                if got is None and beats_floor(r, q, target, hib):
                    got, bound = float(r.min()), True
                if got is None:
                    missing += 1
                else:
                    vals.append(got)
            key = f"{metric}_{target:g}"
            if missing:
                entry[key] = f"n/a ({len(vals)} of {len(clips)} clips reach it)"
            else:
                entry[key] = ("<= " if bound else "") + f"{float(np.mean(vals)):.3g}"
        out[system] = entry
    return out


def _atomic_write(path: Path, text: str) -> None:
    write_text(path, text)  # one line, and no temporary file left, where it cannot be


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    return v


def plot_curves(curves: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    """One PNG per metric: all-bytes and steady-state rate side by side, every system, clip
    means, log-rate axis. Lines follow each system's monotone envelope (across its families
    of settings where it has several: what the comparisons use); settings are markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from facecodec.bench.curves import envelope

    paths = []
    colours = {s: f"C{i % 10}" for i, s in enumerate(sorted(curves))}
    for metric in ALL_METRICS:
        better = HIGHER_IS_BETTER[metric]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
        drawn = False
        for ax, rate in zip(axes, ("kbps_all", "kbps_steady"), strict=True):
            for system, rows in sorted(curves.items()):
                r, q = _curve(rows, rate, metric)
                if not len(r):
                    continue
                lr, g = envelope(r, q, better)
                ax.plot(np.exp(lr), g if better else -g, "-", color=colours[system],
                        label=system, ms=3, lw=2.5 if system == ANCHOR else 1.2)
                pr, pq = _points(rows, rate, metric)
                ax.plot(pr, pq, "o", color=colours[system], ms=3, mfc="none")
                drawn = True
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xticks([t for t in (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 200)
                           if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]])
            ax.set_xlabel("kbit/s (all bytes)" if rate == "kbps_all"
                          else "kbit/s (steady state: first keyframe excluded)")
            ax.grid(True, which="both", alpha=0.3)
        if not drawn:
            plt.close(fig)
            continue
        axes[0].set_ylabel(metric + ("" if better else " (lower is better)"))
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{metric} vs rate, mean over clips (markers: settings)")
        fig.tight_layout()
        path = out_dir / f"rd_{metric}.png"
        tmp = out_dir / f".rd_{metric}.{os.getpid()}.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:.{digits}g}"


def _ratio_cell(all_bytes: float | None, steady: float | None,
                why: tuple[str, str] = ("-", "-")) -> str:
    """Two ratios, or in place of a missing one why it is missing."""
    return " / ".join(w if v is None else f"{v:.2f}x"
                      for v, w in zip((all_bytes, steady), why, strict=True))


def _target_text(key: str, t: dict[str, Any]) -> str:
    rate, metric = key.split("/")
    met = ", ".join(f"{lo:.4g}..{hi:.4g}" for lo, hi in t["met"])
    if not t["overlap"]:  # no quality both reach: neither met nor missed
        return f"({rate}) {metric}: cannot be judged: the curves do not overlap"
    over = "the curves overlap over {:.4g}..{:.4g}".format(*t["overlap"])
    return f"({rate}) {metric}: " + (f"met over {met}" if met else "not met") + f"; {over}"


def anchor_summary(res: dict[str, Any]) -> list[str]:
    """Console lines of `against_anchors`: VMAF and MS-SSIM ratios to each low-delay anchor
    and where the target holds (the report has every metric)."""
    if not res:
        return []
    lines = [f"against {a}: " + ", ".join(
        f"{m} {_ratio_cell(per[m]['kbps_all'], per[m]['kbps_steady'])}"
        for m in ("vmaf", "ms_ssim")) + " (all bytes / steady state)"
        for a, per in res["ratios"].items()]
    if res["target"]:
        limits = " and ".join(f"{v:.2g} of {a}'s" for a, v in res["target_ratios"].items())
        lines.append(f"target (at most {limits} rate):")
        lines += [f"  {_target_text(key, t)}" for key, t in res["target"].items()]
    return lines


def _anchor_lines(res: dict[str, Any]) -> list[str]:
    if not res:
        return []
    test = res["test"]
    metrics = [m for m in ALL_METRICS if m != "jitter"]
    lines = ["", "## Against the low-delay anchors", "",
             f"Rate {test} needs at equal quality, mean over the range where the curves "
             "overlap (all bytes / steady state):", "",
             "| anchor | " + " | ".join(metrics) + " |", "|---" * (1 + len(metrics)) + "|"]
    for a, per in res["ratios"].items():
        lines.append(f"| {a} | " + " | ".join(
            _ratio_cell(per[m]["kbps_all"], per[m]["kbps_steady"]) for m in metrics) + " |")
    if res["target"]:
        limits = " and ".join(f"{v:.2g} of {a}'s" for a, v in res["target_ratios"].items())
        lines += ["", f"Target (at most {limits} rate at equal quality), where met along "
                  f"{test}'s curve:", ""]
        lines += [f"- {_target_text(key, t)}" for key, t in res["target"].items()]
    anchors = res["anchors"]
    lines += ["", f"{test}'s rate at each VMAF (kbit/s, all bytes / steady state) and its "
              "ratio to each anchor's rate there:", "",
              "| VMAF | kbps | " + " | ".join(f"/ {a}" for a in anchors) + " |",
              "|---" * (2 + len(anchors)) + "|"]
    for row in res["vmaf_levels"]:
        if row["kbps_all"] is None and row["kbps_steady"] is None:
            continue
        kbps = " / ".join("-" if row[r] is None else f"{row[r]:.2f}"
                          for r in ("kbps_all", "kbps_steady"))
        cells = [_ratio_cell(row[f"{a}/kbps_all"], row[f"{a}/kbps_steady"],
                             (row.get(f"{a}/kbps_all/none", "-"),
                              row.get(f"{a}/kbps_steady/none", "-"))) for a in anchors]
        lines.append(f"| {row['vmaf']} | {kbps} | " + " | ".join(cells) + " |")
    if any(r["kbps_all"] is not None or r["kbps_steady"] is not None
           for r in res["vmaf_levels"]):
        lines += ["", f"{NOT_REACHED}: the anchor's curve stops below this VMAF; "
                  f"{BELOW_RANGE}: the anchor's cheapest point is above it already, so there "
                  f"is no rate of its to compare with; -: {test} does not reach it (or the "
                  "anchor has no VMAF scores)."]
    return lines


def _markdown(result: dict[str, Any], plots: list[Path]) -> str:
    lines = ["# facecodec bench report", ""]
    cfg = result["config"]
    names = [Path(c).name for c in cfg["clips"]]
    done = cfg.get("clips_done")
    if done is not None and len(done) < len(names):  # a run stopped (or failed) part-way
        names.append(f"(scored so far: {len(done)} of {len(names)})")
    lines += [
        f"Clips: {', '.join(names)}; "
        f"reference crop: {cfg.get('reference', '?')}; frames per clip: up to {cfg['max_frames']}; "
        f"quick: {cfg['quick']}; metric sampling: {cfg['sampling']}.",
        *(["", "Training clips (facecodec's networks learnt from them, so its scores there "
           "flatter them): " + ", ".join(cfg["training_clips"]) + "."]
          if cfg.get("training_clips") else []),
        *(["", "Not scored (the system could not code the clip at the setting): "
           + "; ".join(cfg["skipped"]) + "."] if cfg.get("skipped") else []),
        *(["", "Left out of the mean curves, as not scored on every clip: "
           + "; ".join(result["left_out"]) + "."] if result.get("left_out") else []),
        "",
        "## Headline",
        "",
    ]
    head = result["headline"]
    if head.get("status") != "ok":
        lines.append(f"No headline: {head.get('status')}.")
    else:
        for per_rate in head["metrics"].values():
            for rate, m in per_rate.items():
                lines.append(f"- ({rate}) {m['text']}")
    for system, other in result.get("headlines", {}).items():
        if other.get("status") == "ok":
            lines += ["", f"{system}:", ""]
            lines += [f"- ({rate}) {m['text']}" for per_rate in other["metrics"].values()
                      for rate, m in per_rate.items()]
    lines += _anchor_lines(result.get("against_anchors", {}))
    lines += ["", "## Rates at quality targets (mean over clips, kbit/s, all bytes)", ""]
    keys = [f"{m}_{t:g}" for m, t in TARGETS]
    lines.append("| system | lowest rate | VMAF there | " + " | ".join(keys) + " |")
    lines.append("|---" * (3 + len(keys)) + "|")
    for system, e in result["rates_at_targets"].items():
        cells = [_fmt(e["lowest_rate"]), _fmt(e["vmaf_at_lowest"])]
        cells += [_fmt(e.get(k)) for k in keys]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Rates at quality targets, mean of per-clip rates (BASELINES.md convention)",
        "",
        "Each clip's rate at the target, then the mean over clips (all / net / steady kbit/s;",
        "'<=': some clips beat the target at their lowest rate, counted at that rate).",
        "",
        "| system | " + " | ".join(keys) + " |",
        "|---" * (1 + len(keys)) + "|",
    ]
    per_clip = result["per_clip_rates_at_targets"]
    for system in per_clip["kbps_all"]:
        cells = [" / ".join(per_clip[k][system][key] for k in RATE_KINDS) for key in keys]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    chosen = result["bd_rate_system"]
    lines += ["", f"## BD-rate of {chosen} against each system (%, all bytes, negative = "
              "saves rate)", ""]
    lines.append("| against | " + " | ".join(ALL_METRICS) + " |")
    lines.append("|---" * (1 + len(ALL_METRICS)) + "|")
    for other, per in result["bd_rate"].items():
        lines.append(f"| {other} | " + " | ".join(_fmt(per.get(m)) for m in ALL_METRICS) + " |")
    lines += ["", "## Mean curves", ""]
    cols = [*RATE_KINDS, *ALL_METRICS]
    lines.append("| system | setting | " + " | ".join(cols) + " |")
    lines.append("|---" * (2 + len(cols)) + "|")
    for system, rows in result["curves"].items():
        for r in rows:
            lines.append(
                f"| {system} | {r['setting']} | " + " | ".join(_fmt(r.get(c), 4) for c in cols)
                + " |"
            )
    missing = [p for p in result["points"] if p.get("no_face_frames")]
    if missing:
        lines += ["", "## Reconstructions where no face was found", ""]
        for p in missing:
            lines.append(
                f"- {p['clip']} {p['system']} {p['setting']}: {len(p['no_face_frames'])} frames"
            )
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


# What write_report writes into its folder.
REPORT_FILES = ("results.json", "results.csv", "report.md",
                *(f"rd_{metric}.png" for metric in ALL_METRICS))


def write_report(
    points: list[dict[str, Any]],
    out_dir: Path,
    config: dict[str, Any],
    test_system: str | None = None,
    anchor: str = ANCHOR,
    tested: list[str] | None = None,
) -> dict[str, Any]:
    """Write results.json, results.csv, rd_<metric>.png and report.md; return the result.

    test_system gets the headline; every system in `tested` (the plug-ins, e.g. facecodec
    with each renderer) also gets its own in `headlines`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = mean_curves(points)
    chosen = test_system if test_system in curves else anchor
    others = [t for t in tested or [] if t != test_system]
    result: dict[str, Any] = {
        "config": config,
        "headline": headline(curves, test_system, anchor),
        "headlines": {t: headline(curves, t, anchor) for t in others},
        "bd_rate_system": chosen,
        "bd_rate": bd_rates(curves, chosen),
        "against_anchors": against_anchors(curves, test_system),
        "rates_at_targets": rates_at_targets(curves),
        "rates_at_targets_steady": rates_at_targets(curves, "kbps_steady"),
        "per_clip_rates_at_targets": {
            kind: per_clip_rates_at_targets(points, kind) for kind in RATE_KINDS
        },
        "curves": curves,
        "left_out": partial_settings(points),
        "points": points,
    }
    _atomic_write(out_dir / "results.json", json.dumps(_json_safe(result), indent=1))
    cols = ["clip", "system", "setting", "frames", "fps", "bytes_all", "bytes_net",
            "bytes_steady", *RATE_KINDS, *ALL_METRICS, "no_face_frames"]
    tmp = out_dir / f".results.csv.{os.getpid()}.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for p in points:
            w.writerow({**p, "no_face_frames": len(p.get("no_face_frames", []))})
    os.replace(tmp, out_dir / "results.csv")
    plots = plot_curves(curves, out_dir)
    _atomic_write(out_dir / "report.md", _markdown(result, plots))
    return result
