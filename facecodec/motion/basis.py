"""The expression basis: canonical face, linear expression modes, and Motion <-> landmarks.

The basis is data (safetensors + JSON, versioned by a content hash) fitted on the train
split by `facecodec.train.basis`. Sender and receiver must hold the same basis: the stream
header names it and a mismatch is an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from facecodec.errors import FacecodecError
from facecodec.motion.geometry import euler_to_matrix, matrix_to_euler, umeyama
from facecodec.motion.motion import Motion
from facecodec.render import topology as T

DEFAULT_BASIS = "basis_v1"
_EYE_MID = 3  # the middle three lid points measure how open an eye is


N_MESH = 468  # landmarks without the iris refinement: the expression basis covers these
RIGID = np.array(T.RIGID)
LEFT_IRIS, RIGHT_IRIS = np.array(T.LEFT_IRIS), np.array(T.RIGHT_IRIS)
EYE_CONTOUR = {"left": np.array(T.LEFT_EYE), "right": np.array(T.RIGHT_EYE)}


def _lid_weights(n: int) -> np.ndarray:
    """1 on the middle three points of a corner-to-corner lid (or lip) chain, tapering to 0
    at the shared corners, so an openness change bends the lid rather than moving a block."""
    c = (n - 1) / 2
    d = np.abs(np.arange(n) - c)
    return np.clip(1.0 - np.maximum(d - 1, 0) / (c - 1), 0.0, 1.0)


def _mid(idx: np.ndarray) -> np.ndarray:
    c = len(idx) // 2
    return idx[c - 1 : c + 2]


_OPENNESS_PAIRS = tuple(
    (np.array(up), np.array(lo))
    for up, lo in (
        (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER),
        (T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER),
        (T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER),
    )
)


def openness(shape: np.ndarray) -> np.ndarray:
    """Left eye, right eye, mouth openings of a canonical shape (y points down)."""
    return np.array(
        [shape[_mid(lo), 1].mean() - shape[_mid(up), 1].mean() for up, lo in _OPENNESS_PAIRS]
    )


def _openness_fields() -> np.ndarray:
    """Displacement fields F_j with openness(S + a F_j) = openness(S) + a e_j."""
    f = np.zeros((3, N_MESH, 3))
    for j, (up, lo) in enumerate(_OPENNESS_PAIRS):
        f[j, up, 1] += -0.5 * _lid_weights(len(up))
        f[j, lo, 1] += 0.5 * _lid_weights(len(lo))
    return f


def _eye_centre(shape: np.ndarray, side: str) -> np.ndarray:
    return shape[EYE_CONTOUR[side], :2].mean(0)


@dataclass(frozen=True, eq=False)
class ExpressionBasis:
    """Canonical mean shape (478x3, unit RMS radius), orthonormal expression modes over the
    468 mesh points, and the spread of each mode on the training data."""

    mean: np.ndarray  # (478, 3)
    components: np.ndarray  # (K_max, 468 * 3)
    std: np.ndarray  # (K_max,)
    basis_id: str
    stats: dict

    @property
    def k_max(self) -> int:
        return int(self.components.shape[0])

    # -- sender side ---------------------------------------------------------------------
    def fit(self, points: np.ndarray, size: int, k: int | None = None) -> Motion:
        """Motion of a face whose landmarks (478x3) are in pixels of a size x size crop."""
        p = np.asarray(points, dtype=np.float64)
        s, rot, t = umeyama(self.mean[RIGID], p[RIGID])
        aligned = (p - t) @ rot / s
        k = self.k_max if k is None else k
        residual = (aligned[: N_MESH] - self.mean[: N_MESH]).reshape(-1)
        expr = self.components[:k] @ residual
        gaze = np.concatenate(
            [
                aligned[LEFT_IRIS[0], :2] - _eye_centre(aligned, "left"),
                aligned[RIGHT_IRIS[0], :2] - _eye_centre(aligned, "right"),
            ]
        )
        return Motion(
            rotation=np.asarray(matrix_to_euler(rot)),
            translation=t[:2] / size,
            log_scale=float(np.log(s / size)),
            expression=expr,
            gaze=gaze,
            openness=openness(aligned),
        )

    # -- receiver side -------------------------------------------------------------------
    def shape(self, m: Motion) -> np.ndarray:
        """Canonical 478x3 shape of a Motion: expression, then openness and gaze."""
        k = min(m.k, self.k_max)
        mesh = self.mean[: N_MESH] + (m.expression[:k] @ self.components[:k]).reshape(-1, 3)
        mesh = mesh + np.tensordot(m.openness - openness(mesh), _FIELDS, axes=1)
        iris = []
        eyes = (("left", LEFT_IRIS, m.gaze[:2]), ("right", RIGHT_IRIS, m.gaze[2:]))
        for side, idx, g in eyes:
            ring = self.mean[idx] - self.mean[idx[0]]
            depth = mesh[EYE_CONTOUR[side], 2].mean()
            centre = np.array([*(_eye_centre(mesh, side) + g), depth])
            iris.append(centre + ring)
        out = np.empty((478, 3))
        out[: N_MESH] = mesh
        out[LEFT_IRIS] = iris[0]
        out[RIGHT_IRIS] = iris[1]
        return out

    def landmarks(self, m: Motion, size: int, depth: bool = False) -> np.ndarray:
        """478x2 pixel positions in a size x size crop (orthographic projection); `depth`:
        478x3, the third column each point's depth (px from the head's centre, larger farther
        from the camera)."""
        rot = euler_to_matrix(*m.rotation)
        s = np.exp(m.log_scale) * size
        pts = s * self.shape(m) @ rot.T
        pts[:, :2] += m.translation * size
        return pts if depth else pts[:, :2]

    # -- storage -------------------------------------------------------------------------
    def save(self, path_stem: Path) -> None:
        tensors = {
            "mean": self.mean.astype(np.float32),
            "components": self.components.astype(np.float32),
            "std": self.std.astype(np.float32),
        }
        save_file(tensors, str(path_stem.with_suffix(".safetensors")))
        meta = {"basis_id": self.basis_id, **self.stats}
        path_stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")

    @staticmethod
    def content_id(mean: np.ndarray, components: np.ndarray, version: str = "v1") -> str:
        h = hashlib.sha256()
        h.update(mean.astype(np.float32).tobytes())
        h.update(components.astype(np.float32).tobytes())
        return f"mpbasis-{version}-{h.hexdigest()[:8]}"

    @classmethod
    def load(cls, path_stem: Path) -> ExpressionBasis:
        try:
            t = load_file(str(path_stem.with_suffix(".safetensors")))
            meta = json.loads(path_stem.with_suffix(".json").read_text())
        except (OSError, ValueError) as e:
            raise FacecodecError(f"cannot load expression basis {path_stem}: {e}") from e
        mean = t["mean"].astype(np.float64)
        comps = t["components"].astype(np.float64)
        bid = cls.content_id(t["mean"], t["components"])
        if bid != meta.get("basis_id"):
            raise FacecodecError(f"expression basis {path_stem} is corrupt (content id {bid})")
        stats = {k: v for k, v in meta.items() if k != "basis_id"}
        return cls(mean, comps, t["std"].astype(np.float64), bid, stats)


_FIELDS = _openness_fields()


@lru_cache(maxsize=4)
def load_basis(name: str = DEFAULT_BASIS) -> ExpressionBasis:
    """The basis shipped in the package."""
    ref = resources.files("facecodec") / "assets" / name
    with resources.as_file(ref) as p:
        return ExpressionBasis.load(Path(p))


def basis_for_id(basis_id: str) -> ExpressionBasis:
    """The shipped basis with this id, or a clear error naming what the stream needs."""
    b = load_basis()
    if b.basis_id != basis_id:
        raise FacecodecError(
            f"stream needs expression basis {basis_id!r}; this build ships {b.basis_id!r}"
        )
    return b
