"""StyleGAN2-ADA augmentation (Karras et al., "Training Generative Adversarial Networks with
Limited Data", NeurIPS 2020): the augmentation pipeline, its functional form with explicit
per-sample parameters, and the adaptive controller of the augmentation strength ``p``.

Contract: ``shared/specs/ada.md``; the readable chain is :mod:`pyops.reference.ada`.

* :func:`augment` / :func:`geometric_color` take explicit per-sample parameters
  (``G_inv`` (B, 3, 3), ``C`` (B, 4, 4), filter gains (B, 4), noise sigma (B,) with a noise
  field, cutout boxes (B, 4)) and are deterministic.
* :class:`AugmentPipe` draws those parameters from the torch generator (``torch.manual_seed``
  reproduces a call) with per-augmentation probabilities ``multiplier * p``.
* :class:`AdaController` adjusts ``p`` from the sign of the discriminator's outputs on reals
  (the r_t heuristic); :func:`rv_heuristic` is the validation-set heuristic r_v.

The geometric + colour stage runs as one fused op (``torch.ops.pyops.ada_geom_color``: C++ on
CPU, CUDA C++ on GPU) whose backward is the adjoint, itself an op whose backward is the forward
again, so gradients of any order reach the images (R1 through the pipeline works). Filtering,
noise and cutout are a second fused op (``torch.ops.pyops.ada_filter_noise_cutout``), built the
same way.
"""

from __future__ import annotations

import math

import torch

from pyops import _backend, _checks, _scripting, _selfcheck
from pyops._budget import budget
from pyops._registry import Op
from pyops._interop import accepts_arrays
from pyops.reference import ada as _ref

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# ---- argument checks --------------------------------------------------------------------------


def _check_images(fn: str, images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"pyops.{fn}: images must be a tensor, got {_checks.describe(images)}")
    if images.dim() != 4:
        raise ValueError(f"pyops.{fn}: images must be a 4-D (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    if images.dtype not in _FLOATS:
        raise TypeError(f"pyops.{fn}: images must be a floating-point tensor, got {images.dtype}")
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"pyops.{fn}: images must have 1 or 3 channels (the colour transforms are defined for grey "
            f"and RGB), got {images.shape[1]} channels (shape {tuple(images.shape)})"
        )
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"pyops.{fn}: images must have non-empty H and W, got shape {tuple(images.shape)}")


