"""The trained renderer: the mesh warp plus a small learned refiner.

Why a refiner on top of the warp rather than a generator from scratch: the piecewise-affine
warp already puts every reference pixel where the landmarks say, at 4 ms a frame, and is
right for most of the picture. What it cannot do is invent what the reference does not show
(the inside of a mouth that opens, teeth, eyelids closing over an open eye, background
uncovered by a turning head) and it bends hair and collars with the mesh. A network that only
corrects the warp starts from the warp's quality (its last layer is zero-initialised, so the
untrained net returns the warp exactly) and spends its few parameters on those regions.

Inputs, all computable at the receiver from the reference and the two Motions:
- the warped reference and the reference itself (full resolution, 3 + 3 channels);
- at half resolution: the dense displacement target -> reference of the same mesh warp
  (2 channels, obtained by warping a coordinate image with the same triangulation, so it
  is exactly the warp's map up to rounding), where the reference's inner mouth lands after
  the warp (1), and soft masks of the target's inner mouth and eyes (2). The difference
  between the warped and the target mouth mask is where the warp stretches lip pixels.

Output: out = warp + m * (g - warp) + r, predicted at half resolution and upsampled
bilinearly: an occlusion-aware blend towards generated colour g where m > 0 (mouth interior,
eyes) plus, optionally, a residual r (shading). m is a clamp to [0, 1], so both terms are
exactly zero at initialisation. The shipped model has no residual: a first run with r (same
data, 1300 steps) scored below the warp on validation PSNR because r perturbed every pixel,
also where the warp was already right (most of a talking-head frame), whereas with the mask
alone such pixels stay exactly the warp's. Even without r, a faint mask over a fifth of the
frame (small positive logits) still cost up to 4 dB on frames the warp got nearly right, so
v1 adds a dead zone (logits below `mask_floor` give m = 0) and an L1 penalty on m in
training. And trained with L1 + MS-SSIM the mask still settled as a faint outline on every
edge (blurring where landmarks are uncertain), which lowered VMAF by 7 points on a
validation clip; so v1 confines m to the target's mouth and eyes (dilated, plus where the
reference's mouth lands): the regions the warp cannot draw, and everywhere else the frame
is exactly the warp's. Measured afterwards on the validation ladder, even that cost VMAF
(-0.85 against the warp), almost all of it from blurred eyes (open in reference and target,
where the warp was right), so the shipped config narrows m further, at inference only, to
where the target's mouth opens beyond where the reference's mouth lands (`disocclusion`):
the pixels the warp can only fill by stretching lips (docs/neural_renderer.md).

The heavy part runs at 1/4 .. 1/16 resolution (a small U-Net with additive skips); no
convolution runs at full resolution, which keeps the net near 14 ms a frame on two cores,
and since the frame outside that region is the warp's, the renderer runs it on a window
around the region (`RefinerNet.window`; benchmarks/neural_renderer.py).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecodec.errors import FacecodecError
from facecodec.motion.basis import ExpressionBasis
from facecodec.motion.motion import Motion
from facecodec.render import topology as topo
from facecodec.render.base import Renderer
from facecodec.render.blocks import ResBlock
from facecodec.render.mesh_warp import MeshWarper
from facecodec.render.restore import DEFAULT_WEIGHTS as RESTORE_WEIGHTS
from facecodec.render.restore import RestoreNet, blend, restore
from facecodec.render.restore import load_net as load_restorer
from facecodec.render.restore import model_id_of as restorer_id
from facecodec.render.weights import content_id, load_model, save_model

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_WEIGHTS = ASSETS / "refiner_v1.safetensors"
MODEL_PREFIX = "refiner-v1"
COND_CHANNELS = 5  # flow dx, dy; warped reference mouth; target mouth; target eyes
ALIGN = 16  # the U-Net downsamples four times
RESTORATIONS_KEPT = 4  # as many as a decoder holds references (codec/decoder.py)
OPENING_SIDE = 128  # the opening gate counts pixels as on a 256 px frame's half-res cond
# Context kept around the pixels the net may change when it runs on a window of the frame:
# at 64 px the window's frame is within 1 grey level of the whole frame's on every frame the
# net draws in the first 150 of each validation clip (at 48 px up to 4 on one clip).
WINDOW_MARGIN = 64
FLOW_SCALE = 8.0  # displacements are given in units of size / FLOW_SCALE (|d| ~ 1)


@dataclass(frozen=True)
class RefinerConfig:
    """Channel widths of the refiner at 1/2, 1/4, 1/8 and 1/16 resolution; `residual`: add
    the unmasked RGB residual r (off: pixels outside the mask are exactly the warp's)."""

    widths: tuple[int, int, int, int] = (32, 48, 96, 128)
    residual: bool = True
    mask_floor: float = 0.0  # mask logits below this give exactly the warp (a dead zone)
    region: int = 0  # > 0: the mask acts only within this many half-res px of mouth / eyes
    region_eyes: bool = True  # False: of the mouth only
    full_res: bool = False  # add a full-resolution correction to the mask and colour
    # The mask acts only where the target's mouth opens beyond where the reference's mouth
    # lands (dilated by `region`): the one place the warp must stretch lip pixels.
    disocclusion: bool = False
    # With `disocclusion`: the mask fades in as that disoccluded area grows from opening[0]
    # to opening[1] half-resolution pixels (counted as in a 256 px frame); (0, 0): always
    # on. Most frames disocclude a sliver of a few pixels (landmark jitter at the lips),
    # where the drawn colour only blurs what the warp draws sharply.
    opening: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RefinerConfig:
        w = d.get("widths", cls.widths)
        if not (isinstance(w, list | tuple) and len(w) == 4):
            raise FacecodecError(f"bad refiner config: widths must be 4 numbers (got {w!r})")
        return cls(widths=tuple(int(x) for x in w),  # type: ignore[arg-type]
                   residual=bool(d.get("residual", True)),
                   mask_floor=float(d.get("mask_floor", 0.0)),  # type: ignore[arg-type]
                   region=int(d.get("region", 0)),  # type: ignore[call-overload]
                   region_eyes=bool(d.get("region_eyes", True)),
                   full_res=bool(d.get("full_res", False)),
                   disocclusion=bool(d.get("disocclusion", False)),
                   opening=_opening(d.get("opening", (0.0, 0.0))))

    def gates_frames(self) -> bool:
        """Whether some frames are drawn by the warp alone (`opening_weight` 0)."""
        return self.region > 0 and self.disocclusion and self.opening[1] > 0 and not self.residual


def _opening(v: object) -> tuple[float, float]:
    if isinstance(v, list | tuple) and len(v) == 2:
        lo, hi = float(v[0]), float(v[1])
        if 0 <= lo < hi or lo == hi == 0:
            return lo, hi
    raise FacecodecError(f"bad refiner config: opening must be [0, 0] or [lo, hi], lo < hi "
                         f"(got {v})")


def opening_weight(cond: torch.Tensor, opening: tuple[float, float]) -> torch.Tensor:
    """(B,1,1,1) in [0,1]: how far each target's mouth opens beyond where the reference's
    lands (cond (B,5,h,w): channel 3 minus channel 2), ramped over `opening`."""
    lo, hi = opening
    h, w = cond.shape[-2:]
    area = (cond[:, 3:4] - cond[:, 2:3]).clamp_min(0.0).sum((1, 2, 3), keepdim=True)
    return ((area * (OPENING_SIDE**2 / (h * w)) - lo) / (hi - lo)).clamp(0.0, 1.0)


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class RefinerNet(nn.Module):
    """(image (B,6,H,W): warp | reference in [0,1], cond (B,5,H/2,W/2)) -> (B,3,H,W) in [0,1].

    H and W must be multiples of 16.
    """

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config or RefinerConfig()
        c1, c2, c3, c4 = self.config.widths
        self.stem = _conv(6, c1, stride=2)
        self.fuse = _conv(c1 + COND_CHANNELS, c1)
        self.down2, self.down3, self.down4 = _conv(c1, c2, 2), _conv(c2, c3, 2), _conv(c3, c4, 2)
        self.res3, self.res4 = ResBlock(c3), ResBlock(c4)
        self.lat3, self.lat2, self.lat1 = _conv(c4, c3, k=1), _conv(c3, c2, k=1), _conv(c2, c1, k=1)
        self.up3, self.up2, self.up1 = _conv(c3, c3), _conv(c2, c2), _conv(c1, c1)
        self.head = _conv(c1, 7)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None  # a Conv2d made with one
        nn.init.zeros_(self.head.bias)
        if self.config.full_res:
            # One 3x3 convolution at full resolution over the upsampled features and the
            # warp | reference pixels: generated colour (teeth, lip edges) keeps full-res
            # detail instead of a 2x bilinear blur. Zero-initialised: a net trained without
            # it starts from exactly its previous output.
            self.full = _conv(c1 + 6, 4)
            nn.init.zeros_(self.full.weight)
            assert self.full.bias is not None  # a Conv2d made with one
            nn.init.zeros_(self.full.bias)

    def forward(
        self, image: torch.Tensor, cond: torch.Tensor, with_mask: bool = False,
        opening: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frame, or for training (frame, blend mask (B,1,H,W), the frame again but with
        no gradient through the mask). Training keeps the mask sparse; adversarial terms
        judge the third, so they change what is drawn, not where (let through the mask, they
        closed it everywhere within 500 steps of a fine-tune). `opening`: the gate's weight
        (B,1,1,1) counted on the whole frame, when image and cond are a `window` of it."""
        out, mask, drawn = self._blend(image, cond, with_mask, opening)
        return (out, mask, drawn) if with_mask and drawn is not None else out

    def _parts(self, cond: torch.Tensor) -> torch.Tensor:
        """(B,1,h,w): the target's mouth and eyes, or where its mouth opens beyond where the
        reference's lands (`disocclusion`), before the dilation by `region`."""
        if self.config.disocclusion:
            return (cond[:, 3:4] - cond[:, 2:3]).clamp_min(0.0)
        return (cond[:, 2:5] if self.config.region_eyes else cond[:, 2:4]).amax(1, keepdim=True)

    def changes(self, cond: torch.Tensor) -> torch.Tensor:
        """(B,1,h,w) at cond's half resolution: > 0 where the blend mask may be non-zero."""
        k, r = 2 * self.config.region + 1, self.config.region
        # A square max filter as a column then a row one: the same values, a fraction of
        # the time of one k x k pool.
        near = F.max_pool2d(self._parts(cond), (k, 1), 1, (r, 0))
        return F.max_pool2d(near, (1, k), 1, (0, r))

    def window(self, cond: torch.Tensor) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) in frame pixels, multiples of ALIGN: a part of the
        frame (cond (1,5,h,w)) that holds every pixel the net may change plus WINDOW_MARGIN
        of context, for a net that leaves the rest as the warp; None: the whole frame (a
        net that changes every pixel, or a window not much smaller)."""
        if self.config.region <= 0 or self.config.residual:
            return None
        ys, xs = torch.nonzero(self._parts(cond)[0, 0] > 0, as_tuple=True)
        h, w = 2 * cond.shape[-2], 2 * cond.shape[-1]
        if len(ys) == 0:
            return None
        r = self.config.region

        def span(lo: int, hi: int, size: int) -> tuple[int, int]:
            # Half-resolution rows/columns lo..hi, dilated by `region`, in frame pixels.
            a = max(0, (2 * (lo - r) - WINDOW_MARGIN) // ALIGN * ALIGN)
            return a, min(size, -(-(2 * (hi + r + 1) + WINDOW_MARGIN) // ALIGN) * ALIGN)

        top, bottom = span(int(ys.min()), int(ys.max()), h)
        left, right = span(int(xs.min()), int(xs.max()), w)
        if (bottom - top) * (right - left) > 0.75 * h * w:
            return None
        return top, bottom, left, right

    def _blend(
        self, image: torch.Tensor, cond: torch.Tensor, training: bool,
        opening: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        act = nn.functional.leaky_relu
        e1 = act(self.fuse(torch.cat([act(self.stem(image), 0.2), cond], 1)), 0.2)
        e2 = act(self.down2(e1), 0.2)
        e3 = self.res3(act(self.down3(e2), 0.2))
        e4 = self.res4(act(self.down4(e3), 0.2))
        # Additive skips (FPN style) instead of concatenation: half the MACs of the decoder.
        d3 = act(self.up3(e3 + _up(self.lat3(e4))), 0.2)
        d2 = act(self.up2(e2 + _up(self.lat2(d3))), 0.2)
        d1 = act(self.up1(e1 + _up(self.lat1(d2))), 0.2)
        h = _up(self.head(d1))
        if self.config.full_res:
            h = h + F.pad(self.full(torch.cat([_up(d1), image], 1)), (0, 0, 0, 0, 3, 0))
        warp = image[:, :3]
        logit = h[:, 3:4] - self.config.mask_floor
        # Clamped mask (exactly 0: the warp's own pixel) with a straight-through gradient, so
        # pixels pushed below 0 early in training are not dead for the rest of it.
        mask = logit + (logit.clamp(0.0, 1.0) - logit).detach()
        if self.config.region > 0:
            # Target mouth and eyes, or where the target's mouth opens beyond where the
            # reference's lands, dilated.
            mask = mask * _up(self.changes(cond))
            if self.config.disocclusion and self.config.opening[1] > 0:
                mask = mask * (opening_weight(cond, self.config.opening) if opening is None
                               else opening)
        out = warp + mask * (h[:, 4:7] - warp)
        if self.config.residual:
            out = out + h[:, :3]
        if not training:  # the decoder's path: no second blend
            return out.clamp(0.0, 1.0), mask, None
        drawn = warp + mask.detach() * (h[:, 4:7] - warp)
        if self.config.residual:
            drawn = drawn + h[:, :3]
        return out.clamp(0.0, 1.0), mask, drawn.clamp(0.0, 1.0)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def model_id_of(net: nn.Module) -> str:
    return content_id(net, MODEL_PREFIX)


def save_weights(net: RefinerNet, path: Path, meta: Mapping[str, object] | None = None) -> str:
    """Write safetensors + a JSON beside it (config, model id, `meta`); returns the model id."""
    return save_model(net, path, model_id_of(net), meta)


def load_net(path: Path) -> RefinerNet:
    return load_model(path, "refiner weights", lambda c: RefinerNet(RefinerConfig.from_dict(c)))


# -- conditioning ---------------------------------------------------------------------------

_MOUTH = np.array(topo.LIPS_INNER)
_EYES = (np.array(topo.LEFT_EYE), np.array(topo.RIGHT_EYE))


def _fill(shape: int, polys: list[np.ndarray]) -> np.ndarray:
    """Antialiased filled polygons as a uint8 mask (polygons in pixel units of `shape`)."""
    m = np.zeros((shape, shape), np.uint8)
    cv2.fillPoly(m, [np.round(p * 16).astype(np.int32) for p in polys], 255, cv2.LINE_AA, 4)
    return m


class Conditioner:
    """Warps a reference and rasterises the refiner's conditioning channels per target.

    Shared by the renderer and the training data so both see the same inputs, but for one
    thing: the renderer passes the target's depth (the face's folds drawn nearest first),
    the training pairs' cached landmarks have none (tessellation order). The shipped weights
    were trained before the depth order; the two differ only where the mesh folds.
    """

    def __init__(self, size: int) -> None:
        if size % ALIGN:
            raise FacecodecError(f"the neural renderer needs a size divisible by {ALIGN}")
        self.size, self.half = size, size // 2
        self.warper = MeshWarper(size)
        # Bilinear, as the net was trained: bicubic moves the coordinate channels by a grey
        # level on ~9 % of pixels and rings at the mouth mask's edge.
        self.coords = MeshWarper(self.half, interpolation=cv2.INTER_LINEAR)
        g = np.arange(self.half, dtype=np.float32)
        self._gx, self._gy = np.meshgrid(g, g)
        # Coordinate image: 2 grey levels per pixel, exact after uint8 bilinear resampling
        # to about half a pixel at half resolution.
        self._step = 255.0 / (self.half - 1)

    def set_reference(self, image: np.ndarray, ref_points: np.ndarray) -> None:
        self.warper.set_reference(image, ref_points)
        self._set_coords(ref_points)

    def opening(self, ref_points: np.ndarray, dst_points: np.ndarray) -> float:
        """What `opening_weight` counts for this pair, from the landmarks alone (no
        full-resolution warp). Replaces the half-resolution reference: call
        `set_reference` again before drawing."""
        self._set_coords(ref_points)
        hp = dst_points[:, :2] * 0.5
        lands = self.coords.warp(hp)[..., 2].astype(np.float32)
        opens = _fill(self.half, [hp[_MOUTH]]).astype(np.float32)
        count = float(np.clip(opens - lands, 0.0, None).sum()) / 255.0
        return count * (OPENING_SIDE / self.half) ** 2

    def _set_coords(self, ref_points: np.ndarray) -> None:
        hp = ref_points[:, :2] * 0.5
        cimg = np.empty((self.half, self.half, 3), np.uint8)
        cimg[..., 0] = np.round(self._gx * self._step).astype(np.uint8)
        cimg[..., 1] = np.round(self._gy * self._step).astype(np.uint8)
        cimg[..., 2] = _fill(self.half, [hp[_MOUTH]])
        self.coords.set_reference(cimg, hp)

    def __call__(self, dst_points: np.ndarray,
                 surround: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(warped (size,size,3) uint8, cond (half,half,5) float32); `dst_points` (478, 2)
        px, or (478, 3) with each point's depth (larger is farther; MeshWarper.warp's
        `depth`); `surround`: the target Motion's, for the warp outside the face."""
        depth = dst_points[:, 2] if dst_points.shape[1] > 2 else None
        warped = self.warper.warp(dst_points[:, :2], surround, depth)
        hp = dst_points[:, :2] * 0.5
        c = self.coords.warp(hp, depth=depth)
        cond = np.empty((self.half, self.half, COND_CHANNELS), np.float32)
        k = FLOW_SCALE / self.half
        cond[..., 0] = (c[..., 0] / self._step - self._gx) * k
        cond[..., 1] = (c[..., 1] / self._step - self._gy) * k
        cond[..., 2] = c[..., 2] * (1.0 / 255.0)
        cond[..., 3] = _fill(self.half, [hp[_MOUTH]]) * (1.0 / 255.0)
        cond[..., 4] = _fill(self.half, [hp[e] for e in _EYES]) * (1.0 / 255.0)
        return warped, cond


