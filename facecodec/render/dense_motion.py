"""Dense motion around the face: a small network decides, per pixel, how the reference moves.

Why: on the validation clips most of the mesh warp's loss lies outside the face oval. With
the true pixels pasted outside the oval its VMAF rises from 44.9 to 82.6, inside only to
55.6; an optical-flow oracle used only outside the oval reaches 70.8, so that loss is motion
the warp gets wrong. Around the face the warp moves fixed rings of control points by fixed
shares of the head motion, the same for every picture, while the background stays put, hair
and ears turn with the head and a collar follows it partly. Which pixel is which can be seen
in the reference picture, so a network can choose.

Candidates, backward maps target -> reference at the mesh warp's map resolution:
0. the mesh warp itself (with its rings), 1. the identity (background), 2. the head's
similarity (fitted on rigid landmarks, what hair and ears do). The network sees the
reference and the reference moved by each candidate (at a quarter of the crop size) and the
target's face, and predicts softmax weights; the map is the weighted sum of the candidates,
so any share between standing still and following the head is reachable, and a
per-pixel choice moves a boundary (hair against background) where the head takes it. Inside
the target's face oval the map is the mesh warp's, exactly: the landmarks know the face
better than any share. One `cv2.remap` at full resolution draws the frame, as the warp does.

Trained photometrically (L1 of the warped reference against the driving frame, same-clip
pairs of the train split: `python -m facecodec.train.dense_motion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecodec.render import topology as topo
from facecodec.render.mesh_warp import MeshWarper, _invert
from facecodec.render.weights import content_id, read_model, save_model

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_WEIGHTS = ASSETS / "dense_motion_v1.safetensors"
MODEL_PREFIX = "motion-v1"
N_CANDIDATES = 3  # mesh warp, identity, head similarity
IN_CHANNELS = 3 + 3 * N_CANDIDATES + 2 * (N_CANDIDATES - 1) + 1
FLOW_SCALE = 8.0  # displacements in units of size / FLOW_SCALE
_OVAL = list(topo.FACE_OVAL)


@dataclass(frozen=True)
class DenseMotionConfig:
    """Channel widths at 1/4, 1/8, 1/16 and 1/32 of the crop; `mesh_bias`: initial logit of
    the mesh candidate (the untrained net is then close to the plain warp)."""

    widths: tuple[int, int, int, int] = (24, 32, 48, 64)
    mesh_bias: float = 3.0

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> DenseMotionConfig:
        w = d.get("widths", cls.widths)
        assert isinstance(w, list | tuple) and len(w) == 4
        return cls(widths=tuple(int(x) for x in w),  # type: ignore[arg-type]
                   mesh_bias=float(d.get("mesh_bias", cls.mesh_bias)))  # type: ignore[arg-type]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def _up(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    if size is None:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def normalised(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates (..., 2, H, W) -> grid_sample's (..., H, W, 2) in [-1, 1]
    (align_corners=False: resolution-independent, so one grid samples any scale)."""
    return ((maps + 0.5) * (2.0 / size) - 1.0).movedim(-3, -1)


