"""Training-free renderer: piecewise-affine warp of the reference over the face mesh.

The 478 landmarks are triangulated with MediaPipe's tessellation; each eye opening is the
middle of the iris (moved as one piece, IRIS_CORE) and a band from it to the lids, and a
strip between the lips fills the mouth, so a closed mouth can open by stretching its border
pixels. Around the face, two rings of control points (scaled copies of
the face oval) and fixed points just outside the image border are Delaunay-triangulated once
per reference. The rings follow part of the head's similarity transform (fitted on rigid
landmarks) and of the jaw line's own motion, less below the face (neck and collar belong to
the torso) and less on the outer ring, and the border stays still, so hair, ears and
background move without tearing. The shares were chosen on the validation clips: with
tracked landmarks, which jitter, following less scores higher than following fully.

When the Motion carries a surround (the sender's measurement of how the picture around the
face moved, facecodec/motion/surround.py), the map outside the target's face oval is that
measurement instead, blended into the mesh's map over a few pixels at the oval; the rings then
only shape the seam. Without one (beside a layer, `--no-surround`, redirection, avatars)
the rings guess as above.

Darkening the mouth where the target is more open than the reference (to hide the stretched
lip pixels) was tried and lowered PSNR on every validation clip, so the opening is left as
stretched reference pixels for a learned renderer to fix.

Per frame the warp rasterises a triangle-index map of the *target* mesh at reduced
resolution, maps each pixel back to the reference with its triangle's affine transform,
upsamples that (continuous, piecewise-linear) map bilinearly and resamples the reference
with `cv2.remap`, bicubically (see RESAMPLING). Pixels no usable triangle covers (folds,
garbage landmarks) keep the identity map, so every output pixel is defined.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from facecodec.motion.surround import face_mask, surround_map
from facecodec.render import topology as topo

# 64: the neural renderer's coordinate map is half the crop, and crops go down to 128.
MIN_SIZE, MAX_SIZE = 64, 512

# Control-point rings, as scalings of the face oval about its centroid: (scale, share of the
# head motion followed above / below the face, share of the oval's own non-rigid motion such
# as jaw opening). Above the face the inner ring carries hair and ears with the head; below
# it the neck and collar belong to the torso and barely move, so they follow much less.
RINGS = ((1.25, 0.7, 0.2, 0.3), (1.7, 0.3, 0.0, 0.0))
MAX_LAG = 0.5  # how far (share of its distance to the oval) a ring point may trail the face
BORDER_FADE = 0.12  # control points within this fraction of the size of the border move less
BORDER_STEP = 8  # fixed border points per side

# Target triangles thinner than this (px) are not drawn: their inverse affine is unstable and
# neighbours (or the identity map) cover their few pixels.
MIN_ALTITUDE = 0.35
# Width (share of the side, Gaussian sigma) of the blend between the face's mesh map and the
# surround's map at the face oval.
SURROUND_SEAM = 1.0 / 128

# Bicubic, not bilinear, resampling of the reference: bilinear averages neighbours at every
# sub-pixel position and softens the whole picture. On unquantised Motions, 150 frames,
# bicubic scored VMAF +1.3 on 6 train clips and +2.0 on the 6 validation clips (VMAF NEG,
# which discounts sharpening, +1.4), AKD equal, for PSNR-Y -0.13 dB and MS-SSIM -0.001
# (sharper detail where the motion is slightly off costs squared error). 0.5 ms more a
# 256 px frame.
RESAMPLING = cv2.INTER_CUBIC

_EYES = ((topo.RIGHT_IRIS, topo.RIGHT_EYE), (topo.LEFT_IRIS, topo.LEFT_EYE))
# The middle of each iris moves as one piece: points this share of the way from the iris
# centre to its four rim points (and no further than CORE_REACH of the way to the lid), so
# a turned eye shows the iris moved, not a centre pulled out of a stretched disc.
IRIS_CORE = 0.6
CORE_REACH = 0.7
MIN_CORE = 0.15


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity (Umeyama) as a 2x3 matrix mapping src onto dst."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    var = float((s * s).sum())
    if var < 1e-9:
        raise ValueError("rigid landmarks are collapsed onto one point")
    u, sig, vt = np.linalg.svd(d.T @ s)
    e = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ e @ vt
    scale = float((sig * np.diag(e)).sum()) / var
    m = np.empty((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = md - m[:, :2] @ ms
    return m


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:, :2].T + m[:, 2]


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != topo.N_LANDMARKS or p.shape[1] < 2:
        raise ValueError(f"{name} must be ({topo.N_LANDMARKS}, 2) pixels, got {p.shape}")
    p = p[:, :2]
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return p


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    c = poly.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(c, (float(x), float(y)), False) > 0 for x, y in pts])


class MeshWarper:
    """Warps one reference face crop so its landmarks move to given target positions.

    `warp` never fails on finite input: landmarks far outside the image are clipped to a
    margin around it, collapsed or folded meshes fall back to the identity map where no
    triangle is usable. Non-finite landmarks raise ValueError (there is no sensible frame).
    """

    def __init__(self, size: int, *, map_scale: float = 0.5,
                 interpolation: int = RESAMPLING, iris_core: bool = True) -> None:
        """`iris_core` False: each eye opening is a fan from the iris centre (IRIS_CORE)."""
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"size must be {MIN_SIZE}..{MAX_SIZE}, got {size}")
        if not 0.1 <= map_scale <= 1.0:
            raise ValueError(f"map_scale must be 0.1..1, got {map_scale}")
        self.size = size
        self.interpolation = interpolation
        self.iris_core = iris_core
        self._lo = max(16, round(size * map_scale))  # side of the map before upsampling
        self._s = self._lo / size
        # Full-resolution coordinates of the low-resolution pixel centres (cv2.resize's
        # half-pixel convention), so bilinear upsampling of the map is exact inside triangles.
        g = (np.arange(self._lo, dtype=np.float32) + 0.5) / self._s - 0.5
        self._gx, self._gy = np.meshgrid(g, g)
        self._image: np.ndarray | None = None

    # -- reference -------------------------------------------------------------------------

    def set_reference(self, image: np.ndarray, ref_points: np.ndarray) -> None:
        """Use `image` (size, size, 3) uint8 RGB with landmarks `ref_points` (478, 2) px."""
        n = self.size
        if image.shape != (n, n, 3) or image.dtype != np.uint8:
            raise ValueError(f"reference must be ({n}, {n}, 3) uint8, got {image.shape} "
                             f"{image.dtype}")
        ref = _check_points(ref_points, "ref_points")
        self._rigid_ref = ref[list(topo.RIGID)]
        _similarity(self._rigid_ref, self._rigid_ref)  # rejects a collapsed reference early

        oval = ref[list(topo.FACE_OVAL)]
        centre = oval.mean(axis=0)
        # 0 for directions from the centre at or above horizontal, 1 straight down.
        v = oval - centre
        down = np.clip(v[:, 1] / np.maximum(np.hypot(v[:, 0], v[:, 1]), 1e-9) / 0.8, 0.0, 1.0)
        down = down * down * (3 - 2 * down)
        rings, follow, jaw = [], [], []
        for scale, f_top, f_bottom, j in RINGS:
            rings.append(centre + scale * (oval - centre))
            follow.append(f_top + (f_bottom - f_top) * down)
            jaw.append(np.full(len(oval), j))
        ring = np.clip(np.concatenate(rings), 1.0, n - 2.0)
        t = np.linspace(-1.0, float(n), BORDER_STEP + 1)[:-1]  # one side, corner first
        u = n - 1.0 - t  # the same, walked backwards
        lo, hi = np.full_like(t, -1.0), np.full_like(t, float(n))
        border = np.concatenate([np.stack(c, 1) for c in ((t, lo), (hi, t), (u, hi), (lo, u))])
        # Ring points pushed onto each other by clipping would make slivers: keep the first.
        near_border = (np.abs(ring[:, None] - border[None]).max(axis=2) < 3.0).any(axis=1)
        close = np.abs(ring[:, None] - ring[None]).max(axis=2) < 3.0
        kept = np.zeros(len(ring), bool)
        for i in range(len(ring)):  # greedy in order: a point is kept unless an earlier one is
            kept[i] = not near_border[i] and not (close[i] & kept).any()
        keep = np.flatnonzero(kept)
        ring = ring[keep]
        follow_a = np.concatenate(follow)[keep]
        jaw_a = np.concatenate(jaw)[keep]
        # Points near the border move less so they cannot overtake the fixed border points.
        dist = np.minimum(ring, n - 1 - ring).min(axis=1)
        fade = np.clip(dist / (BORDER_FADE * n), 0.0, 1.0)
        fade = fade * fade * (3 - 2 * fade)
        self._ring_ref = ring
        self._ring_follow = (follow_a * fade)[:, None]
        self._ring_jaw = (jaw_a * fade)[:, None]
        self._oval_ref = oval
        self._ring_oval = np.tile(np.arange(len(oval)), len(RINGS))[keep]
        self._ring_fade = fade[:, None]
        self._ring_gap = np.linalg.norm(ring - oval[self._ring_oval], axis=1)[:, None]
        self._border = border

        n_lm, n_ring = topo.N_LANDMARKS, len(ring)
        # Outer region: Delaunay over oval + rings + border, minus what lies inside the oval.
        oval_ids = np.array(topo.FACE_OVAL)
        outer_ids = np.concatenate([oval_ids, n_lm + np.arange(n_ring + len(border))])
        outer_pts = np.concatenate([oval, ring, border])
        dl = Delaunay(outer_pts).simplices
        cen = outer_pts[dl].mean(axis=1)
        outer = outer_ids[dl[~_inside(oval, cen)]]

        eyes: list[np.ndarray] = []
        cores: list[tuple[tuple[int, ...], np.ndarray]] = []
        first = n_lm + n_ring + len(border)
        for iris, loop in _EYES:
            share = _core_shares(ref, iris, loop) if self.iris_core else np.zeros(0)
            ids = first + sum(len(c[1]) for c in cores) + np.arange(len(share))
            eyes.append(_eye_triangles(ref, iris, loop, share, ids))
            cores.append((iris, share))
        self._cores = cores
        mouth = topo.strip_triangles(topo.LIPS_INNER_UPPER, topo.LIPS_INNER_LOWER)
        # Painter's order: later triangles win where the target mesh folds over itself; with
        # a target's depth the face mesh's own triangles are painted far to near.
        self._tris = np.concatenate([outer, *eyes, mouth, topo.MESH_TRIANGLES]).astype(np.int32)
        self._mesh_from = len(self._tris) - len(topo.MESH_TRIANGLES)
        self._ref_all = np.concatenate([ref, ring, border, self._core_points(ref)])
        self._ref_tri = self._ref_all[self._tris]  # (T, 3, 2)
        self._image = np.ascontiguousarray(image)

    # -- per frame -------------------------------------------------------------------------

    def _targets(self, dst_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All target vertices (landmarks, ring, border) and the head's similarity ref->dst."""
        if self._image is None:
            raise RuntimeError("set_reference must be called before warp")
        n = self.size
        dst = np.clip(_check_points(dst_points, "dst_points"), -2.0 * n, 3.0 * n)
        try:
            m = _similarity(self._rigid_ref, dst[list(topo.RIGID)])
        except ValueError:  # collapsed target: shrink the head onto that point
            m = np.zeros((2, 3))
            m[:, 2] = dst[list(topo.RIGID)].mean(axis=0)
        jaw = dst[list(topo.FACE_OVAL)] - _apply(m, self._oval_ref)
        head = _apply(m, self._ring_ref) - self._ring_ref
        move = self._ring_follow * head + self._ring_jaw * jaw[self._ring_oval]
        # A ring point must not fall behind its oval point by more than half their distance,
        # or the face would fold over it (a hard cut at the jaw under large head motion).
        lag = (dst[list(topo.FACE_OVAL)] - self._oval_ref)[self._ring_oval] - move
        size = np.linalg.norm(lag, axis=1, keepdims=True)
        excess = np.maximum(size - MAX_LAG * self._ring_gap, 0.0)
        move += lag * (excess / np.maximum(size, 1e-9)) * self._ring_fade
        ring = self._ring_ref + move
        return np.concatenate([dst, ring, self._border, self._core_points(dst)]), m

    def _core_points(self, pts: np.ndarray) -> np.ndarray:
        """Both irises' core points (IRIS_CORE) for landmarks `pts`."""
        out = [pts[iris[0]] + share[:, None] * (pts[list(iris[1:])] - pts[iris[0]])
               for iris, share in self._cores if len(share)]
        return np.concatenate([np.zeros((0, 2)), *out])

    def warp(self, dst_points: np.ndarray, surround: np.ndarray | None = None,
             depth: np.ndarray | None = None) -> np.ndarray:
        """The reference warped so its landmarks land on `dst_points` (478, 2) px; outside the
        face as `surround` says if given (a Motion's surround, non-empty); `depth`: each
        target landmark's depth (478,), larger farther from the camera, any unit, for where
        the face folds over itself (a turned head's far cheek)."""
        return self.resample(self.backward_map(dst_points, surround, depth)[0])

    def backward_map(self, dst_points: np.ndarray, surround: np.ndarray | None = None,
                     depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(map, head): for each pixel of the target at map resolution (lo, lo, 2) float32,
        where it comes from in the reference (full-resolution px); and the head's similarity
        reference -> target (2x3). With a `surround`, the map outside the target's face oval
        is the surround's (the rings and border only shape the seam). With a `depth`, where
        face triangles overlap the nearest is drawn."""
        pts, head = self._targets(dst_points)
        n, lo, s = self.size, self._lo, self._s

        d = pts[self._tris]  # (T, 3, 2) target vertices
        e1, e2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        longest = np.sqrt(np.maximum.reduce([(e1 * e1).sum(1), (e2 * e2).sum(1),
                                             ((e2 - e1) ** 2).sum(1)]))
        usable = np.abs(det) > MIN_ALTITUDE * np.maximum(longest, 1e-6)

        # Affine target -> reference per triangle: A = [r1-r0, r2-r0] @ inv([d1-d0, d2-d0]).
        safe = np.where(usable, det, 1.0)
        inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1),
                        np.stack([-e1[:, 1], e1[:, 0]], 1)], 1) / safe[:, None, None]
        r = self._ref_tri
        rm = np.stack([r[:, 1] - r[:, 0], r[:, 2] - r[:, 0]], 2)  # columns are edges
        lin = rm @ inv
        aff = np.empty((len(d) + 1, 2, 3), dtype=np.float32)
        aff[:-1, :, :2] = lin
        aff[:-1, :, 2] = r[:, 0] - (lin @ d[:, 0, :, None])[..., 0]
        # Slivers (their inverse is unstable) still cover a few pixels: map those with the
        # inverse head motion, which is close to right anywhere on the face.
        aff[:-1][~usable] = _invert(head)
        aff[-1] = np.eye(2, 3)  # the identity, for pixels no triangle covers

        # Triangle-index map of the target at low resolution; slivers first so that any
        # proper triangle overwrites them.
        drawn = np.flatnonzero(usable)
        if depth is not None:
            z = np.asarray(depth, dtype=np.float64)
            if z.shape != (topo.N_LANDMARKS,) or not np.isfinite(z).all():
                raise ValueError(f"depth must be {topo.N_LANDMARKS} finite numbers")
            mesh = drawn[drawn >= self._mesh_from]
            far = z[self._tris[mesh]].mean(axis=1)
            drawn = np.concatenate([drawn[drawn < self._mesh_from],
                                    mesh[np.argsort(-far, kind="stable")]])
        order = np.concatenate([np.flatnonzero(~usable), drawn])
        idx = np.full((lo, lo), len(d), dtype=np.int32)
        _rasterise(idx, (d + 0.5) * s - 0.5, order, ranked=depth is not None)

        a = aff[idx]  # (lo, lo, 2, 3)
        gx, gy = self._gx, self._gy
        m = np.empty((lo, lo, 2), dtype=np.float32)
        m[..., 0] = a[..., 0, 0] * gx + a[..., 0, 1] * gy + a[..., 0, 2]
        m[..., 1] = a[..., 1, 0] * gx + a[..., 1, 1] * gy + a[..., 1, 2]
        if surround is not None and len(surround):
            out = surround_map(surround, lo, n)
            out[..., 0] += gx
            out[..., 1] += gy
            face = cv2.GaussianBlur(face_mask(pts[: topo.N_LANDMARKS], n, lo), (0, 0),
                                    SURROUND_SEAM * lo)[..., None]
            m = face * m + (1.0 - face) * out
        np.clip(m, -1.0, float(n), out=m)
        return m, head

    def resample(self, low_map: np.ndarray) -> np.ndarray:
        """The reference resampled (bicubically by default) through a map-resolution backward map
        (upsampled bilinearly, which is exact inside the mesh's triangles)."""
        if self._image is None:
            raise RuntimeError("set_reference must be called before warp")
        n = self.size
        m = low_map
        if m.shape[0] != n:
            m = cv2.resize(m, (n, n), interpolation=cv2.INTER_LINEAR)
        # Fixed-point maps (1/32 px) halve the cost of remap.
        m1, m2 = cv2.convertMaps(m, None, cv2.CV_16SC2)
        return cv2.remap(self._image, m1, m2, self.interpolation, borderMode=cv2.BORDER_REPLICATE)


def _core_shares(ref: np.ndarray, iris: tuple[int, ...], loop: tuple[int, ...]) -> np.ndarray:
    """How far towards each rim point the iris's core reaches in the reference: IRIS_CORE,
    or less where a lid is nearer (an iris is partly under its lids); empty when the centre
    is not inside the eye opening or a lid leaves the core under MIN_CORE (a closed or
    half-closed eye: its opening is then a fan from the centre)."""
    poly = ref[list(loop)]
    c = ref[iris[0]]
    if not _inside(poly, c[None])[0]:
        return np.zeros(0)
    steps = np.linspace(0.05, 2.0, 40)
    out = []
    for rim in ref[list(iris[1:])]:
        inside = _inside(poly, c + steps[:, None] * (rim - c))
        lid = steps[np.argmin(inside)] if not inside.all() else steps[-1]
        out.append(min(IRIS_CORE, CORE_REACH * lid))
    # A core pressed flat by a lid (a half-closed eye) would only make slivers.
    return np.array(out) if min(out) >= MIN_CORE else np.zeros(0)


def _eye_triangles(ref: np.ndarray, iris: tuple[int, ...], loop: tuple[int, ...],
                   share: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Triangles filling an eye opening: a fan from the iris centre over its core points
    (`ids`, placed by `share`), and a band from the core to the lids, each lid point joined
    to the core point nearest it in angle about the centre. Without a core, a fan from the
    centre to the lids."""
    centre, lids = iris[0], np.array(loop)
    if not len(share):
        return np.stack([np.full(len(lids), centre), lids, np.roll(lids, -1)], 1)
    c = ref[centre]
    core = c + share[:, None] * (ref[list(iris[1:])] - c)
    angle = np.arctan2(*(core - c).T[::-1])
    order = np.argsort(angle)
    core_ids, angle = ids[order], angle[order]
    k = len(core_ids)
    tris = [(centre, core_ids[i], core_ids[(i + 1) % k]) for i in range(k)]
    lid_angle = np.arctan2(*(ref[lids] - c).T[::-1])
    if np.sum((np.diff(lid_angle, append=lid_angle[0]) + np.pi) % (2 * np.pi) - np.pi) < 0:
        lids, lid_angle = lids[::-1], lid_angle[::-1]  # walk the lids as the core: by angle
    gap = np.abs((lid_angle[:, None] - angle[None] + np.pi) % (2 * np.pi) - np.pi)
    near = np.argmin(gap, axis=1)
    for i in range(len(lids)):
        j = (i + 1) % len(lids)
        a, b = near[i], near[j]
        tris.append((lids[i], lids[j], core_ids[a]))
        # The core points between the two lid points' nearest ones, the short way round (a
        # lid that bulges past its centre's angle can step the nearest one back).
        step = 1 if (b - a) % k <= k // 2 else -1
        while a != b:
            nxt = (a + step) % k
            tris.append((core_ids[a], lids[j], core_ids[nxt]))
            a = nxt
    return np.array(tris)


def _invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map; the identity where it is singular (collapsed head)."""
    lin = m[:, :2]
    if abs(np.linalg.det(lin)) < 1e-9:
        return np.eye(2, 3)
    inv = np.linalg.inv(lin)
    return np.concatenate([inv, -inv @ m[:, 2:]], axis=1)


# Bounding-box sides (map pixels) of the size classes rasterised in bulk; larger triangles (the
# few around the face) go through cv2.fillConvexPoly one by one.
BULK_SIDES = (4, 7)
_OFFSETS = {
    k: np.stack(np.meshgrid(*[np.arange(k, dtype=np.float32)] * 2), -1).reshape(-1, 2)
    for k in BULK_SIDES
}


def _rasterise(idx: np.ndarray, tri: np.ndarray, order: np.ndarray, ranked: bool = False) -> None:
    """Paint triangle ids into `idx` (pixel centres at integer coordinates), `order` last wins.

    Hundreds of small face triangles are tested in vectorised passes over the pixels of their
    bounding boxes, several times faster than one OpenCV call each; only big triangles use
    cv2.fillConvexPoly (which also paints boundary pixels, so the outside has no cracks).
    Where bulk and single calls overlap (folds only) the bulk ones win, and among bulk ones
    the larger size class; unless `ranked`: then the later in `order`, whatever its size
    (each pixel keeps the largest place in `order` painted on it).
    """
    h, w = idx.shape
    t = tri[order].astype(np.float32)
    lo = np.floor(t.min(axis=1))
    side = (np.ceil(t.max(axis=1)) - lo).max(axis=1) + 1
    big = side > BULK_SIDES[-1]
    q = np.round(np.clip(t[big], -4.0 * w, 5.0 * w) * 16.0).astype(np.int32)
    # Ranked, the big triangles paint their places (in rising order: the later wins).
    painted = np.full((h, w), -1, np.int32) if ranked else idx
    marks = np.flatnonzero(big) if ranked else order[big]
    for k, poly in zip(marks.tolist(), q, strict=True):
        cv2.fillConvexPoly(painted, poly, k, cv2.LINE_8, 4)
    cls = np.searchsorted(np.array(BULK_SIDES), side)
    flat = idx.reshape(-1)
    hits: list[np.ndarray] = []
    places: list[np.ndarray] = []  # each hit's triangle, as its place in `order`
    for c, k in enumerate(BULK_SIDES):
        sel = cls == c
        if not sel.any():
            continue
        ts = t[sel][:, :, None, :]  # (m, 3, 1, 2)
        px = lo[sel][:, None, :] + _OFFSETS[k][None]  # (m, k*k, 2) candidate pixel centres
        x, y = px[..., 0], px[..., 1]
        v0, v1, v2 = ts[:, 0], ts[:, 1], ts[:, 2]
        area = ((v1 - v0)[..., 0] * (v2 - v0)[..., 1] - (v1 - v0)[..., 1] * (v2 - v0)[..., 0])
        sign = np.where(area < 0, -1.0, 1.0)
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        for u, v in ((v0, v1), (v1, v2), (v2, v0)):
            d = v - u
            inside &= (d[..., 0] * (y - u[..., 1]) - d[..., 1] * (x - u[..., 0])) * sign >= 0
        hit = (y * w + x)[inside].astype(np.intp)
        at = np.broadcast_to(np.flatnonzero(sel)[:, None], inside.shape)[inside]
        if ranked:
            hits.append(hit)
            places.append(at)
        else:
            flat[hit] = order[at]
    if ranked:
        if hits:
            place = np.concatenate(places)
            first = np.argsort(place, kind="stable")  # the later in `order` written last
            bulk = np.full(h * w, -1, np.int32)
            bulk[np.concatenate(hits)[first]] = place[first]
            np.maximum(painted, bulk.reshape(h, w), out=painted)
        drawn = painted >= 0
        idx[drawn] = order[painted[drawn]]