def to_inputs(
    warped: np.ndarray, reference: np.ndarray, cond: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched NCHW float tensors (channels_last memory) from HWC arrays, or BHWC batches."""
    img = np.concatenate([warped, reference], axis=-1)
    if img.ndim == 3:
        img, cond = img[None], cond[None]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().mul_(1 / 255)
    c = torch.from_numpy(np.ascontiguousarray(cond)).permute(0, 3, 1, 2)
    return (x.contiguous(memory_format=torch.channels_last),
            c.contiguous(memory_format=torch.channels_last))


def to_image(out: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) in [0,1] -> (H,W,3) uint8."""
    return out[0].mul(255.0).round_().permute(1, 2, 0).to(torch.uint8).contiguous().numpy()


# -- renderer -------------------------------------------------------------------------------


class NeuralRenderer(Renderer):
    """Reference restorer + mesh warp + learned refiner. `weights`: a .safetensors with its
    .json beside it; `net`: use this network instead (tests, training), its id is still its
    content hash. `restorer`: the network that restores each reference once, before it is
    warped (facecodec/render/restore.py); by default the shipped one, None for none.
    `onnx`: run the refiner under onnxruntime instead of PyTorch, exported to this file
    (written from the net if missing) or, True, in memory."""

    name = "neural"

    def __init__(
        self,
        basis: ExpressionBasis,
        size: int,
        weights: Path | str | None = DEFAULT_WEIGHTS,
        net: RefinerNet | None = None,
        threads: int | None = 2,
        onnx: Path | bool = False,
        restorer: RestoreNet | Path | None = RESTORE_WEIGHTS,
    ) -> None:
        """`threads`: onnxruntime's, with `onnx`. Torch's thread count is the process's,
        set by whoever runs it (a call: one), never by a component."""
        super().__init__(basis, size)
        if net is None:
            if weights is None:
                raise FacecodecError("NeuralRenderer needs weights or a net")
            net = load_net(Path(weights))
        self.net = net.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.restorer = load_restorer(restorer) if isinstance(restorer, Path) else restorer
        self._model_id = model_id_of(self.net)
        self._restorer_id = "" if self.restorer is None else restorer_id(self.restorer)
        if self._restorer_id:
            self._model_id += "+" + self._restorer_id
        self._restored: np.ndarray | None = None
        # The last few `restoration`s, (picture, share, result): a stream may draw from its
        # held references in turn, and the restorer is the dear part of a switch.
        self._restorations: deque[tuple[np.ndarray, float | None, np.ndarray]] = deque(
            maxlen=RESTORATIONS_KEPT)
        self.cond = Conditioner(size)
        self._gates = self.net.config.gates_frames()
        self.ort: OnnxRefiner | None = None
        if isinstance(onnx, Path):
            if not onnx.exists():
                export_onnx(self.net, onnx, size)
            self.ort = OnnxRefiner(onnx, threads or 2)
        elif onnx:
            self.ort = OnnxRefiner(onnx_model(self.net, size), threads or 2)

    @property
    def model_id(self) -> str:
        return self._model_id

    def warm_up(self) -> None:
        # A process's first pass through a network costs about a second more than the next
        # (allocator, kernel set-up): a call's receiver pays it before the stream starts.
        with torch.inference_mode():
            if self.restorer is not None:
                self.restorer(torch.zeros(1, 3, self.size, self.size))
            x = torch.zeros(1, 6, self.size, self.size)
            c = torch.zeros(1, COND_CHANNELS, self.size // 2, self.size // 2)
            if self.ort is not None:
                self.ort(x.numpy(), c.numpy())
            else:
                self.net(x, c)

    @property
    def restorer_id(self) -> str:
        return self._restorer_id

    def restoration(self, image: np.ndarray, share: float | None) -> np.ndarray:
        # Without the sender's share (a stream before RESTORE packets, an avatar's
        # portrait) the restorer's whole change is taken.
        for picture, given, out in list(self._restorations):  # appended to on other threads
            if picture is image and given == share:
                return out  # made ahead, off the drawing thread, or drawn from before
        s = 1.0 if share is None else share
        out = image
        if self.restorer is not None and s > 0.0:
            out = blend(image, restore(self.restorer, image), s)
        self._restorations.append((image, share, out))
        return out

    def _prepare(self, image: np.ndarray, motion: Motion) -> None:
        # Once per reference: every frame until the next keyframe is warped from it.
        self._restored = self.restoration(image, self.restore_share)
        self.cond.set_reference(self._restored, self.basis.landmarks(motion, self.size))

    def _render(self, target: Motion) -> np.ndarray:
        assert self._restored is not None and self.ref_motion is not None
        warped, cond = self.cond(self.points(target),
                                 target.surround_towards(self.ref_motion))
        c0 = torch.from_numpy(cond).permute(2, 0, 1)[None]
        config = self.net.config
        # The opening gate's weight, counted on the whole frame (1: a net without the gate
        # does not read it).
        weight = torch.ones(1, 1, 1, 1)
        if config.region > 0 and config.disocclusion and config.opening[1] > 0:
            weight = opening_weight(c0, config.opening)
            if self._gates and float(weight) == 0.0:
                # The mouth opens no more than the reference's: the net would return the warp.
                return warped.copy()
        if self.plain or self.hurry:  # the warp alone, at well under half the cost
            self.hurried += not self.plain
            return warped.copy()
        # The net leaves the warp outside a region around the opening mouth: it runs on a
        # window there (half the frame or less; WINDOW_MARGIN), or on the whole frame.
        t, b, lf, r = self.net.window(c0) or (0, self.size, 0, self.size)
        x, c = to_inputs(warped[t:b, lf:r], self._restored[t:b, lf:r],
                         cond[t // 2:b // 2, lf // 2:r // 2])
        if self.ort is not None:
            drawn = to_image(torch.from_numpy(self.ort(
                x.contiguous().numpy(), c.contiguous().numpy(), weight.numpy())))
        else:
            with torch.inference_mode():
                drawn = to_image(self.net(x, c, opening=weight))
        if (b - t, r - lf) == (self.size, self.size):
            return drawn
        out = warped.copy()
        out[t:b, lf:r] = drawn
        return out


# -- ONNX -----------------------------------------------------------------------------------


class _Exported(nn.Module):
    """The refiner with the opening gate's weight as an input: the renderer runs it on a
    window of the frame, where the gate cannot be counted (RefinerNet.forward)."""

    def __init__(self, net: RefinerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, cond: torch.Tensor,
                opening: torch.Tensor) -> torch.Tensor:
        out = self.net(image, cond, opening=opening)
        assert isinstance(out, torch.Tensor)
        return out


def onnx_model(net: RefinerNet, size: int = 256) -> bytes:
    """The refiner as ONNX (inputs `image` (B,6,H,W), `cond` (B,5,H/2,W/2), `opening`
    (B,1,1,1), the gate's weight on the whole frame; output `frame`), sizes dynamic."""
    x = torch.zeros(1, 6, size, size)
    c = torch.zeros(1, COND_CHANNELS, size // 2, size // 2)
    axes = {0: "batch", 2: "h", 3: "w"}
    buf = io.BytesIO()
    # torch types `f` as a path only; its TorchScript exporter (dynamo=False) takes a file too.
    torch.onnx.export(
        _Exported(net.eval()), (x, c, torch.ones(1, 1, 1, 1)), buf,  # type: ignore[arg-type]
        input_names=["image", "cond", "opening"], output_names=["frame"],
        dynamic_axes={"image": axes, "cond": {0: "batch", 2: "h2", 3: "w2"},
                      "opening": {0: "batch"}, "frame": axes},
        opset_version=17, dynamo=False,
    )
    return buf.getvalue()


def export_onnx(net: RefinerNet, path: Path, size: int = 256) -> None:
    """Write `onnx_model` to `path`."""
    path.write_bytes(onnx_model(net, size))


class OnnxRefiner:
    """The exported refiner under onnxruntime: a callable like RefinerNet on numpy inputs.
    `model`: an exported file or its bytes."""

    def __init__(self, model: Path | bytes, threads: int = 2) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # optional dependency
            raise FacecodecError("onnxruntime is not installed") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Busy-waiting worker threads collapse when other processes share the cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            model if isinstance(model, bytes) else str(model), opts,
            providers=["CPUExecutionProvider"])
        # A net without the opening gate does not read it, and the export drops it.
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, image: np.ndarray, cond: np.ndarray,
                 opening: np.ndarray | None = None) -> np.ndarray:
        """image (B,6,H,W), cond (B,5,H/2,W/2), opening (B,1,1,1) (default 1) float32 ->
        (B,3,H,W) float32."""
        feed = {"image": image.astype(np.float32), "cond": cond.astype(np.float32)}
        if "opening" in self.inputs:
            feed["opening"] = (np.ones((len(image), 1, 1, 1), np.float32) if opening is None
                               else opening.astype(np.float32))
        return np.asarray(self.session.run(["frame"], feed)[0])
