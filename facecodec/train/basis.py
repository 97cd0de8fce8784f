"""Fit the expression basis on the train split's landmarks (generalised Procrustes + PCA).

    python -m facecodec.train.basis --data ../shared/data --out facecodec/assets/basis_v1

Every train clip contributes equally (at most `max_frames` frames each), so the basis sees
as many identities as the split has; explained variance is reported on the validation
splits too, since faces the basis never saw are what a codec meets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facecodec.files import path_arg
from facecodec.motion.basis import N_MESH, RIGID, ExpressionBasis
from facecodec.motion.geometry import umeyama
from facecodec.train.landmarks import build_cache
from facecodec.train.splits import load_split

K_MAX = 48
K_REPORT = (4, 8, 12, 16, 24, 32, 48)


def _normalise(p: np.ndarray) -> np.ndarray:
    c = p - p[: N_MESH].mean(0)
    return c / np.sqrt((c[: N_MESH] ** 2).sum(1).mean())


def _align(frames: np.ndarray, mean: np.ndarray) -> np.ndarray:
    out = np.empty_like(frames)
    for i, p in enumerate(frames):
        s, rot, t = umeyama(mean[RIGID], p[RIGID])
        out[i] = (p - t) @ rot / s
    return out


def _frames(cache: Path, clips: list[Path], stride: int) -> list[np.ndarray]:
    out = []
    for c in clips:
        lm = np.load(cache / f"{c.stem}.npy").astype(np.float64)
        lm = lm[~np.isnan(lm).any(axis=(1, 2))][::stride]
        if len(lm):
            out.append(lm)
    return out


def generalised_procrustes(frames: np.ndarray, iterations: int = 6) -> np.ndarray:
    mean = _normalise(frames[0])
    for _ in range(iterations):
        mean = _normalise(_align(frames, mean).mean(0))
    return mean


def explained(residual: np.ndarray, comps: np.ndarray, k: int) -> float:
    proj = residual @ comps[:k].T @ comps[:k]
    return float(1.0 - ((residual - proj) ** 2).sum() / (residual**2).sum())


def fit(data: Path, cache: Path, out: Path, stride: int = 2) -> ExpressionBasis:
    splits = {s: load_split(data, s) for s in ("train", "validation", "validation_unseen")}
    build_cache([c for v in splits.values() for c in v], cache)
    train = _frames(cache, splits["train"], stride)
    stack = np.concatenate(train)
    mean = generalised_procrustes(stack)
    residual = (_align(stack, mean)[:, : N_MESH] - mean[: N_MESH]).reshape(len(stack), -1)
    _, sing, vt = np.linalg.svd(residual, full_matrices=False)
    comps = vt[:K_MAX]
    std = sing[:K_MAX] / np.sqrt(len(stack))
    stats: dict = {
        "fitted_on": "train split",
        "train_clips": len(train),
        "train_frames": int(len(stack)),
        "k_max": K_MAX,
        "explained_variance": {},
    }
    for split in ("train", "validation", "validation_unseen"):
        fr = stack if split == "train" else np.concatenate(_frames(cache, splits[split], 1))
        res = (_align(fr, mean)[:, : N_MESH] - mean[: N_MESH]).reshape(len(fr), -1)
        ev = {str(k): round(explained(res, comps, k), 4) for k in K_REPORT}
        stats["explained_variance"][split] = ev
    basis = ExpressionBasis(mean, comps, std, ExpressionBasis.content_id(mean, comps), stats)
    out.parent.mkdir(parents=True, exist_ok=True)
    basis.save(out)
    return basis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=path_arg, default=Path("../shared/data"))
    ap.add_argument("--cache", type=path_arg, default=Path("cache/landmarks"))
    ap.add_argument("--out", type=path_arg, default=Path("facecodec/assets/basis_v1"))
    args = ap.parse_args()
    b = fit(args.data, args.cache, args.out)
    print(b.basis_id)
    for split, ev in b.stats["explained_variance"].items():
        print(f"{split:>18}: " + "  ".join(f"K={k}:{v:.3f}" for k, v in ev.items()))


if __name__ == "__main__":
    main()
