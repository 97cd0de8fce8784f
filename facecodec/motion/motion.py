"""`Motion`: the one value that crosses from sender to receiver.

Everything upstream (tracking, pose fitting, expression fitting) produces it; everything
downstream (coding, rendering, redirection, avatars) consumes it. It is deliberately a
small immutable record of numbers, independent of any network or image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Fixed-size parts of the flat vector, in this order, before the K expression coefficients.
POSE_SIZE = 6  # yaw, pitch, roll (radians), tx, ty (crop fraction), log scale
GAZE_SIZE = 4  # left iris dx, dy, right iris dx, dy (canonical units, relative to eye centre)
OPENNESS_SIZE = 3  # left eye, right eye, mouth opening (canonical units)
FIXED_SIZE = POSE_SIZE + GAZE_SIZE + OPENNESS_SIZE
# The motion around the face: a SURROUND_GRID x SURROUND_GRID grid of (dx, dy), see `surround`.
SURROUND_GRID = 6
SURROUND_SIZE = 2 * SURROUND_GRID * SURROUND_GRID


def _frozen(a: np.ndarray | list[float] | tuple[float, ...], n: int | None = None) -> np.ndarray:
    arr = np.array(a, dtype=np.float64).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"expected {n} values, got {arr.shape[0]}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Motion:
    """Head pose and expression of one frame.

    - rotation: yaw, pitch, roll in radians of the head against the canonical face.
    - translation: position of the canonical face origin in the crop, as a fraction of
      the crop side (0.5, 0.5 is the centre), so it is independent of output size.
    - log_scale: log of (crop fractions per canonical unit).
    - expression: K coefficients of the shipped expression basis.
    - gaze: iris offsets from the eye centres (left dx, dy, right dx, dy), canonical units.
    - openness: left eye, right eye and mouth openings, canonical units; the renderer
      uses them to correct what the truncated basis misses (blinks, jaw drops).
    - surround: how the picture around the face moved since the reference frame, which
      the face landmarks cannot say (background still, shoulders moving, hair turning with
      the head): empty, or SURROUND_SIZE values, the backward displacement (dx, dy; from
      this frame to the reference, in crop fractions) at the centres of a SURROUND_GRID^2
      grid of cells over the crop, row-major, measured outside the face only
      (facecodec/motion/surround.py). The reference frame's own is zero.
    """

    rotation: np.ndarray = field(default_factory=lambda: _frozen([0.0, 0.0, 0.0]))
    translation: np.ndarray = field(default_factory=lambda: _frozen([0.5, 0.5]))
    log_scale: float = 0.0
    expression: np.ndarray = field(default_factory=lambda: _frozen([]))
    gaze: np.ndarray = field(default_factory=lambda: _frozen([0.0] * GAZE_SIZE))
    openness: np.ndarray = field(default_factory=lambda: _frozen([0.0] * OPENNESS_SIZE))
    surround: np.ndarray = field(default_factory=lambda: _frozen([]))

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotation", _frozen(self.rotation, 3))
        object.__setattr__(self, "translation", _frozen(self.translation, 2))
        object.__setattr__(self, "log_scale", float(self.log_scale))
        object.__setattr__(self, "expression", _frozen(self.expression))
        object.__setattr__(self, "gaze", _frozen(self.gaze, GAZE_SIZE))
        object.__setattr__(self, "openness", _frozen(self.openness, OPENNESS_SIZE))
        sur = _frozen(self.surround)
        if sur.shape[0] not in (0, SURROUND_SIZE):
            raise ValueError(f"surround needs 0 or {SURROUND_SIZE} values, got {sur.shape[0]}")
        object.__setattr__(self, "surround", sur)

    @property
    def k(self) -> int:
        return int(self.expression.shape[0])

    def to_vector(self) -> np.ndarray:
        """Flat layout of the face: pose, gaze, openness, expression (not the surround)."""
        return np.concatenate(
            [
                self.rotation,
                self.translation,
                [self.log_scale],
                self.gaze,
                self.openness,
                self.expression,
            ]
        )

    @classmethod
    def from_vector(cls, v: np.ndarray, surround: np.ndarray | None = None) -> Motion:
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape[0] < FIXED_SIZE:
            raise ValueError(f"motion vector too short: {v.shape[0]} < {FIXED_SIZE}")
        return cls(
            rotation=v[0:3],
            translation=v[3:5],
            log_scale=float(v[5]),
            gaze=v[6:10],
            openness=v[10:13],
            expression=v[FIXED_SIZE:],
            surround=np.zeros(0) if surround is None else surround,
        )

    def with_pose(
        self,
        rotation: np.ndarray | None = None,
        translation: np.ndarray | None = None,
        log_scale: float | None = None,
    ) -> Motion:
        """A copy with some pose parts replaced (redirection, avatars)."""
        return replace(
            self,
            rotation=self.rotation if rotation is None else rotation,
            translation=self.translation if translation is None else translation,
            log_scale=self.log_scale if log_scale is None else log_scale,
        )

    def with_surround(self, surround: np.ndarray | None) -> Motion:
        """A copy with this surround (None: none)."""
        return replace(self, surround=np.zeros(0) if surround is None else surround)

    def surround_towards(self, ref: Motion) -> np.ndarray:
        """This frame's surround as seen from another frame `ref` of the same keyframe (the
        frame a renderer's picture shows): the difference of the two displacements to the
        keyframe, first order in the motion between them, which the coarse grid allows. Empty
        if this Motion has none; its own if `ref` has none (a keyframe: zero)."""
        if not len(self.surround) or not len(ref.surround):
            return self.surround
        return self.surround - ref.surround

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Motion) and np.array_equal(self.to_vector(), other.to_vector())
                and np.array_equal(self.surround, other.surround))

    def __hash__(self) -> int:
        return hash(self.to_vector().tobytes() + self.surround.tobytes())
