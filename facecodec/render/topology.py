"""Named landmark index sets and the triangle topology of MediaPipe's 478-point face mesh.

Everything here is derived once, at import, from mediapipe's own connection tables
(`face_mesh_connections`), so the indices cannot drift from the tracker that produces them.

Sides follow MediaPipe: "left" is the *subject's* left, which is on the image's right in an
unmirrored camera picture (e.g. LEFT_IRIS = 473..477, LEFT_EYE corners 362 inner, 263 outer).
Contours are ordered paths; paired chains (upper/lower lid, upper/lower lip) start at the same
corner and end at the same corner, so index i of one faces index i of the other.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from types import ModuleType

import numpy as np


def _import_connections() -> ModuleType:
    """MediaPipe's connection tables. MediaPipe's solutions import Matplotlib, which warns on
    stderr (two lines) when it finds no writable folder for its cache (a service user, a
    read-only home): nothing this package uses, so not said while importing them."""
    mpl = logging.getLogger("matplotlib")
    level = mpl.level
    mpl.setLevel(logging.ERROR)
    try:
        from mediapipe.python.solutions import face_mesh_connections

        return face_mesh_connections
    finally:
        mpl.setLevel(level)


_fmc = _import_connections()

N_LANDMARKS = 478
N_MESH = 468  # the iris points 468..477 are not part of the tessellation


def _adjacency(edges: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    return adj


def _walk(adj: dict[int, set[int]], start: int, first: int, stop: int | None) -> list[int]:
    """Follow a chain of degree-2 vertices from `start` via `first` until `stop` or back."""
    path, prev, cur = [start], start, first
    while cur != start:
        path.append(cur)
        if cur == stop:
            break
        nxt = [n for n in adj[cur] if n != prev]
        if len(nxt) != 1:
            raise ValueError(f"landmark {cur} is not on a simple contour")
        prev, cur = cur, nxt[0]
    return path


def _chain(edges: Iterable[tuple[int, int]], start: int, end: int, via: int) -> tuple[int, ...]:
    """The path from `start` to `end` along a closed contour that passes through `via`."""
    adj = _adjacency(edges)
    for first in sorted(adj[start]):
        path = _walk(adj, start, first, end)
        if path[-1] == end and via in path:
            return tuple(path)
    raise ValueError(f"no contour path {start}->{end} via {via}")


def _loop(edges: Iterable[tuple[int, int]], start: int, toward: int) -> tuple[int, ...]:
    """A closed contour as an ordered loop (first point not repeated)."""
    return tuple(_walk(_adjacency(edges), start, toward, None))


# Face outline, from the top of the forehead (10) toward the subject's left: clockwise on screen.
FACE_OVAL: tuple[int, ...] = _loop(_fmc.FACEMESH_FACE_OVAL, 10, 338)

# Eyelids, inner corner -> outer corner.
LEFT_EYE_UPPER: tuple[int, ...] = _chain(_fmc.FACEMESH_LEFT_EYE, 362, 263, via=386)
LEFT_EYE_LOWER: tuple[int, ...] = _chain(_fmc.FACEMESH_LEFT_EYE, 362, 263, via=374)
RIGHT_EYE_UPPER: tuple[int, ...] = _chain(_fmc.FACEMESH_RIGHT_EYE, 133, 33, via=159)
RIGHT_EYE_LOWER: tuple[int, ...] = _chain(_fmc.FACEMESH_RIGHT_EYE, 133, 33, via=145)
# Closed loops (upper lid, then lower lid back), first point not repeated.
LEFT_EYE: tuple[int, ...] = LEFT_EYE_UPPER + LEFT_EYE_LOWER[-2:0:-1]
RIGHT_EYE: tuple[int, ...] = RIGHT_EYE_UPPER + RIGHT_EYE_LOWER[-2:0:-1]

# Iris: centre first, then the four boundary points.
LEFT_IRIS: tuple[int, ...] = (473, 474, 475, 476, 477)
RIGHT_IRIS: tuple[int, ...] = (468, 469, 470, 471, 472)
assert {i for e in _fmc.FACEMESH_LEFT_IRIS for i in e} == set(LEFT_IRIS[1:])
assert {i for e in _fmc.FACEMESH_RIGHT_IRIS for i in e} == set(RIGHT_IRIS[1:])

# Lips, from the subject's right mouth corner (image left) to the left one.
LIPS_OUTER_UPPER: tuple[int, ...] = _chain(_fmc.FACEMESH_LIPS, 61, 291, via=0)
LIPS_OUTER_LOWER: tuple[int, ...] = _chain(_fmc.FACEMESH_LIPS, 61, 291, via=17)
LIPS_INNER_UPPER: tuple[int, ...] = _chain(_fmc.FACEMESH_LIPS, 78, 308, via=13)
LIPS_INNER_LOWER: tuple[int, ...] = _chain(_fmc.FACEMESH_LIPS, 78, 308, via=14)
LIPS_OUTER: tuple[int, ...] = LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[-2:0:-1]
LIPS_INNER: tuple[int, ...] = LIPS_INNER_UPPER + LIPS_INNER_LOWER[-2:0:-1]

# Points that barely move with expression: good for fitting head pose (similarity or 3D).
RIGID_FOREHEAD: tuple[int, ...] = (10, 151, 9, 8, 109, 338, 67, 297, 108, 337, 69, 299)
RIGID_NOSE_BRIDGE: tuple[int, ...] = (168, 6, 197, 195, 5)
RIGID_TEMPLES: tuple[int, ...] = (21, 251, 54, 284, 127, 356, 162, 389)
RIGID_CHEEKBONES: tuple[int, ...] = (234, 454, 116, 345, 117, 346, 123, 352)
RIGID_EYE_CORNERS: tuple[int, ...] = (133, 362)  # inner corners: the lids do not move them
RIGID: tuple[int, ...] = (
    RIGID_FOREHEAD + RIGID_NOSE_BRIDGE + RIGID_TEMPLES + RIGID_CHEEKBONES + RIGID_EYE_CORNERS
)


def _mesh_triangles() -> np.ndarray:
    """Faces of the 468-point tessellation, recovered as 3-cliques of its edge graph.

    A clique whose three edges are each shared by three cliques encloses other faces rather
    than being one (a separating triangle); those are dropped.
    """
    adj = _adjacency(_fmc.FACEMESH_TESSELATION)
    tris = {
        tuple(sorted((a, b, c))) for a in adj for b in adj[a] for c in adj[a] & adj[b]
    }
    edge_use = Counter(e for t in tris for e in itertools.combinations(t, 2))
    faces = [t for t in tris if min(edge_use[e] for e in itertools.combinations(t, 2)) < 3]
    return np.array(sorted(faces), dtype=np.int32)


def strip_triangles(a: tuple[int, ...], b: tuple[int, ...]) -> np.ndarray:
    """Triangles filling the band between two chains that share their end points.

    Used for the eye and mouth openings, which the tessellation leaves empty: a quad between
    facing points i, i+1 becomes two triangles, so a closed lid or mouth (zero-area band in the
    reference) can open by stretching its border pixels.
    """
    if len(a) != len(b) or a[0] != b[0] or a[-1] != b[-1]:
        raise ValueError("strip chains must have equal length and shared end points")
    tris = [(a[0], a[1], b[1])]
    for i in range(1, len(a) - 2):
        tris += [(a[i], a[i + 1], b[i + 1]), (a[i], b[i + 1], b[i])]
    tris.append((a[-2], a[-1], b[-2]))
    return np.array(tris, dtype=np.int32)


MESH_TRIANGLES: np.ndarray = _mesh_triangles()  # (852, 3) into the 468 mesh points
OPENING_TRIANGLES: np.ndarray = np.concatenate(
    [
        strip_triangles(LEFT_EYE_UPPER, LEFT_EYE_LOWER),
        strip_triangles(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
        strip_triangles(LIPS_INNER_UPPER, LIPS_INNER_LOWER),
    ]
)