def _check_param(fn: str, name: str, t, shape: tuple, images: torch.Tensor) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"pyops.{fn}: {name} must be a tensor or None, got {type(t).__name__}")
    want = tuple(images.shape[0] if s == "B" else s for s in shape)
    if tuple(t.shape) != want:
        pretty = "(" + ", ".join(str(s) for s in shape) + ")"
        raise ValueError(f"pyops.{fn}: {name} must have shape {pretty} = {want}, got {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"pyops.{fn}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.device != images.device:
        raise ValueError(f"pyops.{fn}: {name} is on {t.device} but images is on {images.device}")


def _check_affine(fn: str, G_inv) -> None:
    """The third row of every G_inv is [0, 0, 1]: the geometric stage is affine (a projective row
    would be neither applied nor refused). Checked where that costs no host synchronisation: CPU
    tensors in eager mode; on a GPU the call stays sync-free and the row is not read."""
    if G_inv is None or G_inv.device.type != "cpu" or torch.compiler.is_compiling():
        return
    if isinstance(G_inv, torch._subclasses.fake_tensor.FakeTensor):
        return
    bad = (G_inv[:, 2, :] != torch.tensor([0.0, 0.0, 1.0], dtype=G_inv.dtype)).any(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        row = [round(float(v), 6) for v in G_inv[i, 2]]
        raise ValueError(
            f"pyops.{fn}: G_inv must be affine, every third row [0, 0, 1] (perspective is not "
            f"supported), got {row} for sample {i}"
        )


# ---- functional API ---------------------------------------------------------------------------


@budget(forward=1, backward=1)
@accepts_arrays
def geometric_color(
    images: torch.Tensor,
    G_inv: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """The fused geometric + colour stage for explicit per-sample parameters.

    Args:
        images: (B, C, H, W) with C = 1 or 3, any float dtype (computed in float32, float64 for
            float64 images), any strides.
        G_inv: (B, 3, 3) inverse geometric matrices: output pixel -> input pixel, coordinates
            centred on the image centre; ``None`` skips the geometric stage. Affine: every third
            row must be [0, 0, 1] (a ValueError for CPU tensors; not read on a GPU, where
            checking would synchronise the host).
        C: (B, 4, 4) colour matrices (colour in -> colour out, homogeneous); ``None`` skips it.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic).
            The Triton kernels compute in float32 (float64 images included).

    Returns:
        (B, C, H, W) contiguous, in ``images.dtype``. Differentiable with respect to ``images``
        (any order, deterministic); not with respect to ``G_inv`` or ``C``.

    The geometric stage is the chain of :func:`pyops.reference.ada.geometric` (reflect pad,
    2x sym6 upsampling, bilinear resampling, 2x downsampling), computed per output pixel; the
    reflect margin is the batch-wide one of the reference, computed on the device.
    """
    _check_images("ada.geometric_color", images)
    _check_param("ada.geometric_color", "G_inv", G_inv, ("B", 3, 3), images)
    _check_affine("ada.geometric_color", G_inv)
    _check_param("ada.geometric_color", "C", C, ("B", 4, 4), images)
    name = _backend.resolve("ada_geom_color", backend, images.device)
    if name == "reference":
        x = images
        if G_inv is not None:
            x = _ref.geometric(x, G_inv)
        if C is not None:
            x = _ref.color(x, C)
        return x.contiguous()
    return _GEOM_COLOR.kernel(name)(images, G_inv, C)


@budget(forward=1, backward=1)
@accepts_arrays
def filter_noise_cutout(
    images: torch.Tensor,
    filters: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """The fused filtering + noise + cutout stage for explicit per-sample parameters.

    Args:
        images: (B, C, H, W), C = 1 or 3, any float dtype (computed in float32, float64 for
            float64 images); H, W >= 22 when filtering.
        filters: (B, 43) per-sample filter taps (``filter_gains @ pyops.reference.ada.filter_bank()``),
            applied separably after a 21-pixel reflect pad; ``None``: no filtering.
        sigma, noise: (B,) noise strengths and a (B, C, H, W) standard normal field, added as
            ``noise * sigma``; both or neither.
        boxes: (B, 4) cutout boxes (centre x, centre y, width, height; fractions of the image).
        backend: as in :func:`geometric_color`.

    Returns (B, C, H, W) contiguous in ``images.dtype``; differentiable to any order with respect
    to ``images`` (the backward is the adjoint, a deterministic gather).
    """
    fn = "ada.filter_noise_cutout"
    _check_images(fn, images)
    _check_param(fn, "filters", filters, ("B", 43), images)
    _check_param(fn, "sigma", sigma, ("B",), images)
    _check_param(fn, "noise", noise, tuple(["B", *images.shape[1:]]), images)
    _check_param(fn, "boxes", boxes, ("B", 4), images)
    if (sigma is None) != (noise is None):
        raise ValueError(f"pyops.{fn}: sigma and noise must be given together")
    if filters is not None and min(images.shape[2:]) <= _ref.FILTER_PAD:
        raise ValueError(
            f"pyops.{fn}: filtering needs H and W of at least {_ref.FILTER_PAD + 1} (a {_ref.FILTER_PAD}-pixel "
            f"reflect pad), got shape {tuple(images.shape)}"
        )
    name = _backend.resolve("ada_filter_noise_cutout", backend, images.device)
    if name == "reference":
        x = images
        if filters is not None:
            x = _ref.filter_taps(x, filters)
        if sigma is not None:
            x = _ref.add_noise(x, sigma, noise)
        if boxes is not None:
            x = _ref.cutout(x, boxes)
        return x.contiguous()
    return _FILTER.kernel(name)(images, filters, sigma, noise, boxes)


@budget(forward=2, backward=2, note="the two fused stages")
@accepts_arrays
def augment(
    images: torch.Tensor,
    *,
    G_inv: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    filter_gains: torch.Tensor | None = None,
    noise_sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cutout_boxes: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The whole ADA pipeline for explicit per-sample parameters; ``None`` skips a stage.

    Order: geometric (``G_inv`` (B, 3, 3)), colour (``C`` (B, 4, 4)), filtering
    (``filter_gains`` (B, 4): gains of the 4 bands of :func:`pyops.reference.ada.filter_bank`;
    needs H, W >= 22 for its 21-pixel reflect pad), additive noise (``noise_sigma`` (B,) times
    ``noise`` (B, C, H, W), a standard normal field; ``noise`` defaults to ``torch.randn``),
    cutout (``cutout_boxes`` (B, 4) = centre x, centre y, width, height as fractions of the image).
    The stages run as two fused ops (:func:`geometric_color`, :func:`filter_noise_cutout`) on
    ``backend``.
    """
    fn = "ada.augment"
    _check_images(fn, images)
    _check_param(fn, "filter_gains", filter_gains, ("B", 4), images)
    _check_param(fn, "noise_sigma", noise_sigma, ("B",), images)
    _check_param(fn, "noise", noise, tuple(["B", *images.shape[1:]]), images)
    _check_param(fn, "cutout_boxes", cutout_boxes, ("B", 4), images)
    _check_param(fn, "G_inv", G_inv, ("B", 3, 3), images)
    _check_affine(fn, G_inv)
    if filter_gains is not None and min(images.shape[2:]) <= _ref.FILTER_PAD:
        raise ValueError(
            f"pyops.{fn}: filtering needs H and W of at least {_ref.FILTER_PAD + 1} (a {_ref.FILTER_PAD}-pixel "
            f"reflect pad), got shape {tuple(images.shape)}"
        )
    if noise is not None and noise_sigma is None:
        raise ValueError(f"pyops.{fn}: noise was given without noise_sigma")
    x = images
    if G_inv is not None or C is not None:
        x = geometric_color(x, G_inv, C, backend=backend)
    if filter_gains is not None or noise_sigma is not None or cutout_boxes is not None:
        filters = None
        if filter_gains is not None:
            dt = torch.float64 if images.dtype == torch.float64 else torch.float32
            filters = filter_gains.to(dt) @ _ref.filter_bank(dt, images.device)
        if noise_sigma is not None and noise is None:
            noise = torch.randn(x.shape, device=x.device, dtype=torch.float32)
        x = filter_noise_cutout(x, filters, noise_sigma, noise, cutout_boxes, backend=backend)
    return x


# ---- matrices ---------------------------------------------------------------------------------
# Batched 3x3 (2-D homogeneous) and 4x4 (colour) matrices from per-sample values.


def _mat(rows, like: torch.Tensor) -> torch.Tensor:
    """Stack a nested list of scalars / (B,) tensors into (B, n, m)."""
    B = like.shape[0]
    cols = [
        [v if isinstance(v, torch.Tensor) else torch.full((B,), float(v), dtype=like.dtype, device=like.device) for v in row]
        for row in rows
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in cols], dim=-2)


def translate2d(tx, ty):
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scale2d(sx, sy):
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotate2d(theta):
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def translate3d(tx, ty, tz):
    return _mat([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], tx)


def scale3d(sx, sy, sz):
    return _mat([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], sx)


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` (B,) about the unit ``axis`` (3,) (Rodrigues), as (B, 4, 4)."""
    vx, vy, vz = (axis[i] for i in range(3))
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    return _mat(
        [
            [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
            [0, 0, 0, 1],
        ],
        theta,
    )


# ---- the pipeline -----------------------------------------------------------------------------

# Probability multipliers (all default 0) and strengths with their defaults.
MULTIPLIERS = (
    "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout",
)
STRENGTHS = dict(
    xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
    brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0,
    imgfilter_bands=(1.0, 1.0, 1.0, 1.0), imgfilter_std=1.0, noise_std=0.1, cutout_size=0.5,
)
_GEOM = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM_PRESET = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR_PRESET = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
PRESETS: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM_PRESET,
    "color": _COLOR_PRESET,
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": {**_BLIT, **_GEOM_PRESET},
    "bgc": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET},
    "bgcf": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET, "imgfilter": 1, "noise": 1, "cutout": 1},
}


class AugmentPipe(torch.nn.Module):
    """The ADA augmentation pipeline: ``AugmentPipe(xflip=1, rotate90=1, ...)`` or
    ``AugmentPipe.from_preset("bgc")``; ``pipe.p`` (a buffer) is the augmentation strength.

    Calling it on (B, C, H, W) images (C = 1 or 3, values in [-1, 1], any float dtype) draws
    per-sample parameters with :meth:`sample_params` and applies :func:`augment`. Each
    augmentation fires for a sample with probability ``multiplier * p``. Differentiable to any
    order with respect to the images.
    """

    def __init__(self, *, p: float = 0.0, backend: str | None = None, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(MULTIPLIERS) - set(STRENGTHS)
        if unknown:
            raise TypeError(
                f"pyops.AugmentPipe: unknown argument(s) {sorted(unknown)}; expected multipliers "
                f"{MULTIPLIERS} or strengths {tuple(STRENGTHS)}"
            )
        fn = "AugmentPipe"
        for name in MULTIPLIERS:  # probability multipliers: finite, >= 0
            setattr(self, name, _checks.number(fn, name, kwargs.get(name, 0.0), min=0))
        for name, default in STRENGTHS.items():  # strengths: finite, >= 0 (cutout_size a fraction)
            value = kwargs.get(name, default)
            if name == "imgfilter_bands":
                if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 4:
                    _checks.fail(fn, f"imgfilter_bands must be 4 numbers (band multipliers), got {value!r}")
                value = tuple(_checks.number(fn, "imgfilter_bands", v, min=0) for v in value)
            else:
                value = _checks.number(fn, name, value, min=0, max=1 if name == "cutout_size" else None)
            setattr(self, name, value)
        if isinstance(p, torch.Tensor) and p.numel() == 1:  # a 0-dim strength, e.g. another pipe's p
            p = float(p)
        p = _checks.number(fn, "p", p, min=0, max=1)
        self.backend = backend
        self.register_buffer("p", torch.tensor(p))

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> AugmentPipe:
        """A pipeline with the multipliers of preset ``name`` (blit, geom, color, filter, noise,
        cutout, bg, bgc, bgcf, bgcfn, bgcfnc); ``kwargs`` override or add arguments."""
        if name not in PRESETS:
            raise ValueError(f"pyops.AugmentPipe.from_preset: unknown preset {name!r}; expected one of {tuple(PRESETS)}")
        return cls(**{**PRESETS[name], **kwargs})

    def extra_repr(self) -> str:
        on = ", ".join(f"{n}={getattr(self, n):g}" for n in MULTIPLIERS if getattr(self, n) > 0)
        return f"p={float(self.p):.4f}, {on}"

    @torch.no_grad()
    def sample_params(self, images: torch.Tensor) -> dict:
        """Per-sample parameters for ``images``, drawn from the torch generator of its device in
        a fixed order (geometric, colour, filter, noise, cutout; per augmentation the value, then
        the gate). Keys are the arguments of :func:`augment`; a stage with every multiplier 0 is
        absent (skipped), so it costs nothing and draws nothing."""
        B, ch, H, W = images.shape
        dev = images.device
        dt = torch.float32
        p = self.p.to(device=dev, dtype=dt)

        def rand(*shape):
            return torch.rand(shape, device=dev, dtype=dt)

        def randn(*shape):
            return torch.randn(shape, device=dev, dtype=dt)

        def gate(value, prob, identity):
            return torch.where(rand(B) < prob, value, torch.full_like(value, identity))

        out: dict = {}
        if any(getattr(self, n) > 0 for n in _GEOM):
            G = torch.eye(3, device=dev, dtype=dt).repeat(B, 1, 1)
            zero = torch.zeros(B, device=dev, dtype=dt)
            if self.xflip > 0:
                i = gate(torch.floor(rand(B) * 2), self.xflip * p, 0.0)
                G = G @ scale2d(1 - 2 * i, zero + 1)  # scale_inv(1 - 2i, 1) is its own inverse
            if self.rotate90 > 0:
                i = gate(torch.floor(rand(B) * 4), self.rotate90 * p, 0.0)
                G = G @ rotate2d(math.pi / 2 * i)  # rotate_inv(-pi/2 i)
            if self.xint > 0:
                t = (rand(B, 2) * 2 - 1) * self.xint_max
                t = torch.where((rand(B) < self.xint * p)[:, None], t, torch.zeros_like(t))
                G = G @ translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H))
            if self.scale > 0:
                s = gate(torch.exp2(randn(B) * self.scale_std), self.scale * p, 1.0)
                G = G @ scale2d(1 / s, 1 / s)
            p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
            if self.rotate > 0:
                theta = gate((rand(B) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0.0)
                G = G @ rotate2d(theta)  # rotate_inv(-theta)
            if self.aniso > 0:
                s = gate(torch.exp2(randn(B) * self.aniso_std), self.aniso * p, 1.0)
                G = G @ scale2d(1 / s, s)
            if self.rotate > 0:
                theta = gate((rand(B) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0.0)
                G = G @ rotate2d(theta)
            if self.xfrac > 0:
                t = randn(B, 2) * self.xfrac_std
                t = torch.where((rand(B) < self.xfrac * p)[:, None], t, torch.zeros_like(t))
                G = G @ translate2d(-t[:, 0] * W, -t[:, 1] * H)
            out["G_inv"] = G
        if any(getattr(self, n) > 0 for n in _COLOR):
            C = torch.eye(4, device=dev, dtype=dt).repeat(B, 1, 1)
            v = torch.tensor([1, 1, 1, 0], device=dev, dtype=dt) / math.sqrt(3)
            vv = torch.outer(v, v)
            eye = torch.eye(4, device=dev, dtype=dt)
            if self.brightness > 0:
                b = gate(randn(B) * self.brightness_std, self.brightness * p, 0.0)
                C = translate3d(b, b, b) @ C
            if self.contrast > 0:
                c = gate(torch.exp2(randn(B) * self.contrast_std), self.contrast * p, 1.0)
                C = scale3d(c, c, c) @ C
            if self.lumaflip > 0:
                i = gate(torch.floor(rand(B) * 2), self.lumaflip * p, 0.0)
                C = (eye - 2 * vv * i.view(B, 1, 1)) @ C
            if self.hue > 0 and ch > 1:
                theta = gate((rand(B) * 2 - 1) * math.pi * self.hue_max, self.hue * p, 0.0)
                C = rotate3d(v, theta) @ C
            if self.saturation > 0 and ch > 1:
                s = gate(torch.exp2(randn(B) * self.saturation_std), self.saturation * p, 1.0)
                C = (vv + (eye - vv) * s.view(B, 1, 1)) @ C
            out["C"] = C
        if self.imgfilter > 0:
            power = torch.tensor(_ref.EXPECTED_POWER, device=dev, dtype=dt)
            g = torch.ones(B, 4, device=dev, dtype=dt)
            for i, band in enumerate(self.imgfilter_bands):
                t_i = gate(torch.exp2(randn(B) * self.imgfilter_std), self.imgfilter * p * band, 1.0)
                t = torch.ones(B, 4, device=dev, dtype=dt)
                t[:, i] = t_i
                t = t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()
                g = g * t
            out["filter_gains"] = g
        if self.noise > 0:
            sigma = gate(randn(B).abs() * self.noise_std, self.noise * p, 0.0)
            out["noise_sigma"] = sigma
            out["noise"] = randn(B, ch, H, W)
        if self.cutout > 0:
            size = gate(torch.full((B,), self.cutout_size, device=dev, dtype=dt), self.cutout * p, 0.0)
            centre = rand(B, 2)
            out["cutout_boxes"] = torch.stack([centre[:, 0], centre[:, 1], size, size], dim=1)
        return out

    def __prepare_scriptable__(self):
        """Called by ``torch.jit.script`` (also on submodules): refuse with the reason and the
        alternatives, instead of TorchScript's compiler error."""
        raise NotImplementedError(_scripting.AUGMENT_PIPE_ERROR)

    @budget(forward=400, backward=2, note="parameter sampling dispatches ~350 ops and syncs today (#17)")
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images("AugmentPipe", images)
        return augment(images, **self.sample_params(images), backend=self.backend)


# ---- adaptive controller ----------------------------------------------------------------------


class AdaController:
    """Adjusts the augmentation strength ``p`` with the r_t heuristic.

    Feed it the discriminator's outputs on real images every step (:meth:`update`); every
    ``interval`` steps it computes r_t = E[sign(D(real))] over those steps (summed over all
    processes with ``torch.distributed.all_reduce`` when a process group is initialised) and
    moves ``p`` by ``sign(r_t - target) * N / (kimg * 1000)``, N the number of images seen in
    the interval (batch * interval, over all processes), clamped at 0. No host synchronisation:
    ``p`` and the statistics stay tensors on the logits' device.

    Args:
        pipe: the :class:`AugmentPipe` whose ``p`` buffer is adjusted in place, or ``None``
            (then :attr:`p` is the controller's own tensor).
        target: the r_t target (0.6 in the paper). interval: steps between adjustments (4).
        kimg: thousands of images for ``p`` to go from 0 to 1 at full speed (500).
    """

    def __init__(self, pipe: AugmentPipe | None = None, target: float = 0.6, interval: int = 4, kimg: float = 500):
        fn = "AdaController"
        if pipe is not None and not isinstance(pipe, AugmentPipe):
            _checks.fail(fn, f"pipe must be a pyops.AugmentPipe or None, got {_checks.describe(pipe)}", TypeError)
        self.interval = _checks.integer(fn, "interval", interval, min=1)
        self.target = _checks.number(fn, "target", target)
        self.kimg = _checks.number(fn, "kimg", kimg, min=0)
        if self.kimg == 0:
            _checks.fail(fn, "kimg must be > 0, got 0")
        self.pipe = pipe
        self._own_p = torch.zeros(())  # used when there is no pipe
        self._stats: torch.Tensor | None = None  # [sum of signs, count]
        self._steps = 0
        self.r_t: torch.Tensor | None = None  # the last r_t (a 0-dim tensor)

    @property
    def p(self) -> torch.Tensor:
        """The augmentation strength (the pipe's ``p`` buffer when there is a pipe; looked up on
        every use, so moving the pipe to another device after creating the controller is fine)."""
        return self.pipe.p if self.pipe is not None else self._own_p

    @torch.no_grad()
    @budget(forward=16)
    def update(self, real_logits: torch.Tensor) -> None:
        """Record D's outputs on a batch of reals; adjusts ``p`` every ``interval`` calls."""
        if not isinstance(real_logits, torch.Tensor):
            raise TypeError(f"pyops.AdaController.update: real_logits must be a tensor, got {type(real_logits).__name__}")
        signs = torch.sign(real_logits.detach().float())
        step = torch.stack([signs.sum(), torch.tensor(float(signs.numel()), device=signs.device)]).double()
        self._stats = step if self._stats is None else self._stats + step
        self._steps += 1
        if self._steps % self.interval == 0:
            self._adjust()

    def _adjust(self) -> None:
        stats = self._stats
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        self._stats = None
        self.r_t = (stats[0] / stats[1].clamp(min=1)).float()
        adjust = torch.sign(self.r_t - self.target) * stats[1].float() / (self.kimg * 1000)
        p = self.p
        new_p = (p.to(adjust.device).float() + adjust).clamp(min=0)
        p.copy_(new_p.to(p.device, p.dtype))


@budget(forward=10)
@accepts_arrays
def rv_heuristic(d_train: torch.Tensor, d_validation: torch.Tensor, d_generated: torch.Tensor) -> torch.Tensor:
    """The validation overfitting heuristic r_v = (E[D_train] - E[D_validation]) /
    (E[D_train] - E[D_generated]): 0 without overfitting, 1 when validation images look as fake
    as generated ones (the paper's code targets 0.5). Returns a 0-dim tensor."""
    for name, t in (("d_train", d_train), ("d_validation", d_validation), ("d_generated", d_generated)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"pyops.rv_heuristic: {name} must be a tensor of D outputs, got {_checks.describe(t)}")
        if t.numel() == 0:
            raise ValueError(f"pyops.rv_heuristic: {name} must be a non-empty tensor of D outputs")
    tr, va, ge = (t.detach().double().mean() for t in (d_train, d_validation, d_generated))
    return ((tr - va) / (tr - ge)).float()


# ---- Triton kernels of the operators (see pyops/_registry.py) ----------------------------------
# Registered for CUDA tensors, and for CPU tensors so the Triton interpreter can run them in tests.
# pyops.kernels (and triton) are imported on first use only.


def _check_triton_args(op: str, images, G_inv, C) -> None:
    # the same checks as the C++ ops (csrc/ada/ada_host.h), as RuntimeErrors
    try:
        _check_images(op, images)
        _check_param(op, "G_inv", G_inv, ("B", 3, 3), images)
        _check_param(op, "C", C, ("B", 4, 4), images)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(str(exc)) from exc


def _device_margin(G: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The batch-wide reflect margin (left, top, right, bottom) as int32 on G's device, with no
    host synchronisation (the same formula as pyops.reference.ada.geometric_margin)."""
    cx, cy = (W - 1) / 2, (H - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=G.dtype, device=G.device)
    ext = (G[:, :2, :] @ corners.t()).permute(1, 0, 2).reshape(2, -1)
    margin = torch.cat([-ext, ext]).amax(dim=1)
    margin = margin + torch.tensor([6 - cx, 6 - cy] * 2, dtype=G.dtype, device=G.device)
    limit = torch.tensor([W - 1, H - 1] * 2, dtype=G.dtype, device=G.device)
    margin = torch.nan_to_num(margin, nan=0.0).clamp(min=0)
    return torch.minimum(margin, limit).ceil().to(torch.int32)


def _triton_prepare(images, G_inv, C):
    B, _, H, W = images.shape
    G = None if G_inv is None else G_inv.to(images.device, torch.float32).contiguous()
    Cm = None if C is None else C.to(images.device, torch.float32).contiguous()
    taps = _ref.geom_filter(torch.float32, images.device)
    if G is not None and B > 0:
        margin = _device_margin(G, H, W)
    else:
        margin = torch.zeros(4, dtype=torch.int32, device=images.device)
    return G, Cm, taps, margin


def _triton_geom_color(images, G_inv, C):
    from pyops.kernels import ada as k

    _check_triton_args("ada_geom_color_triton", images, G_inv, C)
    out = torch.empty(images.shape, dtype=images.dtype, device=images.device)
    if out.numel():
        k.forward(images, out, *_triton_prepare(images, G_inv, C))
    return out


def _triton_geom_color_backward(grad, G_inv, C):
    from pyops.kernels import ada as k

    _check_triton_args("ada_geom_color_backward_triton", grad, G_inv, C)
    out = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
    if out.numel() == 0:
        return out
    B, ch, H, W = grad.shape
    if G_inv is None and C is None:
        return out.copy_(grad)
    G, Cm, taps, margin = _triton_prepare(grad, G_inv, C)
    gv = None if G is None else torch.empty(B, ch, 2 * H + 12, 2 * W + 12, dtype=torch.float32, device=grad.device)
    k.backward(grad, out, gv, G, Cm, taps, margin)
    return out


def _triton_filter_args(op, images, filters, sigma, noise, boxes):
    try:
        _check_images(op, images)
        _check_param(op, "filters", filters, ("B", 43), images)
        _check_param(op, "sigma", sigma, ("B",), images)
        _check_param(op, "noise", noise, tuple(["B", *images.shape[1:]]), images)
        _check_param(op, "boxes", boxes, ("B", 4), images)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(str(exc)) from exc
    if (sigma is None) != (noise is None):
        raise RuntimeError(f"{op}: sigma and noise must be given together")
    if filters is not None and min(images.shape[2:]) <= _ref.FILTER_PAD:
        raise RuntimeError(f"{op}: filtering needs H and W of at least 22, got shape {tuple(images.shape)}")

    def f32(t):
        return None if t is None else t.to(images.device, torch.float32).contiguous()

    return f32(filters), f32(sigma), noise, f32(boxes)


def _triton_filter_noise_cutout(images, filters, sigma, noise, boxes):
    from pyops.kernels import ada as k

    h, sg, nz, bx = _triton_filter_args("ada_filter_noise_cutout_triton", images, filters, sigma, noise, boxes)
    out = torch.empty(images.shape, dtype=images.dtype, device=images.device)
    if out.numel():
        k.filter_forward(images, out, h, sg, nz, bx)
    return out


def _triton_filter_noise_cutout_backward(grad, filters, boxes):
    from pyops.kernels import ada as k

    h, _, _, bx = _triton_filter_args("ada_filter_noise_cutout_backward_triton", grad, filters, None, None, boxes)
    out = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
    if out.numel() == 0:
        return out
    if h is None and bx is None:
        return out.copy_(grad)
    k.filter_backward(grad, out, h, bx)
    return out


# ---- fake kernels and autograd ----------------------------------------------------------------


def _fake_geom_color(images, G_inv, C):
    return images.new_empty(images.shape)


def _linear_part(C):
    # the offset column dropped: what the adjoint of the adjoint must apply
    return None if C is None else torch.cat([C[:, :, :3], torch.zeros_like(C[:, :, 3:])], dim=2)


def _setup_context(ctx, inputs, output):
    _, G_inv, C = inputs
    ctx.G_inv, ctx.C = G_inv, C


def _make_backwards(variant: str):
    forward_op = _GEOM_COLOR.variant(variant)
    adjoint_op = _GEOM_COLOR_ADJOINT.variant(variant)

    def backward_of_forward(ctx, grad):
        return adjoint_op(grad, ctx.G_inv, ctx.C), None, None

    def backward_of_adjoint(ctx, grad):
        return forward_op(grad, ctx.G_inv, _linear_part(ctx.C)), None, None

    return backward_of_forward, backward_of_adjoint


def _fake_filter(images, filters, sigma, noise, boxes):
    return images.new_empty(images.shape)


def _fake_filter_backward(grad, filters, boxes):
    return grad.new_empty(grad.shape)


def _setup_filter(ctx, inputs, output):
    ctx.filters, ctx.boxes = inputs[1], inputs[-1]


def _make_filter_backwards(variant: str):
    forward_op = _FILTER.variant(variant)
    adjoint_op = _FILTER_ADJOINT.variant(variant)

    def backward_of_forward(ctx, grad):
        return adjoint_op(grad, ctx.filters, ctx.boxes), None, None, None, None

    def backward_of_adjoint(ctx, grad):  # the noise is not part of the linear map
        return forward_op(grad, ctx.filters, None, None, ctx.boxes), None, None

    return backward_of_forward, backward_of_adjoint


_GEOM_COLOR = Op("ada_geom_color")
_GEOM_COLOR_ADJOINT = Op("ada_geom_color_backward")
_FILTER = Op("ada_filter_noise_cutout")
_FILTER_ADJOINT = Op("ada_filter_noise_cutout_backward")
for _op, _triton, _fake in (
    (_GEOM_COLOR, _triton_geom_color, _fake_geom_color),
    (_GEOM_COLOR_ADJOINT, _triton_geom_color_backward, _fake_geom_color),
    (_FILTER, _triton_filter_noise_cutout, _fake_filter),
    (_FILTER_ADJOINT, _triton_filter_noise_cutout_backward, _fake_filter_backward),
):
    _op.register_triton(_triton)
    _op.register_fake(_fake)
# each op's backward is the other op (the adjoint), so gradients of any order work
_GEOM_COLOR.register_autograd(lambda variant: _make_backwards(variant)[0], setup_context=_setup_context)
_GEOM_COLOR_ADJOINT.register_autograd(lambda variant: _make_backwards(variant)[1], setup_context=_setup_context)
_FILTER.register_autograd(lambda variant: _make_filter_backwards(variant)[0], setup_context=_setup_filter)
_FILTER_ADJOINT.register_autograd(lambda variant: _make_filter_backwards(variant)[1], setup_context=_setup_filter)


# ---- self-check for `python -m pyops` ---------------------------------------------------------


def _selfcheck_params(x: torch.Tensor):
    # fixed, general parameters (rotation, anisotropic scale, shift; a full colour matrix) in
    # x's dtype, so the check differentiates with respect to the images only
    dt = x.dtype
    theta = torch.tensor([0.3, -1.1], dtype=dt)
    G = torch.eye(3, dtype=dt).repeat(2, 1, 1)
    G[:, 0, 0], G[:, 0, 1], G[:, 1, 0], G[:, 1, 1] = theta.cos() * 1.2, -theta.sin(), theta.sin(), theta.cos() * 0.9
    G[:, 0, 2] = torch.tensor([0.7, -1.3], dtype=dt)
    C = torch.eye(4, dtype=dt).repeat(2, 1, 1) + 0.1 * torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dt)
    return G.to(x.device), C.to(x.device)


def _selfcheck_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    return (torch.randn(2, 3, 4, 4, generator=gen, dtype=dtype).to(device),)  # tiny: the Triton interpreter is slow


_selfcheck.register(
    _selfcheck.OpCheck(
        name="ada_geom_color",
        make_inputs=_selfcheck_inputs,
        run=lambda x, backend: geometric_color(x, *_selfcheck_params(x), backend=backend),
        reference=lambda x: _ref.color(_ref.geometric(x, _selfcheck_params(x)[0]), _selfcheck_params(x)[1]),
    )
)
