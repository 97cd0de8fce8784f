"""Rate-quality curve arithmetic: interpolation, BD-rate, and where two curves meet.

Curves are interpolated in log-rate against quality, as Bjøntegaard's method does; only
the monotone envelope of a ladder is used (a setting that costs more but scores worse is
never a point a sender would choose). A system with several families of settings is
compared along the cheapest family at each quality (`frontier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator


def envelope(
    rates: np.ndarray, quality: np.ndarray, higher_is_better: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(log-rates, goodness) of the points that beat every cheaper point, rate ascending.

    Goodness is quality, negated for lower-is-better metrics, so it always increases.
    """
    r = np.asarray(rates, np.float64)
    g = np.asarray(quality, np.float64) * (1 if higher_is_better else -1)
    ok = np.isfinite(r) & np.isfinite(g) & (r > 0)
    r, g = r[ok], g[ok]
    order = np.lexsort((-g, r))
    keep_r: list[float] = []
    keep_g: list[float] = []
    for ri, gi in zip(r[order], g[order], strict=True):
        if not keep_g or gi > keep_g[-1]:
            keep_r.append(math.log(ri))
            keep_g.append(gi)
    return np.array(keep_r), np.array(keep_g)


def frontier(
    rates: np.ndarray, quality: np.ndarray, families: list[str], higher_is_better: bool = True,
    samples: int = 120,
) -> tuple[np.ndarray, np.ndarray]:
    """(rates, quality) along the best of several families of settings, densely sampled.

    A family is a ladder whose settings can be tuned between its points (facecodec's motion
    only, and motion + layer): at each quality the system costs what its cheapest family
    costs there, each family interpolated on its own envelope as two curves are compared
    (`meet`; below a family's range its cheapest point, which does better). One monotone
    envelope over all points would instead join a point of one family to a point of
    another, and a new setting that beats the start of one family could raise the curve's
    rate between them.
    """
    r = np.asarray(rates, np.float64)
    q = np.asarray(quality, np.float64)
    fam = np.asarray(families)
    curves = [envelope(r[fam == f], q[fam == f], higher_is_better) for f in sorted(set(fam))]
    curves = [(lr, g) for lr, g in curves if len(g)]
    if not curves:
        return np.array([]), np.array([])
    lo = min(g[0] for _, g in curves)
    hi = max(g[-1] for _, g in curves)
    grid = np.union1d(np.concatenate([g for _, g in curves]), np.linspace(lo, hi, samples))
    best = np.full(grid.shape, np.inf)
    for lr, g in curves:
        inside = np.clip(grid, g[0], g[-1])
        here = np.where(grid < g[0], lr[0], _log_rate_at(lr, g, inside))
        best = np.minimum(best, np.where(grid <= g[-1], here, np.inf))
    ok = np.isfinite(best)
    sign = 1 if higher_is_better else -1
    return np.exp(best[ok]), grid[ok] * sign


def rate_at_quality(
    rates: np.ndarray, quality: np.ndarray, target: float, higher_is_better: bool = True
) -> float | None:
    """Rate at which the curve reaches `target`, linear in log-rate between points; None
    when the target lies outside the curve's quality range."""
    lr, g = envelope(rates, quality, higher_is_better)
    t = target if higher_is_better else -target
    if len(g) == 0 or t < g[0] or t > g[-1]:
        return None
    if len(g) == 1:
        return math.exp(lr[0])
    return math.exp(float(np.interp(t, g, lr)))


def beats_floor(
    rates: np.ndarray, quality: np.ndarray, target: float, higher_is_better: bool = True
) -> bool:
    """Does the curve's cheapest point already do better than `target`? Judged on the
    envelope, not on the lowest quality listed: a `frontier` lists qualities below its
    cheapest point's at that point's rate."""
    _, g = envelope(rates, quality, higher_is_better)
    return len(g) > 0 and (target if higher_is_better else -target) < g[0]