class DenseMotionNet(nn.Module):
    """(reference (B,3,R,R) at R = size/4, candidate maps (B,K,2,L,L) in crop pixels at the
    warp's map resolution L, target face (B,1,L,L)) -> (map (B,2,L,L), weights (B,K,L,L)).

    R must be a multiple of 8 and L a multiple of R.
    """

    def __init__(self, config: DenseMotionConfig | None = None, size: int = 256) -> None:
        super().__init__()
        self.config = config or DenseMotionConfig()
        c1, c2, c3, c4 = self.config.widths
        self.stem = _conv(IN_CHANNELS, c1)
        self.down2, self.down3, self.down4 = _conv(c1, c2, 2), _conv(c2, c3, 2), _conv(c3, c4, 2)
        self.mid = _conv(c4, c4)
        self.lat3, self.lat2, self.lat1 = (nn.Conv2d(c4, c3, 1), nn.Conv2d(c3, c2, 1),
                                           nn.Conv2d(c2, c1, 1))
        self.up3, self.up2, self.up1 = _conv(c3, c3), _conv(c2, c2), _conv(c1, c1)
        self.head = _conv(c1, N_CANDIDATES)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[0] = self.config.mesh_bias

    def forward(self, ref: torch.Tensor, maps: torch.Tensor,
                face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, _, lo, _ = maps.shape
        r = ref.shape[-1]
        size = r * 4  # maps are in crop pixels
        small = F.avg_pool2d(maps.flatten(0, 1), lo // r).view(b, k, 2, r, r)
        grid = normalised(small, size).flatten(0, 1)  # (B*K, R, R, 2)
        moved = F.grid_sample(ref.repeat_interleave(k, 0), grid, mode="bilinear",
                              padding_mode="border", align_corners=False).view(b, 3 * k, r, r)
        disp = (small[:, 1:] - small[:, :1]).flatten(1, 2) * (FLOW_SCALE / size)
        x = torch.cat([ref, moved, disp, F.avg_pool2d(face, lo // r)], 1)
        act = F.leaky_relu
        e1 = act(self.stem(x), 0.2)
        e2 = act(self.down2(e1), 0.2)
        e3 = act(self.down3(e2), 0.2)
        e4 = act(self.mid(act(self.down4(e3), 0.2)), 0.2)
        d3 = act(self.up3(e3 + _up(self.lat3(e4))), 0.2)
        d2 = act(self.up2(e2 + _up(self.lat2(d3))), 0.2)
        d1 = act(self.up1(e1 + _up(self.lat1(d2))), 0.2)
        w = torch.softmax(_up(self.head(d1), lo), dim=1)  # (B, K, L, L)
        # Inside the target face the mesh warp, exactly.
        w = face * F.one_hot(torch.zeros_like(w[:, 0], dtype=torch.long), k).permute(
            0, 3, 1, 2).to(w.dtype) + (1.0 - face) * w
        return (w[:, :, None] * maps).sum(1), w


def model_id_of(net: DenseMotionNet) -> str:
    return content_id(net, MODEL_PREFIX)


def save_dense_motion(net: DenseMotionNet, path: Path,
                      meta: dict[str, object] | None = None) -> str:
    return save_model(net, path, model_id_of(net), meta)


def load_dense_motion(path: Path = DEFAULT_WEIGHTS) -> DenseMotionNet:
    config, state = read_model(path, "dense motion weights")
    net = DenseMotionNet(DenseMotionConfig.from_dict(config))
    net.load_state_dict(state)
    return net.eval()


class MotionCandidates:
    """The net's inputs for one reference and any number of targets, from a MeshWarper:
    shared by the renderer and the training data so both see the same thing."""

    def __init__(self, warper: MeshWarper) -> None:
        self.warper = warper
        self.size = warper.size
        gx, gy = warper.map_grid
        self._grid = np.stack([gx, gy])  # (2, L, L) the identity map
        self.lo = gx.shape[0]
        self._scale = self.lo / self.size
        self.ref_small: np.ndarray | None = None

    def set_reference(self, image: np.ndarray, ref_points: np.ndarray) -> None:
        self.warper.set_reference(image, ref_points)
        r = self.size // 4
        self.ref_small = cv2.resize(image, (r, r), interpolation=cv2.INTER_AREA)

    def __call__(self, dst_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(maps (K, 2, L, L) float32 crop pixels, face (1, L, L) float32 in [0, 1])."""
        mesh, head = self.warper.backward_map(dst_points)
        inv = _invert(head).astype(np.float32)
        g = self._grid
        rigid = np.einsum("ij,jhw->ihw", inv[:, :2], g) + inv[:, 2, None, None]
        np.clip(rigid, -1.0, float(self.size), out=rigid)
        maps = np.stack([mesh.transpose(2, 0, 1), g, rigid]).astype(np.float32)
        face = np.zeros((self.lo, self.lo), np.uint8)
        oval = (np.asarray(dst_points)[_OVAL, :2] + 0.5) * self._scale - 0.5
        cv2.fillPoly(face, [np.round(oval * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        return maps, (face.astype(np.float32) * (1.0 / 255.0))[None]


def as_tensors(ref_small: np.ndarray, maps: np.ndarray,
               face: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched tensors from one (or a batch of) MotionCandidates output(s)."""
    ref = torch.from_numpy(np.ascontiguousarray(ref_small)).float().mul_(1 / 255)
    ref = ref.permute(2, 0, 1)[None] if ref.ndim == 3 else ref.permute(0, 3, 1, 2)
    m, f = torch.from_numpy(maps), torch.from_numpy(face)
    if m.ndim == 4:
        m, f = m[None], f[None]
    return ref.contiguous(), m, f


class DenseMotion:
    """The renderer's use of the net: reference once, then a backward map per target."""

    def __init__(self, net: DenseMotionNet, warper: MeshWarper) -> None:
        self.net = net.eval()
        self.candidates = MotionCandidates(warper)

    def set_reference(self, image: np.ndarray, ref_points: np.ndarray) -> None:
        self.candidates.set_reference(image, ref_points)

    def warp(self, dst_points: np.ndarray) -> np.ndarray:
        """The reference drawn at the target landmarks, outside the face as the net says."""
        assert self.candidates.ref_small is not None
        maps, face = self.candidates(dst_points)
        with torch.inference_mode():
            m, _ = self.net(*as_tensors(self.candidates.ref_small, maps, face))
        return self.candidates.warper.resample(m[0].permute(1, 2, 0).contiguous().numpy())