def _log_rate_at(lr: np.ndarray, g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Log-rate of an envelope at goodness values x inside its range (a one-point
    envelope: its rate)."""
    if len(g) == 1:
        return np.full(np.shape(x), lr[0])
    return np.asarray(_log_rate_fn(lr, g)(x), np.float64)


def ratio_at(
    anchor_rates: np.ndarray,
    anchor_quality: np.ndarray,
    test_rates: np.ndarray,
    test_quality: np.ndarray,
    quality: np.ndarray,
    higher_is_better: bool = True,
) -> np.ndarray:
    """rate_test / rate_anchor at each `quality` (metric units), interpolated as `meet`
    does; NaN where either curve does not reach that quality."""
    la, ga = envelope(anchor_rates, anchor_quality, higher_is_better)
    lt, gt = envelope(test_rates, test_quality, higher_is_better)
    g = np.asarray(quality, np.float64) * (1 if higher_is_better else -1)
    out = np.full(g.shape, np.nan)
    if len(ga) == 0 or len(gt) == 0:
        return out
    inside = (g >= max(ga[0], gt[0])) & (g <= min(ga[-1], gt[-1]))
    x = g[inside]
    out[inside] = np.exp(_log_rate_at(lt, gt, x) - _log_rate_at(la, ga, x))
    return out


def _log_rate_fn(lr: np.ndarray, g: np.ndarray):
    # PCHIP rather than Bjøntegaard's cubic polynomial: it cannot overshoot between
    # points, and needs no four-point minimum (the approach of later VCEG/JVET tools).
    if len(g) == 2:
        return lambda x: np.interp(x, g, lr)
    return PchipInterpolator(g, lr)


def bd_rate(
    anchor_rates: np.ndarray,
    anchor_quality: np.ndarray,
    test_rates: np.ndarray,
    test_quality: np.ndarray,
    higher_is_better: bool = True,
    samples: int = 200,
) -> float | None:
    """Bjøntegaard delta rate in percent of test against anchor (negative: test saves rate)
    over the quality range both curves cover; None when they do not overlap."""
    la, ga = envelope(anchor_rates, anchor_quality, higher_is_better)
    lt, gt = envelope(test_rates, test_quality, higher_is_better)
    if len(ga) < 2 or len(gt) < 2:
        return None
    lo, hi = max(ga[0], gt[0]), min(ga[-1], gt[-1])
    if hi <= lo:
        return None
    x = np.linspace(lo, hi, samples)
    diff = _log_rate_fn(lt, gt)(x) - _log_rate_fn(la, ga)(x)
    return float((math.exp(float(np.mean(diff))) - 1) * 100)


@dataclass(frozen=True)
class Meeting:
    """How a test curve compares with an anchor curve at equal quality.

    status: "overlap" (ratio read over the shared quality range), "below" (every test point
    is worse than the anchor's cheapest point), "above" (every test point is better than
    the anchor's best), or "insufficient" (a curve has no usable point).
    ratio: rate_test / rate_anchor, geometric mean over the shared range ("overlap" only).
    ratio_min, ratio_max: its extremes over that range.
    quality_gap: for "below"/"above", how far apart the curves are in quality (metric
    units, positive).
    rate_ratio: for "below", test's rate at its best point / anchor's floor rate: an upper
    bound on the ratio (the anchor cannot go cheaper, and there it is still better). For
    "above", test's rate at its worst point / anchor's top rate: an upper bound on the
    ratio if the anchor could reach that quality at all.
    """

    status: str
    ratio: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    overlap: tuple[float, float] | None = None
    quality_gap: float | None = None
    rate_ratio: float | None = None

    def describe(self, test: str, anchor: str, metric: str) -> str:
        if self.status == "overlap":
            assert self.ratio is not None and self.overlap is not None
            return (
                f"{metric}: {test} needs {self.ratio:.3g}x the rate of {anchor} at equal quality "
                f"(from {self.ratio_min:.3g}x to {self.ratio_max:.3g}x over {metric} "
                f"{self.overlap[0]:.4g}..{self.overlap[1]:.4g})"
            )
        if self.status == "below":
            return (
                f"{metric}: curves do not overlap: {test}'s best point is {self.quality_gap:.3g} "
                f"worse than {anchor}'s lowest-rate point, while using {self.rate_ratio:.3g}x "
                f"its rate"
            )
        if self.status == "above":
            return (
                f"{metric}: curves do not overlap: {test}'s worst point is {self.quality_gap:.3g} "
                f"better than {anchor}'s best point, at {self.rate_ratio:.3g}x its rate"
            )
        return f"{metric}: not enough points to compare {test} with {anchor}"


def meet(
    anchor_rates: np.ndarray,
    anchor_quality: np.ndarray,
    test_rates: np.ndarray,
    test_quality: np.ndarray,
    higher_is_better: bool = True,
    samples: int = 200,
) -> Meeting:
    """Where the test curve meets the anchor curve, and the rate ratio there."""
    la, ga = envelope(anchor_rates, anchor_quality, higher_is_better)
    lt, gt = envelope(test_rates, test_quality, higher_is_better)
    if len(ga) == 0 or len(gt) == 0:
        return Meeting("insufficient")
    if gt[-1] < ga[0]:
        return Meeting(
            "below", quality_gap=float(ga[0] - gt[-1]), rate_ratio=math.exp(lt[-1] - la[0])
        )
    if gt[0] > ga[-1]:
        return Meeting(
            "above", quality_gap=float(gt[0] - ga[-1]), rate_ratio=math.exp(lt[0] - la[-1])
        )
    lo, hi = max(ga[0], gt[0]), min(ga[-1], gt[-1])
    x = np.linspace(lo, hi, samples) if hi > lo else np.array([lo])
    diff = _log_rate_at(lt, gt, x) - _log_rate_at(la, ga, x)
    sign = 1 if higher_is_better else -1
    q = (float(lo * sign), float(hi * sign))
    return Meeting(
        "overlap",
        ratio=math.exp(float(np.mean(diff))),
        ratio_min=math.exp(float(diff.min())),
        ratio_max=math.exp(float(diff.max())),
        overlap=(min(q), max(q)),
    )
